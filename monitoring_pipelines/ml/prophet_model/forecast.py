"""Prophet's point forecast without ``predict``'s per-call cost, and the forecast cache's layout.

The cache is a regular grid of rows (one per step) and columns (one per series) for each of
``CACHE_KEYS``; the detector grows it and looks scores up in it.
"""

import copy
from typing import Any

import numpy as np
import pandas as pd

FORECAST_COLUMNS = ("ts", "column", "yhat", "yhat_lower", "yhat_upper")
CACHE_KEYS = ("yhat", "yhat_lower", "yhat_upper", "trend_halfwidth", "scale")


def empty_cache(rows: int, columns: int) -> dict[str, np.ndarray]:
    return {key: np.full((rows, columns), np.nan) for key in CACHE_KEYS}


def naive(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    # Prophet rejects timezone-aware ds; seasonality is then in UTC.
    return index.tz_convert("UTC").tz_localize(None) if index.tz is not None else index


def point_forecast(model: Any, index: pd.DatetimeIndex) -> np.ndarray:
    return point_forecasts([model], index)[:, 0]


def point_forecasts(models: list[Any], index: pd.DatetimeIndex) -> np.ndarray:
    """``Prophet.predict(...)["yhat"]`` without sampling, of every model at ``index``: one
    (len(index), len(models)) array, NaN for a None model.

    Prophet's seasonal and holiday features depend on the timestamps and the model's settings
    only, so models that share those (every column of a group) share one feature matrix; each
    model then adds its own trend and coefficients exactly as ``predict`` combines them. Calling
    ``predict`` per column spent ~20 ms each building the same features in pandas.
    """
    ds = pd.Series(naive(index))
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
    """Whether ``point_forecasts`` reproduces ``predict`` for ``model``: MAP fit, no extra
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
