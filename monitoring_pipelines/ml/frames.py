"""Record rows or single ``timestamp,value`` series to the detectors' grid frames, and back.

Detectors work on one *group* at a time: a wide frame with a regular UTC ``DatetimeIndex``, one
column per metric and NaN for gaps (see :mod:`monitoring_pipelines.ml.base`). The rules are those of
:mod:`monitoring_pipelines.grid`, so the pipeline and the backtest see the same grid:

- a point belongs to the step that contains it (its timestamp floored to the step);
- several points in one step become their mean;
- a step without a point is a gap (NaN); values are never invented.

Non-finite values count as missing, and rows of a ``clean_metrics`` grid with ``is_gap`` true are
gaps. Every function that builds frames can also say, for each input row, which grid cell it landed
in (:class:`RowIndex`), so scores go back to the input as one output row per input row, in input
order, duplicates included.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

SERIES_KEYS = ("tenant", "service", "metric")
DEFAULT_STEP_SECONDS = 300
DEFAULT_STEP = pd.Timedelta(seconds=DEFAULT_STEP_SECONDS)

GroupKey = tuple[str, ...]


def to_utc(ts: Iterable) -> pd.DatetimeIndex:
    """Timestamps as a UTC ``DatetimeIndex``: naive ones are read as UTC, aware ones converted.

    Numbers are epoch seconds, or epoch milliseconds when they are too large to be seconds.
    """
    if isinstance(ts, pd.DatetimeIndex):
        index = ts
    elif isinstance(ts, pd.Series) and isinstance(
        ts.dtype, pd.DatetimeTZDtype | np.dtypes.DateTime64DType
    ):
        index = pd.DatetimeIndex(ts)
    else:
        raw = ts if isinstance(ts, pd.Series | np.ndarray) else pd.Series(list(ts))
        raw = pd.Series(raw)
        if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
            numbers = raw.to_numpy(dtype="float64")
            finite = numbers[np.isfinite(numbers)]
            unit = "ms" if finite.size and np.nanmax(np.abs(finite)) > 1e11 else "s"
            index = pd.DatetimeIndex(pd.to_datetime(numbers, unit=unit, utc=True))
        else:
            index = pd.DatetimeIndex(pd.to_datetime(raw, utc=True, format="mixed"))
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    return index.as_unit("ns")


def grid_step(index: pd.DatetimeIndex, default: pd.Timedelta | None = None) -> pd.Timedelta | None:
    """The step of a frame already on the grid: the median spacing of its rows (``as_unit``: an
    index may hold seconds, ms or us); ``default`` when it has fewer than two rows."""
    if len(index) < 2:
        return default
    return pd.Timedelta(int(np.median(np.diff(index.as_unit("ns").asi8))), unit="ns")


def infer_step(ts: Iterable) -> pd.Timedelta:
    """The median spacing between distinct timestamps, rounded to whole seconds when >= 1 s."""
    index = to_utc(ts)
    values = np.unique(index.asi8[~index.isna()])
    if values.size < 2:
        return pd.Timedelta(seconds=DEFAULT_STEP_SECONDS)
    step_ns = float(np.median(np.diff(values)))
    if step_ns >= 1e9:
        step_ns = round(step_ns / 1e9) * 1e9
    return pd.Timedelta(int(max(step_ns, 1)), unit="ns")


@dataclass(frozen=True)
class RowIndex:
    """Where each input row landed: its group, its column and its row in that group's frame.

    ``group[i]`` indexes ``keys``; ``position[i]`` is -1 for rows that landed nowhere (a missing
    timestamp).
    """

    keys: list[GroupKey]
    group: np.ndarray
    column: np.ndarray
    position: np.ndarray

    def __len__(self) -> int:
        return int(self.position.size)

    def take(self, frames: dict[GroupKey, pd.DataFrame], column: str | None = None) -> np.ndarray:
        """Per input row, the value of its cell in ``frames`` (NaN where there is none).

        ``column`` picks one column of every frame instead of the row's own metric column, for
        frames that hold one result per group (an ensemble of single-series scores, flags).
        """
        out = np.full(len(self), np.nan)
        for number, key in enumerate(self.keys):
            rows = np.flatnonzero((self.group == number) & (self.position >= 0))
            frame = frames.get(key)
            if rows.size == 0 or frame is None:
                continue
            values = frame.to_numpy(dtype="float64")
            if column is None:
                cols = frame.columns.get_indexer(self.column[rows])
            else:
                cols = np.full(rows.size, frame.columns.get_loc(column))
            positions = self.position[rows]
            ok = (cols >= 0) & (positions < len(frame))
            out[rows[ok]] = values[positions[ok], cols[ok]]
        return out

    def first_of_cell(self) -> np.ndarray:
        """True for the first input row of each (group, column, grid step) cell.

        Lets an event that starts in a grid step be reported once even if the step merged
        duplicate input rows.
        """
        frame = pd.DataFrame({"g": self.group, "c": self.column, "p": self.position})
        return ~frame.duplicated().to_numpy() & (self.position >= 0)


def _joined(records: pd.DataFrame, keys: list[str]) -> np.ndarray:
    if not keys:
        return np.full(len(records), "value", dtype=object)
    joined = records[keys[0]].astype(str)
    for key in keys[1:]:
        joined = joined + "/" + records[key].astype(str)
    return joined.to_numpy(dtype=object)


def _floor(index: pd.DatetimeIndex, step: pd.Timedelta) -> np.ndarray:
    values = index.asi8
    floored = values - np.mod(values, step.value)
    return np.where(index.isna(), np.iinfo(np.int64).min, floored)


def _wide(
    floored: np.ndarray,
    columns: np.ndarray,
    values: np.ndarray,
    step: pd.Timedelta,
) -> tuple[pd.DataFrame, np.ndarray]:
    """A wide grid frame from long cells, plus each cell's row position in it."""
    ok = floored != np.iinfo(np.int64).min
    start = floored[ok].min() if ok.any() else 0
    positions = np.where(ok, (floored - start) // step.value, -1)
    n = int(positions.max()) + 1 if ok.any() else 0
    names, col_codes = np.unique(columns.astype(str), return_inverse=True)
    sums = np.zeros((n, names.size))
    counts = np.zeros((n, names.size))
    good = ok & np.isfinite(values)
    np.add.at(sums, (positions[good], col_codes[good]), values[good])
    np.add.at(counts, (positions[good], col_codes[good]), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1.0), np.nan)
    index = pd.DatetimeIndex(start + np.arange(n, dtype=np.int64) * step.value, tz="UTC")
    frame = pd.DataFrame(means, index=index.as_unit("ns"), columns=[str(c) for c in names])
    return frame, positions


