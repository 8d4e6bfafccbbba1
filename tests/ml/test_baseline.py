"""The reference baseline: causal, scale-free, and it sees a plain spike."""

import numpy as np
import pandas as pd

from monitoring_pipelines.ml.baseline import RollingZScoreBaseline


def _series(n=3000, seed=3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    index = pd.date_range("2026-01-01", periods=n, freq="1s", tz="UTC")
    return pd.DataFrame({"a": 50 + rng.normal(0, 1, n), "b": 1e6 + rng.normal(0, 1e4, n)}, index)


def test_a_prefix_scores_exactly_like_the_whole():
    frame = _series()
    detector = RollingZScoreBaseline().fit(frame.iloc[:1000])
    whole = detector.score(frame).to_numpy()
    for cut in (1100, 1777, 2500):
        prefix = detector.score(frame.iloc[:cut]).to_numpy()
        assert np.array_equal(np.isnan(prefix), np.isnan(whole[:cut]))
        assert np.allclose(prefix, whole[:cut], equal_nan=True, rtol=0, atol=1e-12)


def test_a_spike_stands_out_on_series_of_any_scale():
    frame = _series()
    frame.iloc[2000:2003, 0] += 8.0
    frame.iloc[2000:2003, 1] += 8e4
    scores = RollingZScoreBaseline().fit(frame.iloc[:1000]).score(frame)
    quiet = scores.iloc[1200:1900]
    for column in scores:
        assert scores[column].iloc[2000:2004].max() > 0.5 > quiet[column].quantile(0.99)
