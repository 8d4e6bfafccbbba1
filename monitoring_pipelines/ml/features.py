"""Scale-free, causal features of a group frame, vectorised over all its metrics at once.

Isolation Forest did better on trailing-window z-scores of the value and of its first difference
than on raw levels: z-scores make metrics of very different scales comparable, so
one model can pool every metric of a group. Every feature at ``t`` uses rows up to ``t`` only:
trailing windows, baselines lagged so a point never defines its own baseline, and no statistic
computed over the whole frame. That is what makes scoring a prefix give exactly the scores of the
whole (a statistic over the whole frame would let the future into the past), which the tests check.

Per point (time ``t``, metric ``j``), by name:

- ``z_value``: the value against the trailing-day median and robust scale of that metric.
- ``z_diff``: the first difference against the trailing-day scale of differences (their centre
  is ~0 on a regular grid).
- ``volatility``: log of the spread of the last few differences over their trailing-day scale.
- ``seasonal_z``: the *seasonal residual* (value minus the median of the same time 1, 2 and 3 weeks
  earlier; days earlier while there are fewer than two such weeks), re-centred on its trailing-day
  median, averaged over the last 3 steps and divided by its usual size *at that time of day* over
  the past week. Metrics swing far more at the evening peak than at night, and a plain trailing
  z-score flags every peak (and every nightly restart) of a busy series.
  In a group with a traffic metric (``FeatureConfig.load_metrics``), the residual of every other
  metric is first taken net of what the service's load explains (a causal rolling regression on
  the traffic's relative residual): a busier evening than the same evening of past weeks moves
  latencies, errors and cpu together, and was the commonest false alarm on the demo. A moderate
  traffic anomaly that the other metrics do *not* follow can show up on them instead (a traffic
  drop of 15% with cpu unmoved does); large ones are beyond ``load_trust`` and explain nothing.
- ``step_z<k>``: the change of the seasonal residual's mean over the last ``k`` steps against the
  ``k`` steps before, in units of its step-to-step noise: spikes, dips, level shifts and the
  onset of most incidents, whatever the time of day.
- ``flat``: how far below its usual step-to-step noise the series has moved over the last
  ``flat_window`` steps (a frozen exporter, a stuck gauge); 0 when it moves normally.
- ``burst``: how far above the usual spread *at that time of the week* the last ``burst_window``
  differences are; 0 when not above.
- ``tod_sin``/``tod_cos``/``dow_sin``/``dow_cos``: time of day and day of week (UTC).
- ``context_mean``/``context_max``: mean and max ``|seasonal_z|`` of the *other* metrics of the
  group at ``t``, so a model can see incidents that move several metrics a little each.

Trailing quantiles are evaluated on a strided sample of the window (every ``stride``-th step,
aligned to absolute time so a prefix and the whole see the same sample): a day of 5-minute steps
still gives 48 points, at a sixth of the cost, and the demo's validation figures did not move.
Centres and scales are medians and interquartile ranges: an incident inside the trailing day does
not inflate the scale that judges the next one. Gaps stay NaN in every per-metric feature; a gap
inside a window just means fewer points.
"""

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from monitoring_pipelines.ml.frames import DEFAULT_STEP, grid_step

# "calendar": the same time 1-3 weeks before (1-3 days while there are fewer than two weeks) and
# the usual size at this time of day; "period": the same phase 1-3 cycles of ``period`` steps before
# and the usual size at this phase; "none": a trailing median and the trailing spread.
SEASONS = ("auto", "calendar", "period", "none")
TIME_FEATURES = ("tod_sin", "tod_cos", "dow_sin", "dow_cos")
CONTEXT_FEATURES = ("context_mean", "context_max")
BASIC_FEATURES = ("z_value", "z_diff", "volatility")
# Robust scale of a normal sample from its interquartile range.
_IQR_TO_SIGMA = 1.349
# E|X| of a normal X is sigma * sqrt(2 / pi).
_MEAN_ABS_TO_SIGMA = float(np.sqrt(np.pi / 2.0))
_DAY_SECONDS = 86400
# Ensemble members score the same group frame one after the other and share most features; a
# small cache keyed by the frame's content computes them once. Big frames are not cached.
# Scoring runs the members group by group, so a few entries suffice; each holds a month of a
# group's intermediate arrays (~15 MB), and 32 of them grew a daily scoring process by ~190 MB.
_CACHE_ENTRIES = 8
_CACHE_MAX_FRAME_BYTES = 16 * 2**20
_cache: OrderedDict[tuple, "_Features"] = OrderedDict()
_cache_lock = threading.Lock()
# Above this many window elements, rolling_quantiles leaves the work to pandas.
_SORT_LIMIT = 4_000_000
_SORT_MAX_WINDOW = 128


