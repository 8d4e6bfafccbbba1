"""Gate and grid the day x tenant partitions of one run: the service behind ``raw_metrics`` and
``clean_metrics``.

A run covers a range of days (a dropped file's days in one run). Per tenant and stretch of
consecutive days, landing is read once; the Great Expectations suite runs once over every row of
the run, all tenants together up to :data:`MAX_VALIDATION_ROWS` rows
(:func:`~monitoring_pipelines.quality.gate.run_gates`: GX's fixed cost is paid once), and each
partition is judged on its own rows. All partitions of the run are written in one transaction,
together with the partition version each was judged at (``partition_states``): a crash before
the commit leaves every partition as it was and still pending, so a re-run redoes it; after the
commit, nothing is pending that was not redone.

A partition with no landed row (a corrected file no longer has that day) and no configured
source is cleared rather than gated: its metrics, quality quarantine and grid are deleted, as if
the rows had never been ingested.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from monitoring_pipelines.faults import crash_point
from monitoring_pipelines.grid import GridSummary, regular_grid
from monitoring_pipelines.quality.checks import CHECK_SPECS
from monitoring_pipelines.quality.checks.base import ERROR, WARN, CheckOutcome
from monitoring_pipelines.quality.gate import GateConfig, GateResult, Window, run_gates
from monitoring_pipelines.quality.report import quality_url, write_validation
from monitoring_pipelines.sources.records import FRAME_COLUMNS
from monitoring_pipelines.warehouse import Warehouse

DAY = timedelta(days=1)

GAP_CHECK = "gap_fraction"
# The columns gridding reads back from ``metrics`` (not tags nor source: half the bytes).
GRID_INPUT = ("tenant", "service", "metric", "ts", "value")
# Above this share of empty grid steps the day is too sparse to train on without a look.
GAP_WARN_FRACTION = 0.2


@dataclass(frozen=True)
class Day:
    key: str  # "YYYY-MM-DD|tenant"
    date: str
    tenant: str
    start: pd.Timestamp
    end: pd.Timestamp


@dataclass
class GatedDay:
    day: Day
    # None when the partition had no landed row and was cleared.
    gate: GateResult | None
    landed_series: int = 0


@dataclass
class GriddedDay:
    day: Day
    # None when the gate blocked the partition (nothing downstream may use it) or cleared it.
    summary: GridSummary | None
    grid: pd.DataFrame | None
    blocked: bool = False


def days_of(keys: list[str]) -> list[Day]:
    out = []
    for key in sorted(set(keys)):
        date, tenant = key.split("|", 1)
        start = pd.Timestamp(date, tz="UTC")
        out.append(Day(key, date, tenant, start, start + DAY))
    return out


def stretches(days: list[Day]) -> list[list[Day]]:
    """Each tenant's runs of consecutive days, so each is read with one query."""
    out: list[list[Day]] = []
    for day in sorted(days, key=lambda d: (d.tenant, d.start)):
        last = out[-1][-1] if out else None
        if last is not None and last.tenant == day.tenant and last.end == day.start:
            out[-1].append(day)
        else:
            out.append([day])
    return out


def _by_day(frame: pd.DataFrame, days: list[Day]) -> list[pd.DataFrame]:
    if frame.empty:
        return [frame.iloc[:0] for _ in days]
    floor = frame["ts"].dt.floor("D")
    return [frame[(floor == d.start).to_numpy()].reset_index(drop=True) for d in days]


def _series(frame: pd.DataFrame) -> set[tuple[str, str, str]]:
    """The distinct (tenant, service, metric) of ``frame``, deduplicated before leaving pandas."""
    keys = frame[["tenant", "service", "metric"]].drop_duplicates()
    return set(keys.itertuples(index=False, name=None))


# Rows of one GX validation at most: a run's stretches share one validation up to this size (GX's
# fixed cost, ~0.25 s, paid once), beyond it memory would grow with the run.
MAX_VALIDATION_ROWS = 1_000_000

