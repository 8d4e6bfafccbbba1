"""Fitting Prophet: the seasonality the training data has, one model per series, its forecast.

``prophet`` is imported inside the functions that use it: importing this module must stay cheap.
"""

import logging
import threading
import warnings
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd

from monitoring_pipelines.ml.features import FeatureConfig, resolve_season
from monitoring_pipelines.ml.prophet_model.config import ProphetConfig
from monitoring_pipelines.ml.prophet_model.forecast import naive, point_forecast

# Prophet needs at least two observations; fewer than this many leave the column unscored.
_MIN_FIT_ROWS = 2
_GLOBAL_RNG_LOCK = threading.Lock()


def find_seasons(cfg: ProphetConfig, frame: pd.DataFrame, step: pd.Timedelta) -> dict[str, Any]:
    """Daily and weekly terms, or a custom cycle, only where the training data has them."""
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


def fit_series(
    cfg: ProphetConfig,
    series: pd.Series,
    step: pd.Timedelta | None,
    seasons: dict[str, Any],
    warm: dict[str, Any] | None,
) -> Any:
    """A Prophet model of ``series`` on bucket means at ``fit_resolution``; None if too short."""
    train = series
    if cfg.fit_resolution is not None:
        resolution = pd.Timedelta(cfg.fit_resolution)
        span = series.index[-1] - series.index[0] if len(series) > 1 else resolution
        # Never fewer than min_fit_points buckets: short series are fitted finer (a whole
        # number of steps, so the buckets do not depend on the index's time unit).
        finest = span / max(cfg.min_fit_points, 1)
        if step is not None and finest < resolution:
            resolution = step * max(1, int(finest / step))
        if resolution > (step or resolution):
            # Label each bucket with the mean time of its samples, not its start, so the
            # daily phase of the fit is not shifted by half a bucket.
            train = series.resample(resolution, origin="epoch").mean()
            train.index = train.index + (resolution - step) / 2
    train = train.dropna()
    if len(train) < _MIN_FIT_ROWS:
        return None
    model = _new_model(cfg, seasons)
    history = pd.DataFrame({"ds": naive(train.index), "y": train.to_numpy()})
    kwargs: dict[str, Any] = {"seed": cfg.seed}
    if warm is not None:
        kwargs["init"] = warm
    return model.fit(history, **kwargs)


def _new_model(cfg: ProphetConfig, seasons: dict[str, Any]) -> Any:
    from prophet import Prophet

    model = Prophet(
        growth=cfg.growth,
        n_changepoints=cfg.n_changepoints,
        changepoint_range=cfg.changepoint_range,
        changepoint_prior_scale=cfg.changepoint_prior_scale,
        yearly_seasonality=cfg.yearly_seasonality,
        weekly_seasonality=bool(seasons["weekly"]) and cfg.weekly_fourier_order,
        daily_seasonality=bool(seasons["daily"]) and cfg.daily_fourier_order,
        seasonality_mode=cfg.seasonality_mode,
        seasonality_prior_scale=cfg.seasonality_prior_scale,
        holidays=_holiday_frame(cfg.holidays),
        holidays_prior_scale=cfg.holidays_prior_scale,
        interval_width=cfg.interval_width,
        uncertainty_samples=cfg.uncertainty_samples,
    )
    if seasons.get("period_days"):
        model.add_seasonality(name="cycle", period=float(seasons["period_days"]), fourier_order=5)
    if isinstance(cfg.holidays, str):
        model.add_country_holidays(country_name=cfg.holidays)
    return model


def forecast_with_uncertainty(
    cfg: ProphetConfig, model: Any, grid: pd.DatetimeIndex
) -> dict[str, Any]:
    """yhat and the half-width of Prophet's trend-uncertainty band on ``grid``."""
    if model is None:
        return {}
    yhat = point_forecast(model, grid)
    halfwidth = np.zeros(len(grid))
    # Prophet's sampled trends all follow the fitted trend up to the last fitted point, so
    # only the stretch after it is worth the (slow) sampling.
    future = np.flatnonzero(naive(grid) > model.history["ds"].max())
    if cfg.uncertainty_samples and future.size:
        # Prophet draws from NumPy's global generator: seed it for repeatable bands (one
        # thread at a time), then put back whatever state other code had.
        with _GLOBAL_RNG_LOCK, _seeded_global_rng(cfg.seed):
            predicted = model.predict(pd.DataFrame({"ds": naive(grid[future])}))
        # The band is in trend units; multiplicative seasonality scales it into y units.
        factor = np.abs(1.0 + predicted["multiplicative_terms"].to_numpy())
        spread = (predicted["trend_upper"] - predicted["trend_lower"]).to_numpy()
        halfwidth[future] = spread / 2.0 * factor
    return {"yhat": yhat, "trend_halfwidth": halfwidth}


def warm_start(model: Any) -> dict[str, Any]:
    """The fitted parameters of ``model``, to start Stan from on the next fit."""
    params = model.params
    warm = {name: float(params[name][0][0]) for name in ("k", "m", "sigma_obs")}
    warm.update({name: np.asarray(params[name][0]) for name in ("delta", "beta")})
    return warm


def quiet_stan() -> None:
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
