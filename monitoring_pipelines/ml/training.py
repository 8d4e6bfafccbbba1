"""Rolling training and validation of one tenant's detectors, as the pipeline runs it.

The data of a tenant up to ``as_of`` is cut in time, never shuffled:

    [train_start ........ train_end) [calibration ...) [validation ...) as_of
     fit the detectors               fit thresholds     judge: event F1, delay, false alarms

Thresholds are fitted on the calibration week and the candidate is judged on the following week,
so no figure is measured on data that chose it. The current champion is judged on exactly the same
weeks, which is what the promotion gate compares.
"""

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd

from monitoring_pipelines.ml.base import DetectorConfig
from monitoring_pipelines.ml.catalogue import detector_class
from monitoring_pipelines.ml.ensemble import (
    DEFAULT_COMBINER,
    CombinerConfig,
    combine_groups,
    learn_weights,
)
from monitoring_pipelines.ml.evaluation import (
    EvaluationConfig,
    evaluate_series,
    overall,
    summarise,
)
from monitoring_pipelines.ml.model_set import DetectorSet
from monitoring_pipelines.ml.thresholds import (
    ThresholdConfig,
    Thresholds,
    config_for,
    fit_thresholds,
    flags,
)

GroupFrames = Mapping[tuple, pd.DataFrame]


@dataclass(frozen=True)
class TrainingPlan:
    train_start: pd.Timestamp
    train_end: pd.Timestamp
    calibration_end: pd.Timestamp
    validation_end: pd.Timestamp

    @classmethod
    def ending(
        cls,
        as_of: pd.Timestamp,
        *,
        train_days: int = 21,
        calibration_days: int = 7,
        validation_days: int = 7,
    ) -> "TrainingPlan":
        end = pd.Timestamp(as_of)
        end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
        calibration_end = end - timedelta(days=validation_days)
        train_end = calibration_end - timedelta(days=calibration_days)
        return cls(train_end - timedelta(days=train_days), train_end, calibration_end, end)

    def to_dict(self) -> dict[str, str]:
        return {k: v.isoformat() for k, v in self.__dict__.items()}


def series_name(group: tuple, column: str) -> str:
    return "/".join((*group, column))


def slice_frames(frames: GroupFrames, start: pd.Timestamp, end: pd.Timestamp) -> dict:
    return {k: f[(f.index >= start) & (f.index < end)] for k, f in frames.items()}


def data_hash(frames: GroupFrames) -> str:
    """A fingerprint of the training data: reviewers can tell two runs apart by it."""
    digest = hashlib.sha256()
    for key in sorted(frames):
        frame = frames[key]
        digest.update("/".join(key).encode())
        digest.update(",".join(map(str, frame.columns)).encode())
        digest.update(frame.index.asi8.tobytes())
        digest.update(np.round(frame.to_numpy(dtype="float64"), 9).tobytes())
    return digest.hexdigest()[:16]


def fit_candidate(
    kind: str, frames: GroupFrames, plan: TrainingPlan, config: DetectorConfig | None = None
) -> DetectorSet:
    """Fit one detector of ``kind`` per group on the training weeks."""
    train = slice_frames(frames, plan.train_start, plan.train_end)
    train = {k: f for k, f in train.items() if f.notna().to_numpy().any()}
    return DetectorSet.fit_groups(detector_class(kind), config, train)


def score_period(
    model_sets: Mapping[str, DetectorSet],
    frames: GroupFrames,
    start: pd.Timestamp,
    end: pd.Timestamp,
    *,
    context_start: pd.Timestamp,
) -> dict[str, dict[tuple, pd.DataFrame]]:
    """Each member's calibrated scores on ``[start, end)``, scored causally from ``context_start``.

    Scoring from an earlier start only gives the detectors their history (lookback windows, the
    calibration's long-run statistics); no score depends on anything after its own point.
    """
    window = slice_frames(frames, context_start, end)
    out: dict[str, dict[tuple, pd.DataFrame]] = {}
    for kind, model_set in model_sets.items():
        scored = model_set.score(window)
        out[kind] = {g: s[s.index >= start] for g, s in scored.items()}
    return out


def per_series(group_scores: Mapping[tuple, pd.DataFrame]) -> dict[str, pd.Series]:
    return {
        series_name(group, col): frame[col]
        for group, frame in group_scores.items()
        for col in frame.columns
    }


