"""Event-level evaluation on hand-built windows, with the exact numbers worked out by hand."""

import numpy as np
import pandas as pd
import pytest

from monitoring_pipelines.ml.evaluation import (
    EvaluationConfig,
    evaluate_series,
    event_auc,
    parse_windows,
    peaks,
    summarise,
)

STEP = pd.Timedelta(minutes=5)
INDEX = pd.date_range("2026-01-05", periods=2016, freq="5min", tz="UTC")  # one week


def ts(step: int) -> pd.Timestamp:
    return INDEX[step]


def alerts_at(*steps: int) -> np.ndarray:
    out = np.zeros(len(INDEX), dtype=bool)
    out[list(steps)] = True
    return out


def test_windows_parse_from_naive_and_aware_iso_strings_as_utc():
    parsed = parse_windows(
        {"a/b/c": [["2026-01-05T01:00:00", "2026-01-05T02:00:00+01:00"]], "x/y/z": []}
    )
    assert parsed["a/b/c"] == [
        (pd.Timestamp("2026-01-05T01:00:00Z"), pd.Timestamp("2026-01-05T01:00:00Z"))
    ]
    assert parsed["x/y/z"] == []
    with pytest.raises(ValueError, match="ends before"):
        parse_windows({"a": [["2026-01-05T02:00:00", "2026-01-05T01:00:00"]]})


def test_hits_misses_slack_and_false_alarms_on_one_series():
    windows = [(ts(100), ts(110)), (ts(500), ts(505)), (ts(900), ts(905))]
    # 103: inside the first window (delay 3 steps); 108: a second alert in it (redundant);
    # 508: end + 3 steps, inside the late slack; 909: end + 4 steps, too late (false);
    # 99: one step early, false with no early slack; 1500: false.
    alerts = alerts_at(103, 108, 508, 909, 99, 1500)
    result = evaluate_series("s", INDEX, np.zeros(len(INDEX)), alerts, windows, step=STEP)
    assert (result.windows, result.detected) == (3, 2)
    assert (result.alerts, result.true_alerts, result.false_alerts) == (6, 3, 3)
    assert result.redundant == 1
    assert result.delays_minutes == [15.0, 40.0]
    row = summarise([result]).iloc[0]
    assert row["precision"] == pytest.approx(0.5)
    assert row["recall"] == pytest.approx(2 / 3)
    assert row["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert row["delay_median_minutes"] == pytest.approx(27.5)
    assert row["false_alarms_per_series_week"] == pytest.approx(3.0)
    assert row["false_alarms_per_day"] == pytest.approx(3 / 7)


def test_early_slack_lets_an_alert_just_before_the_window_count():
    windows = [(ts(100), ts(110))]
    config = EvaluationConfig(early_slack_steps=2, late_slack_steps=0)
    result = evaluate_series(
        "s", INDEX, np.zeros(len(INDEX)), alerts_at(98), windows, step=STEP, config=config
    )
    assert result.detected == 1 and result.false_alerts == 0
    assert result.delays_minutes == [-10.0]


def test_only_the_evaluated_period_counts():
    windows = [(ts(90), ts(130)), (ts(300), ts(310))]
    evaluated = np.arange(len(INDEX)) >= 100
    # 95: before the period, ignored; 120: inside a window that started before the period:
    # neither true nor false; 305: a hit.
    result = evaluate_series(
        "s",
        INDEX,
        np.zeros(len(INDEX)),
        alerts_at(95, 120, 305),
        windows,
        step=STEP,
        evaluated=evaluated,
    )
    assert (result.windows, result.detected, result.alerts, result.false_alerts) == (1, 1, 1, 0)
    assert result.points == len(INDEX) - 100


def test_overall_is_the_micro_sum_over_series():
    a = evaluate_series(
        "a", INDEX, np.zeros(len(INDEX)), alerts_at(5), [(ts(0), ts(10))], step=STEP
    )
    b = evaluate_series("b", INDEX, np.zeros(len(INDEX)), alerts_at(50, 60), [], step=STEP)
    summary = summarise([a, b])
    assert summary["series"].tolist() == ["a", "b", "overall"]
    overall = summary.iloc[-1]
    assert (overall["windows"], overall["detected"], overall["false_alerts"]) == (1, 1, 2)
    assert overall["precision"] == pytest.approx(1 / 3) and overall["recall"] == 1.0
    assert overall["false_alarms_per_series_week"] == pytest.approx(1.0)
    assert overall["false_alarms_per_day"] == pytest.approx(2 / 7)
    assert np.isnan(summary.iloc[1]["f1"])  # no windows: F1 undefined for that series


def test_pr_auc_is_average_precision_of_the_score_against_in_window_points():
    scores = np.zeros(len(INDEX))
    scores[100:104] = [0.9, 0.8, 0.3, 0.7]  # window 100..103
    scores[200] = 0.85  # an ordinary point ranked second
    result = evaluate_series("s", INDEX, scores, alerts_at(100), [(ts(100), ts(103))], step=STEP)
    ranked_precisions = [1 / 1, 2 / 3, 3 / 4, 4 / 5]  # 0.9, (0.85), 0.8, 0.7, 0.3
    expected = float(np.mean(ranked_precisions))
    assert summarise([result]).iloc[0]["pr_auc"] == pytest.approx(expected)


def test_event_auc_compares_window_peaks_with_ordinary_daily_peaks():
    scores = np.full(len(INDEX), 0.2)
    scores[300] = 0.95  # window peak
    scores[1000] = 0.99  # one ordinary day peaks higher
    positive, negative = peaks(INDEX, scores, [(ts(300), ts(305))], step=STEP)
    assert positive == [0.95]
    assert sorted(negative)[-1] == 0.99 and len(negative) == 7
    assert event_auc(positive, negative) == pytest.approx(6 / 7)
