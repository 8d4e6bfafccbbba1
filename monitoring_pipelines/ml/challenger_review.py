"""The challenger's review: after its shadow days, a challenger is promoted only if it is not worse
than the champion on the tenant's labelled validation week and on operator feedback over those
days; a promotion refits the tenant's alert policy. The scoring asset calls
:func:`review_challengers` before it scores; nothing here knows Dagster.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from monitoring_pipelines.ml import model_audit
from monitoring_pipelines.ml.train_and_promote import (
    DEFAULT_SHADOW_DAYS,
    fit_detection_policy,
    tenant_history,
)
from monitoring_pipelines.ml.training import validate
from monitoring_pipelines.warehouse import Warehouse


@dataclass
class Review:
    """One challenger's promotion check after its shadow days."""

    kind: str
    version: int
    promoted: bool
    reasons: list[str]
    feedback: dict[str, Any]


def review_challengers(
    warehouse: Warehouse,
    models: Any,
    tenant: str,
    champions: Mapping[str, int],
    challengers: Mapping[str, int],
    labels_file: Path,
    step_seconds: int,
    shadow_days: int = DEFAULT_SHADOW_DAYS,
) -> list[Review]:
    """The promotion check of each challenger that has shadowed ``shadow_days`` live days: not
    worse than the champion on the tenant's labelled validation week (both judged on the same
    data) and on operator feedback over its shadow days (:func:`operator_feedback`). A promotion
    refits the tenant's alert policy for the new champions."""
    from monitoring_pipelines.ml.registry.promotion_rule import feedback_figures

    due = {
        kind: days
        for kind, version in challengers.items()
        if len(days := warehouse.shadow_days(tenant, kind, version)) >= shadow_days
    }
    if not due:
        return []
    plan, frames, windows = tenant_history(warehouse, tenant, labels_file, step_seconds)
    reviews = []
    for kind, days in due.items():
        window = (days[0], days[-1] + pd.Timedelta(days=1))
        champion, _ = models.load_by_alias(kind, tenant)
        challenger, _ = models.load_by_alias(kind, tenant, "challenger")
        feedback = feedback_figures(
            *operator_feedback(warehouse, tenant, kind, champions[kind], challengers[kind], window),
            window,
            len(days),
        )
        decision = models.promote_if_not_worse(
            kind,
            tenant,
            challengers[kind],
            validate({kind: challenger}, frames, plan, windows).metrics,
            validate({kind: champion}, frames, plan, windows).metrics,
            validation_window=(plan.calibration_end, plan.validation_end),
            feedback=feedback,
        )
        reviews.append(
            Review(kind, challengers[kind], decision.promoted, list(decision.reasons), feedback)
        )
        model_audit.record_review(
            warehouse, tenant, kind, champions[kind], challengers[kind], decision, feedback
        )
    if any(r.promoted for r in reviews):
        fit_detection_policy(warehouse, models, tenant, plan, frames, windows)
    return reviews


def operator_feedback(
    warehouse: Warehouse,
    tenant: str,
    kind: str,
    champion_version: int,
    challenger_version: int,
    window: tuple[pd.Timestamp, pd.Timestamp],
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """``(champion, challenger)`` fingerprints of reviewed anomaly incidents started in
    ``window``, each ``{"false_positive": [...], "confirmed": [...]}``.

    An incident counts for the champion version it was raised with, and for the challenger when
    its shadow scores flagged a point of one of the incident's metrics while the incident ran.
    False positive: marked so (``alerts false-positive``). Confirmed: acknowledged or resolved
    by a person and not marked false positive. Incidents nobody touched count for no one."""
    from monitoring_pipelines.alerting import store
    from monitoring_pipelines.alerting.types import ANOMALY

    start, end = window
    shadow = warehouse.read_records("shadow_scores", tenant=tenant, start=start, end=end)
    shadow = shadow[
        (shadow["kind"] == kind) & (shadow["version"] == challenger_version) & shadow["is_anomaly"]
    ]
    champion: dict[str, list[str]] = {"false_positive": [], "confirmed": []}
    challenger: dict[str, list[str]] = {"false_positive": [], "confirmed": []}
    for stored in store.read_incidents(warehouse, tenant=tenant, since=start):
        incident = stored.incident
        if incident.kind != ANOMALY or not start <= pd.Timestamp(incident.started_at) < end:
            continue
        if incident.model_versions.get(kind) != champion_version:
            continue
        if stored.feedback == store.FALSE_POSITIVE:
            verdict = "false_positive"
        elif stored.feedback is None and (stored.acknowledged_by or stored.resolved_by):
            verdict = "confirmed"
        else:
            continue
        champion[verdict].append(incident.fingerprint)
        flagged = shadow[shadow["service"] == incident.service]
        if any(
            (
                (flagged["metric"] == m.metric)
                & (flagged["ts"] >= pd.Timestamp(m.first_ts))
                & (flagged["ts"] <= pd.Timestamp(m.last_ts))
            ).any()
            for m in incident.metrics
        ):
            challenger[verdict].append(incident.fingerprint)
    return champion, challenger
