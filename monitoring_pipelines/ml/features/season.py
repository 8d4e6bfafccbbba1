"""Seasonality found from the training data: calendar (a day and week), another period, or none."""

import numpy as np
import pandas as pd

from monitoring_pipelines.ml.features.config import FeatureConfig, _lag_steps
from monitoring_pipelines.ml.frames import DEFAULT_STEP, grid_step

# -- seasonality found from the data ---------------------------------------------------------------

# A cycle counts when the series, net of its own moving average over one cycle (which removes
# trends and keeps the cycle), correlates at least this much with itself one cycle earlier.
SEASON_MIN_CORRELATION = 0.3
# A cycle that is not the calendar day must be clearer, and seen at least this many times.
PERIOD_MIN_CORRELATION = 0.5
SEASON_MIN_CYCLES = 2.5


def _filled(frame: pd.DataFrame) -> np.ndarray:
    filled = frame.astype("float64").interpolate(limit_direction="both")
    return filled.to_numpy(dtype="float64")


def cycle_correlation(values: np.ndarray, lag: int) -> np.ndarray:
    """Per column: the correlation, at ``lag``, of the values net of their centred moving
    average over ``lag`` steps (NaN where the column is too short or constant)."""
    n, m = values.shape
    out = np.full(m, np.nan)
    if lag < 2 or n < SEASON_MIN_CYCLES * lag:
        return out
    smooth = pd.DataFrame(values).rolling(lag, center=True, min_periods=lag).mean().to_numpy()
    detrended = values - smooth
    a, b = detrended[lag:], detrended[:-lag]
    ok = np.isfinite(a) & np.isfinite(b)
    for j in range(m):
        x, y = a[ok[:, j], j], b[ok[:, j], j]
        if x.size > 8 and np.std(x) > 0 and np.std(y) > 0:
            out[j] = float(np.corrcoef(x, y)[0, 1])
    return out


def _acf_peaks(values: np.ndarray, low: int, high: int, count: int = 3) -> list[int]:
    """The lags in [low, high] where the mean autocorrelation of the columns peaks highest."""
    x = values - np.nanmean(values, axis=0)
    x = np.nan_to_num(x)
    n = x.shape[0]
    size = 1 << int(np.ceil(np.log2(2 * n)))
    spectrum = np.fft.rfft(x, size, axis=0)
    acf = np.fft.irfft(spectrum * np.conj(spectrum), size, axis=0)[:n]
    with np.errstate(invalid="ignore", divide="ignore"):
        acf = acf / acf[:1]
    mean = np.nanmean(np.where(np.isfinite(acf), acf, np.nan), axis=1)
    high = min(high, n - 2)
    if high <= low:
        return []
    lags = np.arange(low, high + 1)
    part = mean[low - 1 : high + 2]
    peak = (part[1:-1] > part[:-2]) & (part[1:-1] >= part[2:])
    found = lags[peak]
    return [int(v) for v in found[np.argsort(-mean[found])][:count]]


def resolve_season(cfg: FeatureConfig, frame: pd.DataFrame) -> FeatureConfig:
    """``cfg`` with its season found from ``frame`` (training data) when it is "auto".

    "calendar" when a day is at least 12 steps, the frame holds 2.5 days or more and the columns
    (median) repeat daily (:data:`SEASON_MIN_CORRELATION`); otherwise "period" with the clearest
    cycle of the autocorrelation that repeats at least 2.5 times in the frame
    (:data:`PERIOD_MIN_CORRELATION`); otherwise "none". Many real series have no cycle at all,
    or one-second steps, and judging them against "the same time last week" gives no score.
    """
    from dataclasses import replace

    if cfg.season != "auto":
        return cfg
    index = pd.DatetimeIndex(frame.index)
    step = grid_step(index, DEFAULT_STEP)
    values = _filled(frame)
    n = values.shape[0]
    day = _lag_steps((1,), step)[0]
    daily = day >= 12 and n >= SEASON_MIN_CYCLES * day
    if daily and _median(cycle_correlation(values, day)) >= SEASON_MIN_CORRELATION:
        return replace(cfg, season="calendar", period=0)
    best, best_r = 0, PERIOD_MIN_CORRELATION
    for lag in _acf_peaks(values, 4, int(n / SEASON_MIN_CYCLES)):
        r = _median(cycle_correlation(values, lag))
        if r >= best_r:
            best, best_r = lag, r
    if best:
        return replace(cfg, season="period", period=best)
    return replace(cfg, season="none", period=0)


def _median(values: np.ndarray) -> float:
    return float(np.nanmedian(values)) if np.isfinite(values).any() else -1.0
