"""Forecast: each service's traffic and load metrics over the next 7 days (weekly report) or 30
days (monthly), hourly, with an uncertainty band and the date a capacity limit is crossed.

From the tenant's Prophet champion when the registry has one that knows the series; otherwise a
fitted forecast: a linear trend over the last two weeks plus the hour-of-week profile of the last
four (hour of day when there is less than two weeks of history), with a band of 1.96 residual
standard deviations that widens with the horizon.
"""

from datetime import timedelta

import numpy as np
import pandas as pd

from monitoring_pipelines.reports import data
from monitoring_pipelines.reports.periods import Period
from monitoring_pipelines.reports.sections.base import Context

FORECAST_METRICS = ("requests_per_second", "streams_started", "cpu_percent", "memory_percent")
HISTORY = timedelta(days=28)
Z = 1.96


def fitted(hourly: pd.Series, future: pd.DatetimeIndex) -> pd.DataFrame:
    """yhat, lower, upper at ``future`` from an hourly UTC series."""
    hourly = hourly.dropna()
    t0 = hourly.index[0]
    hours = ((hourly.index - t0) / pd.Timedelta(hours=1)).to_numpy()
    future_hours = ((future - t0) / pd.Timedelta(hours=1)).to_numpy()
    # The trend is fitted on whole days' means (a day's shape does not tilt it).
    days = hourly.resample("1D")
    daily = days.mean()[days.count() == 24].iloc[-14:]
    if len(daily) >= 3:
        centres = ((daily.index - t0) / pd.Timedelta(hours=1)).to_numpy() + 11.5
        slope, intercept = np.polyfit(centres, daily.to_numpy(), 1)
    else:
        slope, intercept = 0.0, float(hourly.mean())
    detrended = hourly.to_numpy() - (slope * hours + intercept)
    weekly = (hourly.index[-1] - hourly.index[0]) >= pd.Timedelta(days=14)

    def slot(index: pd.DatetimeIndex) -> np.ndarray:
        return (index.dayofweek * 24 + index.hour).to_numpy() if weekly else index.hour.to_numpy()

    slots = slot(hourly.index)
    size = 168 if weekly else 24
    profile = np.zeros(size)
    for s in range(size):
        chosen = detrended[slots == s]
        profile[s] = np.median(chosen) if chosen.size else 0.0
    resid = detrended - profile[slots]
    sigma = float(np.std(resid)) if resid.size > 1 else 0.0
    yhat = slope * future_hours + intercept + profile[slot(future)]
    ahead = np.maximum(future_hours - hours[-1], 0)
    half = Z * sigma * np.sqrt(1.0 + ahead / 168.0)
    floor = 0.0 if (hourly >= 0).all() else -np.inf
    return pd.DataFrame(
        {
            "yhat": np.maximum(yhat, floor),
            "lower": np.maximum(yhat - half, floor),
            "upper": np.maximum(yhat + half, floor),
        },
        index=future,
    )


def _champion_for(champion, tenant: str, service: str, metric: str):
    """(forecaster, column) for one series: a detector set's detector of the service (keyed by
    (tenant, service) or (service,)) and the metric, or a single detector's ``service/metric``."""
    detectors = getattr(champion, "detectors", None)
    if isinstance(detectors, dict):
        found = detectors.get((tenant, service)) or detectors.get((service,))
        if found is None or metric not in getattr(found, "columns", ()):
            return None, None
        return found, metric
    return champion, f"{service}/{metric}"


def _from_champion(
    forecaster, column: str, future: pd.DatetimeIndex, memo: dict
) -> pd.DataFrame | None:
    key = id(forecaster)
    if key not in memo:
        try:
            memo[key] = forecaster.forecast(future[0], future[-1] + pd.Timedelta(minutes=55))
        except Exception:  # a champion that cannot forecast leaves the fitted forecast in place
            memo[key] = None
    long = memo[key]
    if long is None:
        return None
    rows = long[long["column"] == column]
    if rows.empty or rows["yhat"].isna().all():
        return None
    hourly = rows.set_index("ts")[["yhat", "yhat_lower", "yhat_upper"]].resample("1h").mean()
    hourly.columns = ["yhat", "lower", "upper"]
    return hourly.reindex(future)


def crossing(frame: pd.DataFrame, limit: float | None) -> dict:
    if limit is None:
        return {"limit": None, "crosses_at": None, "may_cross_at": None}
    over = frame.index[frame["yhat"] >= limit]
    maybe = frame.index[frame["upper"] >= limit]
    return {
        "limit": limit,
        "crosses_at": over[0].isoformat() if len(over) else None,
        "may_cross_at": maybe[0].isoformat() if len(maybe) else None,
    }


def build(ctx: Context, period: Period) -> dict:
    end = data.utc(period.end)
    values = data.read_metric_values(ctx.warehouse, ctx.scope, FORECAST_METRICS, end - HISTORY, end)
    future = pd.date_range(end, periods=period.horizon_days * 24, freq="1h", tz="UTC")
    champions: dict = {}
    memo: dict = {}
    out = []
    for (tenant, service, metric), group in values.groupby(
        ["tenant", "service", "metric"], sort=True
    ):
        hourly = group.set_index("ts")["value"].sort_index().resample("1h").mean().dropna()
        if len(hourly) < 48:
            continue
        if ctx.registry is not None and tenant not in champions:
            champions[tenant] = ctx.registry.prophet_champion(tenant)
        key = (tenant, service, metric)
        source, frame = _champion_forecast(champions.get(tenant), key, future, memo)
        if frame is None:
            source, frame = "fitted", fitted(hourly, future)
        limit = ctx.config.capacity_limit(tenant, service, metric)
        recent = hourly[hourly.index >= end - timedelta(days=7)]
        out.append(
            {
                "tenant": tenant,
                "service": service,
                "metric": metric,
                "source": source,
                "last_week_mean": round(float(recent.mean()), 3),
                "forecast_mean": round(float(frame["yhat"].mean()), 3),
                "forecast_peak_upper": round(float(frame["upper"].max()), 3),
                **crossing(frame, limit),
                **_chart_points(hourly, frame, end - timedelta(days=period.horizon_days)),
            }
        )
    figures = {
        "series_forecast": len(out),
        "capacity_crossings": sum(1 for f in out if f["crosses_at"]),
        "possible_crossings": sum(1 for f in out if f["may_cross_at"]),
    }
    return {
        "figures": figures,
        "horizon_days": period.horizon_days,
        "from": end.isoformat(),
        "series": out,
    }


def _champion_forecast(champ: dict | None, key: tuple, future, memo: dict):
    """(source, forecast frame) from the tenant's Prophet champion for this series; (None, None)
    when there is no champion, it does not model the series or its forecast has gaps."""
    if champ is None:
        return None, None
    forecaster, column = _champion_for(champ["detector"], *key)
    if forecaster is None:
        return None, None
    frame = _from_champion(forecaster, column, future, memo)
    if frame is None or not frame.notna().all().all():
        return None, None
    return f"prophet v{champ['version']}", frame


def _chart_points(hourly: pd.Series, frame: pd.DataFrame, since) -> dict:
    """The chart's history (hourly means since ``since``) and forecast points with their band."""
    return {
        "history": [
            [ts.isoformat(), round(float(v), 4)] for ts, v in hourly[hourly.index >= since].items()
        ],
        "points": [
            [
                ts.isoformat(),
                round(float(r.yhat), 4),
                round(float(r.lower), 4),
                round(float(r.upper), 4),
            ]
            for ts, r in zip(frame.index, frame.itertuples(), strict=True)
        ],
    }
