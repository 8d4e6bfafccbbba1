"""Gate and grid the day x tenant partitions of one run, the engine of the service behind
``raw_metrics`` and ``clean_metrics`` (:mod:`~monitoring_pipelines.partition_reports`: sources
pulled first, evidence written, what the UI shows per partition).

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
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd

from monitoring_pipelines.faults import crash_point
from monitoring_pipelines.grid import GridSummary, regular_grid
from monitoring_pipelines.quality.gate import GateConfig, GateResult, Window, run_gates
from monitoring_pipelines.sources.records import FRAME_COLUMNS
from monitoring_pipelines.warehouse import Warehouse

DAY = timedelta(days=1)

# The columns gridding reads back from ``metrics`` (not tags nor source: half the bytes).
GRID_INPUT = ("tenant", "service", "metric", "ts", "value")


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
