"""Backtests: fit on a prefix, score the rest causally, alert, and judge the alerts against labels.

:func:`run_backtest` is the engine behind ``monitoring-pipelines backtest``. Per group (a tenant's
service from a record file, or one ``timestamp,value`` series), each detector is fitted on the first
``min(train_fraction x n, max_train_points)`` grid steps and scores every step after that causally
(the training steps get scores too, from the fitted model, but are not evaluated). With
``refit_every`` the detectors are refitted every so many steps on the data before that point only
(a model fitted once and frozen decays as the series moves on). Members' calibrated scores are
combined into the ensemble score, which the alert policy turns into alert events; thresholds come
from the training prefix or a fixed global level (for single series the backtest's own,
:data:`~monitoring_pipelines.ml.thresholds.BACKTEST_RULE_LEVELS`; for a tenant's services from
records the pipeline's), never from the scored part.

Early and once: the output's ``ensemble_score`` is the ensemble after
:func:`~monitoring_pipelines.ml.ensemble.refractory` (a point keeps its score only above every
score of the steps just before it), and ``is_anomaly`` is that score at the series' threshold, so
one incident flags its onset, not every point while it lasts; ``alert`` is the alert policy on
the ensemble score itself, and the event figures judge those alerts.

Groups are fitted and scored on one process per core when the backtest is big enough
(:mod:`~monitoring_pipelines.ml.backtest_workers`), with the same output as one process.

Input is put on the pipeline's grid (:mod:`~monitoring_pipelines.ml.frames`: naive timestamps are
UTC, irregular spacing floored to the inferred step, duplicates averaged, gaps NaN), and the output
has one row per input row, in input order, each row carrying the scores of the grid step it
landed in.

:mod:`~monitoring_pipelines.ml.backtest_rows` maps the grid back to input rows, and
:mod:`~monitoring_pipelines.ml.demo_evaluation` holds the measurement on the seeded demo data.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from monitoring_pipelines.ml.backtest_rows import ENSEMBLE, Group, is_records, rows_out
from monitoring_pipelines.ml.backtest_workers import DetectorSpec
from monitoring_pipelines.ml.backtest_workers import member_scores as score_members
from monitoring_pipelines.ml.catalogue import KINDS, detector_class
from monitoring_pipelines.ml.ensemble import (
    DEFAULT_COMBINER,
    CombinerConfig,
    combine_arrays,
    refractory,
)
from monitoring_pipelines.ml.evaluation import (
    EvaluationConfig,
    SeriesEvaluation,
    Window,
    evaluate_series,
    parse_windows,
    summarise,
)
from monitoring_pipelines.ml.frames import (
    GroupKey,
    group_frames_with_rows,
    infer_step,
    single_series_frame_with_rows,
)
from monitoring_pipelines.ml.model_set import _build
from monitoring_pipelines.ml.thresholds import (
    ThresholdConfig,
    Thresholds,
    config_for,
    fit_thresholds,
    flags,
)

__all__ = ["ENSEMBLE", "BacktestResult", "run_backtest"]


def _default_detectors() -> list[DetectorSpec]:
    """Every catalogued kind: without a choice the backtest runs what the pipeline runs."""
    return [detector_class(kind) for kind in KINDS]


@dataclass
class BacktestResult:
    """Per series, the input rows with their scores and decisions, and the evaluation.

    ``series[name]`` has one row per input row of that series, in input order: ``timestamp``,
    ``value``, ``<kind>_score`` per detector, ``ensemble_score`` (after the refractory step),
    ``is_anomaly`` (that score reached the series' threshold), ``alert`` (an alert event starts
    here) and ``training`` (the step was in the training prefix: scored, never evaluated).
    ``rows`` is the same for a record input as one frame aligned with the input records.
    """

    series: dict[str, pd.DataFrame]
    summary: pd.DataFrame
    member_summaries: dict[str, pd.DataFrame]
    thresholds: Thresholds
    detectors: list[str]
    combiner: CombinerConfig
    rows: pd.DataFrame | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    # The ensemble's per-series evaluations behind ``summary``, to summarise several runs together.
    evaluations: list[SeriesEvaluation] = field(default_factory=list)

    @property
    def overall(self) -> dict:
        return self.summary.iloc[-1].to_dict()


def _train_points(n: int, train_fraction: float, max_train_points: int | None) -> int:
    points = math.ceil(train_fraction * n)
    if max_train_points is not None:
        points = min(points, max_train_points)
    return max(0, min(points, n))


def _threshold_for(
    mode: str | float | Thresholds,
    ensemble: Mapping[str, pd.Series],
    windows: Mapping[str, list[Window]],
    threshold_config: ThresholdConfig,
) -> Thresholds:
    if isinstance(mode, Thresholds):
        return mode
    if isinstance(mode, int | float):
        return Thresholds(default=float(mode), policy=threshold_config.policy)
    if mode == "global":
        return Thresholds(
            default=threshold_config.default_threshold, policy=threshold_config.policy
        )
    if mode == "train":
        fitted = fit_thresholds(ensemble, windows, threshold_config)
        # Training scores are in-sample; never go below the global level on their account.
        fitted.per_series = {
            k: max(v, threshold_config.default_threshold) for k, v in fitted.per_series.items()
        }
        fitted.default = max(fitted.default, threshold_config.default_threshold)
        return fitted
    raise ValueError(f"thresholds must be 'global', 'train', a number or Thresholds, not {mode!r}")


def run_backtest(
    data: pd.DataFrame | Mapping[str, tuple[Sequence, Sequence]],
    labels: Mapping[str, Sequence] | None = None,
    *,
    train_fraction: float = 0.15,
    max_train_points: int | None = None,
    detectors: Sequence[DetectorSpec] | None = None,
    refit_every: int | None = None,
    combiner: CombinerConfig = DEFAULT_COMBINER,
    thresholds: str | float | Thresholds = "global",
    threshold_config: ThresholdConfig | None = None,
    evaluation: EvaluationConfig | None = None,
    step_seconds: float | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> BacktestResult:
    """Backtest ``detectors`` on record rows or on ``{name: (timestamps, values)}`` series.

    ``labels`` are ``{series name: [[start, end], ...]}`` (UTC ISO strings or Timestamps; series
    names are ``tenant/service/metric`` for records). ``detectors`` default to every catalogued
    kind, combined by the pipeline's rule. ``thresholds``: ``"global"`` (the calibrated level in
    ``threshold_config.default_threshold``), ``"train"`` (per series from the training prefix,
    never below the global level), a number, or a :class:`Thresholds`. ``workers``: processes
    fitting and scoring groups (default: one per core when the backtest is big enough to pay for
    them, :mod:`~monitoring_pipelines.ml.backtest_workers`); the output is the same either way.
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError("train_fraction must be between 0 and 1")
    specs, kinds = _specs_and_kinds(detectors)
    combiner = combiner.for_members(kinds)
    # Single series get the backtest's level (measured on single real metrics); a tenant's
    # services from records get the pipeline's.
    single = not is_records(data)
    threshold_config = config_for(kinds, threshold_config, combiner, backtest=single)
    windows = parse_windows(labels or {})
    groups, row_maps = _groups(data, train_fraction, max_train_points, step_seconds)
    fit = {"refit_every": refit_every, "max_train_points": max_train_points}
    member_scores, skipped = score_members(groups, specs, kinds, fit, progress, workers)
    ensemble = _ensemble_scores(groups, member_scores, combiner)
    fitted = _threshold_for(
        thresholds, _training_series(groups, ensemble), windows, threshold_config
    )
    member_arrays = {
        k: {g: f.to_numpy(dtype="float64") for g, f in member_scores[k].items()} for k in kinds
    }
    evaluations, decisions = _decide(
        groups, {**member_arrays, ENSEMBLE: ensemble}, fitted, windows, evaluation
    )
    damped = {key: refractory(values) for key, values in ensemble.items()}
    series, rows = rows_out(data, groups, row_maps, kinds, member_scores, damped, decisions)
    return BacktestResult(
        series=series,
        summary=summarise(evaluations[ENSEMBLE]),
        evaluations=evaluations[ENSEMBLE],
        member_summaries={k: summarise(evaluations[k]) for k in kinds},
        thresholds=fitted,
        detectors=kinds,
        combiner=combiner,
        rows=rows,
        skipped=skipped,
    )