# A partition to gate: its day, landed rows, and for the first day of a stretch the series
# accepted the day before (None for the other days: the previous day's result tells).
Todo = tuple[Day, pd.DataFrame, set | None]


def _plan(wh: Warehouse, keys: list[str], clear_empty: bool) -> tuple[list[list[Todo]], list]:
    """The partitions to gate, read per tenant stretch and batched for validation by whole
    stretches, and the partitions cleared for having no landed row."""
    batches: list[list[Todo]] = [[]]
    cleared: list[GatedDay] = []
    for stretch in stretches(days_of(keys)):
        tenant, first, last = stretch[0].tenant, stretch[0].start, stretch[-1].end
        landed = wh.read_records("landing", tenant=tenant, start=first, end=last)
        landed = landed.sort_values(["source", "source_row"], kind="stable")[list(FRAME_COLUMNS)]
        before = set(wh.series("metrics", tenant, first - DAY, first))
        rows = sum(len(f) for _, f, _ in batches[-1])
        if rows and rows + len(landed) > MAX_VALIDATION_ROWS:
            batches.append([])
        for day, frame in zip(stretch, _by_day(landed, stretch), strict=True):
            if len(frame) or not clear_empty:
                batches[-1].append((day, frame, before if day.start == first else None))
            else:
                cleared.append(GatedDay(day, None))
    return [b for b in batches if b], cleared


def _gate_batch(todo: list[Todo], *, config: GateConfig, now: datetime) -> list[GatedDay]:
    """Gate ``todo`` with one GX validation, each partition judged on its own rows."""
    series_today = [_series(f) for _, f, _ in todo]

    def expected(i: int, previous: GateResult | None) -> int:
        # The series landed today, and those accepted the day before (silent ones count).
        day, _, before = todo[i]
        if before is not None:
            seen = before
        elif i > 0 and todo[i - 1][0].tenant == day.tenant and todo[i - 1][0].end == day.start:
            seen = _series(previous.accepted) if previous is not None else set()
        else:
            seen = set()
        return len(series_today[i] | seen)

    gates = run_gates(
        [f for _, f, _ in todo],
        [Window(d.tenant, d.start, d.end) for d, _, _ in todo],
        now=now,
        config=config,
        expected_series=expected,
    )
    return [
        GatedDay(d, g, len(s)) for (d, _, _), g, s in zip(todo, gates, series_today, strict=True)
    ]


def gate_days(
    wh: Warehouse,
    keys: list[str],
    *,
    config: GateConfig,
    now: datetime,
    clear_empty: bool = True,
) -> list[GatedDay]:
    """Gate every partition of ``keys`` and write the outcome (see the module doc)."""
    states = wh.partition_states(keys)
    batches, out = _plan(wh, keys, clear_empty)
    for todo in batches:
        out += _gate_batch(todo, config=config, now=now)
    out.sort(key=lambda g: g.day.key)
    with wh.transaction() as conn:
        for i, gated in enumerate(out):
            day, gate = gated.day, gated.gate
            version = states[day.key].version if day.key in states else 0
            accepted = gate.accepted if gate is not None else pd.DataFrame()
            wh.replace_partition("metrics", day.tenant, day.start, day.end, accepted, conn=conn)
            quarantined = gate.quarantined if gate is not None else pd.DataFrame()
            wh.replace_quarantine(quarantined, stage="quality", partition_key=day.key, conn=conn)
            if gate is None:
                wh.replace_partition(
                    "clean_metrics", day.tenant, day.start, day.end, pd.DataFrame(), conn=conn
                )
                wh.record_gridded(day.key, version, conn=conn)
            wh.record_gated(day.key, version, gate is not None and gate.blocked, conn=conn)
            if i == 0:
                crash_point("gate")
    return out


