"""Chart data: the top incidents' metrics (value, score, threshold, incident window), incidents by
day of week and hour, and per-tenant daily sparklines. The renderer draws them; the JSON keeps the
numbers."""

from datetime import timedelta

import pandas as pd

from monitoring_pipelines.reports import data
from monitoring_pipelines.reports.periods import Period
from monitoring_pipelines.reports.sections.base import Context, day_starts, local_times
from monitoring_pipelines.reports.sections.operations import in_period, incidents

SEVERITY_RANK = {"critical": 4, "high": 3, "medium": 2, "low": 1}
PAD = timedelta(hours=6)
MAX_SPAN = timedelta(hours=48)
METRICS_PER_INCIDENT = 2
TRAFFIC = "requests_per_second"


def top_incidents(frame: pd.DataFrame, n: int) -> pd.DataFrame:
    if frame.empty:
        return frame
    ranked = frame.assign(rank=frame["severity"].map(SEVERITY_RANK).fillna(0))
    return ranked.sort_values(
        ["rank", "score", "started_at", "fingerprint"], ascending=[False, False, True, True]
    ).head(n)


def _strongest(metrics: list[dict]) -> list[dict]:
    def excess(m):
        t = float(m.get("threshold") or 0)
        return float(m.get("peak_score") or 0) / t if t > 0 else float(m.get("peak_score") or 0)

    return sorted(metrics, key=lambda m: (-excess(m), m["metric"]))[:METRICS_PER_INCIDENT]


def incident_chart(ctx: Context, inc) -> dict:
    end = inc.resolved_at if pd.notna(inc.resolved_at) else inc.last_seen_at
    lo = inc.started_at - PAD
    hi = min(end + PAD, lo + MAX_SPAN)
    panels = []
    for m in _strongest(inc.metrics):
        rows = data.read_score_series(ctx.warehouse, inc.tenant, inc.service, m["metric"], lo, hi)
        panels.append(
            {
                "metric": m["metric"],
                "peak_value": m.get("peak_value"),
                "peak_score": m.get("peak_score"),
                "threshold": m.get("threshold"),
                "points": [
                    [
                        ts.isoformat(),
                        None if pd.isna(v) else round(float(v), 4),
                        None if pd.isna(s) else round(float(s), 4),
                        None if pd.isna(t) else round(float(t), 4),
                    ]
                    for ts, v, s, t in zip(
                        rows["ts"],
                        rows["value"],
                        rows["ensemble_score"],
                        rows["threshold"],
                        strict=True,
                    )
                ],
            }
        )
    return {
        "fingerprint": inc.fingerprint,
        "tenant": inc.tenant,
        "service": inc.service,
        "severity": inc.severity,
        "score": round(float(inc.score), 3),
        "started_at": inc.started_at.isoformat(),
        "ended_at": end.isoformat(),
        "feedback": None if pd.isna(inc.feedback) else inc.feedback,
        "panels": panels,
    }


def heat_map(frame: pd.DataFrame, period: Period) -> list[list[int]]:
    """7 x 24 incident starts, Monday first, hours in the report timezone."""
    grid = [[0] * 24 for _ in range(7)]
    for t in local_times(frame["started_at"], period):
        grid[t.weekday()][t.hour] += 1
    return grid


def sparklines(ctx: Context, frame: pd.DataFrame, period: Period) -> list[dict]:
    days = day_starts(period)
    keys = [d.date().isoformat() for d in days[:-1]]
    local_day = local_times(frame["started_at"], period).dt.strftime("%Y-%m-%d")
    # The health section read the period's traffic already (same scope and window).
    cached = ctx.cache.get(("health_values", period.key))
    traffic = (
        cached[cached["metric"] == TRAFFIC]
        if cached is not None
        else data.read_metric_values(ctx.warehouse, ctx.scope, [TRAFFIC], period.start, period.end)
    )
    traffic_day = local_times(traffic["ts"], period).dt.strftime("%Y-%m-%d")
    tenants = sorted(set(frame["tenant"]) | set(traffic["tenant"]))
    out = []
    for tenant in tenants:
        mine = local_day[frame["tenant"] == tenant].value_counts()
        own = traffic[traffic["tenant"] == tenant]
        # Requests per second summed over services, averaged over the day's steps.
        per_day = own.assign(day=traffic_day[own.index]).groupby(["day", "ts"])["value"].sum()
        mean = per_day.groupby(level="day").mean()
        out.append(
            {
                "tenant": tenant,
                "days": keys,
                "incidents": [int(mine.get(k, 0)) for k in keys],
                "requests_per_second": [
                    None if k not in mean.index else round(float(mean[k]), 2) for k in keys
                ],
            }
        )
    return out


def build(ctx: Context, period: Period) -> dict:
    frame = in_period(incidents(ctx, period), period)
    anomalies = frame[frame["kind"] == "anomaly"]
    return {
        "figures": {},
        "top_incidents": [
            incident_chart(ctx, inc)
            for inc in top_incidents(anomalies, ctx.config.top_incidents).itertuples()
        ],
        "heat_map": heat_map(frame, period),
        "sparklines": sparklines(ctx, frame, period),
    }
