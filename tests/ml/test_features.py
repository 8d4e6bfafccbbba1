"""Features: causal (a prefix gets the values of the whole), scale-free, NaN-safe, right."""

import warnings

import numpy as np
import pandas as pd
import pytest

from monitoring_pipelines.ml.features import (
    FeatureConfig,
    compute_features,
    context,
    group_features,
    nan_median,
    rolling_mean,
    rolling_quantiles,
    time_features,
    trailing_quantiles,
)

ALL = (*FeatureConfig().names(), "seasonal_z12", "step_z12")


def seasonal_frame(days: int = 5, seed: int = 0, metrics=("a", "b", "c")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = days * 288
    daily = np.sin(2 * np.pi * np.arange(n) / 288)
    data = {
        m: 100.0 * (i + 1) + 20.0 * (i + 1) * daily + rng.normal(0, 1.0 + i, n)
        for i, m in enumerate(metrics)
    }
    index = pd.date_range("2026-01-05", periods=n, freq="5min", tz="UTC")
    return pd.DataFrame(data, index=index)


def test_a_prefix_gets_exactly_the_features_of_the_whole():
    frame = seasonal_frame()
    frame.iloc[700:720, 1] = np.nan
    whole = compute_features(frame, ALL)
    for cut in (500, 1000, 1337):
        prefix = compute_features(frame.iloc[:cut], ALL)
        for name in ALL:
            assert np.allclose(prefix[name], whole[name][:cut], equal_nan=True), (name, cut)


def test_features_do_not_change_with_the_unit_of_a_metric():
    frame = seasonal_frame()
    scaled = frame * 1000.0 + 5.0
    names = ["z_value", "z_diff", "seasonal_z", "step_z3", "flat", "burst"]
    a, b = compute_features(frame, names), compute_features(scaled, names)
    for name in names:
        assert np.allclose(a[name], b[name], equal_nan=True, rtol=1e-6, atol=1e-6), name


def test_gaps_give_nan_features_at_the_gap_and_finite_ones_after_it():
    frame = seasonal_frame()
    frame.iloc[800:830, 0] = np.nan
    feats = compute_features(frame, ["z_value", "seasonal_z", "step_z3", "flat", "burst"])
    for name, values in feats.items():
        assert np.isnan(values[800:830, 0]).all(), name
        assert np.isfinite(values[900:, 0]).all(), name


def test_a_jump_stands_out_in_the_step_and_seasonal_features():
    frame = seasonal_frame()
    frame.iloc[1200:1210, 0] += 40.0  # 40 noise sigmas
    feats = compute_features(frame, ["step_z3", "seasonal_z"])
    normal = np.nanmax(np.abs(feats["step_z3"][600:1190, 0]))
    assert np.nanmax(feats["step_z3"][1200:1203, 0]) > 3 * normal
    assert np.nanmax(feats["seasonal_z"][1200:1210, 0]) > 10


def test_a_frozen_series_raises_flat_and_noise_raises_burst():
    frame = seasonal_frame()
    frame.iloc[1200:1240, 0] = frame.iloc[1199, 0]
    frame.iloc[1200:1240, 1] += np.random.default_rng(1).normal(0, 30.0, 40)
    feats = compute_features(frame, ["flat", "burst"])
    assert feats["flat"][1230, 0] > 3.0
    assert np.nanmax(feats["flat"][600:1190, 0]) < 1.0
    assert feats["burst"][1230, 1] > 1.5


def test_context_is_the_mean_and_max_of_the_other_metrics():
    abs_z = np.array([[1.0, 2.0, 4.0], [np.nan, 3.0, 1.0]])
    mean, maximum = context(abs_z)
    assert np.allclose(mean, [[3.0, 2.5, 1.5], [2.0, 1.0, 3.0]])
    assert np.allclose(maximum, [[4.0, 4.0, 2.0], [3.0, 1.0, 3.0]])


def test_time_features_put_monday_midnight_at_angle_zero():
    index = pd.DatetimeIndex(["2026-01-05T00:00:00Z", "2026-01-05T12:00:00Z"])  # a Monday
    clock = time_features(index)
    assert np.allclose(clock[0], [0.0, 1.0, 0.0, 1.0])
    assert np.allclose(clock[1, :2], [0.0, -1.0])


def test_helpers_match_their_slow_equivalents():
    rng = np.random.default_rng(3)
    values = rng.normal(size=(500, 4))
    values[rng.random(values.shape) < 0.1] = np.nan
    expected = pd.DataFrame(values).rolling(7, min_periods=3).mean().to_numpy()
    assert np.allclose(rolling_mean(values, 7, min_periods=3), expected, equal_nan=True)
    stack = rng.normal(size=(5, 30, 2))
    stack[rng.random(stack.shape) < 0.3] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        reference = np.nanmedian(stack, axis=0)
    assert np.allclose(nan_median(stack), reference, equal_nan=True)


def test_trailing_quantiles_exclude_the_row_itself():
    index = pd.date_range("2026-01-01", periods=6, freq="5min", tz="UTC")
    values = np.array([[1.0], [2.0], [3.0], [4.0], [100.0], [5.0]])
    (median,) = trailing_quantiles(values, index, (0.5,), window=3, min_periods=1)
    assert np.isnan(median[0, 0])
    assert median[4, 0] == 3.0  # rows 1..3, not the 100 at row 4
    assert median[5, 0] == 4.0


def test_group_features_stacks_in_the_order_asked_and_rejects_unknown_names():
    frame = seasonal_frame(days=2)
    stacked = group_features(frame, names=["flat", "z_value"])
    assert stacked.shape == (len(frame), 3, 2)
    with pytest.raises(ValueError, match="unknown features"):
        compute_features(frame, ["no_such_feature"])


def loaded_frame(days: int = 12, seed: int = 0) -> pd.DataFrame:
    """A service whose cpu follows its traffic, and traffic that wanders from day to day."""
    rng = np.random.default_rng(seed)
    n = days * 288
    steps = np.arange(n)
    knots = np.arange(0, n + 72, 72)
    wander = np.exp(np.interp(steps, knots, rng.normal(0.0, 0.05, knots.size)))
    load = (1.0 + 0.5 * np.sin(2 * np.pi * steps / 288)) * wander
    index = pd.date_range("2026-01-05", periods=n, freq="5min", tz="UTC")
    return pd.DataFrame(
        {
            "requests_per_second": 1000.0 * load * np.exp(rng.normal(0.0, 0.005, n)),
            "cpu_percent": 10.0 + 40.0 * load + rng.normal(0.0, 0.5, n),
        },
        index=index,
    )


def _cpu_z(frame: pd.DataFrame, config: FeatureConfig) -> np.ndarray:
    return compute_features(frame, ["seasonal_z12"], config)["seasonal_z12"][:, 1]


def test_what_the_load_explains_is_not_an_anomaly_but_an_incident_still_is():
    frame = loaded_frame()
    busy = slice(10 * 288 + 200, 10 * 288 + 224)
    frame.iloc[busy] *= [1.15, 1.0]  # 15% more traffic for two hours...
    frame.iloc[busy, 1] = 10.0 + (frame.iloc[busy, 1] - 10.0) * 1.15  # ...and the cpu it costs
    incident = slice(11 * 288 + 100, 11 * 288 + 124)
    frame.iloc[incident, 1] += 12.0  # cpu up with no more traffic
    plain = _cpu_z(frame, FeatureConfig(load_metrics=()))
    adjusted = _cpu_z(frame, FeatureConfig())
    assert np.abs(adjusted[busy]).max() < 0.5 * np.abs(plain[busy]).max()
    # Against the series' own ordinary spread, the incident stands out more once load is out.
    quiet = slice(8 * 288, 10 * 288)
    plain_ratio = plain[incident].max() / np.nanquantile(np.abs(plain[quiet]), 0.99)
    adjusted_ratio = adjusted[incident].max() / np.nanquantile(np.abs(adjusted[quiet]), 0.99)
    assert adjusted_ratio > 1.5 * plain_ratio


def test_a_traffic_incident_does_not_leak_into_the_other_metrics():
    frame = loaded_frame()
    dip = slice(11 * 288 + 100, 11 * 288 + 130)
    frame.iloc[dip, 0] *= 0.5  # traffic halves; cpu (as in the demo's incidents) does not move
    plain = _cpu_z(frame, FeatureConfig(load_metrics=()))
    adjusted = _cpu_z(frame, FeatureConfig())
    assert np.abs(adjusted[dip]).max() <= np.abs(plain[dip]).max() + 1.0


def test_the_load_adjustment_is_causal_and_only_for_the_other_metrics():
    frame = loaded_frame(days=10)
    names = ["seasonal_z", "seasonal_z12", "step_z3"]
    whole = compute_features(frame, names)
    for cut in (1500, 2222):
        prefix = compute_features(frame.iloc[:cut], names)
        for name in names:
            assert np.allclose(prefix[name], whole[name][:cut], equal_nan=True), (name, cut)
    unadjusted = compute_features(frame, names, FeatureConfig(load_metrics=()))
    assert np.allclose(whole["seasonal_z"][:, 0], unadjusted["seasonal_z"][:, 0], equal_nan=True)
    assert not np.allclose(
        whole["seasonal_z"][2000:, 1], unadjusted["seasonal_z"][2000:, 1], equal_nan=True
    )


def test_features_of_the_last_rows_alone_equal_those_of_the_whole_frame():
    """Scoring one new day computes features for that day only, the earlier rows serving as
    lookback; they must be the features the whole frame gives those rows."""
    frame = seasonal_frame(days=40, seed=3, metrics=("requests_per_second", "latency", "errors"))
    frame["latency"] += 0.05 * frame["requests_per_second"]
    frame.iloc[39 * 288 + 50 : 39 * 288 + 80, 1] = np.nan
    frame.iloc[20 * 288 : 20 * 288 + 300, 2] = np.nan
    frame.iloc[39 * 288 + 100 : 39 * 288 + 110, 2] += 40.0
    whole = compute_features(frame, ALL)
    for start in (39 * 288, 30 * 288 + 7, 100):
        part = compute_features(frame, ALL, start=start)
        for name in ALL:
            got, want = part[name][start:], whole[name][start:]
            assert np.array_equal(np.isnan(got), np.isnan(want)), (name, start)
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9, err_msg=name)
    # Not a comparison of two flat lines: the burst on the last day is far out.
    assert np.nanmax(whole["seasonal_z"][39 * 288 + 100 : 39 * 288 + 110, 2]) > 5


def test_rolling_quantiles_match_pandas_bit_for_bit():
    rng = np.random.default_rng(5)
    sample = rng.standard_cauchy((600, 4))
    sample[rng.random(sample.shape) < 0.2] = np.nan
    sample[100:200, 1] = np.nan
    positions = np.array([0, 5, 150, 599])
    for window, min_periods in ((48, 6), (300, 48)):
        got = rolling_quantiles(sample, window, min_periods, (0.25, 0.5, 0.99), positions=positions)
        for q, values in zip((0.25, 0.5, 0.99), got, strict=True):
            want = pd.DataFrame(sample).rolling(window, min_periods=min_periods).quantile(q)
            np.testing.assert_array_equal(values, want.to_numpy()[positions])
