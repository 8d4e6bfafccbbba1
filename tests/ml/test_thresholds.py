"""Alert policy and thresholds: one alert per incident, and the false-alarm rate asked for."""

import numpy as np
import pandas as pd
import pytest

from monitoring_pipelines.ml.thresholds import (
    DEFAULT_THRESHOLD,
    MAX_SERIES_THRESHOLD,
    AlertPolicy,
    ThresholdConfig,
    Thresholds,
    fit_thresholds,
    flags,
)

NAN = np.nan


def test_one_alert_per_excursion_even_if_the_score_wobbles_around_the_threshold():
    scores = np.array([0.1, 0.9, 0.6, 0.9, 0.7, 0.95, 0.1, 0.1, 0.1])
    anomalous, alert = flags(scores, 0.8, AlertPolicy(rearm_ratio=0.5, cooldown_steps=2))
    assert anomalous.tolist() == [False, True, False, True, False, True, False, False, False]
    assert np.flatnonzero(alert).tolist() == [1]


def test_the_series_re_arms_only_after_a_quiet_cooldown():
    policy = AlertPolicy(rearm_ratio=0.5, cooldown_steps=3)
    # Quiet for 2 steps (not enough), then 3 steps (enough).
    scores = np.array([0.9, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1, 0.9])
    _, alert = flags(scores, 0.8, policy)
    assert np.flatnonzero(alert).tolist() == [0, 7]


def test_points_between_rearm_level_and_threshold_are_not_quiet():
    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.5, 0.9])
    _, alert = flags(scores, 0.8, AlertPolicy(rearm_ratio=0.5, cooldown_steps=2))
    assert np.flatnonzero(alert).tolist() == [0]


def test_gaps_are_neither_anomalous_nor_quiet():
    scores = np.array([0.9, NAN, NAN, NAN, 0.9, 0.1, 0.1, 0.9])
    anomalous, alert = flags(scores, 0.8, AlertPolicy(cooldown_steps=2))
    assert not anomalous[1:4].any()
    assert np.flatnonzero(alert).tolist() == [0, 7]


def test_min_duration_waits_for_consecutive_anomalous_points():
    scores = np.array([0.9, 0.1, 0.9, 0.9, 0.9])
    _, alert = flags(scores, 0.8, AlertPolicy(min_duration=2, cooldown_steps=1))
    assert np.flatnonzero(alert).tolist() == [3]


def _noise_scores(series: int, weeks: int, seed: int) -> dict[str, pd.Series]:
    """Calibrated-looking scores of normal operation: smooth, autocorrelated, in [0, 1)."""
    rng = np.random.default_rng(seed)
    n = weeks * 2016
    index = pd.date_range("2026-01-05", periods=n, freq="5min", tz="UTC")
    out = {}
    for number in range(series):
        z = pd.Series(rng.standard_normal(n)).rolling(3, min_periods=1).mean().to_numpy()
        decades = np.maximum(z, 0.0) ** 2
        out[f"s{number}"] = pd.Series(decades / (decades + 4.0), index=index)
    return out


@pytest.mark.parametrize("target", [0.5, 2.0])
def test_fitted_thresholds_hit_the_target_false_alarm_rate_on_fresh_noise(target):
    config = ThresholdConfig(
        target_false_alarms_per_week=target, grid_points=200, floor_at_default=False, prior_weeks=4
    )
    thresholds = fit_thresholds(_noise_scores(60, 2, seed=1), None, config)
    fresh = _noise_scores(60, 6, seed=2)
    alerts = sum(
        int(flags(s.to_numpy(), thresholds.for_series(n), thresholds.policy)[1].sum())
        for n, s in fresh.items()
    )
    rate = alerts / (60 * 6)
    assert 0.5 * target <= rate <= 1.5 * target


