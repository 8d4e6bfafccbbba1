"""The features of a frame, computed once per frame with their intermediate results shared
(:class:`_Features`; the cache and public functions are in :mod:`.cache`)."""

import threading

import numpy as np
import pandas as pd

from monitoring_pipelines.ml.features.config import (
    _DAY_SECONDS,
    _MEAN_ABS_TO_SIGMA,
    CONTEXT_FEATURES,
    TIME_FEATURES,
    FeatureConfig,
)
from monitoring_pipelines.ml.features.windows import (
    _clip_start,
    _floor,
    _lagged,
    _placed,
    _quantile_lookback,
    _ratio,
    _robust_scale,
    _rolling_std,
    _shift,
    context,
    nan_median,
    rolling_mean_from,
    seasonal_reference,
    time_features,
)
from monitoring_pipelines.ml.frames import DEFAULT_STEP, grid_step

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
        wanted = self._residual_from
        # Rows the slopes of the wanted rows are fitted on.
        fit = max(0, wanted - self._load_rows - 1)
        reference = self.x - raw
        x1, x2 = self._load_terms(raw, reference, load, fit)
        y_centre, y_scale = _robust_scale(raw, self.index, self.cfg, start=fit)
        y = raw - y_centre
        # Winsorised: an incident inside the fitting window barely moves the slopes.
        bound = 4.0 * y_scale
        y = np.clip(y, -bound, bound)
        b1, b2 = self._load_slopes(x1, x2, y, wanted)
        explained = b1 * x1 + b2 * x2
        explained = np.where(np.isfinite(explained), explained, 0.0)
        explained[:, load] = 0.0
        out = full - explained
        out[:wanted] = np.nan
        return out

    def _load_terms(
        self, raw: np.ndarray, reference: np.ndarray, load: int, fit: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The fit's regressors: the trusted, centred relative load residual, and it times level."""
        cfg = self.cfg
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
        return x1, x1 * level

    def _load_slopes(
        self, x1: np.ndarray, x2: np.ndarray, y: np.ndarray, wanted: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per row, the least-squares slopes of ``y`` on ``x1`` and ``x2`` over earlier rows."""
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
        return b1, b2

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
