import numpy as np
import pandas as pd
import pytest

from monitoring_pipelines.ml.catalogue import CATALOGUE
from monitoring_pipelines.ml.pca import PcaConfig, PcaDetector


def _machine(n: int = 900, seed: int = 0) -> pd.DataFrame:
    """Four correlated sensors; from row 600 their relation breaks (each stays in range)."""
    rng = np.random.default_rng(seed)
    drive = np.sin(np.arange(n) / 15.0) + rng.normal(0, 0.1, n)
    values = np.column_stack([drive * k + rng.normal(0, 0.05, n) for k in (1.0, 2.0, -1.0, 0.5)])
    values[600:, 2] = -values[600:, 2]
    index = pd.date_range("2024-01-01", periods=n, freq="1s", tz="UTC")
    return pd.DataFrame(values, index=index, columns=["a", "b", "c", "d"])


def test_broken_relation_between_metrics_scores_high_and_scoring_is_causal():
    frame = _machine()
    detector = PcaDetector().fit(frame.iloc[:400])
    scores = detector.score(frame)
    normal, broken = scores.iloc[400:600, 0], scores.iloc[610:, 0]
    assert broken.median() > normal.quantile(0.99)
    # Every metric of the service carries the service's score.
    assert np.allclose(scores.iloc[:, 0], scores.iloc[:, 1], equal_nan=True)
    prefix = detector.score(frame.iloc[:650])
    pd.testing.assert_frame_equal(prefix, scores.iloc[:650])


def test_a_single_series_is_embedded_and_sees_a_spike(tmp_path):
    rng = np.random.default_rng(1)
    n = 1000
    values = 100 + rng.normal(0, 1, n)
    values[700] += 30
    index = pd.date_range("2024-01-01", periods=n, freq="5min", tz="UTC")
    frame = pd.DataFrame({"v": values}, index=index)
    frame.iloc[300:305, 0] = np.nan
    detector = PcaDetector().fit(frame.iloc[:150])
    assert detector.lags == 3
    scores = detector.score(frame)["v"]
    assert scores.iloc[700] > scores.iloc[150:690].max()
    assert scores.iloc[300:305].isna().all()
    again = PcaDetector.load(detector.save(tmp_path / "pca")).score(frame)["v"]
    pd.testing.assert_series_equal(again, scores)


def test_config_and_catalogue_row():
    with pytest.raises(ValueError):
        PcaConfig(variance=1.5)
    assert CATALOGUE["pca"].detector_class() is PcaDetector
    with pytest.raises(ValueError, match="too few"):
        PcaDetector().fit(_machine().iloc[:5])
