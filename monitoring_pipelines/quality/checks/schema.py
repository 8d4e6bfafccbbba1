"""schema: every record column is present with its contract type (a table-level check)."""

import numpy as np
import pandas as pd

from monitoring_pipelines.quality.checks.base import (
    ERROR,
    TABLE,
    WARN,
    Check,
    CheckOutcome,
    CheckSpec,
    Partition,
    show,
)
from monitoring_pipelines.sources import records

SPEC = CheckSpec(
    "schema",
    "Every record column (tenant, service, metric, ts, value, tags, source, source_row) is "
    "present with its contract type: text keys, timezone-aware ts, float64 value, int64 "
    "source_row. When it fails no row can be trusted and all are quarantined.",
    True,
)

# Accepted pandas dtypes, as GX names them: "str" matches both the pandas 3 string dtype and object
# columns holding str (GX checks object columns value by value); "Timestamp" matches timezone-aware
# datetime columns at any resolution and refuses naive ones.
COLUMN_TYPES = {
    "tenant": "str",
    "service": "str",
    "metric": "str",
    "ts": "Timestamp",
    "value": "float64",
    "tags": "str",
    "source": "str",
    "source_row": "int64",
}

# How each GX type name reads in a quarantine reason.
TYPE_LABELS = {
    "str": "text",
    "Timestamp": "timezone-aware datetime",
    "float64": "float64",
    "int64": "int64",
}

# GX checks object columns value by value, so a column of Timestamp or float objects would pass;
# the time and number columns must carry a real dtype for the comparisons and writes downstream.
_NATIVE_DTYPES = {
    "ts": lambda dtype: isinstance(dtype, pd.DatetimeTZDtype),
    "value": lambda dtype: dtype == np.float64,
    "source_row": lambda dtype: dtype == np.int64,
}


def _expectations(meta: dict) -> list:
    import great_expectations.expectations as gxe

    out = [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=list(records.FRAME_COLUMNS),
            # Extra columns (the gate's own helpers among them) are dropped, not an error.
            exact_match=False,
            meta=meta,
        )
    ]
    for column, type_ in COLUMN_TYPES.items():
        out.append(gxe.ExpectColumnValuesToBeOfType(column=column, type_=type_, meta=meta))
    return out


def _wrong_types(findings, data: pd.DataFrame, missing: list[str]) -> dict[str, str]:
    wrong = {}
    for f in findings:
        if f.column is None or f.column in missing or f.success:
            continue
        observed = str(data[f.column].dtype)
        if f.unexpected_count:
            observed += f" ({f.unexpected_count} values not {COLUMN_TYPES[f.column]})"
        wrong[f.column] = observed
    # An empty read from the warehouse types every column object; with no value, nothing is wrong.
    for column, native in _NATIVE_DTYPES.items() if len(data) else ():
        if column in data.columns and column not in wrong and not native(data[column].dtype):
            wrong[column] = str(data[column].dtype)
    return wrong


def _evaluate(findings, partition: Partition) -> tuple[CheckOutcome, str | None]:
    """The schema outcome, and the quarantine reason for every row when it fails."""
    data = partition.data
    missing = [c for c in records.FRAME_COLUMNS if c not in data.columns]
    extra = [str(c) for c in data.columns if c not in records.FRAME_COLUMNS]
    wrong = _wrong_types(findings, data, missing)
    passed = all(f.success for f in findings) and not missing and not wrong
    metadata = {
        "columns_missing": missing,
        "columns_ignored": extra,
        "wrong_types": wrong,
        "expected_types": dict(COLUMN_TYPES),
        "observed_types": {str(c): str(t) for c, t in data.dtypes.items()},
        "gx_expectations": sorted({f.expectation for f in findings}),
    }
    if passed:
        outcome = CheckOutcome(
            SPEC.name, True, WARN, "All record columns have their type.", metadata
        )
        return outcome, None
    parts = []
    if missing:
        parts.append("missing columns " + ", ".join(missing))
    if wrong:
        labels = {c: TYPE_LABELS[COLUMN_TYPES[c]] for c in wrong}
        parts.append(
            "wrong types "
            + ", ".join(f"{c} is {t}, expected {labels[c]}" for c, t in wrong.items())
        )
    if not parts:
        errors = [f.error for f in findings if f.error]
        parts.append(show(errors[0].splitlines()[0]) if errors else "failed")
    reason = f"{SPEC.name}: " + "; ".join(parts)
    description = f"{reason}. Every row is quarantined."
    return CheckOutcome(SPEC.name, False, ERROR, description, metadata), reason


CHECK = Check(SPEC, TABLE, _evaluate, _expectations)
