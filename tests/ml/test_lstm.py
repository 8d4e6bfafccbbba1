import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from monitoring_pipelines.ml.lstm import MODEL_DIR, LstmConfig, LstmDetector
from monitoring_pipelines.sources.demo import DemoConfig, generate

STEP = pd.Timedelta(minutes=5)
DAY = 288
TRAIN_DAYS = 7
# Fewer epochs and sequences than the defaults keep each fit to a few seconds; still plenty for
# the demo's smooth series.
CONFIG = LstmConfig(epochs=10, patience=3, max_train_sequences=384)
SERIES = "latency_p95_ms"
# An injected level shift in the scoring days, away from the demo's own incidents.
SHIFT_START, SHIFT_STEPS = pd.Timestamp("2026-10-06T04:00:00Z"), 12


# The LSTM computes in float32, and CPU kernels pick their blocking (so their rounding) by batch
# shape: the same window scored in a batch of another size can differ by a few float32 ulps (seen:
# 4.5e-7 absolute on one machine, 0 on another). Compare at that precision; lookahead shows up
# orders of magnitude above it.
FLOAT32 = {"rtol": 1e-4, "atol": 1e-4}


def _close(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    return np.allclose(a.to_numpy(), b.to_numpy(), equal_nan=True, **FLOAT32)


@pytest.fixture(scope="module")
def demo():
    # Quality-gated data: detectors never see the demo's bad rows or its broken partition.
    return generate(
        DemoConfig(
            tenants=("acme",), services=("api",), days=10, bad_rows=False, broken_partition=False
        )
    )


@pytest.fixture(scope="module")
def group(demo) -> pd.DataFrame:
    """Ten days of acme's api group (8 metrics) on the full 5-minute grid, demo gaps kept."""
    records = demo.records
    frame = records.pivot_table(index="ts", columns="metric", values="value")
    grid = pd.date_range(records.ts.min(), periods=10 * DAY, freq=STEP)
    return frame.reindex(grid)


@pytest.fixture(scope="module")
def shifted(group) -> pd.DataFrame:
    frame = group.copy()
    window = frame.index[frame.index.get_loc(SHIFT_START) + np.arange(SHIFT_STEPS)]
    train = group[SERIES].iloc[: TRAIN_DAYS * DAY]
    frame.loc[window, SERIES] += 8 * (train.quantile(0.75) - train.quantile(0.25))
    return frame


@pytest.fixture(scope="module")
def fitted(group) -> LstmDetector:
    return LstmDetector(CONFIG).fit(group.iloc[: TRAIN_DAYS * DAY])


def _micro(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` on a microsecond index, what pandas 3 builds by default (``pd.date_range``)."""
    return frame.set_axis(frame.index.as_unit("us"))


@pytest.fixture(scope="module")
def single(group) -> LstmDetector:
    return LstmDetector(CONFIG).fit(_micro(group[[SERIES]].iloc[: TRAIN_DAYS * DAY]))


def _labelled(demo, index: pd.DatetimeIndex, column: str) -> np.ndarray:
    inside = np.zeros(len(index), dtype=bool)
    for start, end in demo.labels[f"acme/api/{column}"]:
        inside |= (index >= pd.Timestamp(start)) & (index <= pd.Timestamp(end))
    return inside


def test_importing_the_module_does_not_import_tensorflow_keras_or_mlflow():
    code = (
        "import sys, monitoring_pipelines.ml.lstm; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'mlflow') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]"


def test_too_short_a_frame_is_refused_with_one_line(group):
    with pytest.raises(ValueError, match="too few"):
        LstmDetector(CONFIG).fit(group.iloc[:60])


@pytest.mark.slow
def test_scores_are_in_unit_interval_and_nan_exactly_at_gaps(fitted, group):
    scores = fitted.score(group)
    assert list(scores.columns) == list(group.columns)
    values = scores.to_numpy()
    assert np.nanmin(values) >= 0.0
    assert np.nanmax(values) <= 1.0
    assert scores.isna().to_numpy()[group.isna().to_numpy()].all()
    # Only the first block without full context is unscored; everything observed after is scored.
    warmup = CONFIG.lookback + CONFIG.block
    later = group.iloc[warmup:].notna().to_numpy()
    assert scores.iloc[warmup:].notna().to_numpy()[later].all()
    assert scores.iloc[: CONFIG.lookback].isna().all().all()


@pytest.mark.slow
def test_a_gap_gets_no_score_and_scoring_resumes_after_it(fitted, group):
    frame = group.copy()
    gap = slice(8 * DAY + 100, 8 * DAY + 130)
    frame.iloc[gap, 0] = np.nan
    raw = fitted.raw_scores(frame)
    assert raw.iloc[gap, 0].isna().all()
    assert raw.iloc[gap.stop : gap.stop + 6, 0].notna().all()
    # The other metrics of the group keep their scores wherever they are observed.
    assert group.iloc[gap, 1:].notna().to_numpy().all()
    assert raw.iloc[gap, 1:].notna().to_numpy().all()


@pytest.mark.slow
def test_an_injected_level_shift_scores_far_above_normal_points(fitted, demo, shifted):
    scores = fitted.score(shifted).iloc[TRAIN_DAYS * DAY :][SERIES]
    start = scores.index.get_loc(SHIFT_START)
    injected = scores.iloc[start : start + SHIFT_STEPS]
    normal = scores[~_labelled(demo, scores.index, SERIES)].drop(injected.index, errors="ignore")
    # After the shift ends the return to normal is a second surprise; leave an hour out.
    normal = normal.drop(scores.index[start + SHIFT_STEPS : start + SHIFT_STEPS + 12])
    # 0.5 is a one-in-10,000 surprise on the calibrated scale.
    assert injected.max() > 0.5
    assert injected.max() > normal.quantile(0.999) + 0.1
    assert normal.median() < 0.1
    assert (normal > injected.max()).mean() < 0.002


@pytest.mark.slow
@pytest.mark.parametrize("column", ["requests_per_second", "latency_p95_ms"])
def test_the_demo_incidents_after_training_stand_out(fitted, demo, group, column):
    # A 20-minute dip in requests and a 2.5-hour level shift in latency.
    scores = fitted.score(group).iloc[TRAIN_DAYS * DAY :][column]
    inside = _labelled(demo, scores.index, column)
    assert inside.any()
    assert scores[inside].max() > 0.5
    assert scores[inside].max() > scores[~inside].quantile(0.99) + 0.2


@pytest.mark.slow
def test_scoring_is_causal_a_prefix_gets_the_same_scores(fitted, shifted):
    whole_raw = fitted.raw_scores(shifted)
    whole = fitted.score(shifted)
    for k in (50, 2 * DAY + 17, 9 * DAY + 5):
        assert _close(fitted.raw_scores(shifted.iloc[:k]), whole_raw.iloc[:k])
        assert _close(fitted.score(shifted.iloc[:k]), whole.iloc[:k])


@pytest.mark.slow
def test_a_point_scores_the_same_in_any_frame_that_holds_its_context(fitted, group):
    whole = fitted.raw_scores(group)
    later = fitted.raw_scores(group.iloc[1000:])
    scored = later.notna()
    assert scored.to_numpy().mean() > 0.9
    assert _close(later[scored], whole.iloc[1000:][scored])


@pytest.mark.slow
def test_missing_rows_are_treated_as_gaps_not_skipped(fitted, group):
    drop = group.index[8 * DAY : 8 * DAY + 10]
    raw = fitted.raw_scores(group.drop(drop))
    on_grid = group.copy()
    on_grid.loc[drop] = np.nan
    assert _close(raw, fitted.raw_scores(on_grid).drop(drop))


@pytest.mark.slow
def test_a_single_series_works(single, group, shifted):
    scores = single.score(shifted[[SERIES]]).iloc[TRAIN_DAYS * DAY :]
    assert list(scores.columns) == [SERIES]
    assert np.nanmin(scores.to_numpy()) >= 0.0
    assert np.nanmax(scores.to_numpy()) <= 1.0
    start = scores.index.get_loc(SHIFT_START)
    peak = scores[SERIES].iloc[start : start + SHIFT_STEPS].max()
    assert peak > 0.5
    assert peak > scores[SERIES].quantile(0.99) + 0.1
    assert scores[SERIES].median() < 0.1


@pytest.mark.slow
def test_save_and_load_give_identical_scores_through_the_mlflow_keras_flavor(
    fitted, group, tmp_path
):
    fitted.save(tmp_path)
    mlmodel = yaml.safe_load((tmp_path / MODEL_DIR / "MLmodel").read_text())
    assert "keras" in mlmodel["flavors"]
    loaded = LstmDetector.load(tmp_path)
    assert loaded.config == fitted.config
    np.testing.assert_array_equal(loaded.score(group).to_numpy(), fitted.score(group).to_numpy())
    # Saving again into the same directory replaces the model rather than failing.
    loaded.save(tmp_path)
    assert _close(LstmDetector.load(tmp_path).raw_scores(group), fitted.raw_scores(group))


@pytest.mark.slow
def test_the_index_unit_does_not_matter(fitted, single, group):
    assert fitted.step_ns == single.step_ns == STEP.value
    assert _close(fitted.raw_scores(_micro(group)), fitted.raw_scores(group))
    assert _close(single.raw_scores(group[[SERIES]]), single.raw_scores(_micro(group[[SERIES]])))


@pytest.mark.slow
def test_training_is_reproducible_for_a_seed(single, group):
    frame = _micro(group[[SERIES]])
    again = LstmDetector(CONFIG).fit(frame.iloc[: TRAIN_DAYS * DAY])
    assert _close(again.raw_scores(frame), single.raw_scores(frame))
    assert again.training == single.training


def test_the_numpy_forward_pass_is_the_keras_model(fitted, group):
    # Scoring runs the network in NumPy from its weights (no graph traced per model); it must be
    # the very network Keras trained and saves.
    cfg = fitted.config
    data = fitted._arrays(group)
    length = cfg.lookback + cfg.block - 1
    batch = np.stack([data.inputs[s : s + length] for s in (0, 500, 1200)])
    keras_out = np.asarray(fitted.model(batch, training=False))
    assert _close(pd.DataFrame(fitted._predict(batch).ravel()), pd.DataFrame(keras_out.ravel()))


@pytest.mark.slow
def test_a_fit_gives_the_same_model_after_fits_of_other_series(fitted, group):
    # Fits reuse a compiled trainer per shape; its weights and optimizer start afresh each time.
    LstmDetector(CONFIG).fit(group.iloc[DAY : (TRAIN_DAYS + 1) * DAY])
    again = LstmDetector(CONFIG).fit(group.iloc[: TRAIN_DAYS * DAY])
    assert _close(again.raw_scores(group), fitted.raw_scores(group))
    assert again.training == fitted.training