def _group_codes(records: pd.DataFrame, by: tuple[str, ...]) -> tuple[np.ndarray, list[tuple]]:
    """Each row's group number and the groups' keys, numbered in sorted key order.

    One sorted factorize per key column, combined arithmetically: a MultiIndex over string
    columns cost half a second per 250k rows, as much as scoring them.
    """
    codes = np.zeros(len(records), dtype=np.int64)
    if not by:
        return codes, [()]
    levels: list[np.ndarray] = []
    for key in by:
        column_codes, uniques = pd.factorize(records[key].astype(str), sort=True)
        if (column_codes < 0).any():
            raise ValueError(f"records have rows without a {key}")
        codes = codes * len(uniques) + column_codes
        levels.append(np.asarray(uniques, dtype=object))
    found, codes = np.unique(codes, return_inverse=True)
    keys = []
    for number in found:
        parts = []
        for level in reversed(levels):
            number, position = divmod(int(number), len(level))
            parts.append(str(level[position]))
        keys.append(tuple(reversed(parts)))
    return codes.reshape(-1), keys


def group_frames(
    records: pd.DataFrame,
    *,
    step_seconds: int = DEFAULT_STEP_SECONDS,
    by: Sequence[str] = ("tenant", "service"),
) -> dict[GroupKey, pd.DataFrame]:
    """Wide regular-grid frames, one per group of ``records`` (tenant, service, metric, ts, value).

    Columns are the series keys not in ``by`` joined with ``/`` (the metric, by default). Each
    frame runs from its group's first to its last step; steps without a point are NaN.
    """
    frames, _ = group_frames_with_rows(records, step_seconds=step_seconds, by=by)
    return frames


