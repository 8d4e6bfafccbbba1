"""values_finite: NaN, +inf and -inf are quarantined."""

import math

from monitoring_pipelines.quality.checks.base import (
    ROW,
    Check,
    CheckSpec,
    Partition,
    RowFindings,
    errored,
)

SPEC = CheckSpec(
    "values_finite", "value is a finite number: NaN, +inf and -inf are quarantined.", True
)

# The widest finite float64: a "between" on it fails exactly the infinities (NaN is null for GX).
_FLOAT_MAX = 1.7976931348623157e308


def _expectations(meta: dict) -> list:
    import great_expectations.expectations as gxe

    # NaN is null to GX, so "not null" finds NaN and the widest finite range finds +/-inf.
    return [
        gxe.ExpectColumnValuesToNotBeNull(column="value", meta={**meta, "finding": "nan"}),
        gxe.ExpectColumnValuesToBeBetween(
            column="value",
            min_value=-_FLOAT_MAX,
            max_value=_FLOAT_MAX,
            meta={**meta, "finding": "inf"},
        ),
    ]


def _label(value: object) -> str:
    number = float(value)
    if math.isnan(number):
        return "nan"
    return "inf" if number > 0 else "-inf"


def _evaluate(findings, partition: Partition) -> RowFindings:
    bad: dict[int, tuple[str, str]] = {}
    values = partition.data["value"].to_numpy()
    counts = {"nan": 0, "inf": 0, "-inf": 0}
    for f in findings:
        if f.error:
            for pos, item in errored(f, len(partition.data), "value").items():
                bad.setdefault(pos, item)
            continue
        for pos in sorted(f.rows):
            label = _label(values[pos])
            if pos not in bad:
                counts[label] += 1
                bad[pos] = ("value", f"value: not finite ({label})")
    return RowFindings(bad, {"by_value": counts})


CHECK = Check(SPEC, ROW, _evaluate, _expectations)
