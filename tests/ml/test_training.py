"""The pipeline's rolling plan and validation: windows in time order, nothing judged on data that
chose it."""

import pandas as pd
import pytest

from monitoring_pipelines.ml import registry
from monitoring_pipelines.ml.training import KINDS, TrainingPlan, data_hash, detector_class


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


def test_unknown_detector_kinds_are_refused_in_one_line():
    with pytest.raises(ValueError, match="unknown detector kind 'arima'"):
        detector_class("arima")


def test_every_kind_resolves_to_its_detector_and_the_registry_knows_it():
    assert KINDS == registry.KINDS
    assert "zscore" in KINDS
    for kind in KINDS:
        assert detector_class(kind).kind == kind
    # Lazily: asking for the z-score detector imports neither TensorFlow nor Prophet classes.
    assert detector_class("zscore").__name__ == "ZScoreDetector"