def group_frames_with_rows(
    records: pd.DataFrame,
    *,
    step_seconds: int | float = DEFAULT_STEP_SECONDS,
    by: Sequence[str] = ("tenant", "service"),
) -> tuple[dict[GroupKey, pd.DataFrame], RowIndex]:
    """:func:`group_frames` plus where each input row landed, to map scores back to the rows."""
    by = tuple(by)
    unknown = [k for k in by if k not in SERIES_KEYS]
    if unknown:
        raise ValueError(f"by must name series keys {SERIES_KEYS}, got {unknown}")
    missing = [c for c in (*SERIES_KEYS, "ts", "value") if c not in records.columns]
    if missing:
        raise ValueError(f"records lack columns {missing}")
    step = pd.Timedelta(seconds=step_seconds)
    rest = [k for k in SERIES_KEYS if k not in by]
    values = pd.to_numeric(records["value"], errors="coerce").to_numpy(dtype="float64")
    values = np.where(np.isfinite(values), values, np.nan)
    if "is_gap" in records.columns:
        values = np.where(records["is_gap"].fillna(False).to_numpy(dtype=bool), np.nan, values)
    floored = _floor(to_utc(records["ts"]), step)
    columns = _joined(records, rest)
    codes, keys = _group_codes(records, by)
    frames: dict[GroupKey, pd.DataFrame] = {}
    position = np.full(len(records), -1, dtype=np.int64)
    for number, key in enumerate(keys):
        rows = np.flatnonzero(codes == number)
        frame, pos = _wide(floored[rows], columns[rows], values[rows], step)
        frames[key] = frame
        position[rows] = pos
    return frames, RowIndex(keys=keys, group=np.asarray(codes), column=columns, position=position)


def single_series_frame(
    ts: Iterable,
    values: Iterable,
    name: str = "value",
    step: pd.Timedelta | int | float | None = None,
) -> pd.DataFrame:
    """A one-column grid frame from a possibly irregular, unsorted, duplicated series.

    ``step`` (a Timedelta or seconds) defaults to the median spacing of the timestamps.
    """
    frame, _ = single_series_frame_with_rows(ts, values, name, step)
    return frame


def single_series_frame_with_rows(
    ts: Iterable,
    values: Iterable,
    name: str = "value",
    step: pd.Timedelta | int | float | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """:func:`single_series_frame` plus each input row's position in the frame (-1: nowhere)."""
    index = to_utc(ts)
    numbers = pd.to_numeric(pd.Series(np.asarray(values, dtype=object)), errors="coerce")
    numbers = numbers.to_numpy(dtype="float64")
    if len(numbers) != len(index):
        raise ValueError(f"{len(index)} timestamps but {len(numbers)} values")
    if step is None:
        step = infer_step(index)
    elif not isinstance(step, pd.Timedelta):
        step = pd.Timedelta(seconds=float(step))
    floored = _floor(index, step)
    if len(index) == 0:
        empty = pd.DataFrame({name: pd.Series(dtype="float64")})
        empty.index = pd.DatetimeIndex([], tz="UTC").as_unit("ns")
        return empty, np.zeros(0, dtype=np.int64)
    frame, positions = _wide(floored, np.zeros(len(index), dtype=object), numbers, step)
    frame.columns = [name]
    return frame, positions


def to_rows(grid: pd.Series | pd.DataFrame | np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Per input row, the grid value of the step it landed in (NaN for rows that landed nowhere)."""
    values = np.asarray(grid, dtype="float64")
    if values.ndim == 2:
        values = values[:, 0]
    out = np.full(positions.size, np.nan)
    ok = (positions >= 0) & (positions < values.size)
    out[ok] = values[positions[ok]]
    return out
