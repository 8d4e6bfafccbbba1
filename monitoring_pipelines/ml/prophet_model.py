"""Prophet as an anomaly detector: one model per series, residuals against a cached forecast.

Prophet's ``predict`` is far too slow to call per scoring batch, so the forecast is computed once at
fit time, over the training range plus ``horizon_days`` ahead (the pipeline refits on a rolling
window before the horizon runs out), and scoring looks it up by timestamp. Timestamps past the cache
get a point forecast (one ``predict`` per column for the whole missing stretch, at least
``horizon_days`` long), which then joins the cache.

What it models is what the training data has: the seasonality is found from the
data (:func:`~monitoring_pipelines.ml.features.resolve_season`: daily, plus weekly with two weeks of
data; another cycle as a custom seasonality; none at all), and the trend is flat by default, so a
forecast cannot run away between refits (a linear trend fitted on a few days extrapolated into a
flood of false alarms on real series).

Raw score (``residual_window`` > 0, the default): the residual ``r = y - yhat`` judged against its
own *causal* error distribution, ``|r - mean| / std`` over the ``residual_window`` residuals before
the point: a level shift or a slow drift that the frozen forecast misses becomes the new normal of
the residual within that window instead of an alarm that lasts until the next refit, and a plain
spike stands out against the residual's recent spread (before, on a 1,000-point 5-minute series,
the scale grew with Prophet's extrapolated trend uncertainty and a 30-sigma spike scored 0.05).
The base class then calibrates it per series like every member. ``residual_window=0`` gives the
former raw score, ``|r| / scale`` with the residual spread of the slot of the day.

``prophet`` and ``mlflow`` are imported inside the methods that use them: importing this module
must stay cheap for the Dagster code location.
"""

import copy
import logging
import re
import shutil
import threading
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import pandas as pd
from scipy.special import ndtri

from monitoring_pipelines.ml.base import Detector, DetectorConfig
from monitoring_pipelines.ml.calibration import CalibrationConfig, tail_calibration
from monitoring_pipelines.ml.features import FeatureConfig, resolve_season

MODELS_DIR = "prophet"
FORECAST_FILE = "forecast.parquet"
FORECAST_COLUMNS = ("ts", "column", "yhat", "yhat_lower", "yhat_upper")

_DAY_NS = 86_400 * 10**9
# 1.4826 * MAD estimates a normal sigma; applied to |residual| it is a robust RMS error.
_MAD_TO_SIGMA = 1.4826
# Prophet needs at least two observations; fewer than this many leave the column unscored.
_MIN_FIT_ROWS = 2
_GLOBAL_RNG_LOCK = threading.Lock()


def _calibration() -> CalibrationConfig:
    # The causal residual z is judged like every member: the per-series tail likelihood.
    return tail_calibration()


