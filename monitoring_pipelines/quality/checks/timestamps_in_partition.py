"""timestamps_in_partition: every row belongs to this partition's day and tenant."""

import pandas as pd

from monitoring_pipelines.quality.checks.base import (
    ROW,
    Check,
    CheckSpec,
    Partition,
    RowFindings,
    errored,
    show,
    ts_text,
)

SPEC = CheckSpec(
    "timestamps_in_partition",
    "Every row belongs to this partition: ts within [start, end) of the day, and tenant equal "
    "to the partition's tenant.",
    True,
)


def _expectations(meta: dict) -> list:
    import great_expectations.expectations as gxe

    # Partition bounds change on every call: suite parameters keep the suite itself cacheable.
    return [
        gxe.ExpectColumnValuesToBeBetween(
            column="ts",
            min_value={"$PARAMETER": "partition_start"},
            max_value={"$PARAMETER": "partition_end"},
            strict_max=True,
            meta=meta,
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="tenant", value_set={"$PARAMETER": "partition_tenant"}, meta=meta
        ),
    ]


def _instant(ts: pd.Timestamp) -> str:
    """A partition bound: the date alone at midnight UTC, the full instant otherwise."""
    if ts == ts.normalize():
        return ts.date().isoformat()
    return ts.isoformat()


def _evaluate(findings, partition: Partition) -> RowFindings:
    data = partition.data
    bad: dict[int, tuple[str, str]] = {}
    window = f"[{_instant(partition.start)}, {_instant(partition.end)})"
    stamps = data["ts"].to_numpy(dtype=object) if len(data) else []
    tenants = data["tenant"].to_numpy(dtype=object) if len(data) else []
    outside = foreign = 0
    # ts findings first: the time window is the property this check is named after.
    for f in sorted(findings, key=lambda f: f.column != "ts"):
        if f.error:
            for pos, item in errored(f, len(data), f.column or "ts").items():
                bad.setdefault(pos, item)
            continue
        for pos in sorted(f.rows):
            if f.column == "ts":
                outside += 1
                text = ts_text(pd.Timestamp(stamps[pos]))
                bad.setdefault(pos, ("ts", f"ts: {text} outside partition {window}"))
            else:
                foreign += 1
                reason = (
                    f"tenant: {show(tenants[pos])} is not the partition tenant "
                    f"{show(partition.tenant)}"
                )
                bad.setdefault(pos, ("tenant", reason))
    extra = {"window": window, "outside_window": outside, "other_tenant": foreign}
    return RowFindings(bad, extra)


CHECK = Check(SPEC, ROW, _evaluate, _expectations)
