"""A detector set: one detector per group, scored together, saved and loaded as one directory."""

import json

import numpy as np
import pandas as pd
import pytest

from monitoring_pipelines.ml.isolation_forest import IsolationForestConfig, IsolationForestDetector
from monitoring_pipelines.ml.model_set import MANIFEST, DetectorSet
from monitoring_pipelines.ml.zscore import ZScoreDetector


def frames(days: int = 3) -> dict[tuple, pd.DataFrame]:
    rng = np.random.default_rng(0)
    n = days * 288
    index = pd.date_range("2026-01-05", periods=n, freq="5min", tz="UTC")
    make = lambda: pd.DataFrame(  # noqa: E731
        {"a": rng.normal(10, 1, n), "b": rng.normal(100, 5, n)}, index=index
    )
    return {("acme", "api"): make(), ("acme", "play/back"): make()}


@pytest.fixture(scope="module")
def model_set() -> DetectorSet:
    train = {k: f.iloc[:600] for k, f in frames().items()}
    return DetectorSet.fit_groups(
        IsolationForestDetector, IsolationForestConfig(n_estimators=10), train
    )


def test_one_detector_per_group_and_scores_per_group(model_set):
    assert model_set.kind == "isolation_forest" and len(model_set) == 2
    scores = model_set.score({**frames(), ("other", "svc"): frames()[("acme", "api")]})
    assert set(scores) == {("acme", "api"), ("acme", "play/back")}
    assert scores[("acme", "api")].shape == (864, 2)


def test_save_and_load_keep_every_group_and_its_scores(model_set, tmp_path):
    directory = model_set.save(tmp_path / "set")
    manifest = json.loads((directory / MANIFEST).read_text())
    assert manifest["kind"] == "isolation_forest"
    assert manifest["detector_class"].endswith(":IsolationForestDetector")
    assert [g["key"] for g in manifest["groups"]] == [["acme", "api"], ["acme", "play/back"]]
    assert all("/" not in g["dir"] for g in manifest["groups"])
    loaded = DetectorSet.load(directory)
    before, after = model_set.score(frames()), loaded.score(frames())
    for key in before:
        assert np.allclose(before[key].to_numpy(), after[key].to_numpy(), equal_nan=True)


def test_a_group_that_cannot_be_fitted_is_skipped_with_its_reason():
    short = {("acme", "api"): frames()[("acme", "api")].iloc[:10]}
    model_set = DetectorSet.fit_groups(IsolationForestDetector, None, short)
    assert len(model_set) == 0 and "history" in model_set.skipped[("acme", "api")]


def test_loading_with_the_wrong_class_or_mixing_kinds_is_refused(model_set, tmp_path):
    directory = model_set.save(tmp_path / "set")
    with pytest.raises(ValueError, match="isolation_forest"):
        DetectorSet.load(directory, ZScoreDetector)
    with pytest.raises(ValueError, match="other kinds"):
        DetectorSet("zscore", {("a",): model_set.detectors[("acme", "api")]})


def test_history_is_the_most_any_member_wants(model_set):
    # Three days of data show no weekly cycle: the features' season is found at fit ("none" or
    # a daily calendar), and the set asks for what its most demanding member asks for.
    wants = [d.history_steps() for d in model_set.detectors.values()]
    assert model_set.history_steps() == max(wants) > 0
