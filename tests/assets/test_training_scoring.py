"""Training, the alert policy and scoring through Dagster on a real MLflow store."""

import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from monitoring_pipelines.assets.scoring import anomaly_scores, detection_policy
from monitoring_pipelines.assets.training import MODEL_ASSETS
from monitoring_pipelines.definitions import build_defs
from monitoring_pipelines.grid import regular_grid
from monitoring_pipelines.partitions import TENANTS, tenant_day_key
from monitoring_pipelines.settings import load_settings
from monitoring_pipelines.sources.demo import DemoConfig, generate
from monitoring_pipelines.warehouse import Warehouse


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    mp = pytest.MonkeyPatch()
    mp.setenv("MONITORING_HOME", str(home))
    for var in ("MONITORING_WAREHOUSE_URL", "MLFLOW_TRACKING_URI", "DAGSTER_HOME"):
        mp.delenv(var, raising=False)
    settings = load_settings()
    settings.ensure_dirs()
    data = generate(DemoConfig(tenants=("acme",), days=35, bad_rows=False, broken_partition=False))
    (home / "labels.json").write_text(json.dumps(data.labels))
    warehouse = Warehouse(settings.warehouse_url)
    records = data.records
    for day in pd.date_range("2026-09-28", periods=35, freq="D", tz="UTC"):
        rows = records[(records["ts"] >= day) & (records["ts"] < day + pd.Timedelta(days=1))]
        grid, _ = regular_grid(
            rows, start=day, end=day + pd.Timedelta(days=1), resolution_seconds=300
        )
        warehouse.replace_partition("clean_metrics", "acme", day, day + pd.Timedelta(days=1), grid)
    defs = build_defs(settings)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(TENANTS, ["acme"])
        yield {"defs": defs, "instance": instance, "warehouse": warehouse, "data": data}
    warehouse.dispose()
    mp.undo()


def _run(pipeline, assets, key):
    return dg.materialize(
        assets,
        partition_key=key,
        instance=pipeline["instance"],
        resources=pipeline["defs"].resources,
    )


def test_training_registers_a_champion_and_scoring_uses_it(pipeline):
    trained = _run(pipeline, [MODEL_ASSETS["isolation_forest"]], "acme")
    meta = trained.asset_materializations_for_node("isolation_forest_model")[0].metadata
    assert meta["registered_model"].value == "anomaly-isolation_forest-acme"
    assert meta["promoted"].value is True
    assert meta["train_window"].value == "2026-09-28 to 2026-10-19"
    assert 0.0 <= meta["validation/event_f1"].value <= 1.0
    models = pipeline["defs"].resources["mlflow"].registry()
    assert models.champion_versions("acme") == {"isolation_forest": 1}

    policy = _run(pipeline, [detection_policy], "acme")
    assert policy.success
    thresholds, stored = pipeline["warehouse"].read_thresholds("acme")
    assert len(thresholds) == 24 and all(0 < t <= 1 for t in thresholds.values())
    assert stored["model_versions"] == {"isolation_forest": 1}

    key = tenant_day_key("2026-10-30", "acme")
    first = _run(pipeline, [anomaly_scores], key)
    wh = pipeline["warehouse"]
    scores = wh.read_records("anomaly_scores", tenant="acme")
    day = pd.Timestamp("2026-10-30", tz="UTC")
    grid = wh.read_records(
        "clean_metrics", tenant="acme", start=day, end=day + pd.Timedelta(days=1)
    )
    # Every observed point of the day is scored; gaps are not.
    assert len(scores) == int((~grid["is_gap"].astype(bool)).sum()) > 6800
    assert scores["ensemble_score"].between(0, 1).all()
    assert set(scores["model_versions"]) == {'{"isolation_forest": 1}'}
    assert scores["lstm_score"].isna().all()
    meta = first.asset_materializations_for_node("anomaly_scores")[0].metadata
    assert meta["points"].value == len(scores)
    _run(pipeline, [anomaly_scores], key)
    assert wh.count("anomaly_scores") == len(scores)


def test_a_second_training_run_becomes_challenger_beside_the_champion(pipeline):
    second = _run(pipeline, [MODEL_ASSETS["isolation_forest"]], "acme")
    meta = second.asset_materializations_for_node("isolation_forest_model")[0].metadata
    assert meta["version"].value == 2
    # With a champion in place the retrained candidate waits in shadow for its promotion check.
    assert meta["promoted"].value is False
    assert "registered as challenger" in meta["decision"].value
    models = pipeline["defs"].resources["mlflow"].registry()
    assert models.champion_versions("acme") == {"isolation_forest": 1}
    _, info = models.load_by_alias("isolation_forest", "acme", "challenger")
    assert info.version == 2
    assert info.tags["challenger.live_from"] == "2026-11-02T00:00:00Z"
    assert "promotion.decision" not in info.tags


