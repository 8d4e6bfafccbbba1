"""One use case, train and promote: fit a tenant's candidate of one kind, judge it, log and
register it in MLflow. A first candidate becomes ``champion`` if it is not worse than the reference
baseline; once the tenant has a champion, a retrained candidate becomes ``challenger``, is scored in
shadow on live days, and is promoted by
:func:`~monitoring_pipelines.ml.challenger_review.review_challengers` only if it is not worse than
the champion on the same labelled week and on operator feedback. Also the tenant's alert policy
(:func:`fit_detection_policy`). The training and scoring assets call these; nothing here knows
Dagster.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from monitoring_pipelines.ml import model_audit
from monitoring_pipelines.ml.evaluation import parse_windows
from monitoring_pipelines.ml.frames import group_frames
from monitoring_pipelines.ml.training import (
    TrainingPlan,
    baseline_validation,
    data_hash,
    fit_candidate,
    judge,
    learn_combiner,
    score_period,
    slice_frames,
    validate,
)
from monitoring_pipelines.warehouse import Warehouse, audit

# Live days a challenger is scored in shadow before its promotion check, unless settings say.
DEFAULT_SHADOW_DAYS = 1


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
    # The audit action of the decision (promote, keep the champion, challenger) and the champion
    # in place before it.
    action: str = ""
    previous_champion: int | None = None

    def summary(self) -> str:
        return f"{self.registered_name} v{self.version}: {'; '.join(self.reasons)}"


class NothingToFit(ValueError):
    """No group of the tenant could be fitted; the message says why, per group."""


class NoCleanData(ValueError):
    """The tenant has no clean metrics to train on yet."""


def tenant_history(
    warehouse: Warehouse, tenant: str, labels_file: Path, step_seconds: int
) -> tuple[TrainingPlan, dict[tuple, pd.DataFrame], dict[str, list]]:
    """The rolling plan ending at midnight after the tenant's last clean day, its grid frames
    and its label windows (from the labels file if there is one)."""
    newest = warehouse.newest_ts("clean_metrics", tenant)
    if newest is None:
        raise NoCleanData(f"{tenant}: no clean metrics yet; run ingest_job first")
    plan = TrainingPlan.ending(pd.Timestamp(newest).floor("D") + pd.Timedelta(days=1))
    grid = warehouse.read_records(
        "clean_metrics", tenant=tenant, start=plan.train_start, end=plan.validation_end
    )
    frames = group_frames(grid, step_seconds=step_seconds) if len(grid) else {}
    windows = {}
    if labels_file.exists():
        labels = json.loads(labels_file.read_text())
        windows = parse_windows({k: v for k, v in labels.items() if k.startswith(f"{tenant}/")})
    return plan, frames, windows


def train_tenant(
    kind: str,
    tenant: str,
    warehouse: Warehouse,
    labels_file: Path,
    step_seconds: int,
    models: Any,
    tags: Mapping[str, str] | None = None,
    shadow_days: int = DEFAULT_SHADOW_DAYS,
) -> TrainingOutcome:
    """:func:`train_and_promote` on the tenant's rolling window (:func:`tenant_history`); the
    decision goes to the audit trail (actor ``pipeline``)."""
    plan, frames, windows = tenant_history(warehouse, tenant, labels_file, step_seconds)
    outcome = train_and_promote(kind, tenant, plan, frames, windows, models, tags, shadow_days)
    model_audit.record_training(warehouse, tenant, outcome)
    return outcome


def train_and_promote(
    kind: str,
    tenant: str,
    plan: TrainingPlan,
    frames: Mapping[tuple, pd.DataFrame],
    windows: Mapping[str, list],
    models: Any,
    tags: Mapping[str, str] | None = None,
    shadow_days: int = 0,
) -> TrainingOutcome:
    """Fit, judge, log, register and maybe promote ``kind`` for ``tenant``; ``models`` is the
    :class:`~monitoring_pipelines.ml.registry.ModelRegistry` to write to. With a champion in
    place and ``shadow_days`` > 0 the candidate becomes challenger (judged later by
    :func:`.challenger_review.review_challengers`); with 0 it is judged against the champion now."""
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
        description=_description(plan, judged.metrics),
        tags=dict(tags or {}),
        group_columns=("tenant", "service"),
    )
    decision, shadowed = _decide(
        kind, tenant, info.version, judged.metrics, plan, frames, windows, models, shadow_days
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
        action=(
            audit.PROMOTE
            if decision.promoted
            else audit.CHALLENGER
            if shadowed
            else audit.KEEP_CHAMPION
        ),
        previous_champion=decision.previous_champion,
    )


def _description(plan: TrainingPlan, metrics: Mapping[str, float]) -> str:
    """The version's description: its validation window and headline figures."""
    return (
        f"Validated on {plan.calibration_end.date()} to {plan.validation_end.date()}: "
        f"event F1 {metrics['event_f1']:.3f}, "
        f"{metrics['false_alarms_per_series_week']:.2f} false alarms per series-week."
    )


