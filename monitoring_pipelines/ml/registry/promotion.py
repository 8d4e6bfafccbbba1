"""Promotion: the only way the ``champion`` alias moves forward.

A candidate becomes champion only if it is not worse than the current champion on the same
held-out data (:func:`promote_if_not_worse`, under the rule of :mod:`.promotion_rule`); a first
candidate, only if it is not worse than the reference baseline. Once a tenant has a champion a
retrained candidate is kept as ``challenger`` (:func:`register_challenger`) and judged after its
shadow days. Every decision, with its reasons and numbers, is written on the versions concerned;
:mod:`.rollback` puts an earlier champion back.
"""

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from monitoring_pipelines.ml.registry import tracking
from monitoring_pipelines.ml.registry.promotion_rule import (
    DEFAULT_GUARDS,
    Comparison,
    Rule,
    fmt,
    rule_text,
    verdict,
)
from monitoring_pipelines.ml.registry.rollback import push_history
from monitoring_pipelines.ml.registry.tracking import Store
from monitoring_pipelines.ml.registry.versions import (
    CHALLENGER,
    CHAMPION,
    ModelNotFound,
    alias_version,
    append_description,
    iso,
    registered_model_name,
    set_version_tags,
    utc_now,
    version_info,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

# On a challenger: the first UTC instant it never saw in training or validation. Its shadow
# scores start there, and its promotion check is still to come while it has no decision tag.
LIVE_FROM_TAG = "challenger.live_from"


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reasons: list[str]
    compared: Comparison
    version: int | None = None
    previous_champion: int | None = None


def promote_if_not_worse(
    registry: Store,
    kind: str,
    scope: str,
    candidate_version: int,
    candidate_metrics: Mapping[str, float],
    champion_metrics: Mapping[str, float] | None,
    *,
    primary: str = "event_f1",
    guards: Mapping[str, str] = DEFAULT_GUARDS,
    tolerance: float = 0.0,
    validation_window: tuple[Any, Any] | None = None,
    baseline_metrics: Mapping[str, float] | None = None,
    feedback: Mapping[str, Any] | None = None,
) -> Decision:
    """Move ``champion`` to the candidate unless it is worse than the current champion.

    Contract: ``candidate_metrics`` and ``champion_metrics`` were computed by the caller on the SAME
    held-out data (same series, same window, same labels); numbers from different windows are not
    comparable and this function cannot tell. Pass that window as ``validation_window`` so the
    reviewer sees it.

    Rule (:func:`~.promotion_rule.verdict`): ``primary`` (higher is better) and every guard
    must be at least as good as the champion's, within ``tolerance``; a first candidate must be
    not worse than ``baseline_metrics``; with ``feedback`` (a challenger after its shadow days,
    :func:`~.promotion_rule.feedback_figures`) it must also be not worse on operator feedback.
    The decision, its reasons, the metrics and the feedback used are written on the candidate
    version; a replaced champion is tagged with the version that replaced it.

    It runs to about 60 lines because reading both versions, deciding, and writing the decision
    with the alias move happen inside one ``registry.activate()`` block, so they see one store.
    """
    name = registered_model_name(kind, scope)
    candidate_version = int(candidate_version)
    now = utc_now()
    with registry.activate() as target:
        client = tracking.client(target)
        version_info(client, name, candidate_version)
        champion = alias_version(client, name, CHAMPION)
        if champion == candidate_version:
            return Decision(True, [f"v{champion} is already champion"], {}, champion, champion)
        compared: Comparison = {}
        promoted, reasons = verdict(
            champion,
            candidate_metrics,
            champion_metrics,
            baseline_metrics,
            feedback,
            Rule(primary, guards, tolerance),
            compared,
        )
        if promoted:
            _crown(client, name, candidate_version, champion, now)
        tags = {
            **_decision_tags(promoted, reasons, champion, compared, now),
            "promotion.rule": rule_text(primary, guards, tolerance),
            **validation_tags(candidate_metrics, validation_window),
            **({"promotion.feedback": json.dumps(feedback, default=str)} if feedback else {}),
        }
        set_version_tags(client, name, candidate_version, tags)
        paragraph = _decision_paragraph(now, champion, promoted, reasons, validation_window)
        append_description(client, name, candidate_version, paragraph)
    logger.info("%s v%d: %s (%s)", name, candidate_version, tags["promotion.decision"], reasons)
    return Decision(promoted, reasons, compared, candidate_version, champion)


def register_challenger(
    registry: Store,
    kind: str,
    scope: str,
    candidate_version: int,
    candidate_metrics: Mapping[str, float],
    *,
    live_from: Any,
    shadow_days: int,
    validation_window: tuple[Any, Any] | None = None,
) -> Decision:
    """Keep a retrained candidate as ``challenger`` beside the tenant's champion: it is scored in
    shadow from ``live_from`` and judged after ``shadow_days`` live days by
    :func:`promote_if_not_worse` with operator feedback. Says so on the version."""
    name = registered_model_name(kind, scope)
    now = utc_now()
    with registry.activate() as target:
        client = tracking.client(target)
        champion = alias_version(client, name, CHAMPION)
        if champion is None:
            raise ModelNotFound(f"{name} has no champion for a challenger to shadow")
        client.set_registered_model_alias(name, CHALLENGER, str(candidate_version))
        reason = (
            f"champion v{champion} in place: registered as challenger, scored in shadow from "
            f"{iso(live_from)} and judged after {shadow_days} live day(s) on the labelled "
            "windows and operator feedback"
        )
        tags = {
            LIVE_FROM_TAG: iso(live_from),
            "challenger.of_champion": str(champion),
            "challenger.shadow_days_required": str(int(shadow_days)),
            "challenger.registered_at": now,
            **validation_tags(candidate_metrics, validation_window),
        }
        set_version_tags(client, name, candidate_version, tags)
        append_description(client, name, candidate_version, f"**Challenger {now}**: {reason}.")
    logger.info("%s v%d: %s", name, candidate_version, reason)
    return Decision(False, [reason], {}, int(candidate_version), champion)


# -- what a decision writes ------------------------------------------------------------------------


def _crown(
    client: "MlflowClient", name: str, candidate: int, champion: int | None, now: str
) -> None:
    """The candidate becomes champion (and stops being challenger); the old one learns by whom."""
    client.set_registered_model_alias(name, CHAMPION, str(candidate))
    if alias_version(client, name, CHALLENGER) == candidate:
        client.delete_registered_model_alias(name, CHALLENGER)
    push_history(client, name, champion, candidate)
    if champion is not None:
        set_version_tags(
            client,
            name,
            champion,
            {"promotion.replaced_by": str(candidate), "promotion.replaced_at": now},
        )


def _decision_tags(
    promoted: bool, reasons: list[str], champion: int | None, compared: Comparison, now: str
) -> dict[str, str]:
    tags = {
        "promotion.decision": "promoted" if promoted else "rejected",
        "promotion.reasons": "; ".join(reasons),
        "promotion.compared_with_version": "none" if champion is None else str(champion),
        "promotion.decided_at": now,
    }
    if compared:
        tags["promotion.compared"] = json.dumps(compared, default=_json_number)
    return tags


def validation_tags(metrics: Mapping[str, float], window: tuple[Any, Any] | None) -> dict[str, str]:
    tags = {f"validation.{k}": fmt(v) for k, v in metrics.items()}
    if window is not None:
        tags["validation.window_start"] = iso(window[0])
        tags["validation.window_end"] = iso(window[1])
    return tags


def _decision_paragraph(
    now: str,
    champion: int | None,
    promoted: bool,
    reasons: list[str],
    window: tuple[Any, Any] | None,
) -> str:
    heading = f"**Promotion check {now}** against "
    heading += "no champion" if champion is None else f"champion v{champion}"
    if window is not None:
        heading += f" on held-out data {iso(window[0])} to {iso(window[1])}"
    heading += ": PROMOTED to champion." if promoted else ": not promoted."
    return "\n".join([heading, *(f"- {reason}" for reason in reasons)])


def _json_number(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
