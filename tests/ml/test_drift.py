"""Drift statistics on small arrays: what moves them past their thresholds and what does not."""

import numpy as np
import pandas as pd
import pytest

from monitoring_pipelines.ml.drift import (
    DriftConfig,
    comparable_reference,
    page_hinkley,
    psi,
    score_drift,
    value_drift,
)

RNG = np.random.default_rng(7)
REFERENCE = RNG.normal(40, 4, 864)  # three training weekdays of 5-minute points


def test_a_day_like_the_training_weekdays_does_not_drift():
    figures = value_drift(REFERENCE, RNG.normal(40, 4, 288), DriftConfig())
    assert figures["psi"] < 0.1 and figures["ks_statistic"] < 0.15
    assert not figures["drifted"]


def test_a_level_shift_drifts_with_its_figures():
    figures = value_drift(REFERENCE, RNG.normal(40, 4, 288) * 1.6, DriftConfig())
    assert figures["drifted"]
    assert figures["psi"] > 2 and figures["ks_statistic"] > 0.9 and figures["ks_pvalue"] < 1e-50
    assert (figures["reference_points"], figures["recent_points"]) == (864, 288)


def test_a_two_hour_incident_is_not_drift():
    day = RNG.normal(40, 4, 288)
    day[100:124] *= 3
    figures = value_drift(REFERENCE, day, DriftConfig())
    assert figures["ks_statistic"] < 0.3
    assert not figures["drifted"]


def test_too_few_points_are_not_judged():
    assert value_drift(REFERENCE, RNG.normal(40, 4, 20), DriftConfig()) is None
    assert value_drift(REFERENCE, np.full(288, np.nan), DriftConfig()) is None


def test_psi_is_zero_for_the_same_sample_and_grows_with_the_shift():
    assert psi(REFERENCE, REFERENCE) == pytest.approx(0.0, abs=1e-12)
    shifts = [psi(REFERENCE, REFERENCE + k) for k in (1, 4, 8)]
    assert shifts == sorted(shifts) and shifts[0] < 0.25 < shifts[1]


def test_page_hinkley_ignores_a_short_spike_and_finds_a_sustained_rise():
    base = np.full(288, 0.2)
    spike = base.copy()
    spike[50:62] = 1.0
    statistic, _ = page_hinkley(spike, 0.2, 0.05)
    assert statistic == pytest.approx(12 * 0.75, abs=1e-9)
    assert not score_drift(base, spike, DriftConfig())["drifted"]
    rise = base.copy()
    rise[100:] = 0.5
    figures = score_drift(base, rise, DriftConfig())
    assert figures["drifted"] and figures["page_hinkley"] == pytest.approx(188 * 0.25, abs=1e-6)
    assert figures["peak_index"] == 287


def test_thresholds_come_from_the_environment_and_bad_ones_name_the_variable():
    config = DriftConfig.from_env(
        {"MONITORING_DRIFT_PSI": "0.5", "MONITORING_DRIFT_MIN_POINTS": "10"}
    )
    assert (config.psi, config.min_points, config.ks_statistic) == (0.5, 10, 0.3)
    with pytest.raises(ValueError, match=r"^MONITORING_DRIFT_PH_LAMBDA='high': not a float$"):
        DriftConfig.from_env({"MONITORING_DRIFT_PH_LAMBDA": "high"})


def test_a_morning_still_arriving_is_compared_with_the_training_mornings():
    """A daily cycle: low at night, high in the day. Today's first six hours look like the training
    days' first six hours, not like whole training days."""

    def days(start: str, count: int, hours: int = 24) -> pd.DataFrame:
        ts = pd.date_range(start, periods=count * 288, freq="5min", tz="UTC")
        ts = ts[ts.hour < hours]
        cycle = 40 + 30 * np.sin(np.pi * ts.hour.to_numpy() / 24)
        return pd.DataFrame({"ts": ts, "value": cycle + RNG.normal(0, 2, len(ts))})

    training = days("2026-11-02", 21)  # three weeks, Monday to Sunday
    morning = days("2026-11-30", 1, hours=6)  # a Monday, until 06:00
    reference = comparable_reference(training, morning)
    when = pd.DatetimeIndex(reference["ts"])
    assert set(when.day_of_week) == {0} and when.hour.max() == 5
    assert len(reference) == 3 * 72
    assert not value_drift(reference["value"], morning["value"], DriftConfig())["drifted"]
    # Against whole training Mondays, the same morning would drift.
    mondays = training[pd.DatetimeIndex(training["ts"]).day_of_week == 0]
    assert value_drift(mondays["value"], morning["value"], DriftConfig())["drifted"]
    assert comparable_reference(training, morning.iloc[:0]).empty
