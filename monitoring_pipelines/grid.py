"""Put accepted metric records on one regular time grid per series.

Rules, stated once because models, reports and backtests all depend on them:
- A point belongs to the grid step that contains it (its timestamp floored to the resolution).
- Several points in one step (duplicates after flooring, irregular scrapes) become their mean;
  ``n_raw`` keeps how many there were.
- A step with no point is a gap: ``value`` is NULL and ``is_gap`` is true. Values are never
  invented; models decide how to treat gaps.
- Steps in the future (the current day's partition) are not gaps and are not emitted.
"""

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

SERIES_KEYS = ["tenant", "service", "metric"]
GRID_COLUMNS = [*SERIES_KEYS, "ts", "value", "is_gap", "n_raw"]


@dataclass(frozen=True)
class GridSummary:
    series: int
    steps: int
    points_in: int
    gaps: int
    merged: int

    @property
    def gap_fraction(self) -> float:
        return self.gaps / self.steps if self.steps else 0.0


def regular_grid(
    frame: pd.DataFrame,
    *,
    start: datetime,
    end: datetime,
    resolution_seconds: int,
    until: datetime | None = None,
    series: list[tuple[str, str, str]] | None = None,
) -> tuple[pd.DataFrame, GridSummary]:
    """Grid ``frame`` (record columns, UTC ``ts``) over ``[start, min(end, until))``.

    ``series`` lists series expected in this window even if they sent nothing (they come out as
    all gaps); by default the series present in ``frame``.
    """
    freq = pd.Timedelta(seconds=resolution_seconds)
    stop = pd.Timestamp(end)
    if until is not None:
        stop = min(stop, pd.Timestamp(until).floor(freq) + freq)
    steps = pd.date_range(pd.Timestamp(start), stop, freq=freq, inclusive="left")
    keys = set(series or [])
    if not frame.empty:
        keys |= set(frame[SERIES_KEYS].drop_duplicates().itertuples(index=False, name=None))
    if not keys or len(steps) == 0:
        return pd.DataFrame(columns=GRID_COLUMNS), GridSummary(0, 0, len(frame), 0, 0)

    points = frame.loc[frame["ts"] < stop, [*SERIES_KEYS, "ts", "value"]]
    ordered = sorted(keys)
    n_steps = len(steps)
    n_raw, value = _cells(points, ordered, steps, resolution_seconds)
    which = np.repeat(np.arange(len(ordered)), n_steps)
    out = pd.DataFrame(
        {
            name: np.array([key[i] for key in ordered], dtype=object)[which]
            for i, name in enumerate(SERIES_KEYS)
        }
    ).astype(str)
    out["ts"] = steps.take(np.tile(np.arange(n_steps), len(ordered)))
    out["value"] = value
    out["is_gap"] = n_raw == 0
    out["n_raw"] = n_raw
    summary = GridSummary(
        series=len(keys),
        steps=len(out),
        points_in=len(points),
        gaps=int(np.sum(n_raw == 0)),
        merged=int(np.sum(np.maximum(n_raw - 1, 0))),
    )
    return out, summary


def _cells(
    points: pd.DataFrame,
    keys: list[tuple[str, str, str]],
    steps: pd.DatetimeIndex,
    resolution_seconds: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per grid cell (series-major, then step): how many points fell in it and their mean (NaN
    for none). Vectorised: a cell number per point, then ``bincount``, no per-row Python."""
    n_cells = len(keys) * len(steps)
    step_ns = resolution_seconds * 1_000_000_000
    ts = points["ts"].dt.as_unit("ns").to_numpy("datetime64[ns]").view("int64")
    offset = ts - ts % step_ns - int(steps[0].value)
    step = offset // step_ns
    index = pd.MultiIndex.from_tuples(keys)
    series = index.get_indexer(pd.MultiIndex.from_frame(points[SERIES_KEYS]))
    on_grid = (offset % step_ns == 0) & (step >= 0) & (step < len(steps)) & (series >= 0)
    cell = series[on_grid] * len(steps) + step[on_grid]
    values = points["value"].to_numpy(dtype="float64")[on_grid]
    n_raw = np.bincount(cell, minlength=n_cells).astype("int64")
    finite = ~np.isnan(values)
    total = np.bincount(cell[finite], weights=values[finite], minlength=n_cells)
    counted = np.bincount(cell[finite], minlength=n_cells)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counted > 0, total / np.maximum(counted, 1), np.nan)
    return n_raw, mean
