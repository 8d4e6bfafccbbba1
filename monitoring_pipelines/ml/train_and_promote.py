"""One use case, train and promote: fit a tenant's candidate of one kind, judge it, log and
register it in MLflow, and move ``champion`` only if it is not worse (than the champion on the same
held-out week, or for a first candidate than the reference baseline). The training assets call it;
nothing here knows Dagster.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from monitoring_pipelines.ml.training import (
    TrainingPlan,
    baseline_validation,
    data_hash,
    fit_candidate,
    slice_frames,
    validate,
)


@dataclass
class TrainingOutcome:
    registered_name: str
    version: int
    run_id: str
    promoted: bool
    reasons: list[str]
    plan: TrainingPlan
    groups: int
    skipped: dict[str, str]
    metrics: dict[str, float]

    def summary(self) -> str:
        return f"{self.registered_name} v{self.version}: {'; '.join(self.reasons)}"


class NothingToFit(ValueError):
    """No group of the tenant could be fitted; the message says why, per group."""


def train_and_promote(
    kind: str,
    tenant: str,
    plan: TrainingPlan,
    frames: Mapping[tuple, pd.DataFrame],
    windows: Mapping[str, list],
    models: Any,
    tags: Mapping[str, str] | None = None,
) -> TrainingOutcome:
    """Fit, judge, log, register and maybe promote ``kind`` for ``tenant``; ``models`` is the
    :class:`~monitoring_pipelines.ml.registry.ModelRegistry` to write to."""
    from monitoring_pipelines.ml.registry import ModelNotFound

    train = slice_frames(frames, plan.train_start, plan.train_end)
    candidate = fit_candidate(kind, frames, plan)
    if not len(candidate):
        raise NothingToFit(f"{tenant}: no group could be fitted: {candidate.skipped}")
    judged = validate({kind: candidate}, frames, plan, windows)
    info = models.log_candidate(
        candidate,
        kind=kind,
        scope=tenant,
        params={
            "detector": next(iter(candidate.detectors.values())).config.to_dict(),
            "plan": plan.to_dict(),
            "groups": len(candidate),
        },
        metrics=judged.metrics,
        data_window=(plan.train_start, plan.train_end),
        data_hash=data_hash(train),
        training_rows=int(sum(f.notna().to_numpy().sum() for f in train.values())),
        plots={"scores": _plot(frames, candidate, plan, windows, kind)},
        input_example=_example(train),
        description=(
            f"Validated on {plan.calibration_end.date()} to {plan.validation_end.date()}: "
            f"event F1 {judged.metrics['event_f1']:.3f}, "
            f"{judged.metrics['false_alarms_per_series_week']:.2f} false alarms per series-week."
        ),
        tags=dict(tags or {}),
        group_columns=("tenant", "service"),
    )
    try:
        champion, _ = models.load_by_alias(kind, tenant)
        champion_metrics = validate({kind: champion}, frames, plan, windows).metrics
        baseline_metrics = None
    except ModelNotFound:
        champion_metrics = None
        baseline_metrics = baseline_validation(frames, plan, windows).metrics
    decision = models.promote_if_not_worse(
        kind,
        tenant,
        info.version,
        judged.metrics,
        champion_metrics,
        validation_window=(plan.calibration_end, plan.validation_end),
        baseline_metrics=baseline_metrics,
    )
    return TrainingOutcome(
        registered_name=info.registered_name,
        version=info.version,
        run_id=info.run_id,
        promoted=decision.promoted,
        reasons=list(decision.reasons),
        plan=plan,
        groups=len(candidate),
        skipped={"/".join(k): r for k, r in candidate.skipped.items()},
        metrics={k: float(v) for k, v in judged.metrics.items()},
    )


def _example(frames: Mapping[tuple, pd.DataFrame], rows: int = 48) -> pd.DataFrame:
    key = sorted(frames)[0]
    head = frames[key].iloc[-rows:]
    out = head.reset_index(names="ts")
    out.insert(1, "tenant", key[0])
    out.insert(2, "service", key[1])
    return out


def _plot(frames, model_set, plan: TrainingPlan, windows, kind: str):
    from monitoring_pipelines.ml.plots import score_plot

    key = sorted(model_set.detectors)[0]
    recent = slice_frames(frames, plan.train_start, plan.validation_end)[key]
    scores = model_set.detectors[key].score(recent)
    labelled = [w for column in recent.columns for w in windows.get("/".join((*key, column)), [])]
    return score_plot(recent, scores, labelled, title=f"{kind} on {'/'.join(key)}")
