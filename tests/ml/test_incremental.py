"""Scoring day by day with carried states gives exactly the scores of the whole history."""

import numpy as np
import pandas as pd
import pytest

from monitoring_pipelines.ml import incremental as inc
from monitoring_pipelines.ml.isolation_forest import IsolationForestDetector
from monitoring_pipelines.ml.zscore import ZScoreDetector
from monitoring_pipelines.warehouse import Warehouse

STEP = pd.Timedelta(minutes=5)


@pytest.fixture(scope="module")
def frame():
    index = pd.date_range("2026-09-28", periods=48 * 288, freq=STEP, tz="UTC")
    rng = np.random.default_rng(7)
    day = np.sin(2 * np.pi * np.arange(len(index)) / 288)
    load = 1000 + 400 * day + rng.normal(0, 20, len(index))
    values = {
        # A load metric: the features regress the other residuals on it over a trailing week.
        "requests_per_second": load,
        "latency_ms": 100 + 0.03 * load + rng.normal(0, 3, len(index)),
        "errors": 5 + 2 * day + rng.normal(0, 0.5, len(index)),
    }
    out = pd.DataFrame(values, index=index)
    out.iloc[45 * 288 + 100 : 45 * 288 + 110, 1] += 80  # an incident on day 45
    out.iloc[46 * 288 + 50 : 46 * 288 + 60, 2] = np.nan  # a gap on day 46
    return out


@pytest.mark.parametrize("make", [IsolationForestDetector, ZScoreDetector])
def test_day_by_day_scores_equal_scoring_the_whole_history(frame, make, tmp_path):
    detector = make().fit(frame.iloc[: 21 * 288])
    end = frame.index[-1] + STEP
    whole = detector.score(frame)
    store = inc.WarehouseStateStore(Warehouse(f"sqlite:///{tmp_path}/wh.db"))
    first_day = pd.Timestamp("2026-11-11", tz="UTC")
    # Catch up from the first point, then one day at a time from a stored state, reading only
    # the values the features need, as anomaly_scores does.
    _, carried = inc.score_sets_since(
        {"d": _Set(detector)}, {("g",): frame[frame.index < first_day]}, {}, first_day, first_day
    )
    store.save("t", "d", 1, carried["d"])
    context = inc.raw_context_steps(detector, STEP) * STEP
    assert context > pd.Timedelta(days=36)
    for day in pd.date_range(first_day, end, freq="D", inclusive="left"):
        stop = day + pd.Timedelta(days=1)
        states = store.latest("t", "d", 1, inc.state_start(detector, STEP, day))
        stands = pd.Timestamp(states[("g",)].as_of, tz="UTC")
        window = frame[(frame.index >= stands - context) & (frame.index < stop)]
        assert window.index[0] > frame.index[0] or day == first_day
        members, carried = inc.score_sets_since(
            {"d": _Set(detector)}, {("g",): window}, {"d": states}, day, stop
        )
        store.save("t", "d", 1, carried["d"])
        got = members["d"][("g",)]
        want = whole[(whole.index >= day) & (whole.index < stop)]
        assert got.index.equals(want.index)
        assert np.array_equal(np.isnan(got.to_numpy()), np.isnan(want.to_numpy()))
        np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=0, atol=1e-9)
    # The incident stands out in both, so the comparison is not between two flat lines.
    assert whole.loc["2026-11-12 08:20":"2026-11-12 09:00", "latency_ms"].max() > 0.4


def test_the_old_fixed_context_path_differs_from_the_whole_history(frame):
    """Why states are carried: re-scoring a fixed stretch before the day is not the same."""
    detector = IsolationForestDetector().fit(frame.iloc[: 21 * 288])
    day = pd.Timestamp("2026-10-31", tz="UTC")
    whole = detector.score(frame)
    context = frame[frame.index >= day - pd.Timedelta(days=22)]
    short = detector.score(context)
    diff = (short[short.index >= day] - whole[whole.index >= day]).abs().max().max()
    assert diff > 1e-3


def test_a_state_cannot_be_used_for_points_before_it(frame):
    detector = ZScoreDetector().fit(frame.iloc[: 21 * 288])
    day = pd.Timestamp("2026-10-20", tz="UTC")
    _, state = inc.score_since(detector, frame[frame.index < day], inc.initial_state(detector), day)
    with pytest.raises(ValueError, match="state stands at"):
        inc.score_since(detector, frame, state, day - pd.Timedelta(days=1))


class _Set:
    """The one thing score_sets_since reads from a DetectorSet."""

    def __init__(self, detector):
        self.detectors = {("g",): detector}


