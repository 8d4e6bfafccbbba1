"""MLflow registry: candidates logged and registered, champions promoted, rolled back, loaded.

The key flow runs on a SQLite store and on the real PostgreSQL backend. Each backend is created once
per module (MLflow's schema migrations cost seconds); tests keep apart by using their own tenant.
"""

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from monitoring_pipelines.devservices import ServiceUnavailable, temporary_database
from monitoring_pipelines.ml import registry
from monitoring_pipelines.ml.base import Detector, DetectorConfig
from monitoring_pipelines.ml.plots import score_plot
from monitoring_pipelines.ml.registry import ModelRegistry

KIND = "trailing_mean"
PASSWORD = "pw-s3cret-42"
STEP = pd.Timedelta(minutes=5)
TRAIN_START = pd.Timestamp("2026-09-01", tz="UTC")
GOOD = {"event_f1": 0.70, "false_alarms_per_series_week": 2.0, "detection_delay_median_minutes": 15}


# -- a small real detector -------------------------------------------------------------------------


class TrailingMeanDetector(Detector):
    """Distance from the mean of the previous ``window`` points, in units of the training spread."""

    kind = KIND

    def __init__(self, config: DetectorConfig | None = None, window: int = 12):
        super().__init__(config)
        self.window = window
        self.scale: dict[str, float] = {}

    def _fit(self, frame: pd.DataFrame) -> None:
        self.scale = {c: float(frame[c].diff().std()) or 1.0 for c in frame.columns}

    def raw_scores(self, frame: pd.DataFrame) -> pd.DataFrame:
        past = frame.shift(1).rolling(self.window, min_periods=1).mean()
        return (frame - past).abs() / pd.Series(self.scale)

    def _save_native(self, directory: Path) -> None:
        native = {"window": self.window, "scale": self.scale}
        (directory / "trailing_mean.json").write_text(json.dumps(native))

    def _load_native(self, directory: Path) -> None:
        native = json.loads((directory / "trailing_mean.json").read_text())
        self.window, self.scale = native["window"], native["scale"]


