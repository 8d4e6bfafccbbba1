"""Isolation Forest: causal, finds what it should, NaN-safe, identical after save and load."""

import json

import numpy as np
import pandas as pd
import pytest

from monitoring_pipelines.ml.base import STATE_FILE
from monitoring_pipelines.ml.features import FeatureConfig
from monitoring_pipelines.ml.isolation_forest import (
    SKLEARN_DIR,
    IsolationForestConfig,
    IsolationForestDetector,
)


def group_frame(days: int = 7, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = days * 288
    daily = np.sin(2 * np.pi * np.arange(n) / 288)
    index = pd.date_range("2026-01-05", periods=n, freq="5min", tz="UTC")
    return pd.DataFrame(
        {
            "latency_ms": 200 + 50 * daily + rng.normal(0, 5, n),
            "error_rate": 0.01 + 0.004 * daily + rng.normal(0, 0.0005, n),
            "cpu_percent": 40 + 20 * daily + rng.normal(0, 1.5, n),
        },
        index=index,
    )


@pytest.fixture(scope="module")
def fitted() -> tuple[IsolationForestDetector, pd.DataFrame]:
    frame = group_frame()
    frame.iloc[1800:1806, 0] += 150.0  # a latency spike, 30 sigmas
    frame.iloc[1900:1910, 2] = np.nan  # a gap
    return IsolationForestDetector().fit(frame.iloc[:1440]), frame


def test_scores_are_calibrated_and_gaps_stay_gaps(fitted):
    detector, frame = fitted
    scores = detector.score(frame)
    assert scores.shape == frame.shape and list(scores.columns) == list(frame.columns)
    assert scores.iloc[1900:1910, 2].isna().all()
    finite = scores.to_numpy()[np.isfinite(scores.to_numpy())]
    assert finite.min() >= 0.0 and finite.max() < 1.0


def test_the_spike_scores_above_every_ordinary_point(fitted):
    detector, frame = fitted
    scores = detector.score(frame)["latency_ms"]
    assert scores.iloc[1800:1806].max() > scores.iloc[1440:1790].max()


def test_scoring_a_prefix_gives_the_scores_of_the_whole(fitted):
    detector, frame = fitted
    whole = detector.score(frame).to_numpy()
    raw = detector.raw_scores(frame).to_numpy()
    for cut in (1500, 1803, 1905):
        assert np.allclose(detector.score(frame.iloc[:cut]).to_numpy(), whole[:cut], equal_nan=True)
        assert np.allclose(
            detector.raw_scores(frame.iloc[:cut]).to_numpy(), raw[:cut], equal_nan=True
        )


def test_save_and_load_through_the_mlflow_flavor_give_identical_scores(fitted, tmp_path):
    detector, frame = fitted
    directory = detector.save(tmp_path / "model")
    assert (directory / SKLEARN_DIR / "MLmodel").exists()
    state = json.loads((directory / STATE_FILE).read_text())
    assert state["kind"] == "isolation_forest"
    loaded = IsolationForestDetector.load(directory)
    assert loaded.config == detector.config
    assert np.allclose(
        loaded.score(frame).to_numpy(), detector.score(frame).to_numpy(), equal_nan=True
    )


def test_a_column_missing_at_scoring_time_comes_back_as_gaps(fitted):
    detector, frame = fitted
    scores = detector.score(frame.drop(columns=["cpu_percent"]))
    assert list(scores.columns) == list(frame.columns)
    assert scores["cpu_percent"].isna().all() and scores["latency_ms"].notna().any()


def test_a_frame_too_short_for_any_feature_is_refused_in_one_line():
    with pytest.raises(ValueError, match="history"):
        IsolationForestDetector().fit(group_frame().iloc[:20])


def test_metric_identity_and_extra_features_are_options():
    frame = group_frame(days=3)
    config = IsolationForestConfig(
        metric_identity=True, feature_names=("z_value", "context_max", "tod_sin"), n_estimators=10
    )
    scores = IsolationForestDetector(config).fit(frame.iloc[:600]).score(frame)
    assert scores.iloc[600:].notna().all().all()


def test_the_detector_asks_for_three_weeks_of_context():
    config = IsolationForestConfig(features=FeatureConfig(season="calendar"))
    detector = IsolationForestDetector(config).fit(group_frame(days=2))
    assert detector.history_steps() == 21 * 288 + 288


def test_without_a_cycle_the_detector_needs_a_few_trailing_windows_only():
    # Two days are too short to see a daily cycle: the trailing, non-seasonal features are used.
    detector = IsolationForestDetector().fit(group_frame(days=2))
    assert detector.config.features.season in {"none", "period"}
    assert detector.history_steps() < 4 * 288
