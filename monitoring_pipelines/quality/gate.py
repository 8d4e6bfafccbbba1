"""The quality gate of ``raw_metrics`` partitions (each one day of one tenant).

:func:`run_gates` gates the partitions of a whole run with ONE Great Expectations validation and
judges each partition apart, exactly as :func:`run_gate` judges a partition alone. For each
partition it splits the landed rows into accepted rows (for the ``metrics`` table) and
quarantined rows (each with one human reason), and reports one
:class:`~monitoring_pipelines.quality.checks.base.CheckOutcome` per check of the catalogue
(:mod:`monitoring_pipelines.quality.checks`). Great Expectations decides which rows break which
rule (see :mod:`monitoring_pipelines.quality.gx_suite`); the checks own the policy: the order in
which reasons are given, which duplicate wins, the tolerance that separates WARN from ERROR,
volume and freshness.

The module imports neither Dagster nor GX, so the asset checks can be declared while the code
location loads.
"""

from collections.abc import Callable, Sequence
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

__all__ = ["GateConfig", "GateResult", "Window", "run_gate", "run_gates"]

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


@dataclass(frozen=True)
class Window:
    """One partition of a run: its tenant and ``[start, end)``."""

    tenant: str
    start: datetime
    end: datetime


def _helpers(data: pd.DataFrame, windows: Sequence[Window], sizes: list[int]) -> dict:
    """The checks' helper columns over the run's rows (partition bounds per row among them)."""
    from monitoring_pipelines.quality.checks import timestamps_in_partition as tip

    which = np.repeat(np.arange(len(windows)), sizes)
    starts = pd.DatetimeIndex([utc(w.start) for w in windows]).as_unit("ns")
    ends = pd.DatetimeIndex([utc(w.end) for w in windows]).as_unit("ns")
    helpers = {
        gx_suite.ROW_ID: np.arange(len(data), dtype="int64"),
        tip.START: starts[which],
        tip.END: ends[which],
        tip.TENANT: np.array([w.tenant for w in windows], dtype=object)[which],
    }
    for check in of_level(TABLE) + of_level(ROW):
        if check.prepare is not None:
            helpers.update(check.prepare(data))
    return helpers


def _validate(
    data: pd.DataFrame, windows: Sequence[Window], sizes: list[int]
) -> list[tuple[dict[str, list[gx_suite.Finding]], dict]]:
    """Run the GX suite once over every partition's rows; findings by check, per partition."""
    work = data.assign(**_helpers(data, windows, sizes))
    findings, validation = gx_suite.validate(work)
    bounds = list(zip(np.cumsum([0, *sizes[:-1]]).tolist(), np.cumsum(sizes).tolist(), strict=True))
    out = []
    for mine, part_validation in gx_suite.split(findings, validation, bounds):
        by_check: dict[str, list[gx_suite.Finding]] = {}
        for f in mine:
            by_check.setdefault(f.check, []).append(f)
        out.append((by_check, part_validation))
    return out


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
    return run_gates(
        [frame],
        [Window(tenant, start, end)],
        now=now,
        config=config,
        expected_series=lambda i, previous: expected_series,
    )[0]


def run_gates(
    frames: Sequence[pd.DataFrame],
    windows: Sequence[Window],
    *,
    now: datetime,
    expected_series: Callable[[int, "GateResult | None"], int],
    config: GateConfig = DEFAULT_CONFIG,
) -> list[GateResult]:
    """Gate several partitions with one GX validation: ``frames[i]`` holds the landed rows of
    ``windows[i]``. Each partition is judged on its own rows as :func:`run_gate` would judge it;
    ``expected_series(i, previous)`` gives the series its volume check expects, ``previous``
    being the result of partition ``i - 1`` (judged first, None for the first).
    """
    if len(frames) != len(windows):
        raise ValueError("one frame per window")
    for w in windows:
        if utc(w.end) <= utc(w.start):
            raise ValueError(f"empty partition window [{utc(w.start)}, {utc(w.end)})")
    if not windows:
        return []
    parts = [f.reset_index(drop=True) for f in frames]
    sizes = [len(f) for f in parts]
    # One frame for one validation; a lone frame keeps its dtypes exactly (the schema check).
    data = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    per_partition = _validate(data, windows, sizes)
    results: list[GateResult] = []
    previous = None
    for i, (window, part) in enumerate(zip(windows, parts, strict=True)):
        by_check, validation = per_partition[i]
        partition = Partition(
            part,
            window.tenant,
            utc(window.start),
            utc(window.end),
            utc(now),
            expected_series(i, previous),
            config,
        )
        previous = _judge(partition, by_check, validation)
        results.append(previous)
    return results


def _judge(partition: Partition, by_check: dict, validation: dict) -> GateResult:
    data = partition.data
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
