"""Ensemble rules on hand numbers, causality of the ensemble, and the z-score member."""

import numpy as np
import pandas as pd
import pytest

from monitoring_pipelines.ml.ensemble import (
    DEFAULT_COMBINER,
    CombinerConfig,
    combine,
    combine_arrays,
    combine_groups,
    refractory,
    weights_from_validation,
)
from monitoring_pipelines.ml.isolation_forest import IsolationForestConfig, IsolationForestDetector
from monitoring_pipelines.ml.zscore import ZScoreConfig, ZScoreDetector

NAN = np.nan
MEMBERS = {
    "a": np.array([0.2, 0.9, NAN, NAN]),
    "b": np.array([0.4, 0.1, 0.5, NAN]),
    "c": np.array([0.6, 0.5, 0.7, NAN]),
}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (CombinerConfig("mean"), [0.4, 0.5, 0.6, NAN]),
        (CombinerConfig("max"), [0.6, 0.9, 0.7, NAN]),
        (CombinerConfig("top_k_mean", top_k=2), [0.5, 0.7, 0.6, NAN]),
        (
            CombinerConfig("noisy_or"),
            [1 - 0.8 * 0.6 * 0.4, 1 - 0.1 * 0.9 * 0.5, 1 - 0.5 * 0.3, NAN],
        ),
        (
            CombinerConfig("weighted_mean", weights=(("a", 2.0), ("b", 1.0), ("c", 1.0))),
            [(0.4 + 0.4 + 0.6) / 4, (1.8 + 0.1 + 0.5) / 4, 0.6, NAN],
        ),
    ],
)
def test_rules_on_hand_numbers_skip_missing_members(config, expected):
    assert np.allclose(combine_arrays(MEMBERS, config), expected, equal_nan=True)


def test_rules_are_validated_and_survive_json():
    with pytest.raises(ValueError, match="unknown combiner rule"):
        CombinerConfig("median")
    config = CombinerConfig("weighted_mean", weights=(("a", 2.0),))
    assert CombinerConfig.from_dict(config.to_dict()) == config
    assert DEFAULT_COMBINER.rule == "noisy_or"


def test_noisy_or_weights_are_exponents_and_weight_zero_drops_a_member():
    members = {"a": np.array([0.5, np.nan, 0.0]), "b": np.array([0.75, 0.9, np.nan])}
    config = CombinerConfig("noisy_or", weights=(("a", 1.0), ("b", 0.5)))
    assert np.allclose(combine_arrays(members, config), [1 - 0.5 * 0.5, 1 - 0.1**0.5, 0.0])
    # A point where only weight-0 members scored has no ensemble score, as with a weighted mean.
    only_a = CombinerConfig("noisy_or", weights=(("a", 1.0), ("b", 0.0)))
    assert np.allclose(combine_arrays(members, only_a), [0.5, np.nan, 0.0], equal_nan=True)
    # Members that all weigh 0 by default count equally rather than leaving no score.
    assert only_a.for_members(["b"]).weights == (("b", 1.0),)


def test_weights_follow_validation_quality_with_a_floor():
    weights = dict(weights_from_validation({"a": 0.9, "b": 0.3, "c": float("nan")}))
    assert weights["a"] == pytest.approx(3 * weights["b"])
    assert weights["c"] > 0 and sum(weights.values()) == pytest.approx(3.0)


def test_frames_are_aligned_by_column_and_groups_by_key():
    index = pd.date_range("2026-01-05", periods=2, freq="5min", tz="UTC")
    one = pd.DataFrame({"x": [0.2, 0.4], "y": [0.6, 0.8]}, index=index)
    two = pd.DataFrame({"y": [0.0, 0.0]}, index=index)
    combined = combine({"one": one, "two": two}, CombinerConfig("mean"))
    assert combined["x"].tolist() == [0.2, 0.4]
    assert np.allclose(combined["y"], [0.3, 0.4])
    groups = combine_groups({"one": {("t", "s"): one}, "two": {("t", "s"): two, ("t", "u"): two}})
    assert set(groups) == {("t", "s"), ("t", "u")}


