"""keys_unique: one row per (tenant, service, metric, ts); the row received last wins."""

from monitoring_pipelines.quality.checks.base import (
    ROW,
    Check,
    CheckSpec,
    Partition,
    RowFindings,
    flagged_rows,
    show,
)
from monitoring_pipelines.sources import records

SPEC = CheckSpec(
    "keys_unique",
    "(tenant, service, metric, ts) is unique. Among duplicates the row received last (highest "
    "source, source_row) is kept and the others are quarantined.",
    True,
)

_REASON = "duplicate of (tenant, service, metric, ts); superseded by row {row} of {source}"


def _expectations(meta: dict) -> list:
    import great_expectations.expectations as gxe

    return [gxe.ExpectCompoundColumnsToBeUnique(column_list=list(records.KEY_COLUMNS), meta=meta)]


def _evaluate(findings, partition: Partition) -> RowFindings:
    """Resolve the duplicate groups GX found: the last received valid row of each group wins."""
    data = partition.data
    flagged, bad = flagged_rows(findings, len(data), "key")
    # Rows already held back by an earlier rule cannot win: a broken row must not displace a
    # good one that shares its key.
    candidates = sorted(flagged - partition.held.keys())
    groups = 0
    if candidates:
        sub = data.loc[candidates, [*records.KEY_COLUMNS, "source", "source_row"]].copy()
        sub["position"] = candidates
        sub = sub.sort_values(["source", "source_row", "position"], kind="stable")
        grouped = sub.groupby(list(records.KEY_COLUMNS), sort=False, dropna=False)
        sub["winner"] = grouped["position"].transform("last")
        losers = sub[sub["position"] != sub["winner"]]
        groups = int(losers["winner"].nunique())
        sources = data["source"].to_numpy(dtype=object)
        source_rows = data["source_row"].to_numpy()
        for pos, winner in zip(losers["position"], losers["winner"], strict=True):
            reason = _REASON.format(row=int(source_rows[winner]), source=show(sources[winner], 300))
            bad.setdefault(int(pos), ("key", reason))
    extra = {"rows_in_duplicate_groups": len(flagged), "duplicate_keys_resolved": groups}
    return RowFindings(bad, extra)


CHECK = Check(SPEC, ROW, _evaluate, _expectations)
