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


# Helper columns of the validated frame: each row's partition bounds and tenant. One validation
# covers a whole ranged run (many partitions), so the bounds are per row, not suite parameters.
START = "gate_start"
END = "gate_end"
TENANT = "gate_tenant"


def _expectations(meta: dict) -> list:
    import great_expectations.expectations as gxe

    # A null ts or tenant is keys_not_null's finding, not this check's.
    skip = "either_value_is_missing"
    return [
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="ts", column_B=START, or_equal=True, ignore_row_if=skip, meta=meta
        ),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A=END, column_B="ts", or_equal=False, ignore_row_if=skip, meta=meta
        ),
        gxe.ExpectColumnPairValuesToBeEqual(
            column_A="tenant", column_B=TENANT, ignore_row_if=skip, meta=meta
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
    # Only flagged rows are read one by one: converting the whole column costs ~1 us per row.
    stamps, tenants = data["ts"], data["tenant"]
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
                text = ts_text(pd.Timestamp(stamps.iloc[pos]))
                bad.setdefault(pos, ("ts", f"ts: {text} outside partition {window}"))
            else:
                foreign += 1
                reason = (
                    f"tenant: {show(tenants.iloc[pos])} is not the partition tenant "
                    f"{show(partition.tenant)}"
                )
                bad.setdefault(pos, ("tenant", reason))
    extra = {"window": window, "outside_window": outside, "other_tenant": foreign}
    return RowFindings(bad, extra)


CHECK = Check(SPEC, ROW, _evaluate, _expectations)