def grid_days(
    wh: Warehouse,
    keys: list[str],
    *,
    resolution_seconds: int,
    now: datetime,
    on_day: Callable[[GriddedDay], None] | None = None,
) -> list[GriddedDay]:
    """Grid every partition of ``keys`` the gate let through; blocked ones are left as they are."""
    states = wh.partition_states(keys)
    out: list[GriddedDay] = []
    for stretch in stretches(days_of(keys)):
        tenant, first, last = stretch[0].tenant, stretch[0].start, stretch[-1].end
        accepted = wh.read_records(
            "metrics", tenant=tenant, start=first - DAY, end=last, columns=GRID_INPUT
        )
        frames = _by_day(accepted, [Day("", "", tenant, first - DAY, first), *stretch])
        for previous, frame, day in zip(frames, frames[1:], stretch, strict=False):
            state = states.get(day.key)
            if state is not None and state.blocked:
                out.append(GriddedDay(day, None, None, blocked=True))
                continue
            series = sorted(_series(previous))
            grid, summary = regular_grid(
                frame,
                start=day.start,
                end=day.end,
                resolution_seconds=resolution_seconds,
                until=now,
                series=series,
            )
            out.append(GriddedDay(day, summary, grid))
    with wh.transaction() as conn:
        for i, gridded in enumerate(out):
            day = gridded.day
            if gridded.grid is None:
                continue
            wh.replace_partition(
                "clean_metrics", day.tenant, day.start, day.end, gridded.grid, conn=conn
            )
            state = states.get(day.key)
            wh.record_gridded(day.key, state.gated_version if state else 0, conn=conn)
            if i == 0:
                crash_point("grid")
    return out


# -- the use cases behind raw_metrics and clean_metrics ------------------------------------------


@dataclass(frozen=True)
class IngestOptions:
    """What gating needs from the settings: where evidence goes and where the UI reaches it."""

    quality_dir: Path
    sources_file: Path
    files_url: str
    tolerance: float = 0.01
    resolution_seconds: int = 300


@dataclass
class PartitionReport:
    """What one partition of a run shows in the UI: its metadata, links and check outcomes.

    ``blocked_by`` names the blocking checks that failed: such a partition is not materialized,
    so the UI shows it failed rather than done."""

    key: str  # "YYYY-MM-DD|tenant"
    metadata: dict
    links: dict[str, str] = field(default_factory=dict)
    checks: list[CheckOutcome] = field(default_factory=list)
    blocked_by: tuple[str, ...] = ()


@dataclass
class RunReport:
    partitions: list[PartitionReport]
    totals: dict

    @property
    def blocked(self) -> list[PartitionReport]:
        return [p for p in self.partitions if p.blocked_by]


def pull_configured_sources(wh: Warehouse, sources_file: Path, keys: list[str]) -> list[str]:
    """Fetch the days of ``keys`` from the Prometheus and SQL sources of ``sources_file`` into
    landing (rows a source could not read go to quarantine); returns ``source@day`` keys pulled."""
    if not sources_file.exists():
        return []
    from monitoring_pipelines.sources import pseudonyms
    from monitoring_pipelines.sources.config import load_sources

    pseudonymiser = pseudonyms.from_environment()
    pulled = []
    for day, source in ((d, s) for d in days_of(keys) for s in load_sources(sources_file)):
        result = source.fetch(day.start.to_pydatetime(), day.end.to_pydatetime(), tenant=day.tenant)
        records = pseudonyms.apply(pseudonymiser, result.records)
        rejected = pseudonyms.apply_rejected(pseudonymiser, result.rejected)
        for name, rows in records.groupby("source", sort=True):
            key = f"{name}@{day.key}"
            wh.replace_source("landing", key, rows.assign(source=key))
            pulled.append(key)
        for name, rows in rejected.groupby("source", sort=True):
            key = f"{name}@{day.key}"
            wh.replace_quarantine(rows.assign(source=key), stage="parse", source=key)
    return pulled


def _blocking_failures(checks: list[CheckOutcome]) -> tuple[str, ...]:
    blocking = {spec.name for spec in CHECK_SPECS if spec.blocking}
    return tuple(
        c.name for c in checks if c.name in blocking and not c.passed and c.severity == ERROR
    )


