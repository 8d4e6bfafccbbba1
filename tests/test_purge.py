"""``tenant purge``: two tenants whose names share a prefix (acme, acme-eu); purging acme removes
it from every store and leaves acme-eu whole in every store."""

import json
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from monitoring_pipelines.cli import main
from monitoring_pipelines.quality.report import folder_name
from monitoring_pipelines.settings import load_settings
from monitoring_pipelines.warehouse import Warehouse, audit, ingests, partition_states, quarantine
from tests.governance_rows import count, insert, row_for, tenant_tables

GONE, KEPT = "acme", "acme-eu"
DAY = datetime(2026, 12, 1, 6, tzinfo=UTC)


def _warehouse(settings) -> None:
    wh = Warehouse(settings.warehouse_url)
    for table in tenant_tables():
        insert(wh.engine, table, [row_for(table, t, DAY) for t in (GONE, KEPT)])
    insert(
        wh.engine,
        partition_states,
        [row_for(partition_states, t, DAY, partition_key=f"2026-12-01|{t}") for t in (GONE, KEPT)],
    )
    for t in (GONE, KEPT):
        (settings.drop_dir / f"{t}.csv").write_text("tenant,service,metric,ts,value\n")
        keys = json.dumps([f"2026-12-01|{t}"])
        insert(
            wh.engine,
            ingests,
            [row_for(ingests, t, DAY, source=f"{t}.csv", partitions=keys, pending=None)],
        )
        # A row refused while reading the file, before its tenant was known.
        insert(wh.engine, quarantine, [row_for(quarantine, None, DAY, source=f"{t}.csv")])
    wh.dispose()


def _files(settings) -> dict[str, list]:
    paths = {}
    for t in (GONE, KEPT):
        paths[t] = [
            settings.quality_dir / folder_name(f"2026-12-01|{t}"),
            settings.reports_dir / "weekly" / "2026-11-30" / "tenants" / t,
            settings.home / "model-cache" / "abc" / f"anomaly-zscore-{t}",
        ]
        for path in paths[t]:
            path.mkdir(parents=True)
            (path / "page.html").write_text(t)
        paths[t].append(settings.drop_dir / f"{t}.csv")
    lines = [json.dumps({"tenant": t, "text": f"incident of {t}"}) for t in (GONE, KEPT)]
    (settings.home / "notifications").mkdir()
    (settings.home / "notifications" / "notifications.jsonl").write_text("\n".join(lines) + "\n")
    labels = {
        f"{t}/api/error_rate": [["2026-12-01T00:00:00Z", "2026-12-01T01:00:00Z"]]
        for t in (GONE, KEPT)
    }
    (settings.home / "labels.json").write_text(json.dumps(labels))
    return paths


def _dagster(settings) -> None:
    import dagster as dg

    @dg.op
    def noop():
        return None

    @dg.job
    def tenant_job():
        noop()

    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("tenants", [GONE, KEPT])
        for t in (GONE, KEPT):
            tenant_job.execute_in_process(instance=instance, tags={"dagster/partition/tenant": t})
            instance.report_runless_asset_event(
                dg.AssetMaterialization("clean_metrics", partition=f"2026-12-01|{t}")
            )


def _mlflow(settings, tmp_path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)
    experiment = client.create_experiment("anomaly-detectors", str(settings.home / "mlartifacts"))
    for t in (GONE, KEPT):
        run = client.create_run(experiment, tags={"tenant": t})
        client.create_registered_model(f"anomaly-zscore-{t}")
        client.create_model_version(f"anomaly-zscore-{t}", str(tmp_path), run.info.run_id)


def _state(settings) -> dict[str, dict]:
    """Per tenant, how much of it each store holds."""
    import dagster as dg
    from mlflow import MlflowClient

    wh = Warehouse(settings.warehouse_url)
    client = MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)
    notes = (settings.home / "notifications" / "notifications.jsonl").read_text()
    labels = json.loads((settings.home / "labels.json").read_text())
    with dg.DagsterInstance.get() as instance:
        partitions = instance.get_dynamic_partitions("tenants")
        runs = [r.tags.get("dagster/partition/tenant") for r in instance.get_runs()]
        materialized = instance.get_materialized_partitions(dg.AssetKey("clean_metrics"))
        state = {}
        for t in (GONE, KEPT):
            state[t] = {
                **{tb.name: count(wh.engine, tb, tb.c.tenant == t) for tb in tenant_tables()},
                "partition_states": count(
                    wh.engine, partition_states, partition_states.c.partition_key.endswith(f"|{t}")
                ),
                "ingests": count(wh.engine, ingests, ingests.c.source == f"{t}.csv"),
                "file's quarantine": count(
                    wh.engine,
                    quarantine,
                    quarantine.c.source == f"{t}.csv",
                    quarantine.c.tenant.is_(None),
                ),
                "notification lines": notes.count(f'"tenant": "{t}"'),
                "labels": sum(k.startswith(f"{t}/") for k in labels),
                "dagster partition": int(t in partitions),
                "dagster runs": runs.count(t),
                "materialized": int(f"2026-12-01|{t}" in materialized),
                "mlflow models": len(
                    client.search_registered_models(f"name = 'anomaly-zscore-{t}'")
                ),
                "mlflow runs": len(
                    [
                        r
                        for r in client.search_runs(["0", "1"], "")
                        if r.data.tags.get("tenant") == t
                    ]
                ),
            }
    wh.dispose()
    return state


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def warehouse_env(request, home, monkeypatch) -> None:
    """The warehouse on SQLite under the home, or on a fresh PostgreSQL schema."""
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
        engine = sa.create_engine(url)
        from monitoring_pipelines.warehouse import metadata

        metadata.drop_all(engine)
        engine.dispose()
        monkeypatch.setenv("MONITORING_WAREHOUSE_URL", url)


@pytest.mark.slow  # MLflow's store and a Dagster instance: 17 s warm, about 55 s from cold imports
def test_purge_removes_one_tenant_everywhere_and_leaves_its_prefix_sibling(
    home, warehouse_env, tmp_path, monkeypatch, capsys
):
    from monitoring_pipelines.cli.common import prepare_home

    settings = load_settings()
    prepare_home(settings)
    monkeypatch.setenv("DAGSTER_HOME", str(settings.dagster_home))
    _warehouse(settings)
    paths = _files(settings)
    _dagster(settings)
    _mlflow(settings, tmp_path)
    before = _state(settings)
    assert all(v >= 1 for v in before[GONE].values()), before[GONE]

    assert main(["tenant", "purge", GONE]) == 1  # dry run: lists, removes nothing
    printed = capsys.readouterr().out
    assert "acme: would remove:" in printed and "warehouse.metrics: 1" in printed
    assert _state(settings) == before

    assert main(["tenant", "purge", GONE, "--yes", "--by", "dpo"]) == 0
    after = _state(settings)
    assert all(v == 0 for v in after[GONE].values()), after[GONE]
    assert after[KEPT] == before[KEPT]
    assert not any(p.exists() for p in paths[GONE])
    assert all(p.exists() for p in paths[KEPT])
    (entry,) = audit.read(sa.create_engine(settings.warehouse_url), action=audit.TENANT_PURGE)
    assert (entry.actor, entry.tenant) == ("dpo", GONE)
    assert entry.after["removed"]["warehouse.anomaly_scores"] == 1
    assert entry.after["removed"]["mlflow.registered_models"] == 1
