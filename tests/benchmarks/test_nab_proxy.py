import numpy as np
import pandas as pd

from benchmarks.nab_proxy import nab_scores, onset_windows, with_damped

N = 200
TS = pd.date_range("2026-01-01", periods=N, freq="1s", tz="UTC")
LABELS = {"s": [[TS[100].isoformat(), TS[119].isoformat()]]}


def _series(score: np.ndarray) -> dict[str, pd.DataFrame]:
    return {
        "s": pd.DataFrame(
            {"timestamp": TS, "training": np.arange(N) < 30, "x_score": score, "is_anomaly": False}
        )
    }


def _best(score: np.ndarray) -> float:
    return float(nab_scores(_series(score), LABELS, ["x_score"]).loc["x_score", "best"])


def test_a_detector_that_never_fires_scores_zero_and_an_early_hit_close_to_100():
    assert _best(np.zeros(N)) == 0.0
    early = np.zeros(N)
    early[100] = 0.9
    assert _best(early) > 98.0
    late = np.zeros(N)
    late[118] = 0.9
    # A hit at the very end is worth about nothing, a miss costs 1: half-way between the two.
    assert 50.0 < _best(late) < _best(early)
    # The backtest's own decisions column: never flagged scores 0 too.
    table = nab_scores(_series(np.zeros(N)), LABELS, ["x_score"])
    assert table.loc["decisions", "best"] == 0.0


def test_false_alarms_cost_and_training_steps_are_not_scored():
    hit = np.zeros(N)
    hit[100] = 0.9
    noisy = hit.copy()
    noisy[40:60] = 0.9
    assert _best(noisy) < _best(hit)
    in_training = hit.copy()
    in_training[:30] = 0.9
    assert _best(in_training) == _best(hit)


def test_onset_windows_are_laid_out_around_each_onset_like_nab():
    frame = _series(np.zeros(N))["s"]
    windows = onset_windows({"s": frame}, LABELS)["s"]
    # 10% of 200 one-second steps, centred on the labelled onset (step 100).
    start, end = (pd.Timestamp(t) for t in windows[0])
    assert (start, end) == (TS[90], TS[110])
    # A lasting alarm over SKAB's whole fault is free there and costly with NAB's layout.
    lasting = np.zeros(N)
    lasting[100:120] = 0.9
    onset = nab_scores(_series(lasting), {"s": windows}, ["x_score"]).loc["x_score", "best"]
    assert onset < _best(lasting)


def test_damped_columns_keep_only_the_first_peak_of_a_lasting_alarm():
    lasting = np.zeros(N)
    lasting[100:180] = 0.9
    series = _series(lasting)
    assert with_damped(series, ["x_score", "missing_score"]) == [
        "x_score_damped",
        "missing_score_damped",
    ]
    damped = series["s"]["x_score_damped"].to_numpy()
    assert np.flatnonzero(damped).tolist() == [100]
    table = nab_scores(series, LABELS, ["x_score", "x_score_damped"])
    assert table.loc["x_score_damped", "best"] > table.loc["x_score", "best"]