def _specs_and_kinds(
    detectors: Sequence[DetectorSpec] | None,
) -> tuple[list[DetectorSpec], list[str]]:
    """The detectors to run (every catalogued kind by default) and their kinds, each kind once."""
    specs = list(detectors) if detectors else _default_detectors()
    kinds = [_build(spec, None).kind for spec in specs]
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"each detector kind may appear once, got {kinds}")
    return specs, kinds


def _ensemble_scores(groups, member_scores, combiner) -> dict[GroupKey, np.ndarray]:
    ensemble: dict[GroupKey, np.ndarray] = {}
    for group in groups:
        members = {
            k: scores[group.key].to_numpy(dtype="float64")
            for k, scores in member_scores.items()
            if group.key in scores
        }
        ensemble[group.key] = (
            combine_arrays(members, combiner) if members else np.full(group.frame.shape, np.nan)
        )
    return ensemble


def _training_series(groups, arrays: Mapping[GroupKey, np.ndarray]) -> dict[str, pd.Series]:
    """Each series' scores over its training prefix (what thresholds may be fitted on)."""
    out = {}
    for group in groups:
        if group.key not in arrays:
            continue
        for j, column in enumerate(group.frame.columns):
            values = arrays[group.key][: group.n_train, j]
            out[group.names[column]] = pd.Series(values, index=group.frame.index[: group.n_train])
    return out


