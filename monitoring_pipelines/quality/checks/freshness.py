"""freshness: the newest accepted row is recent enough (warns only)."""

import pandas as pd

from monitoring_pipelines.quality.checks.base import (
    PARTITION,
    WARN,
    Check,
    CheckOutcome,
    CheckSpec,
    Partition,
    utc,
)

SPEC = CheckSpec(
    "freshness",
    "The newest accepted row is recent enough: no older than the allowed lag before the end "
    "of the partition, or before now for today's partition. Warns only.",
    False,
)


def _evaluate(accepted: pd.DataFrame, partition: Partition) -> CheckOutcome:
    lag_allowed = partition.config.freshness_lag_seconds
    reference = min(partition.end, partition.now)
    limit = reference - pd.Timedelta(seconds=lag_allowed)
    metadata: dict = {"reference_ts": reference.isoformat(), "max_lag_seconds": lag_allowed}
    if accepted.empty:
        metadata["newest_ts"] = "none"
        return CheckOutcome(SPEC.name, False, WARN, "No accepted row.", metadata)
    newest = utc(accepted["ts"].max())
    lag = (reference - newest).total_seconds()
    metadata.update({"newest_ts": newest.isoformat(), "lag_seconds": lag})
    text = f"Newest row {newest.isoformat()}, {lag:,.0f} s before {reference.isoformat()}"
    if newest >= limit:
        return CheckOutcome(SPEC.name, True, WARN, f"{text}.", metadata)
    text += f": more than the {lag_allowed:,} s allowed."
    return CheckOutcome(SPEC.name, False, WARN, text, metadata)


CHECK = Check(SPEC, PARTITION, _evaluate)
