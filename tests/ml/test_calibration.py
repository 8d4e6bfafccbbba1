"""Calibration: causal per series, in [0, 1), right tail rates, stable through save and load."""

import numpy as np
import pandas as pd
import pytest

from monitoring_pipelines.ml.calibration import (
    CalibrationConfig,
    LikelihoodCalibrator,
    tail_calibration,
    to_score,
)

# The first version of this module, still available.
ORIGINAL = CalibrationConfig(method="gaussian", long_window=2016, decades=8.0, mapping="linear")


def raw_frame(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    index = pd.date_range("2026-01-05", periods=n, freq="5min", tz="UTC")
    # Heavy-tailed, like isolation depths or |z|: exponential, on two very different scales.
    return pd.DataFrame(
        {"a": rng.exponential(1.0, n), "b": 1e6 * rng.exponential(1.0, n)}, index=index
    )


@pytest.mark.parametrize("method", ["tail", "gaussian", "identity"])
def test_scoring_a_prefix_gives_the_scores_of_the_whole(method):
    raw = raw_frame()
    raw.iloc[2500:2510, 0] = np.nan
    calibrator = LikelihoodCalibrator(CalibrationConfig(method=method)).fit(raw.iloc[:1500])
    whole = calibrator.transform(raw)
    for cut in (1600, 2505, 3333):
        prefix = calibrator.transform(raw.iloc[:cut])
        assert np.allclose(prefix.to_numpy(), whole.to_numpy()[:cut], equal_nan=True)


@pytest.mark.parametrize("config", [ORIGINAL, CalibrationConfig()], ids=["original", "default"])
def test_scores_are_in_the_unit_interval_and_gaps_stay_gaps(config):
    raw = raw_frame()
    raw.iloc[100:120, 1] = np.nan
    scores = LikelihoodCalibrator(config).fit(raw.iloc[:1000]).transform(raw)
    values = scores.to_numpy()
    assert np.isnan(values[100:120, 1]).all()
    finite = values[np.isfinite(values)]
    assert finite.min() >= 0.0 and finite.max() <= 1.0


def test_tail_scores_mean_the_same_on_every_scale():
    raw = raw_frame(n=6000)
    calibrator = LikelihoodCalibrator(tail_calibration(short_window=1)).fit(raw.iloc[:2000])
    scores = calibrator.transform(raw).iloc[2000:]
    # L >= 2 means "beyond the 99th percentile of the past": about 1% of ordinary points.
    rates = (scores >= to_score(np.array(2.0), 4.0)).mean()
    assert 0.004 < rates["a"] < 0.02 and 0.004 < rates["b"] < 0.02
    assert abs(rates["a"] - rates["b"]) < 0.005


def test_an_outlier_scores_far_above_ordinary_points_and_does_not_saturate():
    raw = raw_frame()
    raw.iloc[3000, 0] = 30.0
    raw.iloc[3100, 0] = 300.0
    calibrator = LikelihoodCalibrator(tail_calibration(short_window=1)).fit(raw.iloc[:2000])
    scores = calibrator.transform(raw)["a"]
    assert scores.iloc[3000] > 0.7 > scores.iloc[2000:2990].max()
    assert 1.0 > scores.iloc[3100] > scores.iloc[3000]


@pytest.mark.parametrize("config", [ORIGINAL, CalibrationConfig()], ids=["original", "default"])
def test_save_and_load_give_identical_scores(config):
    raw = raw_frame()
    calibrator = LikelihoodCalibrator(config).fit(raw.iloc[:1500])
    again = LikelihoodCalibrator.from_dict(calibrator.to_dict())
    assert np.allclose(
        again.transform(raw).to_numpy(), calibrator.transform(raw).to_numpy(), equal_nan=True
    )


def test_a_calibrator_saved_before_methods_existed_loads_as_gaussian():
    legacy = {
        "config": {"short_window": 3, "long_window": 2016, "min_history": 288, "decades": 8.0},
        "history": {"a": [1.0, 2.0]},
    }
    calibrator = LikelihoodCalibrator.from_dict(legacy)
    assert calibrator.config == ORIGINAL and calibrator.history == {"a": [1.0, 2.0]}
    assert tail_calibration() == CalibrationConfig()


def test_the_mappings_from_decades_to_scores():
    assert to_score(np.array(4.0), 4.0, "soft") == 0.5
    assert to_score(np.array(0.0), 4.0, "soft") == 0.0
    assert to_score(np.array(4.0), 8.0, "linear") == 0.5
    assert to_score(np.array(80.0), 8.0, "linear") == 1.0


def test_the_original_gaussian_likelihood_is_unchanged():
    raw = raw_frame()
    scores = LikelihoodCalibrator(ORIGINAL).fit(raw.iloc[:1500]).transform(raw)["a"].to_numpy()
    # The first version of this module, written out: z of the 3-step mean against the mean and
    # standard deviation of the week before it, -log10 of the normal tail, over 8 decades.
    from scipy.special import log_ndtr

    seed = raw["a"].iloc[:1500].to_numpy()[-(2016 + 3) :]
    series = pd.Series(np.concatenate([seed, raw["a"].to_numpy()]))
    short = series.rolling(3, min_periods=1).mean()
    past = series.shift(3)
    mu = past.rolling(2016, min_periods=288).mean()
    sigma = np.maximum(past.rolling(2016, min_periods=288).std(), np.abs(mu) * 0.05)
    z = ((short - mu) / sigma).to_numpy()[len(seed) :]
    expected = np.clip(-log_ndtr(-z) / np.log(10.0) / 8.0, 0.0, 1.0)
    assert np.allclose(scores, expected, equal_nan=True)


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="method"):
        CalibrationConfig(method="magic")
    with pytest.raises(ValueError, match="tail_quantiles"):
        CalibrationConfig(tail_quantiles=(0.99, 0.9))
    with pytest.raises(ValueError, match="mapping"):
        CalibrationConfig(mapping="cubic")