def gate_partitions(
    wh: Warehouse, keys: list[str], options: IngestOptions, *, now: datetime
) -> RunReport:
    """Pull the configured sources, gate every partition of ``keys`` (:func:`gate_days`), write
    each one's GX evidence and report what the UI shows for it."""
    pulled = pull_configured_sources(wh, options.sources_file, keys)
    gated = gate_days(
        wh,
        keys,
        config=GateConfig(
            tolerance=options.tolerance, resolution_seconds=options.resolution_seconds
        ),
        now=now,
        clear_empty=not options.sources_file.exists(),
    )
    reports = []
    totals = {"partitions": len(keys), "rows_in": 0, "accepted": 0, "quarantined": 0, "blocked": 0}
    for item in gated:
        day, gate = item.day, item.gate
        where = {"date": day.date, "tenant": day.tenant}
        if gate is None:
            reports.append(
                PartitionReport(
                    day.key, {"dagster/row_count": 0, "rows_in": 0, "cleared": True, **where}
                )
            )
            continue
        write_validation(gate, options.quality_dir, day.key)
        sources = sorted(set(gate.accepted["source"]) | set(gate.quarantined["source"]))
        reports.append(
            PartitionReport(
                day.key,
                {
                    "dagster/row_count": len(gate.accepted),
                    "rows_in": gate.rows_in,
                    "accepted": len(gate.accepted),
                    "quarantined": len(gate.quarantined),
                    "series": int(gate.accepted[["service", "metric"]].drop_duplicates().shape[0]),
                    "sources": sources,
                    "pulled_from_configured_sources": sum(1 for p in pulled if p.endswith(day.key)),
                    **where,
                },
                links={
                    name: quality_url(options.files_url, day.key, name)
                    for name in ("gx_report", "gx_validation", "quarantine_rows")
                },
                checks=list(gate.checks),
                blocked_by=_blocking_failures(gate.checks),
            )
        )
        totals["rows_in"] += gate.rows_in
        totals["accepted"] += len(gate.accepted)
        totals["quarantined"] += len(gate.quarantined)
        totals["blocked"] += int(gate.blocked)
    wh.settle_ingests()
    return RunReport(reports, totals)


def grid_partitions(
    wh: Warehouse, keys: list[str], *, resolution_seconds: int, now: datetime
) -> RunReport:
    """Grid every partition of ``keys`` the gate let through (:func:`grid_days`) and report what
    the UI shows for each, with the gap check; a blocked day is reported blocked, not gridded."""
    reports = []
    steps = 0
    for item in grid_days(wh, keys, resolution_seconds=resolution_seconds, now=now):
        day, summary, grid = item.day, item.summary, item.grid
        where = {"date": day.date, "tenant": day.tenant}
        if summary is None:
            reports.append(
                PartitionReport(
                    day.key,
                    {"blocked": item.blocked, "gridded": False, **where},
                    # The gate's blocking checks are on raw_metrics; this names the cause.
                    blocked_by=("raw_metrics quality checks",) if item.blocked else (),
                )
            )
            continue
        steps += summary.steps
        per_metric = grid.groupby("metric")["is_gap"].mean().round(4).to_dict() if len(grid) else {}
        gap = CheckOutcome(
            name=GAP_CHECK,
            passed=summary.gap_fraction <= GAP_WARN_FRACTION,
            severity=WARN,
            description=f"At most {GAP_WARN_FRACTION:.0%} of the day's grid steps are gaps.",
            metadata={
                "gap_fraction": round(summary.gap_fraction, 4),
                "gaps": summary.gaps,
                "grid_steps": summary.steps,
                "gap_fraction_by_metric": per_metric,
            },
        )
        reports.append(
            PartitionReport(
                day.key,
                {
                    "dagster/row_count": summary.steps,
                    "series": summary.series,
                    "grid_steps": summary.steps,
                    "points_in": summary.points_in,
                    "gaps": summary.gaps,
                    "merged_points": summary.merged,
                    "resolution_seconds": resolution_seconds,
                    **where,
                },
                checks=[gap],
            )
        )
    wh.settle_ingests()
    return RunReport(reports, {"partitions": len(reports), "grid_steps": steps})
