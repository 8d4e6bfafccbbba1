"""Retention: what is older than each store's retention goes, in batches; what is younger, and
notifications still on their way, stay; the run says what it deleted."""

from datetime import UTC, datetime, timedelta

import pytest

from monitoring_pipelines.warehouse import audit
from monitoring_pipelines.warehouse.retention import (
    DEFAULT_DAYS,
    apply_retention,
    parse_retention,
)
from monitoring_pipelines.warehouse.schema import metadata, notifications
from tests.governance_rows import count, insert, row_for

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)
OLD, RECENT = NOW - timedelta(days=500), NOW - timedelta(days=10)
TIMED = ("landing", "metrics", "clean_metrics", "anomaly_scores", "shadow_scores", "quarantine")


def _fill(engine) -> None:
    for name in TIMED:
        table = metadata.tables[name]
        rows = [row_for(table, "acme", OLD + timedelta(minutes=i), i) for i in range(5)]
        rows.append(row_for(table, "acme", RECENT, 99))
        insert(engine, table, rows)
    statuses = ("sent", "dead", "suppressed", "cancelled", "pending", "sending")
    insert(
        engine,
        notifications,
        [row_for(notifications, "acme", OLD, i, status=s) for i, s in enumerate(statuses)]
        + [row_for(notifications, "acme", RECENT, 9, status="sent")],
    )


def test_retention_deletes_expired_rows_in_batches_and_keeps_the_rest(warehouse, tmp_path):
    engine = warehouse.engine
    _fill(engine)
    reports = tmp_path / "reports"
    for period in ("2025-01-06", "2026-11-30"):
        (reports / "weekly" / period / "all").mkdir(parents=True)
        (reports / "weekly" / period / "all" / "report.html").write_text("<html></html>")
    lines = []

    outcome = apply_retention(
        engine, reports, dict(DEFAULT_DAYS), now=NOW, batch_size=2, log=lines.append
    )

    for name in TIMED:
        assert outcome.deleted[name] == 5, name
        assert outcome.batches[name] == 3, name  # 2 + 2 + 1 rows
        assert count(engine, metadata.tables[name]) == 1, name
    assert outcome.deleted["notifications"] == 4
    with engine.connect() as conn:
        left = {r.status for r in conn.execute(notifications.select())}
    assert left == {"pending", "sending", "sent"}  # unfinished ones and the recent sent one
    assert outcome.deleted["reports"] == 1
    assert not (reports / "weekly" / "2025-01-06").exists()
    assert (reports / "weekly" / "2026-11-30" / "all" / "report.html").exists()
    assert "retention: metrics: 5 rows older than" in "\n".join(lines)
    entry = audit.last(engine, audit.RETENTION)
    assert entry.actor == "pipeline" and entry.after["deleted"]["metrics"] == 5


def test_retention_settings_override_defaults_and_refuse_what_training_needs():
    days = dict(parse_retention("landing=30d, reports=8w"))
    assert days["landing"] == 30 and days["reports"] == 56
    assert days["metrics"] == DEFAULT_DAYS["metrics"]
    with pytest.raises(ValueError, match="clean_metrics must keep at least 42 days"):
        parse_retention("clean_metrics=7d")
    with pytest.raises(ValueError, match="unknown store 'metric'"):
        parse_retention("metric=30d")
    with pytest.raises(ValueError, match="expected a number of days"):
        parse_retention("landing=soon")


def test_retention_job_puts_what_it_deleted_in_the_run_metadata(home, monkeypatch):
    import dagster as dg

    from monitoring_pipelines.resources import PipelineSettingsResource, WarehouseResource
    from monitoring_pipelines.retention import retention_job
    from monitoring_pipelines.warehouse import Warehouse

    monkeypatch.setenv("MONITORING_RETENTION", "landing=30d")
    url = f"sqlite:///{home / 'warehouse.db'}"
    home.mkdir(parents=True)
    warehouse = Warehouse(url)
    insert(
        warehouse.engine,
        metadata.tables["landing"],
        [row_for(metadata.tables["landing"], "acme", datetime.now(UTC) - timedelta(days=31))],
    )
    result = retention_job.execute_in_process(
        resources={
            "warehouse": WarehouseResource(url=url),
            "pipeline": PipelineSettingsResource(
                home=str(home), drop_dir=str(home / "drop"), start_date="2026-01-01"
            ),
        },
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    (output,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata_out = output.event_specific_data.metadata
    assert metadata_out["deleted_landing"].value == 1
    assert metadata_out["retention_days"].value["landing"] == 30
    warehouse.dispose()
