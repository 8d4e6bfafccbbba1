"""Causal building blocks of the features: trailing windows, rolling quantiles and means, the
seasonal reference, robust scales, time-of-day features."""

from collections.abc import Sequence

import numpy as np
import pandas as pd

from monitoring_pipelines.ml.features.config import (
    _DAY_SECONDS,
    _IQR_TO_SIGMA,
    _SORT_LIMIT,
    _SORT_MAX_WINDOW,
    FeatureConfig,
)
from monitoring_pipelines.ml.frames import DEFAULT_STEP, grid_step

# -- building blocks -------------------------------------------------------------------------------


def anchors(index: pd.DatetimeIndex, stride: int) -> np.ndarray:
    """Rows whose absolute step number is a multiple of ``stride`` (all rows for stride 1)."""
    if stride <= 1 or len(index) < 2:
        return np.ones(len(index), dtype=bool)
    step_ns = grid_step(index, DEFAULT_STEP).value
    return (index.as_unit("ns").asi8 // step_ns) % stride == 0


def trailing_quantiles(
    values: np.ndarray,
    index: pd.DatetimeIndex,
    quantiles: Sequence[float],
    *,
    window: int,
    min_periods: int,
    stride: int = 1,
    lag: int = 1,
) -> list[np.ndarray]:
    """Per row ``t`` and column: quantiles of the ``window`` steps ending ``lag`` before ``t``.

    With ``stride`` > 1 only anchor rows (see :func:`anchors`) are sampled, and row ``t`` uses
    the statistics of the last anchor at or before ``t - lag``.
    """
    n = values.shape[0]
    stride = max(1, stride)
    where = np.flatnonzero(anchors(index, stride))
    latest = np.searchsorted(where, np.arange(n) - lag, side="right") - 1
    valid = (latest >= 0)[:, None]
    safe = np.maximum(latest, 0)
    # Only the anchors some row reads: a frame's first rows look back past its start.
    used = np.unique(safe[latest >= 0])
    if not len(used):
        return [np.full(values.shape, np.nan) for _ in quantiles]
    stats = rolling_quantiles(
        values[where],
        max(1, window // stride),
        max(1, min_periods // stride),
        quantiles,
        positions=used,
    )
    lookup = np.zeros(max(len(where), 1), dtype=np.int64)
    lookup[used] = np.arange(len(used))
    return [np.where(valid, s[lookup[safe]], np.nan) for s in stats]


def rolling_quantiles(
    sample: np.ndarray,
    window: int,
    min_periods: int,
    quantiles: Sequence[float],
    *,
    positions: np.ndarray | None = None,
) -> list[np.ndarray]:
    """``pd.DataFrame(sample).rolling(window, min_periods).quantile(q)`` for each ``q``, bit
    for bit (linear interpolation, NaN skipped), at ``positions`` only (default: every row).

    One sort over all columns and quantiles instead of a pandas call per column and quantile.
    """
    sample = np.asarray(sample, dtype="float64")
    squeeze = sample.ndim == 1
    if squeeze:
        sample = sample[:, None]
    rows, m = sample.shape
    if positions is None:
        positions = np.arange(rows)
    positions = np.asarray(positions, dtype=np.int64)
    if window > _SORT_MAX_WINDOW or positions.size * m * window > _SORT_LIMIT:
        # Long windows: pandas' sliding skiplist beats sorting each window afresh.
        rolling = pd.DataFrame(sample).rolling(window, min_periods=max(1, min_periods))
        out = [rolling.quantile(q).to_numpy()[positions] for q in quantiles]
        return [o[:, 0] for o in out] if squeeze else out
    padded = np.concatenate([np.full((window - 1, m), np.nan), sample])
    windows = np.lib.stride_tricks.sliding_window_view(padded, window, axis=0)[positions]
    ordered = np.sort(windows, axis=-1)  # (positions, m, window), NaN last
    count = window - np.isnan(ordered).sum(axis=-1)
    enough = count >= max(1, min_periods)
    out = []
    for q in quantiles:
        where = q * (count - 1)
        low = np.clip(np.floor(where).astype(np.int64), 0, window - 1)
        lo = np.take_along_axis(ordered, low[..., None], -1)[..., 0]
        hi = np.take_along_axis(ordered, np.minimum(low + 1, window - 1)[..., None], -1)[..., 0]
        fraction = where - low
        with np.errstate(invalid="ignore"):
            value = np.where(fraction == 0, lo, lo + (hi - lo) * fraction)
        value = np.where(enough, value, np.nan)
        out.append(value[:, 0] if squeeze else value)
    return out


def nan_median(stack: np.ndarray) -> np.ndarray:
    """Median over axis 0 ignoring NaN (NaN where all are NaN), faster than np.nanmedian."""
    # Sorting along a contiguous last axis is several times faster than along axis 0.
    ordered = np.sort(np.moveaxis(stack, 0, -1), axis=-1)  # NaN sorts last
    count = (~np.isnan(ordered)).sum(axis=-1)
    low = np.maximum((count - 1) // 2, 0)
    high = np.maximum(count // 2, 0)
    lo = np.take_along_axis(ordered, low[..., None], axis=-1)[..., 0]
    hi = np.take_along_axis(ordered, high[..., None], axis=-1)[..., 0]
    return np.where(count > 0, (lo + hi) / 2.0, np.nan)


def _shift(values: np.ndarray, lag: int) -> np.ndarray:
    out = np.full_like(values, np.nan)
    if 0 < lag < values.shape[0]:
        out[lag:] = values[:-lag]
    elif lag == 0:
        out[:] = values
    return out


def _lagged(values: np.ndarray, lag: int, start: int) -> np.ndarray:
    """Rows ``start`` onwards of ``values`` shifted down by ``lag`` rows (NaN before the first)."""
    n = values.shape[0]
    out = np.full((n - start, *values.shape[1:]), np.nan)
    first = start - lag
    if first >= 0:
        out[:] = values[first : n - lag]
    elif lag < n and -first < n - start:
        out[-first:] = values[: n - lag]
    return out


def _placed(rows: np.ndarray, start: int, shape: tuple) -> np.ndarray:
    """``rows`` (the values from row ``start`` on) in an array of ``shape``, NaN before."""
    if start == 0:
        return rows
    out = np.full(shape, np.nan)
    out[start:] = rows
    return out


def _clip_start(start: int, n: int) -> int:
    return min(max(int(start), 0), n)


def seasonal_reference(
    values: np.ndarray, index: pd.DatetimeIndex, cfg: FeatureConfig, start: int = 0
) -> np.ndarray:
    """Median of the same time on past weeks; past days while fewer than two weeks exist.

    Computed for rows ``start`` onwards (NaN before): the lags only index into the past.
    """
    step = grid_step(index, DEFAULT_STEP)
    start = _clip_start(start, values.shape[0])
    if cfg.mode == "none":
        return _trailing_median(values, index, cfg, start)
    primary, fallback = cfg.reference_lags(step)
    weekly = np.stack([_lagged(values, g, start) for g in primary])
    if fallback:
        daily = np.stack([_lagged(values, g, start) for g in fallback])
        enough_weeks = (~np.isnan(weekly)).sum(axis=0) >= 2
        both = np.concatenate([weekly, daily])
        reference = np.where(enough_weeks, nan_median(weekly), nan_median(both))
        cycles = (~np.isnan(both)).sum(axis=0)
    else:
        reference = nan_median(weekly)
        cycles = (~np.isnan(weekly)).sum(axis=0)
    # No past cycle yet (the first day of a series): the trailing median serves, so features
    # work from the first hours instead of waiting a whole cycle. Not for "auto" left unresolved:
    # models saved before seasons were resolved at fit keep scoring exactly as they did.
    if cfg.season != "auto" and (cycles < 1).any():
        trailing = _trailing_median(values, index, cfg, start)[start:]
        reference = np.where(cycles >= 1, reference, trailing)
    return _placed(reference, start, values.shape)


def _trailing_median(
    values: np.ndarray, index: pd.DatetimeIndex, cfg: FeatureConfig, start: int
) -> np.ndarray:
    """Median of the trailing ``window`` steps before each row (rows ``start`` onwards)."""
    n = values.shape[0]
    begin = max(0, start - _quantile_lookback(cfg))
    (median,) = trailing_quantiles(
        values[begin:],
        index[begin:],
        (0.5,),
        window=cfg.window,
        min_periods=cfg.min_periods,
        stride=cfg.stride,
    )
    return _placed(median[start - begin :], start, (n, *values.shape[1:]))


def _quantile_lookback(cfg: FeatureConfig) -> int:
    """Rows before ``t`` that the trailing quantiles at ``t`` can read (see _robust_scale)."""
    return cfg.window + max(1, cfg.stride) + 1


def _robust_scale(
    values: np.ndarray,
    index: pd.DatetimeIndex,
    cfg: FeatureConfig,
    *,
    centre: bool = True,
    start: int = 0,
) -> tuple[np.ndarray | None, np.ndarray]:
    """Trailing-day median (skipped when ``centre`` is False) and IQR-based sigma.

    For rows ``start`` onwards (NaN before); only :func:`_quantile_lookback` earlier rows are read.
    """
    n = values.shape[0]
    start = _clip_start(start, n)
    begin = max(0, start - _quantile_lookback(cfg))
    quantiles = (0.25, 0.75, 0.5) if centre else (0.25, 0.75)
    stats = trailing_quantiles(
        values[begin:],
        index[begin:],
        quantiles,
        window=cfg.window,
        min_periods=cfg.min_periods,
        stride=cfg.stride,
    )
    stats = [_placed(s[start - begin :], start, values.shape) for s in stats]
    return (stats[2] if centre else None), (stats[1] - stats[0]) / _IQR_TO_SIGMA


def _floor(scale: np.ndarray, level: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    floor = np.maximum(np.abs(level) * cfg.min_scale_fraction, 1e-12)
    return np.where(np.isnan(scale), np.nan, np.maximum(scale, floor))


def _ratio(num: np.ndarray, den: np.ndarray, clip: float) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(num / den, -clip, clip)


def rolling_mean(values: np.ndarray, window: int, min_periods: int = 1) -> np.ndarray:
    """Trailing mean over ``window`` rows ending at each row, NaN-skipping, per column.

    Cumulative sums over all columns at once: one numpy pass instead of a pandas call per column.
    Sums are sequential from the first row, so a prefix gets exactly the values of the whole.
    """
    present = ~np.isnan(values)
    zeros = np.zeros((1, *values.shape[1:]))
    sums = np.concatenate([zeros, np.cumsum(np.where(present, values, 0.0), axis=0)])
    counts = np.concatenate([zeros, np.cumsum(present, axis=0, dtype="float64")])
    stop = np.arange(1, values.shape[0] + 1)
    start = np.maximum(stop - window, 0)
    total = sums[stop] - sums[start]
    count = counts[stop] - counts[start]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count >= max(1, min_periods), total / count, np.nan)


def rolling_mean_from(
    values: np.ndarray, window: int, min_periods: int = 1, start: int = 0
) -> np.ndarray:
    """:func:`rolling_mean` for rows ``start`` onwards (NaN before), reading ``window - 1``
    earlier rows only. Equal to the whole computation up to the rounding of the sums."""
    start = _clip_start(start, values.shape[0])
    if start == 0:
        return rolling_mean(values, window, min_periods)
    begin = max(0, start - window + 1)
    rows = rolling_mean(values[begin:], window, min_periods)[start - begin :]
    return _placed(rows, start, values.shape)


def _rolling_std(values: np.ndarray, window: int, min_periods: int, start: int = 0) -> np.ndarray:
    start = _clip_start(start, values.shape[0])
    begin = max(0, start - window + 1)
    rolled = pd.DataFrame(values[begin:]).rolling(window, min_periods=min_periods).std()
    return _placed(rolled.to_numpy()[start - begin :], start, values.shape)


def time_features(index: pd.DatetimeIndex) -> np.ndarray:
    """(n, 4): sine and cosine of the UTC time of day and of the day of the week."""
    seconds = index.as_unit("ns").asi8 // 1_000_000_000
    day = 2 * np.pi * (seconds % _DAY_SECONDS) / _DAY_SECONDS
    # 1970-01-01 was a Thursday; shift so that Monday 00:00 is angle 0.
    week = 2 * np.pi * ((seconds + 3 * _DAY_SECONDS) % (7 * _DAY_SECONDS)) / (7 * _DAY_SECONDS)
    return np.column_stack([np.sin(day), np.cos(day), np.sin(week), np.cos(week)])


def context(abs_z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row and column: mean and max of ``abs_z`` over the *other* columns (NaN-aware)."""
    n, m = abs_z.shape
    if m < 2:
        zeros = np.zeros((n, m))
        return zeros, zeros
    present = ~np.isnan(abs_z)
    filled = np.where(present, abs_z, 0.0)
    total = filled.sum(axis=1, keepdims=True)
    others = np.maximum(present.sum(axis=1, keepdims=True) - present, 1)
    mean = (total - filled) / others
    # The max of the others is the row max, unless this column is the max: then the runner-up.
    ordered = np.sort(np.where(present, abs_z, -np.inf), axis=1)
    top, second = ordered[:, -1:], ordered[:, -2:-1]
    maximum = np.where(filled >= top, second, top)
    maximum = np.where(np.isfinite(maximum), maximum, 0.0)
    return mean, maximum
