import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitoring_pipelines.ml.prophet_model import (
    FORECAST_COLUMNS,
    MODELS_DIR,
    ProphetConfig,
    ProphetDetector,
)
from monitoring_pipelines.sources.demo import DemoConfig, generate

STEP = pd.Timedelta(minutes=5)
TRAIN_DAYS = 7
COLUMNS = ["startup_latency_p50_ms", "startup_latency_p95_ms", "streams_started", "buffering_ratio"]
# The demo's level shift on acme's playback startup latency (a labelled window).
SHIFT = (pd.Timestamp("2026-10-06T15:20:00Z"), pd.Timestamp("2026-10-06T17:55:00Z"))
# A one-day horizon, so two days of scoring reach past the fit-time forecast cache.
CONFIG = ProphetConfig(uncertainty_samples=100, horizon_days=1.0)


@pytest.fixture(scope="module")
def group() -> pd.DataFrame:
    """Nine days of acme's playback group on the full 5-minute grid, bad rows blanked.

    The quality gate removes declared bad rows before detectors see them; the day after (the
    demo's broken partition) is left out.
    """
    data = generate(DemoConfig(tenants=("acme",), days=10))
    records = data.records[data.records.service == "playback"]
    stamps = records.ts.dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    bad = {(b["metric"], b["ts"]) for b in data.bad_rows if b["service"] == "playback"}
    records = records[[(m, t) not in bad for m, t in zip(records.metric, stamps, strict=True)]]
    frame = records.pivot_table(index="ts", columns="metric", values="value")
    grid = pd.date_range(records.ts.min(), periods=9 * 288, freq=STEP)
    assert data.labels["acme/playback/startup_latency_p95_ms"] == [
        [s.strftime("%Y-%m-%dT%H:%M:%SZ") for s in SHIFT]
    ]
    return frame.reindex(grid)[COLUMNS]


@pytest.fixture(scope="module")
def saved(group, tmp_path_factory) -> Path:
    """A detector fitted on the first week, saved once; tests load fresh copies."""
    detector = ProphetDetector(CONFIG).fit(group.iloc[: TRAIN_DAYS * 288])
    return detector.save(tmp_path_factory.mktemp("prophet"))


@pytest.fixture
def detector(saved) -> ProphetDetector:
    return ProphetDetector.load(saved)


def _test_part(group: pd.DataFrame) -> pd.DataFrame:
    return group.iloc[TRAIN_DAYS * 288 :]