def _decide(groups, arrays, fitted: Thresholds, windows, evaluation):
    """Alert decisions per group (from the ensemble) and the evaluation of every score column."""
    evaluations: dict[str, list[SeriesEvaluation]] = {k: [] for k in arrays}
    decisions: dict[GroupKey, tuple[np.ndarray, np.ndarray]] = {}
    for group in groups:
        n, m = group.frame.shape
        anomalous = np.zeros((n, m), dtype=bool)
        alert = np.zeros((n, m), dtype=bool)
        step = group.frame.index[1] - group.frame.index[0] if n > 1 else pd.Timedelta(minutes=5)
        evaluated = np.arange(n) >= group.n_train
        for j, column in enumerate(group.frame.columns):
            name = group.names[column]
            threshold = fitted.for_series(name)
            for kind, by_group in arrays.items():
                if group.key not in by_group:
                    continue
                scores = by_group[group.key][:, j]
                starts = flags(scores, threshold, fitted.policy)[1]
                if kind == ENSEMBLE:
                    with np.errstate(invalid="ignore"):
                        anomalous[:, j] = refractory(scores) >= threshold
                    alert[:, j] = starts
                evaluations[kind].append(
                    evaluate_series(
                        name,
                        group.frame.index,
                        scores,
                        starts,
                        windows.get(name, []),
                        step=step,
                        evaluated=evaluated,
                        config=evaluation,
                    )
                )
        decisions[group.key] = (anomalous, alert)
    return evaluations, decisions


def _groups(data, train_fraction, max_train_points, step_seconds):
    """The input as grid groups, plus what is needed to map grid steps back to input rows."""
    groups = []
    if is_records(data):
        if step_seconds is None:
            step_seconds = _records_step(data).total_seconds()
        frames, row_index = group_frames_with_rows(data, step_seconds=step_seconds)
        for key, frame in frames.items():
            names = {c: "/".join((*key, c)) for c in frame.columns}
            n_train = _train_points(len(frame), train_fraction, max_train_points)
            groups.append(Group(key, frame, names, n_train))
        return groups, row_index
    positions = {}
    for name, (ts, values) in data.items():
        frame, pos = single_series_frame_with_rows(ts, values, str(name), step=step_seconds)
        n_train = _train_points(len(frame), train_fraction, max_train_points)
        groups.append(Group((str(name),), frame, {str(name): str(name)}, n_train))
        positions[str(name)] = pos
    return groups, positions


def _records_step(records: pd.DataFrame) -> pd.Timedelta:
    """The median over series of each series' median spacing."""
    steps = [
        infer_step(part["ts"]).value
        for _, part in records.groupby(["tenant", "service", "metric"], sort=False)
        if len(part) > 1
    ]
    if not steps:
        return infer_step(records["ts"])
    return pd.Timedelta(int(np.median(steps)), unit="ns")