@dataclass(frozen=True)
class ProphetConfig(DetectorConfig):
    """Prophet settings. Defaults chosen on a demo backtest (3 tenants, 72 series, 44 incidents,
    refits every 3 days): see the comments for what each choice was measured against."""

    calibration: CalibrationConfig = field(default_factory=_calibration)
    # "auto": the seasonality the training data has (daily, weekly with two weeks of data, another
    # cycle, or none); "calendar": daily and weekly as the two flags below say.
    season: Literal["auto", "calendar"] = "auto"
    daily_seasonality: bool = True
    weekly_seasonality: bool = True
    yearly_seasonality: bool = False
    daily_fourier_order: int = 8
    weekly_fourier_order: int = 3
    # Multiplicative seasonality scored worse (raw AUC 0.83 vs 0.91, twice the false alarms) and
    # fitted 3x slower.
    seasonality_mode: Literal["additive", "multiplicative"] = "additive"
    # A flat trend cannot run away between refits; a linear trend fitted on a few days of a real
    # series extrapolates into a flood of false alarms. Growth the series really
    # has reaches the residual's causal window (raw score) and the next refit.
    growth: Literal["linear", "flat"] = "flat"
    # Prophet's 0.05 lets changepoints chase slow wander, and the forecast then extrapolates it:
    # 0.01 cut the 7-day-ahead error by a quarter.
    changepoint_prior_scale: float = 0.01
    seasonality_prior_scale: float = 10.0
    n_changepoints: int = 10
    changepoint_range: float = 0.8
    # A country code for ``add_country_holidays`` ("US", "DE", ...) or a tuple of ISO dates
    # (days in UTC, like the seasonality).
    holidays: str | tuple[str, ...] | None = None
    holidays_prior_scale: float = 10.0
    interval_width: float = 0.8
    # Draws for the trend-uncertainty part of the cached bands; 0 = none (the bands and the
    # "interval" scale are then the residual spread alone). Off by default: the raw score does not
    # use them and the sampling cost most of a fit.
    uncertainty_samples: int = 0
    # How far past the training data the fit-time forecast cache reaches.
    horizon_days: float = 7.0
    # Fit on bucket means at this resolution (None: every point). Hourly means fitted 2.5x faster
    # than 15-minute ones and 10x faster than raw points, and forecast better (fewer points give
    # the trend prior more weight). Scales always come from the full-resolution residuals.
    fit_resolution: str | None = "1h"
    # ... but never fewer fit points than this: a short or one-second series (SKAB: 400 seconds of
    # training) is fitted on buckets of span / min_fit_points, or on every point.
    min_fit_points: int = 240
    # Residuals before a point that judge it (mean and spread); 0 = the fitted scale alone.
    residual_window: int = 288
    residual_min_periods: int = 24
    # With residual_window=0: "interval": residual spread combined with Prophet's trend
    # uncertainty, so scores ease off as the forecast ages; "residual": residual spread only.
    scale: Literal["residual", "interval"] = "interval"
    # Residual spread per slot of the (UTC) day; one slot for the whole day lost 0.14 of event
    # recall at the same false-alarm rate, because noise follows the daily load.
    scale_slots_per_day: int = 24
    # A slot's scale never falls below this fraction of the series' overall scale, so a quiet
    # slot with few residuals does not turn ordinary noise into alarms.
    min_scale_fraction: float = 0.25
    # Columns fitted in parallel (Stan runs in a subprocess, so threads do overlap).
    n_jobs: int = 1

    def __post_init__(self) -> None:
        if self.seasonality_mode not in ("additive", "multiplicative"):
            raise ValueError(
                f"seasonality_mode must be additive or multiplicative, got "
                f"{self.seasonality_mode!r}"
            )
        if self.growth not in ("linear", "flat"):
            raise ValueError(f"growth must be linear or flat, got {self.growth!r}")
        if self.scale not in ("residual", "interval"):
            raise ValueError(f"scale must be residual or interval, got {self.scale!r}")
        if self.uncertainty_samples < 0:
            raise ValueError("uncertainty_samples must be >= 0")
        if not 0.0 < self.interval_width < 1.0:
            raise ValueError("interval_width must be in (0, 1)")
        if self.horizon_days < 0:
            raise ValueError("horizon_days must be >= 0")
        if self.scale_slots_per_day < 1 or 86_400 % self.scale_slots_per_day:
            raise ValueError("scale_slots_per_day must be a positive divisor of 86400")
        if self.n_jobs < 1:
            raise ValueError("n_jobs must be >= 1")
        if isinstance(self.holidays, list):
            object.__setattr__(self, "holidays", tuple(self.holidays))