@dataclass(frozen=True)
class FeatureConfig:
    """Windows are in grid steps unless they say days; defaults suit 5-minute steps."""

    window: int = 288
    min_periods: int = 36
    stride: int = 6
    volatility_window: int = 6
    # |z| beyond this carries no more information and would only stretch a forest's splits.
    clip: float = 50.0
    # A scale never falls below this fraction of the level (|centre|), so a constant stretch does
    # not turn the next tiny wiggle into an infinite z.
    min_scale_fraction: float = 1e-3
    seasonal_lags_days: tuple[int, ...] = (7, 14, 21)
    fallback_lags_days: tuple[int, ...] = (1, 2, 3)
    smooth: int = 3
    time_of_day_days: int = 7
    # Steps either side of the same time on past days that estimate the usual size there.
    time_of_day_halfwidth: int = 6
    step_windows: tuple[int, ...] = (3,)
    flat_window: int = 12
    burst_window: int = 12
    time_features: bool = True
    context: bool = True
    # The group's traffic metric (the first of these names among its columns): the seasonal
    # residuals of the other metrics are taken net of what the service's load explains (see
    # ``_residual``). Empty, or no such column: residuals are used as they are.
    load_metrics: tuple[str, ...] = ("requests_per_second", "streams_started")
    load_window_days: int = 7
    # Load residuals (in their own trailing-day robust sigmas) are fully trusted up to the first
    # level and not at all from the second: beyond it the load is itself anomalous (a traffic
    # dip, a frozen exporter) and explains nothing about the other metrics. (3, 5) left busy
    # weekend evenings half explained; (5, 8) measured better on the demo (pipeline split, seeds
    # 4, 5, 42: Isolation Forest F1 0.49 -> 0.56, z-score false alarms 33 -> 28).
    load_trust: tuple[float, float] = (5.0, 8.0)
    # The seasonality the residual is taken against (see :data:`SEASONS`). "auto" is resolved from
    # the training data at fit (:func:`resolve_season`); features computed with "auto" unresolved
    # use "calendar", as before there was a choice.
    season: str = "auto"
    # Steps of one cycle in "period" mode.
    period: int = 0

    def __post_init__(self) -> None:
        if self.season not in SEASONS:
            raise ValueError(f"season must be one of {SEASONS}, got {self.season!r}")
        if self.season == "period" and self.period < 2:
            raise ValueError("season 'period' needs period >= 2 steps")

    @property
    def mode(self) -> str:
        return "calendar" if self.season == "auto" else self.season

    def cycle_steps(self, step: pd.Timedelta) -> int:
        """Steps of the cycle whose "same time" judges a point (0 without seasonality)."""
        if self.mode == "calendar":
            return _lag_steps((1,), step)[0]
        return self.period if self.mode == "period" else 0

    def reference_lags(self, step: pd.Timedelta) -> tuple[list[int], list[int]]:
        """Lags (steps) of the seasonal reference, and the fallback lags used while fewer than two
        of the first have data."""
        if self.mode == "calendar":
            return _lag_steps(self.seasonal_lags_days, step), _lag_steps(
                self.fallback_lags_days, step
            )
        if self.mode == "period":
            return [self.period, 2 * self.period, 3 * self.period], []
        return [], []

    def tod_halfwidth(self, step: pd.Timedelta) -> int:
        cycle = self.cycle_steps(step)
        if self.mode == "period":
            return min(self.time_of_day_halfwidth, cycle // 12)
        return self.time_of_day_halfwidth

    def names(self) -> tuple[str, ...]:
        """Every feature this config computes, in :func:`group_features` order."""
        names = (
            *BASIC_FEATURES,
            "seasonal_z",
            *(f"step_z{k}" for k in self.step_windows),
            "flat",
            "burst",
        )
        if self.time_features:
            names += TIME_FEATURES
        if self.context:
            names += CONTEXT_FEATURES
        return names

    def history_steps(self, step: pd.Timedelta) -> int:
        """Steps of history the seasonal features need to be fully defined."""
        if self.mode == "none":
            return 3 * self.window + 2 * max(1, self.stride) + 4
        if self.mode == "period":
            cycles = max(3, self.time_of_day_days)
            return cycles * self.period + 2 * self.window + 2 * max(1, self.stride) + 4
        longest = max(
            (
                *self.seasonal_lags_days,
                *self.fallback_lags_days,
                self.time_of_day_days,
                self.load_window_days if self.load_metrics else 0,
            )
        )
        return round(longest * _DAY_SECONDS / step.total_seconds()) + self.window


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


def _lag_steps(days: Sequence[int], step: pd.Timedelta) -> list[int]:
    return [round(d * _DAY_SECONDS / step.total_seconds()) for d in days]


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


# -- the features ----------------------------------------------------------------------------------


class _Features:
    """Computes requested features once each, sharing intermediate results.

    Features are wanted for rows ``start`` onwards only (earlier rows lend their values, and get
    NaN). Each intermediate result is computed for just the rows its consumers read: scoring one
    new day with 37 days of lookback computes the seasonal residual over ~17 days, its load fit
    and trailing scales over ~9, and the features over the day, instead of all of them over 38.
    Values equal those of the whole frame up to the rounding of rolling sums.
    """

    def __init__(self, frame: pd.DataFrame, cfg: FeatureConfig, start: int = 0):
        self.cfg = cfg
        self.index = pd.DatetimeIndex(frame.index)
        self.x = frame.to_numpy(dtype="float64")
        self.columns = list(frame.columns)
        self.step = grid_step(self.index, DEFAULT_STEP)
        self._cache: dict[str, np.ndarray] = {}
        # Members on other threads may ask for the same features: compute each once.
        self._lock = threading.RLock()
        n = self.x.shape[0]
        self.start = _clip_start(start, n)
        cycle = cfg.cycle_steps(self.step)
        self._quantiles = _quantile_lookback(cfg)
        # A week of "usual size at this time of day", each a mean over 2 * halfwidth + 1 steps.
        halfwidth = cfg.tod_halfwidth(self.step)
        self._tod = cfg.time_of_day_days * cycle + 2 * halfwidth + 2 if cycle else 0
        primary, fallback = cfg.reference_lags(self.step)
        self._lags = max((*primary, *fallback), default=self._quantiles)
        self._load_rows = round(cfg.load_window_days * _DAY_SECONDS / self.step.total_seconds())
        # The residual feeds trailing-day centres and a week of usual sizes of the rows wanted.
        self._residual_from = self.start - self._tod - self._quantiles - 2
        # Its load fit reads a window of earlier rows, each with its own trailing-day scales.
        self._raw_from = self._residual_from
        if self._load_column() is not None and self.x.shape[1] >= 2:
            self._raw_from -= self._load_rows + 1 + self._quantiles
        self._residual_from = _clip_start(self._residual_from, n)
        self._raw_from = _clip_start(self._raw_from, n)

    def get(self, name: str) -> np.ndarray:
        found = self._cache.get(name)
        if found is not None:
            return found
        with self._lock:
            return self._compute(name)

    def _compute(self, name: str) -> np.ndarray:
        if name not in self._cache:
            if name.startswith("step_z"):
                self._cache[name] = self._step_z(int(name.removeprefix("step_z")))
            elif name.startswith("seasonal_z") and name != "seasonal_z":
                self._cache[name] = self._seasonal_z(int(name.removeprefix("seasonal_z")))
            else:
                self._cache[name] = getattr(self, f"_{name}")()
        return self._cache[name]

    def _diff(self) -> np.ndarray:
        return np.vstack([np.full((1, self.x.shape[1]), np.nan), np.diff(self.x, axis=0)])

    def _diff_scale(self) -> np.ndarray:
        """Trailing-day scale of first differences (their centre is ~0 on a regular grid)."""
        diff = self.get("diff")
        return _robust_scale(diff, self.index, self.cfg, centre=False, start=self.start)[1]

    def _z_value(self) -> np.ndarray:
        centre, scale = _robust_scale(self.x, self.index, self.cfg, start=self.start)
        return _ratio(self.x - centre, _floor(scale, centre, self.cfg), self.cfg.clip)

    def _z_diff(self) -> np.ndarray:
        scale = _floor(self.get("diff_scale"), self.x, self.cfg)
        return _ratio(self.get("diff"), scale, self.cfg.clip)

    def _volatility(self) -> np.ndarray:
        scale = _floor(self.get("diff_scale"), self.x, self.cfg)
        recent = _rolling_std(
            self.get("diff"), self.cfg.volatility_window, min_periods=2, start=self.start
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.log((recent + 0.01 * scale) / scale)
        return np.where(np.isnan(self.x), np.nan, out)

    def _raw_residual(self) -> np.ndarray:
        return self.x - seasonal_reference(self.x, self.index, self.cfg, start=self._raw_from)

    def _seasonal_ready(self) -> np.ndarray:
        """Rows whose seasonal reference has a past cycle (not the trailing fallback)."""
        primary, fallback = self.cfg.reference_lags(self.step)
        lags = [*primary, *fallback]
        if not lags:
            return np.ones(self.x.shape, dtype=bool)
        present = ~np.isnan(self.x)
        counts = sum(_lagged(present.astype("float64"), g, 0) == 1.0 for g in lags)
        return np.asarray(counts) >= 1

    def _load_column(self) -> int | None:
        names = [str(c) for c in self.columns]
        for name in self.cfg.load_metrics:
            if name in names:
                return names.index(name)
        return None

    def _residual(self) -> np.ndarray:
        """The seasonal residual net of what the service's load explains.

        Most metrics of a service follow its load, many of them steeply (latencies and error
        rates with a power of the utilisation), so a busier evening than the same evening of past
        weeks moves them all at once: the commonest false alarm of the plain residual. Per metric,
        ``residual ~ (a + b * level) * load_residual`` (the effect of a given relative change of
        load grows with the metric's level), fitted by least squares over the trailing
        ``load_window_days`` (rows before ``t`` only, so the fit is causal) and subtracted. The
        load residual is relative and centred on its trailing-day median; points where it is
        beyond ``load_trust`` sigmas neither fit nor get adjusted, so a traffic incident does not
        leak into the other metrics.
        """
        raw = self.get("raw_residual")
        load = self._load_column()
        if load is None or raw.shape[1] < 2:
            return raw
        # Rows judged against the trailing fallback (the first days) carry the daily cycle itself
        # in their residual: they would teach the fit that load explains the cycle. They are
        # left out of every statistic of the fit, and left unadjusted.
        ready = self.get("seasonal_ready")
        ready = ready & ready[:, [load]]
        full = raw
        raw = np.where(ready, raw, np.nan)
        cfg = self.cfg
        wanted = self._residual_from
        # Rows the slopes of the wanted rows are fitted on.
        fit = max(0, wanted - self._load_rows - 1)
        reference = self.x - raw
        with np.errstate(invalid="ignore", divide="ignore"):
            relative = raw[:, load] / np.abs(reference[:, load])
        relative = np.where(np.isfinite(relative), relative, np.nan)[:, None]
        centre, spread = _robust_scale(relative, self.index, cfg, start=fit)
        centred = relative - centre
        with np.errstate(invalid="ignore", divide="ignore"):
            distance = np.abs(centred) / np.maximum(spread, 1e-9)
        low, high = cfg.load_trust
        trust = np.clip((high - distance) / max(high - low, 1e-9), 0.0, 1.0)
        x1 = np.where(np.isfinite(distance), centred * trust, np.nan)  # (n, 1)
        level_centre = _robust_scale(reference, self.index, cfg, start=fit)[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            level = reference / np.abs(level_centre)
        x2 = x1 * level
        y_centre, y_scale = _robust_scale(raw, self.index, cfg, start=fit)
        y = raw - y_centre
        # Winsorised: an incident inside the fitting window barely moves the slopes.
        bound = 4.0 * y_scale
        y = np.clip(y, -bound, bound)
        window = self._load_rows
        minimum = round(_DAY_SECONDS / self.step.total_seconds())
        both = np.isfinite(y) & np.isfinite(x2)
        x1m = np.where(both, x1, np.nan)
        x2m = np.where(both, x2, np.nan)
        ym = np.where(both, y, np.nan)

        def mean(values: np.ndarray) -> np.ndarray:
            # Shifted one row: the slopes at t come from rows before t.
            rolled = rolling_mean_from(values, window, minimum, start=max(0, wanted - 1))
            return _shift(rolled, 1)

        s11, s12, s22 = mean(x1m * x1m), mean(x1m * x2m), mean(x2m * x2m)
        s1y, s2y = mean(x1m * ym), mean(x2m * ym)
        # A touch of ridge keeps the 2x2 solve defined when the load hardly moved.
        ridge = 1e-3 * (s11 + s22) + 1e-18
        a11, a22 = s11 + ridge, s22 + ridge
        det = a11 * a22 - s12 * s12
        with np.errstate(invalid="ignore", divide="ignore"):
            b1 = (a22 * s1y - s12 * s2y) / det
            b2 = (a11 * s2y - s12 * s1y) / det
        explained = b1 * x1 + b2 * x2
        explained = np.where(np.isfinite(explained), explained, 0.0)
        explained[:, load] = 0.0
        out = full - explained
        out[:wanted] = np.nan
        return out

    def _noise(self) -> np.ndarray:
        """Step-to-step noise sigma of the value (IQR of differences / sqrt 2)."""
        return _floor(self.get("diff_scale") / np.sqrt(2.0), self.x, self.cfg)

    def _usual_size(self, magnitude: np.ndarray) -> np.ndarray:
        """Median over the past ``time_of_day_days`` days of the mean of ``magnitude`` within
        ``time_of_day_halfwidth`` steps of the same time of day (rows ``start`` onwards)."""
        cfg = self.cfg
        halfwidth = cfg.tod_halfwidth(self.step)
        width = 2 * halfwidth + 1
        day = cfg.cycle_steps(self.step)
        lags = [k * day - halfwidth for k in range(1, cfg.time_of_day_days + 1)]
        size = rolling_mean_from(magnitude, width, max(1, width // 4), start=self.start - max(lags))
        past = np.stack([_lagged(size, lag, self.start) for lag in lags])
        # No past cycle: no usual size yet (callers use the trailing spread).
        usual = nan_median(past)
        return _placed(usual, self.start, magnitude.shape)

    def _centred_residual(self) -> np.ndarray:
        """The seasonal residual minus its trailing-day median, and its usual size here."""
        residual = self.get("residual")
        centre, spread = _robust_scale(residual, self.index, self.cfg, start=self.start - self._tod)
        centred = residual - centre
        if not self.cfg.cycle_steps(self.step):
            # No seasonality: the usual size is the trailing spread itself.
            return np.stack([centred, _floor(spread, self.x, self.cfg)])
        usual = self._usual_size(np.abs(centred)) * _MEAN_ABS_TO_SIGMA
        scale = np.where(np.isnan(usual), spread, np.fmax(usual, 0.5 * spread))
        return np.stack([centred, _floor(scale, self.x, self.cfg)])

    def _seasonal_z(self, smooth: int | None = None) -> np.ndarray:
        cfg = self.cfg
        centred, scale = self.get("centred_residual")
        smoothed = rolling_mean_from(centred, smooth or cfg.smooth, start=self.start)
        return np.where(np.isnan(self.x), np.nan, _ratio(smoothed, scale, cfg.clip))

    def _residual_noise(self) -> np.ndarray:
        """Step-to-step noise sigma of the seasonal residual, as usual at this time of day."""
        residual = self.get("residual")
        diffs = np.vstack([np.full((1, residual.shape[1]), np.nan), np.diff(residual, axis=0)])
        _, day_scale = _robust_scale(diffs, self.index, self.cfg, centre=False, start=self.start)
        if not self.cfg.cycle_steps(self.step):
            return _floor(day_scale / np.sqrt(2.0), self.x, self.cfg)
        usual = self._usual_size(np.abs(diffs)) * _MEAN_ABS_TO_SIGMA
        scale = np.where(np.isnan(usual), day_scale, np.fmax(usual, 0.5 * day_scale))
        return _floor(scale / np.sqrt(2.0), self.x, self.cfg)

    def _step_z(self, k: int) -> np.ndarray:
        residual = self.get("residual")
        noise = self.get("residual_noise")
        if self.start and self.start - 2 * k + 1 < self._residual_from:
            raise ValueError(f"step_z{k}: window too long for features from row {self.start}")
        mean = rolling_mean_from(residual, k, start=self.start - k)
        change = mean - _shift(mean, k)
        out = _ratio(change, noise * np.sqrt(2.0 / k), 2 * self.cfg.clip)
        return np.where(np.isnan(self.x), np.nan, out)

    def _flat(self) -> np.ndarray:
        noise = self.get("noise")
        k = self.cfg.flat_window
        moved = rolling_mean_from(np.abs(self.get("diff")), k, k, start=self.start)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.maximum(-np.log((moved + 0.01 * noise) / noise), 0.0)
        return np.where(np.isnan(self.x), np.nan, out)

    def _burst(self) -> np.ndarray:
        k = self.cfg.burst_window
        spread = _rolling_std(
            self.get("diff"), k, min_periods=max(2, k // 2), start=self.start - self._lags
        )
        usual = seasonal_reference(spread, self.index, self.cfg, start=self.start)
        floor = self.get("noise") * 0.01
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.maximum(np.log((spread + floor) / (usual + floor)), 0.0)
        return np.where(np.isnan(self.x), np.nan, out)

    def _clock(self) -> np.ndarray:
        return time_features(self.index)

    def _context_pair(self) -> np.ndarray:
        return np.stack(context(np.abs(self.get("seasonal_z"))))

    def feature(self, name: str) -> np.ndarray:
        m = self.x.shape[1]
        if name in TIME_FEATURES:
            column = self.get("clock")[:, TIME_FEATURES.index(name)]
            return np.repeat(column[:, None], m, axis=1)
        if name in CONTEXT_FEATURES:
            return self.get("context_pair")[CONTEXT_FEATURES.index(name)]
        return self.get(name)


def clear_cache() -> None:
    """Forget cached features (to time a detector on its own, or to free memory)."""
    with _cache_lock:
        _cache.clear()


def _features_of(frame: pd.DataFrame, cfg: FeatureConfig, start: int = 0) -> _Features:
    values = np.ascontiguousarray(frame.to_numpy(dtype="float64"))
    if values.nbytes > _CACHE_MAX_FRAME_BYTES or len(frame) == 0:
        return _Features(frame, cfg, start)
    index = pd.DatetimeIndex(frame.index)
    key = (
        cfg,
        int(start),
        values.shape,
        int(index[0].value),
        int(index[-1].value),
        tuple(map(str, frame.columns)),
        hashlib.blake2b(values.tobytes(), digest_size=16).digest(),
    )
    with _cache_lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
    features = _Features(frame, cfg, start)
    with _cache_lock:
        # Another thread may have built the same features meanwhile: share one, so the
        # members scoring a group on two threads compute them once.
        features = _cache.setdefault(key, features)
        while len(_cache) > _CACHE_ENTRIES:
            _cache.popitem(last=False)
    return features


def compute_features(
    frame: pd.DataFrame,
    names: Sequence[str],
    config: FeatureConfig | None = None,
    *,
    start: int = 0,
) -> dict[str, np.ndarray]:
    """The named features of ``frame``, each a (rows, metrics) array (shared: do not modify).

    Only rows ``start`` onwards are computed (earlier rows are lookback and get NaN); they equal
    the features of the whole frame there.
    """
    cfg = config or FeatureConfig()
    known = set(cfg.names()) | set(TIME_FEATURES) | set(CONTEXT_FEATURES)
    unknown = [n for n in names if n not in known and not n.startswith(("step_z", "seasonal_z"))]
    if unknown:
        raise ValueError(f"unknown features {unknown}")
    features = _features_of(frame, cfg, start)
    return {name: features.feature(name) for name in names}


def group_features(
    frame: pd.DataFrame,
    config: FeatureConfig | None = None,
    names: Sequence[str] | None = None,
    *,
    start: int = 0,
) -> np.ndarray:
    """Features as a (rows, metrics, features) array, in the order of ``names``.

    ``names`` defaults to ``config.names()``; ``start`` as in :func:`compute_features`.
    """
    cfg = config or FeatureConfig()
    names = list(names or cfg.names())
    computed = compute_features(frame, names, cfg, start=start)
    return np.stack([computed[n] for n in names], axis=2)


def trailing_z(frame: pd.DataFrame, config: FeatureConfig | None = None) -> pd.DataFrame:
    """``z_value`` alone, as a frame shaped like ``frame``."""
    z = compute_features(frame, ["z_value"], config)["z_value"]
    return pd.DataFrame(z, index=frame.index, columns=frame.columns)


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
