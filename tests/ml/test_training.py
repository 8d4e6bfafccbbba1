"""The pipeline's rolling plan and validation: windows in time order, nothing judged on data that
chose it."""

import numpy as np
import pandas as pd

from monitoring_pipelines.ml.thresholds import DEFAULT_THRESHOLD, MEMBER_LEVELS
from monitoring_pipelines.ml.training import TrainingPlan, data_hash, judge


def test_the_plan_cuts_time_into_train_calibration_and_validation_weeks():
    plan = TrainingPlan.ending(pd.Timestamp("2026-11-02"))
    assert plan.validation_end == pd.Timestamp("2026-11-02", tz="UTC")
    assert plan.calibration_end == pd.Timestamp("2026-10-26", tz="UTC")
    assert plan.train_end == pd.Timestamp("2026-10-19", tz="UTC")
    assert plan.train_start == pd.Timestamp("2026-09-28", tz="UTC")
    assert plan.train_start < plan.train_end < plan.calibration_end < plan.validation_end


def test_the_data_hash_changes_with_the_data_and_only_with_it():
    index = pd.date_range("2026-10-01", periods=10, freq="5min", tz="UTC")
    frames = {("acme", "api"): pd.DataFrame({"cpu_percent": range(10)}, index=index, dtype=float)}
    same = {k: f.copy() for k, f in frames.items()}
    changed = {k: f.assign(cpu_percent=f["cpu_percent"] + 1) for k, f in frames.items()}
    assert data_hash(frames) == data_hash(same)
    assert data_hash(frames) != data_hash(changed)


def _scores(spikes: list[tuple[int, float]], start: pd.Timestamp) -> dict[tuple, pd.DataFrame]:
    """Calibration + validation weeks of one quiet series with a few spikes."""
    index = pd.date_range(start, periods=2 * 2016, freq="5min", tz="UTC")
    values = np.full(index.size, 0.1)
    for position, level in spikes:
        values[position] = level
    return {("acme", "api"): pd.DataFrame({"latency": values}, index=index)}


def test_judge_cuts_each_score_at_its_own_default_level_and_never_below_it():
    plan = TrainingPlan.ending(pd.Timestamp("2026-11-02"))
    week, step = 2016, pd.Timedelta(minutes=5)
    # Week 4 (calibration) is quiet; week 5 has an ordinary 0.55 excursion and an incident at 0.7.
    scores = _scores([(week + 100, 0.55), (week + 1000, 0.7)], plan.train_end)
    incident = plan.calibration_end + 1000 * step
    windows = {"acme/api/latency": [(incident, incident + 10 * step)]}
    zscore = judge({"zscore": scores}, plan, windows)
    forest = judge({"isolation_forest": scores}, plan, windows)
    # Z-scores run higher (MEMBER_LEVELS): 0.55 is ordinary for them, not for the forest, and a
    # quiet calibration week lowers neither level.
    assert zscore.thresholds.for_series("acme/api/latency") == MEMBER_LEVELS["zscore"]
    assert zscore.metrics["event_precision"] == 1.0 and zscore.metrics["event_recall"] == 1.0
    assert forest.thresholds.for_series("acme/api/latency") == DEFAULT_THRESHOLD
    assert forest.metrics["event_precision"] == 0.5 and forest.metrics["event_recall"] == 1.0
    ensemble = judge({"zscore": scores, "isolation_forest": scores}, plan, windows)
    assert ensemble.thresholds.for_series("acme/api/latency") == DEFAULT_THRESHOLD


def test_ensemble_weights_are_learned_where_the_calibration_week_holds_labels():
    from monitoring_pipelines.ml.ensemble import DEFAULT_COMBINER
    from monitoring_pipelines.ml.evaluation import parse_windows
    from monitoring_pipelines.ml.training import learn_combiner

    plan = TrainingPlan.ending(pd.Timestamp("2026-11-02"))
    index = pd.date_range(plan.train_end, plan.validation_end, freq="5min", inclusive="left")
    rng = np.random.default_rng(3)
    incident = (index >= "2026-10-21 10:00") & (index < "2026-10-21 11:00")
    sharp = np.where(incident, 0.9, rng.uniform(0.0, 0.3, len(index)))
    noise = rng.uniform(0.0, 1.0, len(index))
    scores = {
        "isolation_forest": {("acme", "api"): pd.DataFrame({"cpu": noise}, index=index)},
        "zscore": {("acme", "api"): pd.DataFrame({"cpu": sharp}, index=index)},
    }
    windows = parse_windows({"acme/api/cpu": [["2026-10-21T10:00:00Z", "2026-10-21T10:55:00Z"]]})
    combiner, report = learn_combiner(scores, plan, windows)
    weights = dict(combiner.weights)
    assert report is not None and weights["zscore"] > 0 and weights["isolation_forest"] == 0
    # No labelled incident in the calibration week: the data-free default, nothing learned.
    assert learn_combiner(scores, plan, {}) == (DEFAULT_COMBINER, None)
    # Only members that weigh 0 by default qualified: they count equally, the ensemble scores.
    forest_only = {"isolation_forest": scores["isolation_forest"]}
    combiner, _ = learn_combiner(forest_only, plan, {})
    assert combiner.weight("isolation_forest") == 1.0
