"""keys_not_null: a row without its full key cannot be placed in a series."""

from monitoring_pipelines.quality.checks.base import (
    ROW,
    Check,
    CheckSpec,
    Partition,
    RowFindings,
    errored,
)
from monitoring_pipelines.sources import records

SPEC = CheckSpec(
    "keys_not_null",
    "tenant, service, metric and ts are never null: a row without its full key cannot be "
    "placed in a series.",
    True,
)


def _expectations(meta: dict) -> list:
    import great_expectations.expectations as gxe

    return [gxe.ExpectColumnValuesToNotBeNull(column=c, meta=meta) for c in records.KEY_COLUMNS]


def _evaluate(findings, partition: Partition) -> RowFindings:
    bad: dict[int, tuple[str, str]] = {}
    nulls = {}
    for column in records.KEY_COLUMNS:
        for f in findings:
            if f.column != column:
                continue
            if f.error:
                for pos, item in errored(f, len(partition.data), column).items():
                    bad.setdefault(pos, item)
                continue
            nulls[column] = len(f.rows)
            for pos in sorted(f.rows):
                bad.setdefault(pos, (column, f"{column}: null"))
    return RowFindings(bad, {"nulls_by_column": nulls})


CHECK = Check(SPEC, ROW, _evaluate, _expectations)
