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

    points = frame.loc[frame["ts"] < stop, [*SERIES_KEYS, "ts", "value"]].copy()
    points["ts"] = points["ts"].dt.floor(freq)
    grouped = points.groupby([*SERIES_KEYS, "ts"], sort=False)["value"].agg(["mean", "size"])

    index = pd.MultiIndex.from_tuples(
        [(*key, step) for key in sorted(keys) for step in steps], names=[*SERIES_KEYS, "ts"]
    )
    grid = grouped.reindex(index)
    n_raw = grid["size"].fillna(0).astype("int64").to_numpy()
    out = grid.reset_index()
    out = pd.DataFrame(
        {
            "tenant": out["tenant"].astype(str),
            "service": out["service"].astype(str),
            "metric": out["metric"].astype(str),
            "ts": out["ts"],
            "value": out["mean"].astype("float64"),
            "is_gap": n_raw == 0,
            "n_raw": n_raw,
        }
    )
    summary = GridSummary(
        series=len(keys),
        steps=len(out),
        points_in=len(points),
        gaps=int(np.sum(n_raw == 0)),
        merged=int(np.sum(np.maximum(n_raw - 1, 0))),
    )
    return out, summary
