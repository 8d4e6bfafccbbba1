"""volume: accepted rows against the rows expected by now."""

import pandas as pd

from monitoring_pipelines.quality.checks.base import (
    ERROR,
    PARTITION,
    WARN,
    Check,
    CheckOutcome,
    CheckSpec,
    Partition,
)

SPEC = CheckSpec(
    "volume",
    "Accepted rows compared with the expected count (expected series x slots in the day): "
    "too few rows warn, far too few block.",
    True,
)


def _evaluate(accepted: pd.DataFrame, partition: Partition) -> CheckOutcome:
    config, start = partition.config, partition.start
    # Today's partition is judged on the part of the day that should have arrived by now.
    until = min(partition.end, partition.now - pd.Timedelta(seconds=config.freshness_lag_seconds))
    slots = max(int((until - start).total_seconds() // config.resolution_seconds), 0)
    expected_series = max(int(partition.expected_series), 0)
    expected = expected_series * slots
    observed = len(accepted)
    ratio = observed / expected if expected else 1.0
    counts = accepted.groupby(["service", "metric"], sort=False).size() if observed else None
    observed_series = 0 if counts is None else len(counts)
    short = 0 if counts is None else int((counts < slots).sum())
    metadata = {
        "expected": expected,
        "observed": observed,
        "ratio": round(ratio, 6),
        "expected_series": int(partition.expected_series),
        "observed_series": observed_series,
        "missing_series": max(int(partition.expected_series) - observed_series, 0),
        "incomplete_series": short,
        "slots_per_series": slots,
        "warn_below": config.volume_warn,
        "error_below": config.volume_error,
    }
    figures = f"{observed:,} of {expected:,} expected rows ({ratio:.1%})"
    if ratio < config.volume_error:
        text = f"{figures}, below {config.volume_error:.0%}."
        return CheckOutcome(SPEC.name, False, ERROR, text, metadata)
    if ratio < config.volume_warn:
        text = f"{figures}, below {config.volume_warn:.0%}."
        return CheckOutcome(SPEC.name, False, WARN, text, metadata)
    return CheckOutcome(SPEC.name, True, WARN, f"{figures}.", metadata)


CHECK = Check(SPEC, PARTITION, _evaluate)