def learn_combiner(
    scores: Mapping[str, Mapping[tuple, pd.DataFrame]],
    plan: "TrainingPlan",
    windows: Mapping[str, list],
) -> tuple[CombinerConfig, dict[str, float] | None]:
    """The ensemble's weights learned on the calibration week where it holds labelled incidents
    (:func:`~monitoring_pipelines.ml.ensemble.learn_weights`), with the figures behind them; the
    data-free :data:`~monitoring_pipelines.ml.ensemble.DEFAULT_COMBINER` (and None) otherwise.
    The validation week stays held out: the learned ensemble is judged there."""
    series = {kind: per_series(groups) for kind, groups in scores.items()}
    if len(series) < 2:
        return DEFAULT_COMBINER.for_members(series), None
    names = sorted(set.intersection(*(set(s) for s in series.values())))
    members: dict[str, list[np.ndarray]] = {kind: [] for kind in series}
    labels: list[np.ndarray] = []
    for name in names:
        first = next(iter(series.values()))[name]
        index = first.index[(first.index >= plan.train_end) & (first.index < plan.calibration_end)]
        mask = np.zeros(len(index), dtype=bool)
        for start, end in windows.get(name, []):
            mask |= (index >= start) & (index <= end)
        labels.append(mask)
        for kind, by_name in series.items():
            members[kind].append(by_name[name].reindex(index).to_numpy(dtype="float64"))
    if not any(mask.any() for mask in labels):
        return DEFAULT_COMBINER.for_members(series), None
    weights, report = learn_weights(members, labels)
    return CombinerConfig("weighted_mean", weights=weights), report


@dataclass(frozen=True)
class Validation:
    metrics: dict[str, float]
    thresholds: Thresholds
    summary: pd.DataFrame


def baseline_validation(
    frames: GroupFrames, plan: TrainingPlan, windows: Mapping[str, list]
) -> "Validation":
    """The reference baseline fitted on the training weeks and judged like a candidate: the bar a
    first candidate must clear to become champion."""
    from monitoring_pipelines.ml.baseline import RollingZScoreBaseline

    train = slice_frames(frames, plan.train_start, plan.train_end)
    train = {k: f for k, f in train.items() if f.notna().to_numpy().any()}
    baseline = DetectorSet.fit_groups(RollingZScoreBaseline, None, train)
    return validate({RollingZScoreBaseline.kind: baseline}, frames, plan, windows)


def validate(
    model_sets: Mapping[str, DetectorSet],
    frames: GroupFrames,
    plan: TrainingPlan,
    windows: Mapping[str, list],
    *,
    combiner: CombinerConfig | None = None,
    threshold_config: ThresholdConfig | None = None,
    evaluation: EvaluationConfig | None = None,
) -> Validation:
    """Fit thresholds on the calibration week, judge on the validation week.

    One model set is judged alone; several are combined with ``combiner`` first (the ensemble).
    Without ``threshold_config`` each series' threshold starts from the default level of what is
    judged (one member's or the ensemble's, :func:`~monitoring_pipelines.ml.thresholds.config_for`)
    and only rises above it where the series' own calibration week alerts too often.
    ``windows`` are parsed label windows keyed by ``tenant/service/metric``.
    """
    scores = score_period(
        model_sets, frames, plan.train_end, plan.validation_end, context_start=plan.train_start
    )
    return judge(
        scores,
        plan,
        windows,
        combiner=combiner,
        threshold_config=threshold_config,
        evaluation=evaluation,
    )


def judge(
    scores: Mapping[str, Mapping[tuple, pd.DataFrame]],
    plan: TrainingPlan,
    windows: Mapping[str, list],
    *,
    combiner: CombinerConfig | None = None,
    threshold_config: ThresholdConfig | None = None,
    evaluation: EvaluationConfig | None = None,
) -> Validation:
    """:func:`validate` on member scores already computed over calibration + validation weeks."""
    if len(scores) == 1:
        combined = next(iter(scores.values()))
    else:
        combined = combine_groups(scores, combiner or CombinerConfig())
    series = per_series(combined)
    calibration = {n: s[s.index < plan.calibration_end] for n, s in series.items()}
    level = config_for(scores, threshold_config, combiner if len(scores) > 1 else None)
    thresholds = fit_thresholds(calibration, windows, level)
    results = []
    for name, values in series.items():
        held_out = values[values.index >= plan.calibration_end]
        if held_out.empty:
            continue
        _, alert = flags(held_out.to_numpy(), thresholds.for_series(name), thresholds.policy)
        step = held_out.index[1] - held_out.index[0] if len(held_out) > 1 else timedelta(minutes=5)
        results.append(
            evaluate_series(
                name,
                held_out.index,
                held_out.to_numpy(),
                alert,
                list(windows.get(name, [])),
                step=pd.Timedelta(step),
                config=evaluation,
            )
        )
    summary = summarise(results)
    return Validation(metrics=_metrics(overall(summary)), thresholds=thresholds, summary=summary)


# Names as logged to MLflow and compared by the promotion gate, from the summary's columns.
METRIC_NAMES = {
    "event_f1": "f1",
    "event_precision": "precision",
    "event_recall": "recall",
    "detection_delay_median_minutes": "delay_median_minutes",
    "false_alarms_per_series_week": "false_alarms_per_series_week",
    "false_alarms_per_day": "false_alarms_per_day",
    "pr_auc": "pr_auc",
    "label_windows": "windows",
}


def _metrics(row: Mapping) -> dict[str, float]:
    return {name: float(row[column]) for name, column in METRIC_NAMES.items()}
