"""The catalogue of quality checks on ``raw_metrics``: one module per check, one row here.

The order is the order of the asset checks in the UI and the precedence of reasons: a row that
breaks several row rules is quarantined once, under the first. Adding a check is a module holding
its :class:`~monitoring_pipelines.quality.checks.base.Check` (spec, GX expectations, evaluation)
and one line below; the suite, the gate, the asset checks and the quality page follow.
"""

from monitoring_pipelines.quality.checks import (
    freshness,
    keys_not_null,
    keys_unique,
    schema,
    timestamps_in_partition,
    values_finite,
    values_in_range,
    volume,
)
from monitoring_pipelines.quality.checks.base import Check, CheckSpec

CHECKS: tuple[Check, ...] = (
    schema.CHECK,
    keys_not_null.CHECK,
    values_finite.CHECK,
    values_in_range.CHECK,
    timestamps_in_partition.CHECK,
    keys_unique.CHECK,
    volume.CHECK,
    freshness.CHECK,
)

CHECK_SPECS: tuple[CheckSpec, ...] = tuple(check.spec for check in CHECKS)


def of_level(level: str) -> tuple[Check, ...]:
    return tuple(check for check in CHECKS if check.level == level)
