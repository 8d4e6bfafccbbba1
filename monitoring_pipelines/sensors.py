"""Sensors and schedules that drive ingestion."""

import json
import time
from datetime import UTC, timedelta
from pathlib import Path

import dagster as dg

from monitoring_pipelines.jobs import ingest_job, stage_file_job
from monitoring_pipelines.partitions import TENANTS, missing_tenants, tenant_day_key
from monitoring_pipelines.resources import PipelineSettingsResource, WarehouseResource
from monitoring_pipelines.sources.files import source_name

DATA_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
# A file modified this recently may still be being written: look again on the next tick.
SETTLE_SECONDS = 2.0


def _data_files(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.name.lower().endswith(DATA_SUFFIXES) and not p.name.startswith(".")
    )


def _tenant_requests(instance: dg.DagsterInstance, tenants: list[str]):
    new = missing_tenants(instance, tenants)
    return [dg.AddDynamicPartitionsRequest(TENANTS, new)] if new else []


@dg.sensor(
    job=stage_file_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def file_drop_sensor(
    context: dg.SensorEvaluationContext, pipeline: PipelineSettingsResource
) -> dg.SensorResult:
    """Stages each new or changed CSV/Parquet file in the drop folder, once.

    The cursor remembers each file's size and modification time: a file is requested again only
    when it changes, and a file that failed is reported by its failed run, not retried forever.
    """
    root = Path(pipeline.drop_dir)
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    now = time.time()
    requests = []
    current = {}
    for path in _data_files(root):
        stat = path.stat()
        if now - stat.st_mtime < SETTLE_SECONDS:
            continue
        key = source_name(path, root)
        state = f"{stat.st_size}:{stat.st_mtime_ns}"
        current[key] = state
        if seen.get(key) == state:
            continue
        requests.append(
            dg.RunRequest(
                run_key=f"{key}@{state}",
                run_config={"ops": {"stage_file_op": {"config": {"path": str(path)}}}},
                tags={"monitoring/source": key},
            )
        )
    # Files still settling keep their old state so they are looked at again.
    for key, state in seen.items():
        if key not in current and (root / key).exists():
            current[key] = state
    return dg.SensorResult(
        run_requests=requests,
        cursor=json.dumps(current, sort_keys=True),
        dynamic_partitions_requests=_tenant_requests(context.instance, pipeline.tenants),
        skip_reason=None if requests else f"No new or changed files in {root}",
    )


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[stage_file_job],
    request_job=ingest_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def staged_file_sensor(context: dg.RunStatusSensorContext, warehouse: WarehouseResource):
    """After a file is staged, runs ingest_job on every day x tenant partition it touched."""
    config = context.dagster_run.run_config["ops"]["stage_file_op"]["config"]
    tags = context.dagster_run.tags
    source = tags.get("monitoring/source") or Path(config["path"]).name
    record = warehouse.get().read_ingest(source)
    if record is None or record.run_id != context.dagster_run.run_id:
        return dg.SkipReason(f"{source}: content unchanged since it was last ingested")
    return [
        dg.RunRequest(
            run_key=f"{context.dagster_run.run_id}:{key}",
            partition_key=tenant_day_key(*key.split("|", 1)),
            tags={"monitoring/source": source},
        )
        for key in record.partitions
    ]


@dg.schedule(
    cron_schedule="7 * * * *",
    job=ingest_job,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
def ingest_schedule(context: dg.ScheduleEvaluationContext, pipeline: PipelineSettingsResource):
    """Every hour, pulls today's metrics of every tenant from the configured Prometheus and SQL
    sources and gates them; in the first hours of a day it also completes yesterday."""
    if not pipeline.sources_file.exists():
        return dg.SkipReason(f"No Prometheus or SQL source configured in {pipeline.sources_file}")
    tick = context.scheduled_execution_time.astimezone(UTC)
    new = missing_tenants(context.instance, pipeline.tenants)
    if new:
        context.instance.add_dynamic_partitions(TENANTS, new)
    days = [tick.date()]
    if tick.hour < 3:
        days.insert(0, (tick - timedelta(days=1)).date())
    return [
        dg.RunRequest(
            run_key=f"{day.isoformat()}|{tenant}@{tick.isoformat()}",
            partition_key=tenant_day_key(day.isoformat(), tenant),
        )
        for day in days
        for tenant in context.instance.get_dynamic_partitions(TENANTS)
    ]
