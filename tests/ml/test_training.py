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
