"""The promotion rule: when a candidate is not worse than the champion (or, for a first
candidate, than the reference baseline), metric by metric and on operator feedback, and why.

Pure comparisons of figures the caller measured on the same held-out data; :mod:`.promotion`
applies the verdict to the registry.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from monitoring_pipelines.ml.registry.versions import iso

DEFAULT_GUARDS: Mapping[str, str] = MappingProxyType(
    {"false_alarms_per_series_week": "lower", "detection_delay_median_minutes": "lower"}
)

Comparison = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Rule:
    """What a candidate is compared on: ``primary`` (higher is better), the guards
    (``{metric: "lower" | "higher"}``) and ``tolerance`` (a fraction of the champion's value)."""

    primary: str
    guards: Mapping[str, str]
    tolerance: float


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


def verdict(
    champion: int | None,
    candidate: Mapping[str, float],
    champion_metrics: Mapping[str, float] | None,
    baseline: Mapping[str, float] | None,
    feedback: Mapping[str, Any] | None,
    rule: Rule,
    compared: Comparison,
) -> tuple[bool, list[str]]:
    """Whether the candidate may replace ``champion``, and why; each comparison made lands in
    ``compared``.

    ``rule.primary`` and every guard must be at least as good as the champion's, within
    ``rule.tolerance`` (a fraction of the champion's value, applied to every metric since they
    have different units). NaN counts as the worst value. With no champion yet (``champion`` None)
    the candidate becomes champion if its ``primary`` is not worse than the reference baseline's
    (``baseline``, measured on the same data; without them it becomes champion as it is); with a
    champion but no ``champion_metrics`` nothing is compared and nothing moves. With ``feedback``
    (:func:`feedback_figures`) it must also be not worse on operator feedback: each false positive
    counts one against the model that raised it (for the challenger, those its shadow scores also
    flagged), each confirmed incident one for it.
    """
    if champion is None:
        return _first_candidate(candidate, baseline, rule.primary, rule.tolerance, compared)
    if champion_metrics is None:
        return False, [f"champion v{champion} has no metrics on the same held-out data"]
    directions = {rule.primary: "higher", **rule.guards}
    promoted, reasons = _against_champion(
        candidate, champion_metrics, directions, rule.tolerance, compared
    )
    if feedback is not None:
        ok, reason = _against_feedback(feedback, compared)
        reasons = [*reasons, reason]
        promoted = promoted and ok
    return promoted, reasons


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
        "reason": f"{metric} {fmt(cand)} {relation} {against}'s {fmt(champ)} ({better})",
    }


def rule_text(primary: str, guards: Mapping[str, str], tolerance: float) -> str:
    rule = [f"{primary} (higher)", *(f"{m} ({d})" for m, d in guards.items())]
    return f"not worse on {', '.join(rule)}; tolerance {tolerance:g} of the champion's value"


def fmt(value: Any) -> str:
    try:
        return f"{float(value):.6g}"
    except (TypeError, ValueError):
        return str(value)
