"""Promotion and rollback: the only ways the ``champion`` alias moves.

A candidate becomes champion only if it is not worse than the current champion on the same
held-out data (:func:`promote_if_not_worse`); a first candidate, only if it is not worse than the
reference baseline. :func:`rollback` puts an earlier champion back. The champions so far are kept,
oldest first, as JSON in the registered model's ``champion.history`` tag so a rollback knows where
to go back to. Every decision, with its reasons and numbers, is written on the versions concerned.
"""

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from monitoring_pipelines.ml.registry import tracking
from monitoring_pipelines.ml.registry.tracking import Store
from monitoring_pipelines.ml.registry.versions import (
    CHALLENGER,
    CHAMPION,
    ModelNotFound,
    alias_version,
    append_description,
    exists,
    iso,
    registered_model,
    registered_model_name,
    scrub,
    set_version_tags,
    utc_now,
    version_info,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

DEFAULT_GUARDS: Mapping[str, str] = MappingProxyType(
    {"false_alarms_per_series_week": "lower", "detection_delay_median_minutes": "lower"}
)
HISTORY_TAG = "champion.history"
# On a challenger: the first UTC instant it never saw in training or validation. Its shadow
# scores start there, and its promotion check is still to come while it has no decision tag.
LIVE_FROM_TAG = "challenger.live_from"
_HISTORY_KEEP = 100

Comparison = dict[str, dict[str, Any]]


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

    Rule: ``primary`` (higher is better) and every guard (``{metric: "lower" | "higher"}``) must be
    at least as good as the champion's, within ``tolerance`` (a fraction of the champion's value,
    applied to every metric since they have different units). NaN counts as the worst value. With
    no champion yet the candidate becomes champion if its ``primary`` is not worse than the
    reference baseline's (``baseline_metrics``, measured on the same data; without them it becomes
    champion as it is); with a champion but no ``champion_metrics`` nothing is compared and nothing
    moves. With ``feedback`` (a challenger after its shadow days, see
    :func:`feedback_figures`) it must also be not worse on operator feedback: each false positive
    counts one against the model that raised it (for the challenger, those its shadow scores
    also flagged), each confirmed incident one for it. The decision, its reasons, the metrics and
    the feedback used are written on the candidate version; a replaced champion is tagged with the
    version that replaced it.
    """
    name = registered_model_name(kind, scope)
    candidate_version = int(candidate_version)
    now = utc_now()
    with registry.activate() as target:
        client = tracking.client(target)
        version_info(client, name, candidate_version)
        champion = alias_version(client, name, CHAMPION)
        compared: Comparison = {}
        if champion == candidate_version:
            return Decision(True, [f"v{champion} is already champion"], {}, champion, champion)
        if champion is None:
            promoted, reasons = _first_candidate(
                candidate_metrics, baseline_metrics, primary, tolerance, compared
            )
        elif champion_metrics is None:
            promoted = False
            reasons = [f"champion v{champion} has no metrics on the same held-out data"]
        else:
            directions = {primary: "higher", **guards}
            promoted, reasons = _against_champion(
                candidate_metrics, champion_metrics, directions, tolerance, compared
            )
            if feedback is not None:
                ok, reason = _against_feedback(feedback, compared)
                reasons = [*reasons, reason]
                promoted = promoted and ok
        if promoted:
            _crown(client, name, candidate_version, champion, now)
        tags = {
            **_decision_tags(promoted, reasons, champion, compared, now),
            "promotion.rule": _rule_text(primary, guards, tolerance),
            **_validation_tags(candidate_metrics, validation_window),
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
            **_validation_tags(candidate_metrics, validation_window),
        }
        set_version_tags(client, name, candidate_version, tags)
        append_description(client, name, candidate_version, f"**Challenger {now}**: {reason}.")
    logger.info("%s v%d: %s", name, candidate_version, reason)
    return Decision(False, [reason], {}, int(candidate_version), champion)


def feedback_figures(
    champion: Mapping[str, list[str]],
    challenger: Mapping[str, list[str]],
    window: tuple[Any, Any],
    shadow_days: int,
) -> dict[str, Any]:
    """The feedback a promotion check uses: the fingerprints of the incidents operators marked
    ``false_positive`` or confirmed, raised by the champion and flagged by the challenger in
    shadow over ``window``."""
    return {
        "window": [iso(window[0]), iso(window[1])],
        "shadow_days": int(shadow_days),
        "champion": {k: sorted(v) for k, v in champion.items()},
        "challenger": {k: sorted(v) for k, v in challenger.items()},
    }


def rollback(
    registry: Store,
    kind: str,
    scope: str,
    to_version: int | None = None,
    *,
    reason: str = "manual rollback",
) -> tuple[int, int]:
    """Put an earlier version back as ``champion``; returns ``(from_version, to_version)``.

    By default the version that was champion before the current one (from the registered model's
    ``champion.history``). The current champion leaves the history, so rolling back twice goes two
    steps back rather than flipping between two versions. Both versions get ``rollback.*`` tags and
    the restored one a description paragraph with the reason.
    """
    name = registered_model_name(kind, scope)
    now = utc_now()
    reason = scrub(reason)
    with registry.activate() as target:
        client = tracking.client(target)
        current = alias_version(client, name, CHAMPION)
        if current is None:
            raise ModelNotFound(f"{name} has no champion to roll back")
        to_version, remaining = _rollback_plan(client, name, current, to_version)
        client.set_registered_model_alias(name, CHAMPION, str(to_version))
        _write_history(client, name, remaining)
        _record_rollback(client, name, current, to_version, reason, now)
    logger.warning(
        "%s: champion rolled back from v%d to v%d (%s)", name, current, to_version, reason
    )
    return current, to_version


# -- the rule --------------------------------------------------------------------------------------


def _first_candidate(
    candidate: Mapping[str, float],
    baseline: Mapping[str, float] | None,
    primary: str,
    tolerance: float,
    compared: Comparison,
) -> tuple[bool, list[str]]:
    """Whether a first candidate (no champion yet) becomes champion, and why."""
    if baseline is None:
        return True, ["no champion yet: the first candidate becomes champion"]
    row = _compare(primary, "higher", candidate, baseline, tolerance, against="reference baseline")
    compared[f"baseline.{primary}"] = row
    if row["ok"]:
        return True, [f"no champion yet, and {row['reason']}: the candidate becomes champion"]
    return False, [
        f"no champion yet, and {row['reason']}: not promoted; the pipeline scores with the kinds "
        "that qualified"
    ]


def _against_champion(
    candidate: Mapping[str, float],
    champion: Mapping[str, float],
    directions: Mapping[str, str],
    tolerance: float,
    compared: Comparison,
) -> tuple[bool, list[str]]:
    """Whether the candidate is not worse than the champion on every metric, and why."""
    failed, passed = [], []
    for metric, direction in directions.items():
        if direction not in ("higher", "lower"):
            raise ValueError(f"guard {metric}: direction must be 'higher' or 'lower'")
        row = _compare(metric, direction, candidate, champion, tolerance)
        compared[metric] = row
        (passed if row["ok"] else failed).append(row["reason"])
    return (True, passed) if not failed else (False, failed)


def _net(side: Mapping[str, list[str]]) -> int:
    return len(side.get("confirmed", [])) - len(side.get("false_positive", []))


def _against_feedback(feedback: Mapping[str, Any], compared: Comparison) -> tuple[bool, str]:
    """Whether the challenger is not worse on operator feedback: confirmed incidents it would
    have flagged minus false positives it would have flagged, against the champion's."""
    mine, theirs = feedback["challenger"], feedback["champion"]
    row = _compare(
        "feedback_net", "higher", {"feedback_net": _net(mine)}, {"feedback_net": _net(theirs)}, 0
    )
    compared["feedback_net"] = row
    counts = (
        f"operator feedback over {feedback['shadow_days']} shadow day(s): the challenger would "
        f"have flagged {len(mine.get('false_positive', []))} false positive(s) and "
        f"{len(mine.get('confirmed', []))} confirmed incident(s), the champion raised "
        f"{len(theirs.get('false_positive', []))} and {len(theirs.get('confirmed', []))}"
    )
    return row["ok"], f"{counts}; {row['reason']}"


