"""Gate and grid the day x tenant partitions of one run: the service behind ``raw_metrics`` and
``clean_metrics``.

A run covers a range of days (a dropped file's days in one run). Per tenant and stretch of
consecutive days, landing is read once, the Great Expectations suite runs once over every row
(:func:`~monitoring_pipelines.quality.gate.run_gates`) and each partition is judged on its own
rows. All partitions of the run are written in one transaction, together with the partition
version each was judged at (``partition_states``): a crash before the commit leaves every
partition as it was and still pending, so a re-run redoes it; after the commit, nothing is
pending that was not redone.

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
    out: list[GatedDay] = []
    for stretch in stretches(days_of(keys)):
        tenant, first, last = stretch[0].tenant, stretch[0].start, stretch[-1].end
        landed = wh.read_records("landing", tenant=tenant, start=first, end=last)
        landed = landed.sort_values(["source", "source_row"], kind="stable")[list(FRAME_COLUMNS)]
        frames = _by_day(landed, stretch)
        before = set(wh.series("metrics", tenant, first - DAY, first))
        kept = [i for i, f in enumerate(frames) if len(f) or not clear_empty]
        todo = [(stretch[i], frames[i]) for i in kept]
        out += [GatedDay(d, None) for i, d in enumerate(stretch) if i not in kept]
        series_today = [
            set(zip(f["tenant"], f["service"], f["metric"], strict=True)) for _, f in todo
        ]

        def expected(
            i: int,
            previous: GateResult | None,
            todo=todo,
            series=series_today,
            first=first,
            before=before,
        ) -> int:
            # The series landed today, and those accepted the day before (silent ones count).
            day = todo[i][0]
            if day.start == first:
                seen = before
            elif i > 0 and todo[i - 1][0].end == day.start and previous is not None:
                acc = previous.accepted
                seen = set(zip(acc["tenant"], acc["service"], acc["metric"], strict=True))
            else:
                seen = set()
            return len(series[i] | seen)

        gates = run_gates(
            [f for _, f in todo],
            [Window(d.tenant, d.start, d.end) for d, _ in todo],
            now=now,
            config=config,
            expected_series=expected,
        )
        out += [
            GatedDay(d, g, len(s)) for (d, _), g, s in zip(todo, gates, series_today, strict=True)
        ]
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
        accepted = wh.read_records("metrics", tenant=tenant, start=first - DAY, end=last)
        frames = _by_day(accepted, [Day("", "", tenant, first - DAY, first), *stretch])
        for previous, frame, day in zip(frames, frames[1:], stretch, strict=False):
            state = states.get(day.key)
            if state is not None and state.blocked:
                out.append(GriddedDay(day, None, None, blocked=True))
                continue
            series = sorted(
                set(zip(previous["tenant"], previous["service"], previous["metric"], strict=True))
            )
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
