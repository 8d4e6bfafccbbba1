"""Service health against SLO targets: p95 latency, error rate, availability, error budget.

Availability is request-weighted: 1 - (errors / requests) over the period, where the error rate
of each 5-minute step is weighted by that step's traffic (requests or streams); without a traffic
metric the steps weigh the same. The error budget of the period is ``1 - target`` of its
requests; burn is the share of it spent (1.0: exactly used up; above: overspent).
"""

import numpy as np
import pandas as pd

from monitoring_pipelines.reports import data
from monitoring_pipelines.reports.periods import Period
from monitoring_pipelines.reports.sections.base import Context, number

TRAFFIC_METRICS = ("requests_per_second", "streams_started")


def latency_metric(names: list[str]) -> str | None:
    found = sorted(n for n in names if "p95" in n and n.endswith("_ms"))
    return found[0] if found else None


def error_metric(names: list[str]) -> str | None:
    found = sorted(n for n in names if n.endswith("error_rate"))
    return found[0] if found else None


def traffic_metric(names: list[str]) -> str | None:
    return next((n for n in TRAFFIC_METRICS if n in names), None)


def service_health(values: pd.DataFrame, names: list[str], slo: dict) -> dict:
    """One service's figures from its rows (``metric, ts, value``) in the period."""
    by_metric = {m: g.set_index("ts")["value"].sort_index() for m, g in values.groupby("metric")}
    latency, error, traffic = latency_metric(names), error_metric(names), traffic_metric(names)
    row = {
        "latency_metric": latency,
        "error_metric": error,
        "traffic_metric": traffic,
        "latency_p95_ms": None,
        "latency_target_ms": slo.get("latency_p95_ms"),
        "latency_over_target_share": None,
        "error_rate": None,
        "availability": None,
        "availability_target": slo.get("availability"),
        "budget_burn": None,
        "budget_left": None,
        "met": None,
    }
    if latency in by_metric and len(by_metric[latency]):
        lat = by_metric[latency].to_numpy()
        row["latency_p95_ms"] = round(float(np.percentile(lat, 95)), 1)
        if row["latency_target_ms"] is not None:
            row["latency_over_target_share"] = round(
                float((lat > row["latency_target_ms"]).mean()), 4
            )
    if error in by_metric and len(by_metric[error]):
        err = by_metric[error]
        if traffic in by_metric:
            joined = pd.concat({"err": err, "w": by_metric[traffic]}, axis=1, join="inner").dropna()
            weight = joined["w"].clip(lower=0)
            ratio = (
                float((joined["err"] * weight).sum() / weight.sum())
                if weight.sum() > 0
                else float(joined["err"].mean())
            )
        else:
            ratio = float(err.mean())
        row["error_rate"] = round(ratio, 6)
        row["availability"] = round(1.0 - ratio, 6)
        target = row["availability_target"]
        if target is not None and target < 1:
            burn = ratio / (1.0 - target)
            row["budget_burn"] = round(burn, 3)
            row["budget_left"] = round(1.0 - burn, 3)
    checks = []
    if row["availability"] is not None and row["availability_target"] is not None:
        checks.append(row["availability"] >= row["availability_target"])
    if row["latency_p95_ms"] is not None and row["latency_target_ms"] is not None:
        checks.append(row["latency_p95_ms"] <= row["latency_target_ms"])
    row["met"] = all(checks) if checks else None
    return row


def build(ctx: Context, period: Period) -> dict:
    names = data.metric_names(ctx.warehouse, ctx.scope, period.start, period.end)
    wanted = {
        m
        for m in names["metric"].unique()
        if m in TRAFFIC_METRICS or m.endswith("error_rate") or ("p95" in m and m.endswith("_ms"))
    }
    values = ctx.cached(
        ("health_values", period.key),
        lambda: data.read_metric_values(ctx.warehouse, ctx.scope, wanted, period.start, period.end),
    )
    services = []
    for (tenant, service), group in names.groupby(["tenant", "service"], sort=True):
        own = values[(values["tenant"] == tenant) & (values["service"] == service)]
        row = service_health(own, list(group["metric"]), ctx.config.slo(tenant, service))
        if row["availability"] is None and row["latency_p95_ms"] is None:
            continue
        services.append({"tenant": tenant, "service": service, **row})
    availability = [s["availability"] for s in services if s["availability"] is not None]
    left = [s["budget_left"] for s in services if s["budget_left"] is not None]
    figures = {
        "services": len(services),
        "services_meeting_slo": sum(1 for s in services if s["met"]),
        "worst_availability": number(min(availability)) if availability else None,
        "lowest_budget_left": number(min(left)) if left else None,
    }
    return {"figures": figures, "services": services}