def _compare(
    metric: str,
    direction: str,
    candidate: Mapping[str, float],
    champion: Mapping[str, float],
    tolerance: float,
    *,
    against: str = "champion",
) -> dict[str, Any]:
    if metric not in candidate or metric not in champion:
        missing = "candidate" if metric not in candidate else "champion"
        return {
            "direction": direction,
            "candidate": candidate.get(metric),
            "champion": champion.get(metric),
            "ok": False,
            "reason": f"{metric}: missing from the {against if missing == 'champion' else missing}"
            "'s metrics",
        }
    cand, champ = float(candidate[metric]), float(champion[metric])
    worst = -np.inf if direction == "higher" else np.inf
    c = worst if np.isnan(cand) else cand
    h = worst if np.isnan(champ) else champ
    slack = tolerance * abs(h) if np.isfinite(h) else 0.0
    ok = bool(c == h or (c >= h - slack if direction == "higher" else c <= h + slack))
    relation = "not worse than" if ok else "worse than"
    better = f"{'higher' if direction == 'higher' else 'lower'} is better"
    return {
        "direction": direction,
        "candidate": cand,
        "champion": champ,
        "ok": ok,
        "reason": f"{metric} {_fmt(cand)} {relation} {against}'s {_fmt(champ)} ({better})",
    }


