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

The parts live beside this module: ``config`` (the settings), ``fitting`` (seasonality found in
the data, one Prophet model per series, its forecast), ``forecast`` (the point forecast without
``predict`` and the cache layout), ``residuals`` (residual spread, band and raw score) and
``persistence`` (save and load). ``prophet`` and ``mlflow`` are imported inside the functions that
use them: importing this package must stay cheap for the Dagster code location.
"""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from monitoring_pipelines.ml.base import Detector, DetectorConfig
from monitoring_pipelines.ml.prophet_model import persistence
from monitoring_pipelines.ml.prophet_model.config import ProphetConfig
from monitoring_pipelines.ml.prophet_model.fitting import (
    find_seasons,
    fit_series,
    forecast_with_uncertainty,
    quiet_stan,
    warm_start,
)
from monitoring_pipelines.ml.prophet_model.forecast import empty_cache, point_forecasts
from monitoring_pipelines.ml.prophet_model.residuals import causal_scores, fill_band, slot_scales


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
        self._cache: dict[str, np.ndarray] = empty_cache(0, 0)
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
        self._warm = {col: warm_start(model) for col, model in self.models.items()}
        self._warm_seasons = dict(self.seasons)
        try:
            return self.fit(frame)
        finally:
            self._warm = {}

    def _fit(self, frame: pd.DataFrame) -> None:
        quiet_stan()
        cfg = self.config
        step = self.step or pd.Timedelta(minutes=5)
        self._step_ns = int(step.value)
        self._start_ns = int(frame.index[0].value)
        n_grid = len(_grid(frame.index, self._start_ns, self._step_ns)) + self._horizon_steps()
        grid = pd.DatetimeIndex(self._start_ns + np.arange(n_grid) * self._step_ns, tz="UTC")
        values = _finite(frame[self.columns].to_numpy(dtype="float64"))
        self.seasons = find_seasons(self.config, frame, step)
        if self.seasons != getattr(self, "_warm_seasons", None):
            # Another set of seasonal terms: the previous fit's parameters do not fit the model.
            self._warm = {}

        def fit_one(position: int) -> tuple[Any, dict[str, np.ndarray]]:
            series = pd.Series(values[:, position], index=frame.index)
            warm = self._warm.get(self.columns[position])
            model = fit_series(cfg, series, self.step, self.seasons, warm)
            return model, forecast_with_uncertainty(cfg, model, grid)

        if cfg.n_jobs > 1:
            with ThreadPoolExecutor(max_workers=cfg.n_jobs) as pool:
                results = list(pool.map(fit_one, range(len(self.columns))))
        else:
            results = [fit_one(position) for position in range(len(self.columns))]

        self.models = {}
        self.model_dirs = {}
        self.slot_scales = {}
        self._cache = empty_cache(n_grid, len(self.columns))
        positions = _grid_positions(frame.index, self._start_ns, self._step_ns)
        for j, (col, (model, forecast)) in enumerate(zip(self.columns, results, strict=True)):
            if model is None:
                continue
            self.models[col] = model
            self.model_dirs[col] = persistence.dir_name(col, set(self.model_dirs.values()))
            residuals = values[:, j] - forecast["yhat"][positions]
            self.slot_scales[col] = slot_scales(
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

    def _fill(
        self,
        rows: dict[str, np.ndarray],
        j: int,
        ts_ns: np.ndarray,
        yhat: np.ndarray,
        trend_halfwidth: np.ndarray,
    ) -> None:
        slots = self.slot_scales[self.columns[j]]
        fill_band(self.config, rows, j, ts_ns, yhat, trend_halfwidth, slots)

    # -- scoring ---------------------------------------------------------------------------------

    def raw_scores(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Per point, the residual against its causal error distribution (see the module
        docstring); NaN for gaps, non-finite values and unfitted columns."""
        values = _finite(frame[self.columns].to_numpy(dtype="float64"))
        yhat, scale = self._lookup(frame.index, ("yhat", "scale"))
        raw = causal_scores(self.config, values - yhat, scale)
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
        rows = empty_cache(len(ts_ns), len(self.columns))
        index = pd.DatetimeIndex(ts_ns, tz="UTC")
        cached_ns = self._start_ns + np.arange(len(self._cache["yhat"])) * self._step_ns
        models = [self.models.get(col) for col in self.columns]
        yhat = point_forecasts(models, index)
        for j, model in enumerate(models):
            if model is None:
                continue
            trend = np.interp(ts_ns, cached_ns, self._cache["trend_halfwidth"][:, j])
            self._fill(rows, j, ts_ns, yhat[:, j], trend)
        return rows

    # -- persistence -----------------------------------------------------------------------------

    def _save_native(self, directory: Path) -> None:
        persistence.save(
            directory,
            self.models,
            self.model_dirs,
            self.columns,
            self._cache,
            self._start_ns,
            self._step_ns,
        )

    def _load_native(self, directory: Path) -> None:
        self.models, self._cache, self._start_ns = persistence.load(
            directory, self.model_dirs, self.columns
        )

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


def _finite(values: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(values), values, np.nan)


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