def group_frame(days: int = 7, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = days * 288
    daily = np.sin(2 * np.pi * np.arange(n) / 288)
    index = pd.date_range("2026-01-05", periods=n, freq="5min", tz="UTC")
    return pd.DataFrame(
        {"rps": 1000 + 400 * daily + rng.normal(0, 20, n), "p95": 300 + rng.normal(0, 10, n)},
        index=index,
    )


@pytest.fixture(scope="module")
def members() -> tuple[dict, pd.DataFrame]:
    frame = group_frame()
    frame.iloc[1700:1706, 0] -= 500.0  # a dip of 25 sigmas
    frame.iloc[1800:1840, 1] = frame.iloc[1799, 1]  # a flat line
    frame.iloc[1850:1860, 0] = np.nan
    train = frame.iloc[:1440]
    return {
        "zscore": ZScoreDetector().fit(train),
        "isolation_forest": IsolationForestDetector(IsolationForestConfig(n_estimators=20)).fit(
            train
        ),
    }, frame


def test_the_ensemble_of_causal_members_is_causal(members):
    detectors, frame = members

    def ensemble(part: pd.DataFrame) -> np.ndarray:
        return combine({k: d.score(part) for k, d in detectors.items()}).to_numpy()

    whole = ensemble(frame)
    for cut in (1500, 1703, 1855):
        assert np.allclose(ensemble(frame.iloc[:cut]), whole[:cut], equal_nan=True)


def test_zscore_flags_the_dip_and_the_flat_line_and_keeps_gaps(members):
    detectors, frame = members
    scores = detectors["zscore"].score(frame)
    ordinary = scores.iloc[1440:1690].max()
    assert scores["rps"].iloc[1700:1706].max() > ordinary["rps"]
    assert scores["p95"].iloc[1812:1840].max() > ordinary["p95"]
    assert scores["rps"].iloc[1850:1860].isna().all()


def test_zscore_is_causal_and_identical_after_save_and_load(members, tmp_path):
    detectors, frame = members
    detector = detectors["zscore"]
    whole = detector.score(frame).to_numpy()
    assert np.allclose(detector.score(frame.iloc[:1702]).to_numpy(), whole[:1702], equal_nan=True)
    loaded = ZScoreDetector.load(detector.save(tmp_path / "z"))
    assert loaded.config == detector.config
    assert np.allclose(loaded.score(frame).to_numpy(), whole, equal_nan=True)


def test_zscore_config_round_trips_with_its_nested_parts():
    config = ZScoreConfig(parts=("step_z3", "flat"), part_min_spread=[["flat", 1.0]])
    assert ZScoreConfig.from_dict(config.to_dict()) == config


def test_the_data_free_ensemble_is_the_zscore_member_whatever_else_was_trained():
    """Without labels to learn from, the members measured to help on real data: the z-score."""
    rng = np.random.default_rng(0)
    forest, zscore, lstm, prophet = (rng.uniform(size=50) for _ in range(4))
    lstm[:10] = NAN
    four = combine_arrays(
        {"isolation_forest": forest, "zscore": zscore, "lstm": lstm, "prophet": prophet},
        DEFAULT_COMBINER,
    )
    assert np.allclose(four, zscore)
    # Where only a weightless member scored, the ensemble has no score rather than its score.
    alone = combine_arrays({"lstm": np.array([0.9]), "zscore": np.array([NAN])}, DEFAULT_COMBINER)
    assert np.isnan(alone).all()


def _labelled_series(rng, n=600, start=300, stop=340):
    labels = np.zeros(n, dtype=bool)
    labels[start:stop] = True
    return labels


def test_early_separation_rewards_one_level_that_catches_windows_early():
    from monitoring_pipelines.ml.ensemble import early_separation

    labels = _labelled_series(None)
    quiet = np.full(600, 0.1)
    good = quiet.copy()
    good[300:310] = 0.9
    late = quiet.copy()
    late[335:340] = 0.9  # only in the window's second half
    assert early_separation([good], [labels]) == 1.0
    assert early_separation([late], [labels]) == 0.5  # its early peak ties the quiet points
    # Pooled over series: one series' ordinary level above another's incident peak costs.
    loud = np.full(600, 0.95)
    assert early_separation([good, loud], [labels, np.zeros(600, dtype=bool)]) < 0.6


def test_learned_weights_drop_a_member_that_hurts():
    from monitoring_pipelines.ml.ensemble import learn_weights

    rng = np.random.default_rng(3)
    labels, helpful, noise = [], [], []
    for _ in range(6):
        lab = _labelled_series(rng)
        good = rng.uniform(0.0, 0.3, 600)
        good[300:320] += 0.6
        labels.append(lab)
        helpful.append(good)
        # Quiet in the window, loud at random moments outside it.
        loud = rng.uniform(0.0, 0.2, 600)
        loud[rng.choice(np.flatnonzero(~lab), 30, replace=False)] = 1.0
        noise.append(loud)
    weights, report = learn_weights({"good": helpful, "noise": noise}, labels)
    assert dict(weights)["noise"] == 0.0
    assert report["learned"] >= report["good alone"] > report["noise alone"]


def test_refractory_keeps_each_incident_s_onset_and_nothing_while_it_lasts():
    quiet, fault = np.full(30, 0.1), np.r_[0.6, 0.8, np.full(40, 0.8), 0.95]
    scores = np.r_[quiet, fault, quiet, np.nan, fault]
    damped = refractory(scores, steps=50)
    flagged = np.flatnonzero(damped >= 0.5)
    # The onset, the rise to 0.8, the growth to 0.95; the second fault, starting 32 steps after
    # that peak, flags only at its own 0.95, 74 steps after it; a gap stays a gap.
    assert flagged.tolist() == [30, 31, 72, 146]
    assert np.isnan(damped[103])
    # Causal: a prefix is damped exactly like the whole, and columns independently.
    assert np.array_equal(refractory(scores[:80], 50), damped[:80], equal_nan=True)
    both = refractory(np.c_[scores, scores[::-1]], 50)
    assert np.array_equal(both[:, 0], damped, equal_nan=True)
    assert np.array_equal(refractory(scores, 0), scores, equal_nan=True)


def test_no_warm_up_pages_right_after_a_fit():
    """Issue 9 item 6: the default ensemble's first hours after its members' fit on one day, with
    the history of the fit as context or none at all, stay below the pipeline's level on quiet
    data (the calibrators have little history there; the pipeline fits on three weeks)."""
    from monitoring_pipelines.ml.pca import PcaDetector
    from monitoring_pipelines.ml.thresholds import RULE_LEVELS

    rng = np.random.default_rng(0)
    n, day = 288 * 2, 288
    index = pd.date_range("2026-01-05", periods=n, freq="5min", tz="UTC")
    wave = np.sin(2 * np.pi * np.arange(n) / day)
    frame = pd.DataFrame(
        {m: 50 + 10 * np.roll(wave, k) + rng.normal(0, 1, n) for k, m in enumerate("abc")},
        index=index,
    )
    members = [ZScoreDetector().fit(frame.iloc[:day]), PcaDetector().fit(frame.iloc[:day])]
    for scored in (frame.iloc[day:], frame):
        first_hours = combine({d.kind: d.score(scored).iloc[-day:][:24] for d in members})
        assert first_hours.iloc[12:].notna().to_numpy().all()
        assert first_hours.max().max() < RULE_LEVELS[DEFAULT_COMBINER.rule]


def test_no_warm_up_pages_on_the_first_days_of_a_series_history():
    """Issue 9 item 6: a backfill from a series' very first point (the demo's first days) does
    not page while the seasonal reference holds less than one cycle and a window: the z-score's
    surprise ramps up over that span (the demo's second midnight paged on every tenant)."""
    from monitoring_pipelines.ml.thresholds import MEMBER_LEVELS

    rng = np.random.default_rng(3)
    day = 288
    n = 21 * day
    index = pd.date_range("2026-11-02", periods=n, freq="5min", tz="UTC")
    wave = np.sin(2 * np.pi * np.arange(n) / day)
    frame = pd.DataFrame(
        {
            "requests": 1000 + 400 * wave + rng.normal(0, 30, n),
            "latency_ms": 120 + 30 * np.roll(wave, 20) + rng.normal(0, 6, n),
            "skip_rate": 0.2 + 0.03 * wave + rng.normal(0, 0.01, n),
        },
        index=index,
    )
    detector = ZScoreDetector().fit(frame)
    first_days = detector.score(frame.iloc[: 3 * day])
    assert first_days.max().max() < MEMBER_LEVELS["zscore"]
