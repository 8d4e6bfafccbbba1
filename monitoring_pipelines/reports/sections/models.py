"""Models: what the MLflow registry records for the scope's detectors in the period.

Each registered version is placed at the end of the held-out window it was judged on (its
``validation.window_end`` tag, else its training window's end): the data time of the decision, so
a past period's report does not change when models are trained later. Rollbacks are placed at
their own time. Drift checks are not recorded by the pipeline yet.
"""

from datetime import timedelta

import pandas as pd

from monitoring_pipelines.reports import data
from monitoring_pipelines.reports.periods import Period
from monitoring_pipelines.reports.sections.base import Context


def _at(value: str | None) -> pd.Timestamp | None:
    if not value:
        return None
    try:
        return data.as_utc(value)
    except (ValueError, TypeError):
        return None


def placed_at(tags: dict, created: pd.Timestamp | None) -> pd.Timestamp | None:
    """When a version's training and promotion decision happened, in data time."""
    for key in ("validation.window_end", "data.window_end"):
        at = _at(tags.get(key))
        if at is not None:
            # The window's end is exclusive: the decision belongs to its last instant.
            return at - timedelta(microseconds=1)
    return created


def events(versions: list[dict], period: Period) -> list[dict]:
    start, end = data.utc(period.start), data.utc(period.end)
    out = []
    for v in versions:
        tags = v.get("tags") or {}
        at = placed_at(tags, _at(v.get("created")))
        base = {"tenant": v["tenant"], "kind": v["kind"], "version": v["version"]}
        if at is not None and start <= at < end:
            decision = tags.get("promotion.decision")
            out.append(
                {
                    **base,
                    "event": {"promoted": "promoted", "rejected": "rejected"}.get(
                        decision, "registered"
                    ),
                    "at": at.isoformat(),
                    "reasons": tags.get("promotion.reasons", ""),
                    "compared_with": tags.get("promotion.compared_with_version"),
                    "event_f1": _float(tags.get("validation.event_f1")),
                }
            )
        rolled = _at(tags.get("rollback.rolled_back_at"))
        if rolled is not None and start <= rolled < end:
            out.append(
                {
                    **base,
                    "event": "rolled_back",
                    "at": rolled.isoformat(),
                    "reasons": tags.get("rollback.reason", ""),
                    "compared_with": tags.get("rollback.replaced_by"),
                    "event_f1": None,
                }
            )
    out.sort(key=lambda e: (e["at"], e["tenant"], e["kind"], e["version"], e["event"]))
    return out


def _float(text) -> float | None:
    try:
        return round(float(text), 3)
    except (TypeError, ValueError):
        return None


def scope_tenants(ctx: Context, period: Period) -> list[str]:
    if ctx.scope.tenant is not None:
        return [ctx.scope.tenant]
    names = ctx.cached(
        ("names", period.key),
        lambda: data.metric_names(ctx.warehouse, ctx.scope, period.start, period.end),
    )
    return sorted(set(names["tenant"]))


def build(ctx: Context, period: Period) -> dict:
    if ctx.registry is None:
        return {"figures": {}, "registry_read": False, "events": [], "drift_checks": None}
    versions = [v for t in scope_tenants(ctx, period) for v in ctx.registry.versions(t)]
    found = events(versions, period)
    count = {
        e: sum(1 for x in found if x["event"] == e) for e in ("promoted", "rejected", "rolled_back")
    }
    figures = {
        "retrains": sum(1 for x in found if x["event"] != "rolled_back"),
        "promotions": count["promoted"],
        "rejections": count["rejected"],
        "rollbacks": count["rolled_back"],
    }
    return {"figures": figures, "registry_read": True, "events": found, "drift_checks": None}