def _rule_text(primary: str, guards: Mapping[str, str], tolerance: float) -> str:
    rule = [f"{primary} (higher)", *(f"{m} ({d})" for m, d in guards.items())]
    return f"not worse on {', '.join(rule)}; tolerance {tolerance:g} of the champion's value"


# -- what a decision writes ------------------------------------------------------------------------


def _crown(
    client: "MlflowClient", name: str, candidate: int, champion: int | None, now: str
) -> None:
    """The candidate becomes champion (and stops being challenger); the old one learns by whom."""
    client.set_registered_model_alias(name, CHAMPION, str(candidate))
    if alias_version(client, name, CHALLENGER) == candidate:
        client.delete_registered_model_alias(name, CHALLENGER)
    _push_history(client, name, champion, candidate)
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


def _validation_tags(
    metrics: Mapping[str, float], window: tuple[Any, Any] | None
) -> dict[str, str]:
    tags = {f"validation.{k}": _fmt(v) for k, v in metrics.items()}
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


# -- rollback and the champions' history -----------------------------------------------------------


def _rollback_plan(
    client: "MlflowClient", name: str, current: int, to_version: int | None
) -> tuple[int, list[int]]:
    """The version to restore and the history as it will be once it is champion again."""
    history = _history(client, name)
    if not history or history[-1] != current:
        # The alias was moved by hand (UI, API): the alias is the truth.
        history.append(current)
    remaining = history[:-1]
    if to_version is None:
        to_version = next(
            (v for v in reversed(remaining) if v != current and exists(client, name, v)), None
        )
        if to_version is None:
            raise ModelNotFound(f"{name} has no earlier champion than v{current}")
    to_version = int(to_version)
    if to_version == current:
        raise ValueError(f"{name} v{to_version} is already champion")
    version_info(client, name, to_version)
    if to_version in remaining:
        cut = len(remaining) - remaining[::-1].index(to_version)
        remaining = remaining[:cut]
    else:
        remaining.append(to_version)
    return to_version, remaining


def _record_rollback(
    client: "MlflowClient", name: str, current: int, to_version: int, reason: str, now: str
) -> None:
    """``rollback.*`` tags and a description paragraph on both versions."""
    set_version_tags(
        client,
        name,
        current,
        {
            "rollback.rolled_back_at": now,
            "rollback.replaced_by": str(to_version),
            "rollback.reason": reason,
        },
    )
    set_version_tags(
        client,
        name,
        to_version,
        {
            "rollback.restored_at": now,
            "rollback.restored_from": str(current),
            "rollback.reason": reason,
        },
    )
    restored = f"**Rollback {now}**: champion again in place of v{current}. Reason: {reason}"
    replaced = f"**Rollback {now}**: no longer champion, v{to_version} restored. Reason: {reason}"
    append_description(client, name, to_version, restored)
    append_description(client, name, current, replaced)


def _history(client: "MlflowClient", name: str) -> list[int]:
    model = registered_model(client, name)
    raw = (model.tags or {}).get(HISTORY_TAG) if model is not None else None
    try:
        return [int(v) for v in json.loads(raw)] if raw else []
    except (ValueError, TypeError):
        logger.warning("%s: unreadable %s tag %r, starting a new history", name, HISTORY_TAG, raw)
        return []


def _push_history(client: "MlflowClient", name: str, previous: int | None, new: int) -> None:
    history = _history(client, name)
    if previous is not None and (not history or history[-1] != previous):
        history.append(previous)
    history.append(new)
    _write_history(client, name, history)


def _write_history(client: "MlflowClient", name: str, history: list[int]) -> None:
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-_HISTORY_KEEP:]))


def _fmt(value: Any) -> str:
    try:
        return f"{float(value):.6g}"
    except (TypeError, ValueError):
        return str(value)


def _json_number(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
