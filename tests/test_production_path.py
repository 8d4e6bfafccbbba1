"""The production configuration on the real PostgreSQL: warehouse and Dagster instance storage."""

from datetime import UTC, datetime

import dagster as dg
import pytest

from monitoring_pipelines.definitions import build_defs
from monitoring_pipelines.devservices import temporary_database
from monitoring_pipelines.partitions import TENANTS, tenant_day_key
from monitoring_pipelines.settings import load_settings
from monitoring_pipelines.sources.demo import DemoConfig, generate, write_demo
from monitoring_pipelines.warehouse import Warehouse

pytestmark = pytest.mark.postgres


def test_ingestion_runs_with_postgres_warehouse_and_postgres_dagster_storage(home, monkeypatch):
    with (
        temporary_database(prefix="mp_wh") as warehouse_url,
        temporary_database(prefix="mp_dagster") as dagster_url,
    ):
        # The URL (and any password in it) comes from the environment, as in production.
        monkeypatch.setenv("MONITORING_WAREHOUSE_URL", warehouse_url)
        settings = load_settings()
        settings.ensure_dirs()
        defs = build_defs(settings)
        assert isinstance(defs.resources["warehouse"].url, dg.EnvVar)
        write_demo(
            generate(DemoConfig(tenants=("acme",), days=2, broken_partition=False)),
            settings.drop_dir,
        )
        overrides = {"storage": {"postgres": {"postgres_url": dagster_url}}}
        with dg.instance_for_test(overrides=overrides) as instance:
            stage = defs.resolve_job_def("stage_file_job").execute_in_process(
                run_config={
                    "ops": {
                        "stage_file_op": {
                            "config": {"path": str(settings.drop_dir / "acme.parquet")}
                        }
                    }
                },
                instance=instance,
            )
            assert stage.success
            assert "acme" in instance.get_dynamic_partitions(TENANTS)
            run = defs.resolve_job_def("ingest_job").execute_in_process(
                partition_key=tenant_day_key("2026-09-29", "acme"), instance=instance
            )
            assert run.success
            # The run and its check results live in PostgreSQL.
            stored = instance.get_run_by_id(run.run_id)
            assert stored is not None and stored.is_success
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            evaluation = instance.event_log_storage.get_latest_asset_check_execution_by_key(
                [dg.AssetCheckKey(dg.AssetKey("raw_metrics"), "schema")]
            )
            assert evaluation

            # Alerting on the same stores: incidents and the outbox in PostgreSQL.
            import pandas as pd

            from monitoring_pipelines.alerting import outbox, store
            from tests.assets.test_alerting import DAY1, _scores

            alerting_wh = Warehouse(warehouse_url)
            day = pd.Timestamp(DAY1, tz="UTC")
            alerting_wh.replace_partition(
                "anomaly_scores", "acme", day, day + pd.Timedelta(days=1), _scores(DAY1)
            )
            alerted = defs.resolve_job_def("alerting_job").execute_in_process(
                partition_key=tenant_day_key(DAY1, "acme"), instance=instance
            )
            assert alerted.success
            assert defs.resolve_job_def("delivery_job").execute_in_process(instance=instance)
            incidents = store.read_incidents(alerting_wh)
            assert {s.incident.service for s in incidents} == {"api", "recommendations"}
            sent = outbox.read_notifications(alerting_wh, status=outbox.SENT, limit=None)
            assert sent and outbox.pending_count(alerting_wh) == 0
            alerting_wh.dispose()
        warehouse = Warehouse(warehouse_url)
        assert warehouse.dialect == "postgresql"
        start = datetime(2026, 9, 29, tzinfo=UTC)
        assert warehouse.count("clean_metrics") == 24 * 288
        assert len(warehouse.series("metrics", "acme", start, datetime(2026, 9, 30, tzinfo=UTC)))
        warehouse.dispose()
