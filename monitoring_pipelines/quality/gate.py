"""The quality gate of one ``raw_metrics`` partition (one day of one tenant).

:func:`run_gate` splits the landed rows into accepted rows (for the ``metrics`` table) and
quarantined rows (each with one human reason), and reports one
:class:`~monitoring_pipelines.quality.checks.base.CheckOutcome` per check of the catalogue
(:mod:`monitoring_pipelines.quality.checks`). Great Expectations decides which rows break which
rule (see :mod:`monitoring_pipelines.quality.gx_suite`); the checks own the policy: the order in
which reasons are given, which duplicate wins, the tolerance that separates WARN from ERROR,
volume and freshness.

The module imports neither Dagster nor GX, so the asset checks can be declared while the code
location loads.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from monitoring_pipelines.quality import gx_suite
from monitoring_pipelines.quality.checks import CHECK_SPECS, of_level
from monitoring_pipelines.quality.checks.base import (
    ERROR,
    PARTITION,
    ROW,
    TABLE,
    CheckOutcome,
    GateConfig,
    Partition,
    not_evaluated,
    row_outcome,
    utc,
)
from monitoring_pipelines.quality.quarantine import quarantine_frame
from monitoring_pipelines.sources import records

__all__ = ["GateConfig", "GateResult", "run_gate"]

DEFAULT_CONFIG = GateConfig()


@dataclass
class GateResult:
    accepted: pd.DataFrame
    quarantined: pd.DataFrame
    checks: list[CheckOutcome]
    validation: dict
    rows_in: int

    @property
    def blocked(self) -> bool:
        """True when a blocking check failed with ERROR: nothing downstream may use it."""
        blocking = {spec.name for spec in CHECK_SPECS if spec.blocking}
        return any(c.name in blocking and not c.passed and c.severity == ERROR for c in self.checks)

    def check(self, name: str) -> CheckOutcome:
        return next(c for c in self.checks if c.name == name)


def _validate(partition: Partition) -> tuple[dict[str, list[gx_suite.Finding]], dict]:
    """Run the GX suite over the partition (plus the checks' helper columns), findings by check."""
    data = partition.data
    helpers = {gx_suite.ROW_ID: np.arange(len(data), dtype="int64")}
    for check in of_level(TABLE) + of_level(ROW):
        if check.prepare is not None:
            helpers.update(check.prepare(data))
    findings, validation = gx_suite.validate(
        data.assign(**helpers),
        tenant=partition.tenant,
        start=partition.start.to_pydatetime(),
        end=partition.end.to_pydatetime(),
    )
    by_check: dict[str, list[gx_suite.Finding]] = {}
    for f in findings:
        by_check.setdefault(f.check, []).append(f)
    return by_check, validation


def _judge_rows(
    partition: Partition, by_check: dict[str, list[gx_suite.Finding]]
) -> tuple[list[CheckOutcome], pd.DataFrame]:
    """Table then row checks: their outcomes, and the accepted rows (``partition.held`` filled)."""
    data, n = partition.data, len(partition.data)
    outcomes = []
    failed: tuple[str, str] | None = None
    for check in of_level(TABLE):
        outcome, reason = check.evaluate(by_check.get(check.spec.name, []), partition)
        outcomes.append(outcome)
        if reason is not None and failed is None:
            failed = (check.spec.name, reason)
    if failed is not None:
        name, reason = failed
        partition.held.update(dict.fromkeys(range(n), (name, name, reason)))
        outcomes += [not_evaluated(check.spec, name) for check in of_level(ROW)]
        return outcomes, records.empty_frame()
    for check in of_level(ROW):
        found = by_check.get(check.spec.name, [])
        outcome, newly = row_outcome(check.spec, check.evaluate(found, partition), found, partition)
        partition.held.update(newly)
        outcomes.append(outcome)
    keep = np.ones(n, dtype=bool)
    keep[list(partition.held)] = False
    accepted = data.loc[keep, list(records.FRAME_COLUMNS)].reset_index(drop=True)
    accepted["ts"] = accepted["ts"].dt.tz_convert(UTC)
    return outcomes, accepted


def run_gate(
    frame: pd.DataFrame,
    *,
    tenant: str,
    start: datetime,
    end: datetime,
    expected_series: int,
    now: datetime,
    config: GateConfig = DEFAULT_CONFIG,
) -> GateResult:
    """Gate the landed rows of one partition ``[start, end)`` of ``tenant``.

    Every input row ends up either in ``accepted`` or, once, in ``quarantined``.
    """
    start_ts, end_ts = utc(start), utc(end)
    if end_ts <= start_ts:
        raise ValueError(f"empty partition window [{start_ts}, {end_ts})")
    data = frame.reset_index(drop=True)
    partition = Partition(data, tenant, start_ts, end_ts, utc(now), expected_series, config)
    by_check, validation = _validate(partition)
    outcomes, accepted = _judge_rows(partition, by_check)
    outcomes += [check.evaluate(accepted, partition) for check in of_level(PARTITION)]
    order = {spec.name: i for i, spec in enumerate(CHECK_SPECS)}
    outcomes.sort(key=lambda outcome: order[outcome.name])
    quarantined = quarantine_frame(data, partition.held)
    n = len(data)
    if len(accepted) + len(quarantined) != n:
        raise AssertionError(
            f"gate lost rows: {n} in, {len(accepted)} accepted, {len(quarantined)} quarantined"
        )
    return GateResult(accepted, quarantined, outcomes, validation, n)