def test_importing_the_module_does_not_import_prophet_or_mlflow():
    code = (
        "import sys, monitoring_pipelines.ml.prophet_model; "
        "print(sorted(m for m in ('prophet', 'mlflow', 'cmdstanpy') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.stdout.strip() == "[]"


def test_config_round_trips_and_rejects_nonsense():
    config = ProphetConfig(holidays=("2026-12-25", "2027-01-01"), horizon_days=3.0)
    again = ProphetConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert again.holidays == ("2026-12-25", "2027-01-01")
    defaults = ProphetConfig()
    assert (defaults.daily_seasonality, defaults.weekly_seasonality) == (True, True)
    assert defaults.yearly_seasonality is False
    assert (defaults.calibration.method, defaults.calibration.mapping) == ("tail", "soft")
    assert (defaults.growth, defaults.season, defaults.uncertainty_samples) == ("flat", "auto", 0)
    with pytest.raises(ValueError, match="uncertainty_samples"):
        ProphetConfig(uncertainty_samples=-1)
    with pytest.raises(ValueError, match="seasonality_mode"):
        ProphetConfig(seasonality_mode="both")


@pytest.mark.slow
def test_scores_are_in_unit_interval_with_nan_for_gaps(detector, group):
    frame = _test_part(group).copy()
    frame.iloc[10:20, 0] = np.nan
    frame.iloc[30, 1] = np.inf
    scores = detector.score(frame)
    assert scores.shape == frame.shape
    assert list(scores.columns) == COLUMNS
    # The first residual_min_periods rows of a frame without context have no error history.
    assert scores.iloc[CONFIG.residual_min_periods :].notna().mean().min() > 0.95
    values = scores.to_numpy()
    assert np.nanmin(values) >= 0.0 and np.nanmax(values) <= 1.0
    assert scores.iloc[10:20, 0].isna().all()
    raw = detector.raw_scores(frame)
    assert raw.iloc[10:20, 0].isna().all()
    assert np.isnan(raw.iloc[30, 1])
    # Timestamps off the training grid are forecast on demand rather than looked up.
    shifted = frame.iloc[40:100].set_axis(frame.index[40:100] + pd.Timedelta(minutes=1))
    off_grid = detector.raw_scores(shifted).iloc[:, 1:]
    assert off_grid.iloc[CONFIG.residual_min_periods :].notna().all().all()


def _assert_shift_stands_out(detector: ProphetDetector, frame: pd.DataFrame) -> None:
    raw, scores = detector.raw_scores(frame), detector.score(frame)
    inside = (frame.index >= SHIFT[0]) & (frame.index <= SHIFT[1])
    for column in ("startup_latency_p50_ms", "startup_latency_p95_ms"):
        shifted, normal = raw.loc[inside, column], raw.loc[~inside, column].dropna()
        # Typically several sigmas off the forecast, against about one sigma normally.
        assert shifted.median() > max(normal.quantile(0.99), 4 * normal.median()), column
        # Calibrated: more than half of the shift ranks above 99% of the normal points. Ranks,
        # not levels, so the assertion holds whichever calibration mapping is the default.
        shifted, normal = scores.loc[inside, column], scores.loc[~inside, column].dropna()
        assert shifted.median() > normal.quantile(0.99), column
        assert shifted.max() >= normal.max(), column


@pytest.mark.slow
def test_level_shift_scores_far_above_normal_points(detector, group):
    _assert_shift_stands_out(detector, _test_part(group))


@pytest.mark.slow
def test_scoring_is_causal_also_past_the_cached_horizon(saved, group):
    frame = _test_part(group)
    # Both orders on fresh detectors: the lazily grown cache must not change any score.
    for first, second in ((len(frame), 100), (100, len(frame))):
        detector = ProphetDetector.load(saved)
        a = detector.raw_scores(frame.iloc[:first])
        b = detector.raw_scores(frame.iloc[:second])
        k = min(first, second)
        assert np.allclose(a.iloc[:k], b.iloc[:k], equal_nan=True, rtol=1e-9, atol=0.0)
    for k in (50, 300, 400):
        prefix = ProphetDetector.load(saved).score(frame.iloc[:k])
        whole = ProphetDetector.load(saved).score(frame)
        assert np.allclose(prefix, whole.iloc[:k], equal_nan=True)


@pytest.mark.slow
def test_forecast_covers_the_horizon_with_ordered_bands(detector, group):
    train_end = group.index[TRAIN_DAYS * 288 - 1]
    horizon_end = train_end + pd.Timedelta(days=CONFIG.horizon_days)
    forecast = detector.forecast(train_end - pd.Timedelta(hours=1), horizon_end)
    assert tuple(forecast.columns) == FORECAST_COLUMNS
    steps = pd.date_range(train_end - pd.Timedelta(hours=1), horizon_end, freq=STEP)
    assert len(forecast) == len(steps) * len(COLUMNS)
    assert set(forecast["column"]) == set(COLUMNS)
    assert str(forecast["ts"].dtype) == "datetime64[ns, UTC]"
    for _, one in forecast.groupby("column"):
        assert one["ts"].tolist() == steps.tolist()
    bands = forecast[["yhat_lower", "yhat", "yhat_upper"]].to_numpy()
    assert np.isfinite(bands).all()
    assert (bands[:, 0] <= bands[:, 1]).all() and (bands[:, 1] <= bands[:, 2]).all()
    # Past the cache: point forecasts on demand, still banded.
    later = detector.forecast(horizon_end, horizon_end + pd.Timedelta(days=2))
    assert len(later) == (2 * 288 + 1) * len(COLUMNS)
    assert np.isfinite(later[["yhat", "yhat_lower", "yhat_upper"]].to_numpy()).all()
    # The forecast follows the series: p95 latency is within its own band most of the time.
    p95 = forecast[forecast["column"] == "startup_latency_p95_ms"].set_index("ts")
    actual = group["startup_latency_p95_ms"].reindex(p95.index).dropna()
    within = (actual >= p95["yhat_lower"].loc[actual.index]) & (
        actual <= p95["yhat_upper"].loc[actual.index]
    )
    assert within.mean() > 0.6


@pytest.mark.slow
def test_save_and_load_give_identical_scores(saved, group, tmp_path):
    frame = _test_part(group)
    original = ProphetDetector.load(saved)
    expected = original.score(frame)
    again = ProphetDetector.load(original.save(tmp_path / "again"))
    pd.testing.assert_frame_equal(again.score(frame), expected)
    for column in COLUMNS:
        mlmodel = (tmp_path / "again" / MODELS_DIR / column / "MLmodel").read_text()
        assert "prophet:" in mlmodel
    assert (tmp_path / "again" / MODELS_DIR / "forecast.parquet").exists()


@pytest.mark.slow
def test_refit_learns_the_recent_data(detector, group):
    nine_days = group.iloc[: 8 * 288]
    detector.refit(nine_days)
    assert detector.trained_on["end"] == nine_days.index[-1].isoformat()
    # The model saw the new day (its last hourly mean), not just the first week.
    last_fitted = detector.models["streams_started"].history["ds"].max()
    assert last_fitted >= (nine_days.index[-1] - pd.Timedelta(hours=1)).tz_localize(None)
    _assert_shift_stands_out(detector, group.iloc[8 * 288 :])


@pytest.mark.slow
def test_unobserved_column_stays_unscored_and_holidays_are_modelled(group):
    frame = group.iloc[: 3 * 288, [1]].assign(never_reported=np.nan)
    config = ProphetConfig(uncertainty_samples=0, horizon_days=0.5, holidays=("2026-09-29",))
    detector = ProphetDetector(config).fit(frame)
    assert list(detector.models) == ["startup_latency_p95_ms"]
    assert "holiday" in detector.models["startup_latency_p95_ms"].train_holiday_names.tolist()
    raw = detector.raw_scores(frame)
    assert raw["never_reported"].isna().all()
    assert raw["startup_latency_p95_ms"].notna().mean() > 0.95
    # pandas 3 keeps the input's time unit; a second-resolution index must score the same.
    coarse = frame.set_axis(frame.index.as_unit("s"))
    again = ProphetDetector(config).fit(coarse).raw_scores(coarse)
    np.testing.assert_allclose(again.to_numpy(), raw.to_numpy(), rtol=1e-6)
    by_country = ProphetDetector(replace(config, holidays="US")).fit(frame.iloc[:, :1])
    assert by_country.models["startup_latency_p95_ms"].country_holidays == "US"


def test_batched_point_forecasts_equal_prophets_own_predict(group):
    from monitoring_pipelines.ml.prophet_model.forecast import point_forecasts

    frame = group.iloc[: 3 * 288, :2]
    config = ProphetConfig(uncertainty_samples=0, horizon_days=0.5, holidays=("2026-09-29",))
    detector = ProphetDetector(config).fit(frame)
    later = pd.date_range(frame.index[-1], periods=600, freq=STEP)
    models = [detector.models[c] for c in frame.columns] + [None]
    batched = point_forecasts(models, later)
    for j, model in enumerate(models[:-1]):
        expected = model.predict(pd.DataFrame({"ds": later.tz_localize(None)}))["yhat"]
        np.testing.assert_allclose(batched[:, j], expected.to_numpy(), rtol=1e-12)
    assert np.isnan(batched[:, -1]).all()
