"""Residual calibration: the residual spread per slot of the day, the band and scale it gives, and
the raw score of a residual against its own causal error distribution."""

import numpy as np
import pandas as pd
from scipy.special import ndtri

from monitoring_pipelines.ml.prophet_model.config import ProphetConfig

_DAY_NS = 86_400 * 10**9
# 1.4826 * MAD estimates a normal sigma; applied to |residual| it is a robust RMS error.
_MAD_TO_SIGMA = 1.4826


def fill_band(
    cfg: ProphetConfig,
    rows: dict[str, np.ndarray],
    j: int,
    ts_ns: np.ndarray,
    yhat: np.ndarray,
    trend_halfwidth: np.ndarray,
    slot_scales: list[float],
) -> None:
    """Write column ``j``'s forecast, band and raw-score scale at ``ts_ns`` into ``rows``.

    The band combines Prophet's trend uncertainty with the observed residual spread of the
    slot of the day rather than Prophet's own noise term: that one is estimated on the fit
    resolution (bucket means are quieter than single points) and is the same all day.
    """
    z = ndtri((1.0 + cfg.interval_width) / 2.0)
    slots = np.asarray(slot_scales)
    residual_scale = slots[_slot(ts_ns, len(slots))]
    halfwidth = np.hypot(z * residual_scale, trend_halfwidth)
    rows["yhat"][:, j] = yhat
    rows["yhat_lower"][:, j] = yhat - halfwidth
    rows["yhat_upper"][:, j] = yhat + halfwidth
    rows["trend_halfwidth"][:, j] = trend_halfwidth
    # "interval": the score also shrinks as the trend's uncertainty grows past the data.
    rows["scale"][:, j] = halfwidth / z if cfg.scale == "interval" else residual_scale


def causal_scores(cfg: ProphetConfig, residual: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``|r - mean| / std`` over the ``residual_window`` residuals before each point (rows are
    consecutive points); ``|r| / scale`` with ``residual_window=0``."""
    if not cfg.residual_window:
        return np.abs(residual) / scale
    past = (
        pd.DataFrame(residual)
        .shift(1)
        .rolling(cfg.residual_window, min_periods=cfg.residual_min_periods)
    )
    mean, std = past.mean().to_numpy(), past.std().to_numpy()
    # The fitted spread floors the causal one, so a stretch of perfect fit (a flat line)
    # does not turn the next wiggle into a certainty.
    floor = np.fmax(np.nan_to_num(cfg.min_scale_fraction * scale, nan=0.0), 1e-12)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(residual - mean) / np.maximum(std, floor)


def _slot(ts_ns: np.ndarray, slots: int) -> np.ndarray:
    return (np.asarray(ts_ns) % _DAY_NS) // (_DAY_NS // slots)


def slot_scales(
    residuals: np.ndarray, ts_ns: np.ndarray, level: float, slots: int, min_fraction: float
) -> list[float]:
    """Robust RMS of residuals per slot of the day, smoothed over neighbouring slots."""
    ok = np.isfinite(residuals)
    magnitude = np.abs(residuals[ok])
    # A constant series leaves no residual spread; the floor keeps rounding noise from looking
    # like an incident while any real change still scores very high.
    floor = 1e-6 * abs(level) + 1e-12
    if magnitude.size == 0:
        return [floor] * slots
    overall = max(_MAD_TO_SIGMA * float(np.median(magnitude)), floor)
    slot = _slot(ts_ns[ok], slots)
    per_slot = np.full(slots, overall)
    for s in range(slots):
        chosen = magnitude[slot == s]
        if chosen.size:
            per_slot[s] = _MAD_TO_SIGMA * float(np.median(chosen))
    if slots >= 3:
        # The day is a circle: the slot before midnight neighbours the one after.
        per_slot = (np.roll(per_slot, 1) + per_slot + np.roll(per_slot, -1)) / 3.0
    return [float(v) for v in np.maximum(per_slot, min_fraction * overall)]