def _frame(start: pd.Timestamp, periods: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    # Nanoseconds, like the pipeline's grid frames (frames.to_utc): pandas 3 defaults to
    # microseconds, and the clock features read the index as nanoseconds.
    index = pd.date_range(start, periods=periods, freq=STEP).as_unit("ns")
    t = np.arange(periods)
    frame = pd.DataFrame(
        {
            "latency_p95_ms": 120 + 20 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 3, periods),
            "error_rate": 0.01 + rng.normal(0, 0.001, periods),
        },
        index=index,
    )
    frame.iloc[periods // 2 : periods // 2 + 6, 0] += 150
    frame.iloc[periods // 3, 1] = np.nan
    return frame


TRAIN = _frame(TRAIN_START, 600, seed=1)
HELD_OUT = _frame(TRAIN_START + 600 * STEP, 240, seed=2)


def _fitted(window: int) -> TrailingMeanDetector:
    return TrailingMeanDetector(window=window).fit(TRAIN)


def _log(models, detector, scope, *, plots=None, tags=None, **overrides):
    scores = detector.score(HELD_OUT)
    kwargs = {
        "kind": KIND,
        "scope": scope,
        "params": {"window": detector.window, "calibration": {"decades": 8.0}},
        "metrics": {"train_seconds": 0.1, "event_f1": 0.7},
        "data_window": (TRAIN.index[0], TRAIN.index[-1]),
        "data_hash": "sha256:0123abcd",
        "training_rows": len(TRAIN),
        "plots": plots,
        "input_example": HELD_OUT.iloc[:5],
        "output_example": scores.iloc[:5],
        "description": f"Trailing mean over {detector.window} steps.",
        "tags": tags,
        "experiment": "registry-tests",
    }
    kwargs.update(overrides)
    return models.log_candidate(detector, **kwargs)


# -- stores ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sqlite_backend(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-sqlite")
    return SimpleNamespace(name="sqlite", uri=f"sqlite:///{root / 'home' / 'mlflow.db'}", root=root)


@pytest.fixture(scope="module")
def postgresql_backend(tmp_path_factory):
    # A database of its own rather than the shared pg_url one: MLflow's schema has a `metrics`
    # table too, and the warehouse tests drop and recreate theirs in pg_url's database.
    root = tmp_path_factory.mktemp("mlflow-postgres")
    try:
        with temporary_database(prefix="mp_mlflow") as url:
            # Trust auth ignores the password; it is there to prove it never gets stored.
            uri = sa.engine.make_url(url).set(password=PASSWORD)
            yield SimpleNamespace(
                name="postgresql", uri=uri.render_as_string(hide_password=False), root=root
            )
            sa.create_engine(url).dispose()
    except ServiceUnavailable as exc:
        pytest.fail(str(exc))


def _open(backend, monkeypatch):
    home = backend.root / "home"
    cwd = backend.root / "cwd"
    cwd.mkdir(exist_ok=True)
    # Any stray ./mlruns would land here, where the test can see it.
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("MONITORING_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # A registry of its own per test: nothing loaded by an earlier test is reused.
    models = ModelRegistry(backend.uri, home / "mlartifacts")
    return SimpleNamespace(backend=backend, home=home, cwd=cwd, models=models)


@pytest.fixture
def sqlite_store(sqlite_backend, monkeypatch):
    return _open(sqlite_backend, monkeypatch)


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def any_store(request, monkeypatch):
    backend = request.getfixturevalue(f"{request.param}_backend")
    return _open(backend, monkeypatch)


def _version(models, name, version):
    return models.client().get_model_version(name, str(version))


# -- tests -----------------------------------------------------------------------------------------


def test_importing_the_registry_and_plots_loads_neither_mlflow_nor_matplotlib():
    code = (
        "import sys, monitoring_pipelines.ml.registry, monitoring_pipelines.ml.plots; "
        "print(sorted(m for m in ('mlflow', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_registered_model_names_read_kind_then_tenant():
    assert registry.registered_model_name("isolation_forest", "acme") == (
        "anomaly-isolation_forest-acme"
    )
    with pytest.raises(ValueError, match="scope"):
        registry.registered_model_name("lstm", "acme/../x")


def test_key_flow_log_promote_reject_load_rollback(any_store, caplog):
    models = any_store.models
    caplog.set_level("INFO")
    scope = f"flow-{any_store.backend.name}"
    name = registry.registered_model_name(KIND, scope)
    first = _fitted(window=12)
    scores = first.score(HELD_OUT)
    plot = score_plot(HELD_OUT, scores, [(HELD_OUT.index[120], HELD_OUT.index[126])], "v1")
    warehouse = f"postgresql://etl:{PASSWORD}@db.internal/warehouse"

    started = time.perf_counter()
    v1 = _log(models, first, scope, plots={"scores": plot}, tags={"source.warehouse": warehouse})
    log_seconds = time.perf_counter() - started
    print(f"\nlog_candidate on {any_store.backend.name}: {log_seconds:.2f}s")

    # Registered, described, tagged for a reviewer, with plots, signature and input example.
    mv = _version(models, name, v1.version)
    assert v1.registered_name == name and v1.model_uri == f"models:/{name}/{v1.version}"
    assert mv.run_id == v1.run_id
    assert registry.CHALLENGER in mv.aliases
    assert "trained on 2026-09-01T00:00:00Z" in mv.description
    assert "sha256:0123abcd" in mv.description
    assert mv.tags["data.hash"] == "sha256:0123abcd"
    assert mv.tags["data.training_rows"] == "600"
    assert mv.tags["data.window_end"] == TRAIN.index[-1].isoformat().replace("+00:00", "Z")
    assert mv.tags["detector.kind"] == KIND and mv.tags["tenant"] == scope
    assert mv.tags["code.git_sha"]
    assert mv.tags["source.warehouse"] == "postgresql://etl:***@db.internal/warehouse"
    model = models.client().get_registered_model(name)
    assert "champion" in model.description and model.tags["tenant"] == scope
    run = models.client().get_run(v1.run_id)
    assert run.data.params["window"] == "12" and run.data.params["calibration.decades"] == "8.0"
    assert run.data.metrics["event_f1"] == 0.7
    artifacts = [a.path for a in models.client().list_artifacts(v1.run_id, "plots")]
    assert artifacts == ["plots/scores.png"]
    import mlflow

    # Outside the registry's own calls, MLflow resolves models:/ URIs through its global URIs.
    with models.activate():
        info = mlflow.models.get_model_info(v1.model_uri)
    assert info.signature.inputs.input_names() == ["ts", "latency_p95_ms", "error_rate"]
    assert info.saved_input_example_info is not None

    # The first candidate becomes champion; its challenger alias goes.
    decision = models.promote_if_not_worse(KIND, scope, v1.version, GOOD, None)
    assert decision.promoted and decision.previous_champion is None
    mv = _version(models, name, v1.version)
    assert mv.aliases == ["champion"]
    assert mv.tags["promotion.decision"] == "promoted"
    assert mv.tags["promotion.compared_with_version"] == "none"

    # A worse candidate on the same held-out data stays challenger, with reasons on its version.
    started = time.perf_counter()
    v2 = _log(models, _fitted(window=3), scope)
    print(f"log_candidate again: {time.perf_counter() - started:.2f}s")
    worse = {**GOOD, "event_f1": 0.55}
    held_out = (HELD_OUT.index[0], HELD_OUT.index[-1])
    decision = models.promote_if_not_worse(
        KIND, scope, v2.version, worse, GOOD, validation_window=held_out
    )
    assert not decision.promoted
    assert decision.reasons == ["event_f1 0.55 worse than champion's 0.7 (higher is better)"]
    mv = _version(models, name, v2.version)
    assert mv.aliases == ["challenger"]
    assert mv.tags["promotion.decision"] == "rejected"
    assert "event_f1 0.55 worse" in mv.tags["promotion.reasons"]
    assert mv.tags["promotion.compared_with_version"] == str(v1.version)
    assert mv.tags["validation.event_f1"] == "0.55"
    assert "not promoted" in mv.description and "- event_f1 0.55 worse" in mv.description
    assert models.champion_versions(scope, kinds=(KIND,)) == {KIND: v1.version}

    # An equal candidate is not worse: it takes over, and the old champion says who replaced it.
    v3 = _log(models, _fitted(window=24), scope)
    decision = models.promote_if_not_worse(KIND, scope, v3.version, GOOD, GOOD)
    assert decision.promoted and decision.previous_champion == v1.version
    assert models.champion_versions(scope, kinds=(KIND,)) == {KIND: v3.version}
    assert _version(models, name, v1.version).tags["promotion.replaced_by"] == str(v3.version)
    assert "PROMOTED to champion" in _version(models, name, v3.version).description

    # The pipeline gets the real detector back, scoring exactly as the one that was logged.
    original = _fitted(window=24)
    loaded, version = models.load_by_alias(KIND, scope)
    assert isinstance(loaded, TrailingMeanDetector) and version.version == v3.version
    pd.testing.assert_frame_equal(loaded.score(HELD_OUT), original.score(HELD_OUT))
    again, _ = models.load_by_alias(KIND, scope)
    assert again is loaded
    assert (any_store.home / "model-cache").is_dir()

    # The pyfunc model served by alias gives the same scores.
    pyfunc_dir = any_store.backend.root / "pyfunc"
    pyfunc_dir.mkdir()
    with models.activate():
        pyfunc = mlflow.pyfunc.load_model(f"models:/{name}@champion", dst_path=str(pyfunc_dir))
    predicted = pyfunc.predict(registry.pyfunc_frame(HELD_OUT))
    expected = original.score(HELD_OUT)
    assert list(predicted.columns) == ["ts", *expected.columns]
    assert (pd.DatetimeIndex(predicted["ts"]).tz_localize("UTC") == expected.index).all()
    np.testing.assert_allclose(predicted[expected.columns].to_numpy(), expected, equal_nan=True)

    # Rollback puts the previous champion back and records why on both versions.
    assert models.rollback(KIND, scope, reason="alert storm after deploy") == (
        v3.version,
        v1.version,
    )
    assert models.champion_versions(scope, kinds=(KIND,)) == {KIND: v1.version}
    restored = _version(models, name, v1.version)
    assert restored.tags["rollback.restored_from"] == str(v3.version)
    assert restored.tags["rollback.reason"] == "alert storm after deploy"
    assert "alert storm after deploy" in restored.description
    assert _version(models, name, v3.version).tags["rollback.replaced_by"] == str(v1.version)
    loaded, version = models.load_by_alias(KIND, scope)
    assert version.version == v1.version and loaded.window == 12

    # Everything stayed under the test's folders, and no password was stored or logged.
    assert list(any_store.cwd.iterdir()) == []
    assert (any_store.home / "mlartifacts" / "registry-tests").is_dir()
    _assert_no_password(any_store, caplog)


def _assert_no_password(store, caplog):
    assert PASSWORD not in caplog.text
    for path in store.backend.root.rglob("*"):
        if path.is_file() and path.suffix != ".db":
            assert PASSWORD.encode() not in path.read_bytes(), path
    engine = sa.create_engine(store.backend.uri)
    try:
        with engine.connect() as conn:
            for table in sa.inspect(conn).get_table_names():
                for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                    assert PASSWORD not in str(row), table
    finally:
        engine.dispose()


def test_an_isolation_forest_set_round_trips_through_the_registry_and_pyfunc(sqlite_store):
    """The unit the pipeline logs: one detector per service of a tenant, sklearn flavor inside."""
    models = sqlite_store.models
    from monitoring_pipelines.ml.isolation_forest import IsolationForestDetector
    from monitoring_pipelines.ml.model_set import DetectorSet

    kind, scope = "isolation_forest", "set"
    db = {"latency_p95_ms": "query_ms", "error_rate": "deadlocks"}
    train = {
        (scope, "api"): TRAIN,
        (scope, "db"): _frame(TRAIN_START, 600, seed=3).rename(columns=db),
    }
    held_out = {
        (scope, "api"): HELD_OUT,
        (scope, "db"): _frame(HELD_OUT.index[0], 240, seed=4).rename(columns=db),
    }
    model_set = DetectorSet.fit_groups(IsolationForestDetector, None, train)
    # One row per time and service; each service's metrics are NaN on the other's rows.
    rows = pd.concat(
        [
            f.assign(tenant=k[0], service=k[1]).rename_axis("ts").reset_index()
            for k, f in held_out.items()
        ]
    )
    example = pd.concat([rows[rows.service == "api"].head(3), rows[rows.service == "db"].head(3)])
    candidate = models.log_candidate(
        model_set,
        kind=kind,
        scope=scope,
        params={"groups": len(model_set)},
        metrics={},
        data_window=(TRAIN.index[0], TRAIN.index[-1]),
        data_hash="sha256:set",
        training_rows=2 * len(TRAIN),
        input_example=example,
        load_fn=DetectorSet.load,
        group_columns=("tenant", "service"),
        experiment="registry-tests",
    )
    models.promote_if_not_worse(kind, scope, candidate.version, GOOD, None)

    expected = model_set.score(held_out)
    loaded, _ = models.load_by_alias(kind, scope)
    assert isinstance(loaded, DetectorSet) and set(loaded.detectors) == set(train)
    for key, scores in loaded.score(held_out).items():
        pd.testing.assert_frame_equal(scores, expected[key])
    assert len(list((sqlite_store.home / "model-cache").rglob("sklearn/MLmodel"))) == 2

    import mlflow

    name = registry.registered_model_name(kind, scope)
    pyfunc_dir = sqlite_store.backend.root / "pyfunc-set"
    pyfunc_dir.mkdir()
    with models.activate():
        served = mlflow.pyfunc.load_model(f"models:/{name}@champion", dst_path=str(pyfunc_dir))
    predicted = served.predict(registry.pyfunc_frame(rows, ("tenant", "service")))
    assert len(predicted) == len(rows)
    # The wrapper class is pickled by reference, under the name models logged before used.
    [pickled] = pyfunc_dir.rglob("python_model.pkl")
    assert {"monitoring_pipelines.ml.registry", "DetectorPyfunc"} <= _pickled_strings(pickled)
    for key, scores in expected.items():
        mine = predicted[(predicted.tenant == key[0]) & (predicted.service == key[1])]
        np.testing.assert_allclose(mine[scores.columns].to_numpy(), scores, equal_nan=True)


def test_candidate_better_on_f1_but_noisier_is_not_promoted(sqlite_store):
    models = sqlite_store.models
    scope = "guards"
    v1 = _log(models, _fitted(window=12), scope)
    models.promote_if_not_worse(KIND, scope, v1.version, GOOD, None)
    v2 = _log(models, _fitted(window=6), scope)
    noisy = {**GOOD, "event_f1": 0.9, "false_alarms_per_series_week": 5.0}
    decision = models.promote_if_not_worse(KIND, scope, v2.version, noisy, GOOD)
    assert not decision.promoted
    assert decision.reasons == [
        "false_alarms_per_series_week 5 worse than champion's 2 (lower is better)"
    ]
    assert decision.compared["event_f1"]["ok"]
    # Within a 10 % tolerance a little noise is accepted.
    slightly = {**GOOD, "false_alarms_per_series_week": 2.1}
    assert models.promote_if_not_worse(
        KIND, scope, v2.version, slightly, GOOD, tolerance=0.1
    ).promoted


def test_a_challenger_waits_in_shadow_and_loses_on_operator_feedback(sqlite_store):
    from monitoring_pipelines.ml.registry.promotion_rule import feedback_figures

    models = sqlite_store.models
    scope = "feedback"
    v1 = _log(models, _fitted(window=12), scope)
    models.promote_if_not_worse(KIND, scope, v1.version, GOOD, None)
    v2 = _log(models, _fitted(window=6), scope)
    waiting = models.register_challenger(
        KIND, scope, v2.version, GOOD, live_from="2026-11-03", shadow_days=2
    )
    assert not waiting.promoted and waiting.previous_champion == v1.version
    client = models.client()
    mv = client.get_model_version(registry.registered_model_name(KIND, scope), str(v2.version))
    assert mv.aliases == ["challenger"]
    assert mv.tags["challenger.live_from"] == "2026-11-03T00:00:00Z"
    assert "promotion.decision" not in mv.tags

    # Equal on the labelled week, but it would have paged two false positives the champion
    # did not, against one confirmed incident each.
    feedback = feedback_figures(
        {"false_positive": [], "confirmed": ["c1"]},
        {"false_positive": ["f1", "f2"], "confirmed": ["c1"]},
        ("2026-11-03", "2026-11-05"),
        2,
    )
    decision = models.promote_if_not_worse(KIND, scope, v2.version, GOOD, GOOD, feedback=feedback)
    assert not decision.promoted
    assert decision.compared["feedback_net"] == {
        "direction": "higher",
        "candidate": -1.0,
        "champion": 1.0,
        "ok": False,
        "reason": "feedback_net -1 worse than champion's 1 (higher is better)",
    }
    assert models.champion_versions(scope, (KIND,)) == {KIND: v1.version}
    mv = client.get_model_version(registry.registered_model_name(KIND, scope), str(v2.version))
    assert mv.tags["promotion.decision"] == "rejected"
    assert json.loads(mv.tags["promotion.feedback"])["challenger"]["false_positive"] == [
        "f1",
        "f2",
    ]
    assert "would have flagged 2 false positive(s) and 1 confirmed" in mv.description


def test_a_first_candidate_worse_than_the_reference_baseline_does_not_become_champion(sqlite_store):
    models = sqlite_store.models
    scope = "baseline"
    name = registry.registered_model_name(KIND, scope)
    baseline = {"event_f1": 0.8, "false_alarms_per_series_week": 0.5}
    v1 = _log(models, _fitted(window=12), scope)
    decision = models.promote_if_not_worse(
        KIND, scope, v1.version, GOOD, None, baseline_metrics=baseline
    )
    assert not decision.promoted
    assert decision.reasons == [
        "no champion yet, and event_f1 0.7 worse than reference baseline's 0.8 (higher is "
        "better): not promoted; the pipeline scores with the kinds that qualified"
    ]
    assert models.champion_versions(scope, kinds=(KIND,)) == {}
    mv = _version(models, name, v1.version)
    assert mv.tags["promotion.decision"] == "rejected"
    assert "reference baseline's 0.8" in mv.description
    # A later candidate as good as the baseline on its own held-out week becomes the first champion.
    v2 = _log(models, _fitted(window=6), scope)
    decision = models.promote_if_not_worse(
        KIND, scope, v2.version, {**GOOD, "event_f1": 0.8}, None, baseline_metrics=baseline
    )
    assert decision.promoted
    assert models.champion_versions(scope, kinds=(KIND,)) == {KIND: v2.version}


def test_champion_without_metrics_on_the_same_data_keeps_its_place(sqlite_store):
    models = sqlite_store.models
    scope = "unmeasured"
    v1 = _log(models, _fitted(window=12), scope)
    models.promote_if_not_worse(KIND, scope, v1.version, GOOD, None)
    v2 = _log(models, _fitted(window=6), scope)
    decision = models.promote_if_not_worse(KIND, scope, v2.version, GOOD, None)
    assert not decision.promoted
    assert "same held-out data" in decision.reasons[0]
    assert models.champion_versions(scope, kinds=(KIND,)) == {KIND: v1.version}


def test_rolling_back_twice_goes_two_champions_back_and_then_stops(sqlite_store):
    models = sqlite_store.models
    scope = "history"
    versions = []
    for window in (4, 8, 16):
        candidate = _log(models, _fitted(window=window), scope)
        models.promote_if_not_worse(KIND, scope, candidate.version, GOOD, GOOD)
        versions.append(candidate.version)
    v1, v2, v3 = versions
    assert models.rollback(KIND, scope) == (v3, v2)
    assert models.rollback(KIND, scope) == (v2, v1)
    with pytest.raises(registry.ModelNotFound, match="no earlier champion"):
        models.rollback(KIND, scope)
    assert models.rollback(KIND, scope, to_version=v3) == (v1, v3)
    assert models.champion_versions(scope, kinds=(KIND,)) == {KIND: v3}


def test_missing_model_or_alias_is_a_one_line_error(sqlite_store):
    models = sqlite_store.models
    with pytest.raises(registry.ModelNotFound, match="anomaly-trailing_mean-nobody"):
        models.load_by_alias(KIND, "nobody")
    with pytest.raises(registry.ModelNotFound, match="no champion"):
        models.rollback(KIND, "nobody")
    assert models.champion_versions("nobody") == {}


def test_two_registries_in_one_process_keep_to_their_own_stores(sqlite_store, tmp_path):
    import mlflow

    models = sqlite_store.models
    other_home = tmp_path / "other"
    other = ModelRegistry(f"sqlite:///{other_home / 'mlflow.db'}", other_home / "mlartifacts")
    before = mlflow.get_tracking_uri()
    mine = _log(models, _fitted(window=12), "apart")
    theirs = _log(other, _fitted(window=6), "apart")
    models.promote_if_not_worse(KIND, "apart", mine.version, GOOD, None)
    assert models.champion_versions("apart", kinds=(KIND,)) == {KIND: mine.version}
    assert other.champion_versions("apart", kinds=(KIND,)) == {}
    # One registry's call inside the other's block uses its own store, then gives the block back.
    with other.activate():
        loaded, _ = models.load_by_alias(KIND, "apart")
        assert mlflow.get_tracking_uri() == other.target.uri
        challenger, _ = other.load_by_alias(KIND, "apart", alias=registry.CHALLENGER)
    assert (loaded.window, challenger.window) == (12, 6)
    assert theirs.run_id != mine.run_id
    assert (other_home / "mlartifacts" / "registry-tests").is_dir()
    assert mlflow.get_tracking_uri() == before


def test_default_tracking_lives_under_monitoring_home(tmp_path, monkeypatch):
    from monitoring_pipelines.definitions import build_resources
    from monitoring_pipelines.settings import load_settings

    monkeypatch.setenv("MONITORING_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # The registry reads no settings itself: the pipeline's resource builds it from them.
    models = build_resources(load_settings())["mlflow"].registry()
    with models.activate() as target:
        import mlflow

        assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    assert target.artifact_root == tmp_path / "home" / "mlartifacts"
    assert target.cache_dir == tmp_path / "home" / "model-cache"
    assert mlflow.get_tracking_uri() != target.uri


def test_score_plot_shades_label_windows_and_draws_the_threshold():
    detector = _fitted(window=12)
    scores = detector.score(HELD_OUT)
    windows = {"acme/api/latency_p95_ms": [[HELD_OUT.index[120], HELD_OUT.index[126]]]}
    fig = score_plot(HELD_OUT, scores, windows, "acme api", threshold=0.5)
    fig.canvas.draw()
    values_ax, scores_ax = fig.axes
    assert len(values_ax.patches) == 1 and len(scores_ax.patches) == 1
    assert any(list(line.get_ydata()) == [0.5, 0.5] for line in scores_ax.lines)
    assert values_ax.get_title() == "acme api"


def test_the_zscore_kind_has_a_registered_name_and_plain_requirements():
    from monitoring_pipelines.ml import registry
    from monitoring_pipelines.ml.registry.logging import pip_requirements

    assert registry.registered_model_name("zscore", "acme") == "anomaly-zscore-acme"
    requirements = pip_requirements("zscore")
    names = {r.split("==")[0] for r in requirements}
    assert {"numpy", "pandas", "scipy"} <= names
    assert not names & {"tensorflow-cpu", "prophet", "scikit-learn"}


LEGACY = Path(__file__).parents[1] / "data" / "registry"


def test_a_model_logged_when_the_registry_was_one_module_still_loads_and_scores_the_same():
    """Versions already in users' stores name the pyfunc class and the loader by import path."""
    import mlflow
    from mlflow.models import Model

    model_dir = LEGACY / "legacy_model"
    pickled = _pickled_strings(model_dir / "python_model.pkl")
    assert {"monitoring_pipelines.ml.registry", "DetectorPyfunc"} <= pickled
    config = Model.load(str(model_dir)).flavors["python_function"]["config"]
    assert config["loader"] == "monitoring_pipelines.ml.model_set:DetectorSet.load"

    served = mlflow.pyfunc.load_model(str(model_dir))
    rows = pd.read_csv(LEGACY / "legacy_model_input.csv")
    predicted = served.predict(registry.pyfunc_frame(rows, ("tenant", "service")))
    expected = pd.read_csv(LEGACY / "legacy_model_scores.csv")
    expected["ts"] = pd.to_datetime(expected["ts"]).astype("datetime64[ns]")
    assert predicted[["latency_p95_ms", "error_rate"]].notna().sum().sum() > 0
    pd.testing.assert_frame_equal(predicted, expected, check_exact=False, rtol=1e-9)


def _pickled_strings(path: Path) -> set[str]:
    import pickletools

    return {arg for _, arg, _ in pickletools.genops(path.read_bytes()) if isinstance(arg, str)}