def _decide(
    kind: str,
    tenant: str,
    version: int,
    metrics: Mapping[str, float],
    plan: TrainingPlan,
    frames: Mapping[tuple, pd.DataFrame],
    windows: Mapping[str, list],
    models: Any,
    shadow_days: int,
) -> tuple[Any, bool]:
    """The logged candidate's decision, and whether it was kept as challenger to shadow the
    champion (with one in place and ``shadow_days`` > 0); else its promotion check now, against
    the champion or, with none yet, the reference baseline, on the same held-out data."""
    from monitoring_pipelines.ml.registry import ModelNotFound

    window = (plan.calibration_end, plan.validation_end)
    try:
        champion, _ = models.load_by_alias(kind, tenant)
    except ModelNotFound:
        champion = None
    if champion is not None and shadow_days > 0:
        decision = models.register_challenger(
            kind,
            tenant,
            version,
            metrics,
            live_from=plan.validation_end,
            shadow_days=shadow_days,
            validation_window=window,
        )
        return decision, True
    champion_metrics = baseline_metrics = None
    if champion is not None:
        champion_metrics = validate({kind: champion}, frames, plan, windows).metrics
    else:
        baseline_metrics = baseline_validation(frames, plan, windows).metrics
    decision = models.promote_if_not_worse(
        kind,
        tenant,
        version,
        metrics,
        champion_metrics,
        validation_window=window,
        baseline_metrics=baseline_metrics,
    )
    return decision, False


@dataclass
class PolicyOutcome:
    policy: dict
    per_series: dict[str, float]
    versions: dict[str, int]
    members: dict[str, dict[str, float]]
    ensemble: dict[str, float]
    learned: bool


def fit_detection_policy(
    warehouse: Warehouse,
    models: Any,
    tenant: str,
    plan: TrainingPlan,
    frames: Mapping[tuple, pd.DataFrame],
    windows: Mapping[str, list],
) -> PolicyOutcome:
    """How the tenant's champions become alerts: the ensemble rule and one threshold per series
    on the ensemble score, fitted on the calibration week and judged on the validation week,
    written to the warehouse's ``thresholds`` table."""
    from monitoring_pipelines.ml.scoring_service import NoChampion, load_models

    model_sets, versions = load_models(models, tenant)
    if not model_sets:
        raise NoChampion(f"{tenant}: no champion model yet; materialize the *_model assets first")
    scores = score_period(
        model_sets, frames, plan.train_end, plan.validation_end, context_start=plan.train_start
    )
    combiner, learned = learn_combiner(scores, plan, windows)
    ensemble = judge(scores, plan, windows, combiner=combiner)
    members = {kind: judge({kind: s}, plan, windows).metrics for kind, s in scores.items()}
    policy = {
        "combiner": combiner.to_dict(),
        "weights_learned": learned,
        "alert_policy": ensemble.thresholds.to_dict()["policy"],
        "default_threshold": ensemble.thresholds.default,
        "model_versions": versions,
        "train_window": [plan.train_start.isoformat(), plan.train_end.isoformat()],
        "validation_window": [plan.calibration_end.isoformat(), plan.validation_end.isoformat()],
        "validation": {"ensemble": ensemble.metrics, **members},
    }
    per_series_thresholds = {
        name.split("/", 1)[1]: value for name, value in ensemble.thresholds.per_series.items()
    }
    warehouse.replace_thresholds(tenant, per_series_thresholds, policy)
    return PolicyOutcome(
        policy, per_series_thresholds, versions, members, ensemble.metrics, learned is not None
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