class ProphetDetector(Detector):
    """One Prophet model per column; raw score = |y - yhat| / scale from a cached forecast."""

    kind: ClassVar[str] = "prophet"
    config_class: ClassVar[type[DetectorConfig]] = ProphetConfig
    config: ProphetConfig

    def __init__(self, config: ProphetConfig | None = None):
        super().__init__(config)
        self.models: dict[str, Any] = {}
        # Column -> directory name of its MLflow model (readable, unique, filesystem-safe).
        self.model_dirs: dict[str, str] = {}
        # Residual scale per column and slot of the day.
        self.slot_scales: dict[str, list[float]] = {}
        # The forecast cache: a regular grid from ``_start_ns`` every ``_step_ns``, one row per
        # step and one column per series (columns follow ``self.columns``).
        self._start_ns = 0
        self._step_ns = 0
        self._cache: dict[str, np.ndarray] = _empty_cache(0, 0)
        # Parameters of the previous fit per column, to warm-start ``refit``.
        self._warm: dict[str, dict[str, Any]] = {}
        # The seasonality found in the training data: daily, weekly, and another cycle in days.
        self.seasons: dict[str, Any] = {"daily": True, "weekly": True, "period_days": None}

    # -- training --------------------------------------------------------------------------------

    def refit(self, frame: pd.DataFrame) -> Self:
        """Fit again on ``frame`` (normally all data so far), starting Stan from the current fit.

        Periodic refits on all past data keep the trend from drifting away from the series; the
        warm start makes them cheaper than the first fit.
        """
        self._warm = {col: _warm_start(model) for col, model in self.models.items()}
        self._warm_seasons = dict(self.seasons)
        try:
            return self.fit(frame)
        finally:
            self._warm = {}

    def _fit(self, frame: pd.DataFrame) -> None:
        _quiet_stan()
        cfg = self.config
        step = self.step or pd.Timedelta(minutes=5)
        self._step_ns = int(step.value)
        self._start_ns = int(frame.index[0].value)
        n_grid = len(_grid(frame.index, self._start_ns, self._step_ns)) + self._horizon_steps()
        grid = pd.DatetimeIndex(self._start_ns + np.arange(n_grid) * self._step_ns, tz="UTC")
        values = _finite(frame[self.columns].to_numpy(dtype="float64"))
        self.seasons = self._find_seasons(frame, step)
        if self.seasons != getattr(self, "_warm_seasons", None):
            # Another set of seasonal terms: the previous fit's parameters do not fit the model.
            self._warm = {}

        def fit_one(position: int) -> tuple[Any, dict[str, np.ndarray]]:
            series = pd.Series(values[:, position], index=frame.index)
            model = self._fit_series(series, self._warm.get(self.columns[position]))
            return model, self._forecast_with_uncertainty(model, grid)

        if cfg.n_jobs > 1:
            with ThreadPoolExecutor(max_workers=cfg.n_jobs) as pool:
                results = list(pool.map(fit_one, range(len(self.columns))))
        else:
            results = [fit_one(position) for position in range(len(self.columns))]

        self.models = {}
        self.model_dirs = {}
        self.slot_scales = {}
        self._cache = _empty_cache(n_grid, len(self.columns))
        positions = _grid_positions(frame.index, self._start_ns, self._step_ns)
        for j, (col, (model, forecast)) in enumerate(zip(self.columns, results, strict=True)):
            if model is None:
                continue
            self.models[col] = model
            self.model_dirs[col] = _dir_name(col, set(self.model_dirs.values()))
            residuals = values[:, j] - forecast["yhat"][positions]
            self.slot_scales[col] = _slot_scales(
                residuals,
                frame.index.as_unit("ns").asi8,
                float(np.nanmedian(values[:, j])),
                cfg.scale_slots_per_day,
                cfg.min_scale_fraction,
            )
            self._fill(
                self._cache,
                j,
                grid.as_unit("ns").asi8,
                forecast["yhat"],
                forecast["trend_halfwidth"],
            )

    def _find_seasons(self, frame: pd.DataFrame, step: pd.Timedelta) -> dict[str, Any]:
        """Daily and weekly terms, or a custom cycle, only where the training data has them."""
        cfg = self.config
        if cfg.season == "calendar":
            return {
                "daily": cfg.daily_seasonality,
                "weekly": cfg.weekly_seasonality,
                "period_days": None,
            }
        found = resolve_season(FeatureConfig(), frame)
        span = frame.index[-1] - frame.index[0]
        if found.season == "calendar":
            return {
                "daily": cfg.daily_seasonality,
                "weekly": cfg.weekly_seasonality and span >= pd.Timedelta(days=14),
                "period_days": None,
            }
        if found.season == "period":
            days = found.period * step.total_seconds() / 86_400
            return {"daily": False, "weekly": False, "period_days": float(days)}
        return {"daily": False, "weekly": False, "period_days": None}

    def _fit_series(self, series: pd.Series, warm: dict[str, Any] | None) -> Any:
        cfg = self.config
        train = series
        if cfg.fit_resolution is not None:
            resolution = pd.Timedelta(cfg.fit_resolution)
            span = series.index[-1] - series.index[0] if len(series) > 1 else resolution
            # Never fewer than min_fit_points buckets: short series are fitted finer (a whole
            # number of steps, so the buckets do not depend on the index's time unit).
            finest = span / max(cfg.min_fit_points, 1)
            if self.step is not None and finest < resolution:
                resolution = self.step * max(1, int(finest / self.step))
            if resolution > (self.step or resolution):
                # Label each bucket with the mean time of its samples, not its start, so the
                # daily phase of the fit is not shifted by half a bucket.
                train = series.resample(resolution, origin="epoch").mean()
                train.index = train.index + (resolution - self.step) / 2
        train = train.dropna()
        if len(train) < _MIN_FIT_ROWS:
            return None
        model = self._new_model()
        history = pd.DataFrame({"ds": _naive(train.index), "y": train.to_numpy()})
        kwargs: dict[str, Any] = {"seed": cfg.seed}
        if warm is not None:
            kwargs["init"] = warm
        return model.fit(history, **kwargs)

    def _new_model(self) -> Any:
        from prophet import Prophet

        cfg = self.config
        model = Prophet(
            growth=cfg.growth,
            n_changepoints=cfg.n_changepoints,
            changepoint_range=cfg.changepoint_range,
            changepoint_prior_scale=cfg.changepoint_prior_scale,
            yearly_seasonality=cfg.yearly_seasonality,
            weekly_seasonality=bool(self.seasons["weekly"]) and cfg.weekly_fourier_order,
            daily_seasonality=bool(self.seasons["daily"]) and cfg.daily_fourier_order,
            seasonality_mode=cfg.seasonality_mode,
            seasonality_prior_scale=cfg.seasonality_prior_scale,
            holidays=_holiday_frame(cfg.holidays),
            holidays_prior_scale=cfg.holidays_prior_scale,
            interval_width=cfg.interval_width,
            uncertainty_samples=cfg.uncertainty_samples,
        )
        if self.seasons.get("period_days"):
            model.add_seasonality(
                name="cycle", period=float(self.seasons["period_days"]), fourier_order=5
            )
        if isinstance(cfg.holidays, str):
            model.add_country_holidays(country_name=cfg.holidays)
        return model

    def _forecast_with_uncertainty(self, model: Any, grid: pd.DatetimeIndex) -> dict[str, Any]:
        """yhat and the half-width of Prophet's trend-uncertainty band on ``grid``."""
        if model is None:
            return {}
        yhat = _point_forecast(model, grid)
        halfwidth = np.zeros(len(grid))
        # Prophet's sampled trends all follow the fitted trend up to the last fitted point, so
        # only the stretch after it is worth the (slow) sampling.
        future = np.flatnonzero(_naive(grid) > model.history["ds"].max())
        if self.config.uncertainty_samples and future.size:
            # Prophet draws from NumPy's global generator: seed it for repeatable bands (one
            # thread at a time), then put back whatever state other code had.
            with _GLOBAL_RNG_LOCK, _seeded_global_rng(self.config.seed):
                predicted = model.predict(pd.DataFrame({"ds": _naive(grid[future])}))
            # The band is in trend units; multiplicative seasonality scales it into y units.
            factor = np.abs(1.0 + predicted["multiplicative_terms"].to_numpy())
            spread = (predicted["trend_upper"] - predicted["trend_lower"]).to_numpy()
            halfwidth[future] = spread / 2.0 * factor
        return {"yhat": yhat, "trend_halfwidth": halfwidth}

    def _fill(
        self,
        rows: dict[str, np.ndarray],
        j: int,
        ts_ns: np.ndarray,
        yhat: np.ndarray,
        trend_halfwidth: np.ndarray,
    ) -> None:
        """Write column ``j``'s forecast, band and raw-score scale at ``ts_ns`` into ``rows``.

        The band combines Prophet's trend uncertainty with the observed residual spread of the
        slot of the day rather than Prophet's own noise term: that one is estimated on the fit
        resolution (bucket means are quieter than single points) and is the same all day.
        """
        cfg = self.config
        z = ndtri((1.0 + cfg.interval_width) / 2.0)
        slots = np.asarray(self.slot_scales[self.columns[j]])
        residual_scale = slots[_slot(ts_ns, len(slots))]
        halfwidth = np.hypot(z * residual_scale, trend_halfwidth)
        rows["yhat"][:, j] = yhat
        rows["yhat_lower"][:, j] = yhat - halfwidth
        rows["yhat_upper"][:, j] = yhat + halfwidth
        rows["trend_halfwidth"][:, j] = trend_halfwidth
        # "interval": the score also shrinks as the trend's uncertainty grows past the data.
        rows["scale"][:, j] = halfwidth / z if cfg.scale == "interval" else residual_scale

    # -- scoring ---------------------------------------------------------------------------------

    def raw_scores(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Per point, the residual against its causal error distribution (see the module
        docstring); NaN for gaps, non-finite values and unfitted columns."""
        values = _finite(frame[self.columns].to_numpy(dtype="float64"))
        yhat, scale = self._lookup(frame.index, ("yhat", "scale"))
        residual = values - yhat
        cfg = self.config
        if not cfg.residual_window:
            return pd.DataFrame(np.abs(residual) / scale, index=frame.index, columns=self.columns)
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
            raw = np.abs(residual - mean) / np.maximum(std, floor)
        return pd.DataFrame(raw, index=frame.index, columns=self.columns)

    def history_steps(self) -> int:
        return self.config.residual_window

    def forecast(self, start: Any, end: Any) -> pd.DataFrame:
        """Forecast on the detector's grid from ``start`` to ``end`` (both included), long format.

        One row per column and timestamp: ``ts, column, yhat, yhat_lower, yhat_upper``, the band at
        ``interval_width`` (see the module docstring). Past the cached range yhat is computed on
        demand and the trend-uncertainty part of the band stays at its last cached width.
        """
        if not self.columns or not self._step_ns:
            raise ValueError("forecast() needs a fitted detector")
        lo, hi = _utc_ns(start), _utc_ns(end)
        first = self._start_ns + -(-(lo - self._start_ns) // self._step_ns) * self._step_ns
        ts = pd.DatetimeIndex(np.arange(first, hi + 1, self._step_ns), tz="UTC")
        keys = ("yhat", "yhat_lower", "yhat_upper")
        arrays = self._lookup(ts, keys)
        return pd.DataFrame(
            {
                "ts": np.tile(ts, len(self.columns)),
                "column": np.repeat(np.asarray(self.columns, dtype=object), len(ts)),
                **{key: array.ravel(order="F") for key, array in zip(keys, arrays, strict=True)},
            }
        ).astype({"ts": "datetime64[ns, UTC]", "column": "str"})

    def _lookup(self, index: pd.DatetimeIndex, keys: tuple[str, ...]) -> list[np.ndarray]:
        """Cached arrays for ``keys`` at ``index``, one (len(index), columns) array per key."""
        out = [np.full((len(index), len(self.columns)), np.nan) for _ in keys]
        if len(index) == 0 or not self.models:
            return out
        ts_ns = index.as_unit("ns").asi8
        offset = ts_ns - self._start_ns
        on_grid = offset % self._step_ns == 0
        if on_grid.any():
            self._extend(int(ts_ns[on_grid].min()), int(ts_ns[on_grid].max()))
            rows = (ts_ns[on_grid] - self._start_ns) // self._step_ns
            for array, key in zip(out, keys, strict=True):
                array[on_grid] = self._cache[key][rows]
        if not on_grid.all():
            # Off-grid timestamps (another step than the training data) are not worth caching.
            stray = self._point_rows(ts_ns[~on_grid])
            for array, key in zip(out, keys, strict=True):
                array[~on_grid] = stray[key]
        return out

    def _extend(self, lo_ns: int, hi_ns: int) -> None:
        """Grow the cache so it covers [lo_ns, hi_ns]; forward by at least ``horizon_days``."""
        n = len(self._cache["yhat"])
        end_ns = self._start_ns + (n - 1) * self._step_ns
        if lo_ns < self._start_ns:
            before = (self._start_ns - lo_ns) // self._step_ns
            ts = self._start_ns - np.arange(before, 0, -1) * self._step_ns
            rows = self._point_rows(ts)
            self._cache = {k: np.concatenate([rows[k], v]) for k, v in self._cache.items()}
            self._start_ns = int(ts[0])
        if hi_ns > end_ns:
            after = max((hi_ns - end_ns) // self._step_ns, self._horizon_steps(), 1)
            ts = end_ns + np.arange(1, after + 1) * self._step_ns
            rows = self._point_rows(ts)
            self._cache = {k: np.concatenate([v, rows[k]]) for k, v in self._cache.items()}

    def _horizon_steps(self) -> int:
        return round(pd.Timedelta(days=self.config.horizon_days).value / self._step_ns)

    def _point_rows(self, ts_ns: np.ndarray) -> dict[str, np.ndarray]:
        """Point forecast, band and scale at ``ts_ns``; no sampling, one ``predict`` per column.

        The trend-uncertainty half-width comes from the cache: interpolated inside it, held at
        the nearest cached value outside, so a row's values never depend on the rest of the batch.
        """
        rows = _empty_cache(len(ts_ns), len(self.columns))
        index = pd.DatetimeIndex(ts_ns, tz="UTC")
        cached_ns = self._start_ns + np.arange(len(self._cache["yhat"])) * self._step_ns
        models = [self.models.get(col) for col in self.columns]
        yhat = _point_forecasts(models, index)
        for j, model in enumerate(models):
            if model is None:
                continue
            trend = np.interp(ts_ns, cached_ns, self._cache["trend_halfwidth"][:, j])
            self._fill(rows, j, ts_ns, yhat[:, j], trend)
        return rows

    # -- persistence -----------------------------------------------------------------------------

    def _save_native(self, directory: Path) -> None:
        import mlflow.prophet

        root = Path(directory) / MODELS_DIR
        # mlflow refuses to save into a non-empty directory; this folder is ours alone.
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        for col, name in self.model_dirs.items():
            mlflow.prophet.save_model(self.models[col], str(root / name))
        rows = len(self._cache["yhat"])
        cache = pd.DataFrame(
            {
                "ts": np.tile(self._start_ns + np.arange(rows) * self._step_ns, len(self.columns)),
                "column": np.repeat(np.asarray(self.columns, dtype=object), rows),
                **{key: array.ravel(order="F") for key, array in self._cache.items()},
            }
        )
        cache["ts"] = pd.to_datetime(cache["ts"], utc=True)
        cache.to_parquet(root / FORECAST_FILE, index=False)

    def _load_native(self, directory: Path) -> None:
        import mlflow.prophet

        _quiet_stan()
        root = Path(directory) / MODELS_DIR
        self.models = {
            col: mlflow.prophet.load_model(str(root / name))
            for col, name in self.model_dirs.items()
        }
        cache = pd.read_parquet(root / FORECAST_FILE)
        rows = len(cache) // max(len(self.columns), 1)
        self._cache = {
            key: cache[key].to_numpy(dtype="float64").reshape((rows, len(self.columns)), order="F")
            for key in _empty_cache(0, 0)
        }
        self._start_ns = int(cache["ts"].iloc[0].value) if rows else 0

    def _state(self) -> dict[str, Any]:
        return {
            "seasons": self.seasons,
            "model_dirs": self.model_dirs,
            "slot_scales": self.slot_scales,
            "step_ns": self._step_ns,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self.slot_scales = {k: [float(x) for x in v] for k, v in state["slot_scales"].items()}
        self._step_ns = int(state["step_ns"])
        self.model_dirs = dict(state["model_dirs"])
        self.seasons = dict(state.get("seasons", self.seasons))


# -- helpers -------------------------------------------------------------------------------------


def _quiet_stan() -> None:
    """Keep cmdstanpy's and prophet's per-fit INFO chatter out of pipeline logs."""
    import cmdstanpy.utils
    import prophet  # noqa: F401  (sets its logger to INFO on import)

    # cmdstanpy installs its own handler on first use and resets the level then, so make that
    # happen first.
    cmdstanpy.utils.get_logger()
    logging.getLogger("cmdstanpy").setLevel(logging.WARNING)
    logging.getLogger("prophet").setLevel(logging.WARNING)
    # Prophet 1.5 still calls DataFrame.drop(inplace=True), which pandas 3.1 flags on every
    # predict; nothing for us to act on.
    warnings.filterwarnings("ignore", message="The inplace keyword", module="prophet")


def _dir_name(column: str, taken: set[str]) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", str(column)).strip("_")[:80] or "column"
    if name != column or name in taken:
        name = f"{name}-{zlib.crc32(str(column).encode()):08x}"
    return name


def _empty_cache(rows: int, columns: int) -> dict[str, np.ndarray]:
    return {
        key: np.full((rows, columns), np.nan)
        for key in ("yhat", "yhat_lower", "yhat_upper", "trend_halfwidth", "scale")
    }


def _finite(values: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(values), values, np.nan)


def _naive(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    # Prophet rejects timezone-aware ds; seasonality is then in UTC.
    return index.tz_convert("UTC").tz_localize(None) if index.tz is not None else index


def _utc_ns(value: Any) -> int:
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.as_unit("ns").value)


def _grid(index: pd.DatetimeIndex, start_ns: int, step_ns: int) -> np.ndarray:
    last = int(index.as_unit("ns").asi8[-1])
    return start_ns + np.arange((last - start_ns) // step_ns + 1) * step_ns


def _grid_positions(index: pd.DatetimeIndex, start_ns: int, step_ns: int) -> np.ndarray:
    # Training rows sit on the grid up to rounding of an irregular step; round to the nearest.
    offset = index.as_unit("ns").asi8 - start_ns
    return np.rint(offset / step_ns).astype(np.int64)


def _slot(ts_ns: np.ndarray, slots: int) -> np.ndarray:
    return (np.asarray(ts_ns) % _DAY_NS) // (_DAY_NS // slots)


def _slot_scales(
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


def _point_forecast(model: Any, index: pd.DatetimeIndex) -> np.ndarray:
    return _point_forecasts([model], index)[:, 0]


def _point_forecasts(models: list[Any], index: pd.DatetimeIndex) -> np.ndarray:
    """``Prophet.predict(...)["yhat"]`` without sampling, of every model at ``index``: one
    (len(index), len(models)) array, NaN for a None model.

    Prophet's seasonal and holiday features depend on the timestamps and the model's settings
    only, so models that share those (every column of a group) share one feature matrix; each
    model then adds its own trend and coefficients exactly as ``predict`` combines them. Calling
    ``predict`` per column spent ~20 ms each building the same features in pandas.
    """
    ds = pd.Series(_naive(index))
    out = np.full((len(index), len(models)), np.nan)
    shared: dict[tuple, tuple[np.ndarray, pd.DataFrame]] = {}
    for j, model in enumerate(models):
        if model is None:
            continue
        if not _plain(model):
            out[:, j] = _predict_yhat(model, ds)
            continue
        holidays = model.train_holiday_names
        key = (
            repr(model.seasonalities),
            model.holidays_mode,
            tuple(() if holidays is None else holidays),
        )
        if key not in shared:
            features, _, components, _ = model.make_all_seasonality_features(
                pd.DataFrame({"ds": ds})
            )
            shared[key] = (features.to_numpy(), components)
        features, components = shared[key]
        t = ((ds - model.start) / model.t_scale).to_numpy()
        k, m = np.nanmean(model.params["k"]), np.nanmean(model.params["m"])
        if model.growth == "flat":
            trend = model.flat_trend(t, m)
        else:
            deltas = np.nanmean(model.params["delta"], axis=0)
            trend = model.piecewise_linear(t, deltas, k, m, model.changepoints_t)
        trend = trend * model.y_scale
        terms = {}
        for name in ("additive_terms", "multiplicative_terms"):
            beta = model.params["beta"] * components[name].to_numpy()
            term = np.nanmean(np.matmul(features, beta.transpose()), axis=1)
            terms[name] = term * model.y_scale if name == "additive_terms" else term
        out[:, j] = trend * (1 + terms["multiplicative_terms"]) + terms["additive_terms"]
    return out


def _plain(model: Any) -> bool:
    """Whether ``_point_forecasts`` reproduces ``predict`` for ``model``: MAP fit, no extra
    regressors, a linear or flat trend on absmax scaling (the floor is then 0). Others go
    through ``predict``."""
    return (
        model.growth in ("linear", "flat")
        and not model.extra_regressors
        and not model.mcmc_samples
        and model.scaling == "absmax"
        and not model.logistic_floor
    )


def _predict_yhat(model: Any, ds: pd.Series) -> np.ndarray:
    # A shallow copy shares the fitted parameters; only the sampling switch differs.
    fast = copy.copy(model)
    fast.uncertainty_samples = 0
    return fast.predict(pd.DataFrame({"ds": ds}))["yhat"].to_numpy()


def _warm_start(model: Any) -> dict[str, Any]:
    params = model.params
    warm = {name: float(params[name][0][0]) for name in ("k", "m", "sigma_obs")}
    warm.update({name: np.asarray(params[name][0]) for name in ("delta", "beta")})
    return warm


def _holiday_frame(holidays: str | tuple[str, ...] | None) -> pd.DataFrame | None:
    if holidays is None or isinstance(holidays, str) or not holidays:
        return None
    days = pd.to_datetime(list(holidays)).normalize()
    return pd.DataFrame({"holiday": "holiday", "ds": days.tz_localize(None) if days.tz else days})


@contextmanager
def _seeded_global_rng(seed: int):
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)
