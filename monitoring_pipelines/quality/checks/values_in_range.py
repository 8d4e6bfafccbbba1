"""values_in_range: a value outside the physical bounds of its metric kind is a data error."""

import numpy as np
import pandas as pd

from monitoring_pipelines.quality.checks.base import (
    ROW,
    Check,
    CheckSpec,
    Partition,
    RowFindings,
    flagged_rows,
    number,
    show,
)
from monitoring_pipelines.sources import records

SPEC = CheckSpec(
    "values_in_range",
    "value lies within the physical bounds of its metric kind (ratio in [0, 1], percent in "
    "[0, 100], latency in [0, 600000] ms, counts and rates not negative, ...).",
    True,
)

# Helper columns of the validated frame: each row's metric kind and that kind's bounds (NaN where
# the kind has none), so one pair of expectations covers every kind.
KIND = "gate_kind"
LOWER = "gate_lower"
UPPER = "gate_upper"


def _kind_column(data: pd.DataFrame) -> pd.Series:
    """Each row's metric kind name, looked up once per distinct metric (codes, not a per-row map
    over the Arrow string column)."""
    if "metric" not in data.columns:
        return pd.Series("gauge", index=data.index, dtype=object)
    codes, metrics = pd.factorize(data["metric"])
    names = [records.metric_kind(m).name if isinstance(m, str) else "gauge" for m in metrics]
    # Code -1 (a missing metric) takes the last entry.
    kinds = np.array([*names, "gauge"], dtype=object)[codes]
    return pd.Series(kinds, index=data.index, dtype=object)


def _bound_column(kinds: pd.Series, which: str) -> np.ndarray:
    bounds = {
        name: np.nan if getattr(kind, which) is None else float(getattr(kind, which))
        for name, kind in records.METRIC_KINDS.items()
    }
    codes, names = pd.factorize(kinds)
    return np.array([bounds[n] for n in names] + [np.nan], dtype="float64")[codes]


def _prepare(data: pd.DataFrame) -> dict:
    kinds = _kind_column(data)
    return {
        KIND: kinds,
        LOWER: _bound_column(kinds, "lower"),
        UPPER: _bound_column(kinds, "upper"),
    }


def _expectations(meta: dict) -> list:
    import great_expectations.expectations as gxe

    # Against per-row bound columns: a suite per kind would cost GX's per-expectation overhead
    # once per kind and partition. Rows of a kind without a bound have NaN there and are skipped.
    return [
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="value",
            column_B=LOWER,
            or_equal=True,
            ignore_row_if="either_value_is_missing",
            meta={**meta, "bound": "lower"},
        ),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A=UPPER,
            column_B="value",
            or_equal=True,
            ignore_row_if="either_value_is_missing",
            meta={**meta, "bound": "upper"},
        ),
    ]


def _bounds(kind: records.MetricKind) -> str:
    lower = "(-inf" if kind.lower is None else f"[{number(kind.lower)}"
    upper = "+inf)" if kind.upper is None else f"{number(kind.upper)}]"
    return f"{lower}, {upper}"


def _evaluate(findings, partition: Partition) -> RowFindings:
    data = partition.data
    values = data["value"].to_numpy()
    metrics = data["metric"].to_numpy()
    kinds = _kind_column(data).to_numpy()
    flagged, bad = flagged_rows(findings, len(data), "value")
    per_kind = {}
    for name in sorted(set(kinds)):
        kind = records.METRIC_KINDS[name]
        if kind.lower is None and kind.upper is None:
            continue
        rows = np.flatnonzero(kinds == name)
        per_kind[name] = {
            "bounds": _bounds(kind),
            "rows": len(rows),
            "violations": len(flagged.intersection(rows.tolist())),
        }
    for pos in sorted(flagged):
        kind = records.METRIC_KINDS[kinds[pos]]
        reason = (
            f"value: {number(float(values[pos]))} outside {_bounds(kind)} "
            f"for {kind.name} metric {show(metrics[pos])}"
        )
        bad.setdefault(pos, ("value", reason))
    return RowFindings(bad, {"kinds": per_kind})


CHECK = Check(SPEC, ROW, _evaluate, _expectations, _prepare)