def test_states_kept_in_the_warehouse_score_days_exactly_and_survive_an_older_rescore(
    frame, tmp_path
):

    detector = ZScoreDetector().fit(frame.iloc[: 21 * 288])
    whole = detector.score(frame)
    store = inc.WarehouseStateStore(Warehouse(f"sqlite:///{tmp_path}/wh.db"), keep=3)
    sets = {"d": _Set(detector)}
    context = inc.raw_context_steps(detector, STEP) * STEP
    days = pd.date_range("2026-11-10", periods=3, freq="D", tz="UTC")
    _, carried = inc.score_sets_since(
        sets, {("g",): frame[frame.index < days[0]]}, {}, days[0], days[0]
    )
    store.save("t", "d", 1, carried["d"])

    def score(day):
        stop = day + pd.Timedelta(days=1)
        states = store.latest("t", "d", 1, inc.state_start(detector, STEP, day))
        stands = pd.Timestamp(states[("g",)].as_of, tz="UTC")
        window = frame[(frame.index >= stands - context) & (frame.index < stop)]
        members, carried = inc.score_sets_since(sets, {("g",): window}, {"d": states}, day, stop)
        store.save("t", "d", 1, carried["d"])
        return members["d"][("g",)]

    for day in days:
        score(day)
    # Re-score the second day: it replaces an older position, the newest one is untouched.
    again = score(days[1])
    want = whole[(whole.index >= days[1]) & (whole.index < days[2])]
    np.testing.assert_allclose(again.to_numpy(), want.to_numpy(), rtol=0, atol=1e-9)
    following = days[2] + pd.Timedelta(days=1)
    got = score(following)
    want = whole[(whole.index >= following) & (whole.index < following + pd.Timedelta(days=1))]
    assert got.index.equals(want.index)
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=0, atol=1e-9)
    # Only the newest positions are kept.
    assert store.warehouse.count("score_states", tenant="t") == 3


def test_encoded_states_round_trip_exactly():
    state = inc.SeriesState(
        as_of=123,
        samples={"score": {"a": np.array([0.1, np.nan, 1e-300]), "b": np.array([])}},
    )
    back = inc.decode_states(inc.encode_states({("svc", "x"): state}))[("svc", "x")]
    assert back.as_of == 123
    np.testing.assert_array_equal(back.samples["score"]["a"], state.samples["score"]["a"])
    assert back.samples["score"]["b"].size == 0


class _Sets:
    """What scoring reads of a DetectorSet: its detectors by group, and its size."""

    def __init__(self, detectors):
        self.detectors = detectors

    def __len__(self):
        return len(self.detectors)


def _clean_metrics(frame: pd.DataFrame) -> pd.DataFrame:
    rows = frame.rename_axis("ts").reset_index().melt("ts", var_name="metric")
    rows["tenant"], rows["service"] = "t", "svc"
    rows["is_gap"] = rows["value"].isna()
    rows["n_raw"] = (~rows["is_gap"]).astype(int)
    return rows


def test_daily_runs_with_the_carried_look_back_score_as_a_backfill_does(frame, tmp_path):
    """Days scored one run each, every run after the first reading only its own day (the
    features' past values come from the run before), equal a backfill run of the same days; a
    day gridded again (late data) makes the next run read the look-back and say why."""
    from monitoring_pipelines.ml.pca import PcaDetector
    from monitoring_pipelines.ml.prophet_model import ProphetDetector
    from monitoring_pipelines.ml.scoring_service import score_members

    train = frame.iloc[: 21 * 288]
    sets = {
        kind: _Sets({("t", "svc"): make().fit(train)})
        for kind, make in (("zscore", ZScoreDetector), ("pca", PcaDetector))
    }
    sets["prophet"] = _Sets({("t", "svc"): ProphetDetector().fit(train.iloc[:, :1])})
    wh = Warehouse(f"sqlite:///{tmp_path}/wh.db")
    wh.replace_partition(
        "clean_metrics", "t", frame.index[0], frame.index[-1] + STEP, _clean_metrics(frame)
    )
    store = inc.WarehouseStateStore(wh)
    first = pd.Timestamp("2026-11-09", tz="UTC")
    one = pd.Timedelta(days=1)

    def run(version, start, end):
        return score_members(wh, store, "t", sets, dict.fromkeys(sets, version), start, end, 300)

    backfill = run(2, first, first + 5 * one)
    assert backfill.lookback.startswith("read: a detector has no state yet")
    daily = [run(1, first + k * one, first + (k + 1) * one) for k in range(4)]
    assert [d.lookback for d in daily] == [backfill.lookback, "carried", "carried", "carried"]
    # Late data for a day inside the look-back: it was gridded again since the values were kept.
    wh.record_gridded(f"{first - 3 * one:%Y-%m-%d}|t", 2)
    daily.append(run(1, first + 4 * one, first + 5 * one))
    assert (
        daily[-1].lookback
        == f"read: {first - 3 * one:%Y-%m-%d} was gridded again since (late data)"
    )
    # The carried runs read the warehouse from their own day only: their frames hold no more
    # than the look-back the detectors need.
    context = max(inc.raw_context_steps(s.detectors[("t", "svc")], STEP) for s in sets.values())
    assert len(daily[2].frames[("t", "svc")]) <= context + 2 * 288
    for kind in sets:
        got = pd.concat([d.members[kind][("t", "svc")] for d in daily])
        want = backfill.members[kind][("t", "svc")]
        assert got.index.equals(want.index)
        assert np.array_equal(np.isnan(got.to_numpy()), np.isnan(want.to_numpy())), kind
        np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=0, atol=1e-9)
    # The incident on day 45 (2026-11-12) stands out, so these are not two flat lines.
    assert backfill.members["zscore"][("t", "svc")].loc["2026-11-12", "latency_ms"].max() > 0.4
    wh.dispose()
