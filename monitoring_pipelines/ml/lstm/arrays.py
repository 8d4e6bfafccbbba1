"""The LSTM's NumPy side: a frame as the arrays the network reads, training sequences, and the
robust scales that normalise values, changes and errors."""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from monitoring_pipelines.ml.frames import grid_step


@dataclass(frozen=True)
class Arrays:
    inputs: np.ndarray  # (rows, 2 * columns + time features) float32: what the LSTM reads
    z: np.ndarray  # (rows, columns) normalised values, NaN at gaps: what is forecast
    last: np.ndarray  # (rows, columns) last observed normalised value up to each row, 0 before any


def arrays(frame: pd.DataFrame, median: np.ndarray, scale: np.ndarray, clip: float) -> Arrays:
    """``frame`` normalised by ``median`` and ``scale``, with the inputs the LSTM reads: the last
    observed value (clipped to ``clip``), whether it was observed now, and the time of day."""
    z = (finite_values(frame) - median) / scale
    observed = np.isfinite(z)
    last = _ffill(z)
    seconds = (frame.index.as_unit("ns").asi8 // 1_000_000_000) % 86400
    angle = 2.0 * np.pi * seconds / 86400.0
    inputs = np.concatenate(
        [
            np.clip(last, -clip, clip),
            observed.astype(np.float64),
            np.sin(angle)[:, None],
            np.cos(angle)[:, None],
        ],
        axis=1,
    ).astype(np.float32)
    return Arrays(inputs=inputs, z=z, last=last)


def sequences(
    data: Arrays, starts: np.ndarray, lookback: int, block: int, diff_scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, targets (next-step change in typical changes) and weights for ``starts``."""
    length = lookback + block - 1
    columns = data.z.shape[1]
    if not len(starts):
        empty = np.zeros((0, length, columns), dtype=np.float32)
        return np.zeros((0, length, data.inputs.shape[1]), np.float32), empty, empty
    target = np.full_like(data.z, np.nan)
    target[1:] = (data.z[1:] - data.last[:-1]) / diff_scale
    windows = np.lib.stride_tricks.sliding_window_view(data.inputs, length, axis=0)
    x = np.ascontiguousarray(windows[starts].transpose(0, 2, 1))
    # Output step p of a sequence starting at a forecasts row a + p + 1.
    rows = starts[:, None] + np.arange(1, length + 1)[None, :]
    y = target[rows]
    w = np.isfinite(y) & (np.arange(length) >= lookback - 1)[None, :, None]
    return x, np.nan_to_num(y).astype(np.float32), w.astype(np.float32)


def finite_values(frame: pd.DataFrame) -> np.ndarray:
    # A copy: pandas hands out read-only views of its data.
    values = np.array(frame.to_numpy(dtype=np.float64, na_value=np.nan))
    values[~np.isfinite(values)] = np.nan
    return values


def level_scales(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and robust spread (IQR / 1.349, else std, else 1) per column."""
    columns = values.shape[1]
    median = np.zeros(columns)
    scale = np.ones(columns)
    for c in range(columns):
        col = values[:, c][np.isfinite(values[:, c])]
        if not col.size:
            continue
        median[c] = float(np.median(col))
        q75, q25 = np.percentile(col, [75, 25])
        scale[c] = _first_positive((q75 - q25) / 1.349, float(np.std(col)))
    return median, scale


def diff_scales(z: np.ndarray) -> np.ndarray:
    """Robust spread of one-step changes (MAD, else std, else 1) per column, normalised units."""
    diffs = np.diff(z, axis=0)
    scale = np.ones(z.shape[1])
    for c in range(z.shape[1]):
        d = diffs[:, c][np.isfinite(diffs[:, c])]
        if d.size:
            mad = 1.4826 * float(np.median(np.abs(d - np.median(d))))
            scale[c] = _first_positive(mad, float(np.std(d)))
    return np.maximum(scale, 1e-3)


def _first_positive(*candidates: float) -> float:
    for value in candidates:
        if np.isfinite(value) and value > 1e-12:
            return float(value)
    return 1.0


def nan_median_abs(errors: np.ndarray) -> np.ndarray:
    result = np.full(errors.shape[1], np.nan)
    for c in range(errors.shape[1]):
        col = np.abs(errors[:, c][np.isfinite(errors[:, c])])
        if col.size:
            result[c] = float(np.median(col))
    return result


def _ffill(z: np.ndarray) -> np.ndarray:
    """Last observed value up to each row (causal), 0 (the training median) before the first."""
    n = z.shape[0]
    position = np.where(np.isfinite(z), np.arange(n)[:, None], -1)
    position = np.maximum.accumulate(position, axis=0) if n else position
    filled = np.take_along_axis(z, np.maximum(position, 0), axis=0)
    return np.where(position >= 0, filled, 0.0)


def spread(low: int, high: int, count: int) -> np.ndarray:
    """Up to ``count`` evenly spaced integers in [low, high]."""
    if high < low:
        return np.zeros(0, dtype=np.int64)
    if high - low + 1 <= count:
        return np.arange(low, high + 1)
    return np.unique(np.linspace(low, high, count).round().astype(np.int64))


def median_step_ns(index: pd.DatetimeIndex) -> int:
    step = grid_step(index)
    if step is None:
        raise ValueError("lstm: cannot tell the step of a frame with fewer than two rows")
    return step.value


def regular(frame: pd.DataFrame, step: pd.Timedelta) -> pd.DataFrame:
    """``frame`` on its full grid: missing rows would otherwise shift every window in time."""
    if len(frame) < 2:
        return frame
    if (np.diff(frame.index.as_unit("ns").asi8) == int(step.value)).all():
        return frame
    grid = pd.date_range(frame.index[0], frame.index[-1], freq=step)
    return frame.reindex(grid)