def test_zscore_is_a_fourth_champion_and_day_by_day_scores_equal_the_whole_history(pipeline):
    from monitoring_pipelines.ml.ensemble import combine_groups
    from monitoring_pipelines.ml.frames import group_frames
    from monitoring_pipelines.ml.training import per_series

    trained = _run(pipeline, [MODEL_ASSETS["isolation_forest"], MODEL_ASSETS["zscore"]], "acme")
    meta = trained.asset_materializations_for_node("zscore_model")[0].metadata
    assert meta["registered_model"].value == "anomaly-zscore-acme"
    assert meta["promoted"].value is True
    _run(pipeline, [detection_policy], "acme")
    _, policy = pipeline["warehouse"].read_thresholds("acme")
    assert set(policy["model_versions"]) == {"isolation_forest", "zscore"}

    wh = pipeline["warehouse"]
    days = ["2026-10-29", "2026-10-30", "2026-10-31"]
    for day in days:
        _run(pipeline, [anomaly_scores], tenant_day_key(day, "acme"))
    scores = wh.read_records("anomaly_scores", tenant="acme")
    scores = scores[scores["ts"] >= pd.Timestamp(days[0], tz="UTC")]
    # Each champion's carried state is in the warehouse (every machine sees it), and the newest
    # one stands just before the day after the last one scored.
    assert wh.count("score_states", tenant="acme", kind="zscore") >= 1
    newest = wh.read_score_state("acme", "zscore", 1, 2**62)
    assert pd.Timestamp(newest[0], tz="UTC") < pd.Timestamp(days[-1], tz="UTC") + pd.Timedelta(
        days=1
    )
    assert pd.Timestamp(newest[0], tz="UTC") > pd.Timestamp(days[-1], tz="UTC")
    assert scores["zscore_score"].notna().mean() > 0.99
    assert scores["isolation_forest_score"].notna().mean() > 0.99

    # The same champions scored over the tenant's whole history in one go.
    models = pipeline["defs"].resources["mlflow"].registry()
    sets = {k: models.load_by_alias(k, "acme")[0] for k in ("isolation_forest", "zscore")}
    end = pd.Timestamp(days[-1], tz="UTC") + pd.Timedelta(days=1)
    frames = group_frames(wh.read_records("clean_metrics", tenant="acme", end=end))
    members = {kind: model_set.score(frames) for kind, model_set in sets.items()}
    whole = per_series(combine_groups(members, _combiner(policy)))
    by_kind = {kind: per_series(groups) for kind, groups in members.items()}
    compared = 0
    for (service, metric), rows in scores.groupby(["service", "metric"]):
        name = f"acme/{service}/{metric}"
        ts = pd.DatetimeIndex(pd.to_datetime(rows["ts"], utc=True))
        for column, reference in [("ensemble_score", whole[name])] + [
            (f"{kind}_score", by_kind[kind][name]) for kind in sets
        ]:
            want = reference.reindex(ts).to_numpy()
            got = rows[column].to_numpy(dtype="float64")
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-7, err_msg=f"{name} {column}")
            compared += len(got)
    assert compared > 3 * 3 * 6800


def _combiner(policy):
    from monitoring_pipelines.ml.ensemble import CombinerConfig

    return CombinerConfig.from_dict(policy["combiner"])


def test_a_backfill_scores_a_tenants_days_in_one_run_exactly_as_day_by_day_runs(pipeline):
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    wh = pipeline["warehouse"]
    days = ["2026-10-29", "2026-10-30", "2026-10-31"]
    start = pd.Timestamp(days[0], tz="UTC")
    day_by_day = wh.read_records("anomaly_scores", tenant="acme", start=start)
    assert len(day_by_day) > 3 * 6800

    # How Dagster launches a backfill under the asset's policy: one run per range of a tenant.
    ranged = dg.materialize(
        [anomaly_scores],
        instance=pipeline["instance"],
        resources=pipeline["defs"].resources,
        tags={
            ASSET_PARTITION_RANGE_START_TAG: f"{days[0]}|acme",
            ASSET_PARTITION_RANGE_END_TAG: f"{days[-1]}|acme",
        },
    )
    assert ranged.success
    events = ranged.asset_materializations_for_node("anomaly_scores")
    assert sorted(e.partition for e in events) == [f"{d}|acme" for d in days]
    again = wh.read_records("anomaly_scores", tenant="acme", start=start)
    # Nothing duplicated, and every score equals the one its own day's run wrote.
    assert len(again) == len(day_by_day)
    keys = ["service", "metric", "ts"]
    old = day_by_day.sort_values(keys).reset_index(drop=True)
    new = again.sort_values(keys).reset_index(drop=True)
    for column in ["ensemble_score", "isolation_forest_score", "zscore_score"]:
        np.testing.assert_allclose(new[column], old[column], rtol=0, atol=1e-9, err_msg=column)
    assert (new["is_anomaly"] == old["is_anomaly"]).all()
    # Each day's materialization shows that day's own counts, not the run's.
    for event in events:
        day = pd.Timestamp(event.partition.split("|")[0], tz="UTC")
        ts = pd.to_datetime(new["ts"], utc=True)
        on_day = new[(ts >= day) & (ts < day + pd.Timedelta(days=1))]
        assert event.metadata["points"].value == len(on_day) > 6800
        assert event.metadata["anomalies"].value == int(on_day["is_anomaly"].sum())


def test_a_run_over_several_tenants_writes_nothing_when_one_has_no_champion(pipeline):
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    # A backfill of one day for many tenants is cut into runs across tenants.
    pipeline["instance"].add_dynamic_partitions(TENANTS, ["globex"])
    result = dg.materialize(
        [anomaly_scores],
        instance=pipeline["instance"],
        resources=pipeline["defs"].resources,
        tags={
            ASSET_PARTITION_RANGE_START_TAG: "2026-10-25|acme",
            ASSET_PARTITION_RANGE_END_TAG: "2026-10-25|globex",
        },
        raise_on_error=False,
    )
    assert not result.success
    failure = result.failure_data_for_node("anomaly_scores").error.message
    assert "globex: no champion model yet" in failure
    day = pd.Timestamp("2026-10-25", tz="UTC")
    scored = pipeline["warehouse"].read_records(
        "anomaly_scores", tenant="acme", start=day, end=day + pd.Timedelta(days=1)
    )
    assert scored.empty