def test_scores_inside_label_windows_do_not_raise_the_threshold():
    scores = _noise_scores(1, 2, seed=3)
    index = scores["s0"].index
    spiky = scores["s0"].copy()
    blanked = scores["s0"].copy()
    config = ThresholdConfig(target_false_alarms_per_week=0.5)
    windows = {"s0": []}
    for start in (500, 1500, 2500, 3500):
        spiky.iloc[start : start + 20] = 0.99
        windows["s0"].append((index[start], index[start + 19]))
        # The window and the margin after it are left out of the count, incident or not.
        blanked.iloc[start : start + 20 + config.window_margin_steps] = np.nan
    with_labels = fit_thresholds({"s0": spiky}, windows, config)
    clean = fit_thresholds({"s0": blanked}, None, config)
    without_labels = fit_thresholds({"s0": spiky}, None, config)
    assert with_labels.for_series("s0") == clean.for_series("s0")
    assert without_labels.for_series("s0") > clean.for_series("s0")


def test_unknown_series_get_the_default_and_thresholds_survive_json():
    thresholds = Thresholds(
        default=0.6, per_series={"a": 0.7}, policy=AlertPolicy(cooldown_steps=5)
    )
    again = Thresholds.from_dict(thresholds.to_dict())
    assert again.for_series("a") == 0.7 and again.for_series("zzz") == 0.6
    assert again.policy.cooldown_steps == 5
    assert fit_thresholds({}).default == DEFAULT_THRESHOLD
    config = ThresholdConfig.from_dict({"target_false_alarms_per_week": 1.0, "policy": {}})
    assert config.policy == AlertPolicy()


def test_no_threshold_goes_below_the_default_level_and_busy_series_go_above_it():
    scores = _noise_scores(3, 1, seed=4)
    quiet = scores["s0"].clip(upper=0.3)
    busy = scores["s1"].copy()
    busy.iloc[1000] = 0.8
    config = ThresholdConfig(target_false_alarms_per_week=0.02)
    thresholds = fit_thresholds({"quiet": quiet, "busy": busy}, None, config)
    # A quiet week does not prove a lower level safe; the busy series' own normal excursion
    # (0.8, outside any label window) lifts its level just above it, and only its level.
    assert thresholds.for_series("quiet") == DEFAULT_THRESHOLD
    assert 0.8 < thresholds.for_series("busy") <= 0.82
    assert thresholds.default == DEFAULT_THRESHOLD == thresholds.for_series("never seen")
    _, alert = flags(busy.to_numpy(), thresholds.for_series("busy"), thresholds.policy)
    assert not alert.any()


def test_one_series_busy_week_does_not_lift_the_others_of_its_tenant():
    scores = {name: s.clip(upper=0.3) for name, s in _noise_scores(24, 1, seed=5).items()}
    scores["s0"].iloc[500] = 0.8
    fitted = fit_thresholds(scores)
    assert fitted.for_series("s0") > 0.8
    assert {fitted.for_series(f"s{i}") for i in range(1, 24)} == {DEFAULT_THRESHOLD}
    # Pooled over the tenant (the old rule), that one excursion lifted every series above 0.8.
    pooled = fit_thresholds(scores, None, ThresholdConfig(floor_at_default=False, prior_weeks=4))
    assert min(pooled.for_series(f"s{i}") for i in range(24)) > 0.8


def test_a_series_threshold_stays_below_what_a_real_fault_reaches():
    # A calibration week whose normal excursion nears the score's ceiling (0.96) would lift the
    # threshold above every later outage; the cap keeps it on the calibrated scale.
    scores = {name: s.clip(upper=0.3) for name, s in _noise_scores(2, 1, seed=6).items()}
    scores["s0"].iloc[500] = 0.96
    fitted = fit_thresholds(scores)
    assert fitted.for_series("s0") == MAX_SERIES_THRESHOLD < 0.96
    outage = np.r_[np.full(20, 0.2), np.full(5, 0.93), np.full(20, 0.2)]
    assert flags(outage, fitted.for_series("s0"), fitted.policy)[1].sum() == 1
    assert fitted.for_series("s1") == DEFAULT_THRESHOLD
