"""Sensors and schedules that drive ingestion and delivery; scoring and alerting follow by
declarative automation (:mod:`monitoring_pipelines.automation`)."""

import json
import time
from datetime import UTC, timedelta
from pathlib import Path

import dagster as dg

from monitoring_pipelines.jobs import delivery_job, ingest_job, stage_file_job
from monitoring_pipelines.partitions import TENANTS, missing_tenants, tenant_day_key
from monitoring_pipelines.resources import (
    AlertingResource,
    PipelineSettingsResource,
    WarehouseResource,
)
from monitoring_pipelines.sources.files import source_name
from monitoring_pipelines.sources.listing import data_files

# A file modified this recently may still be being written: look again on the next tick.
SETTLE_SECONDS = 2.0


def _tenant_requests(instance: dg.DagsterInstance, tenants: list[str]):
    new = missing_tenants(instance, tenants)
    return [dg.AddDynamicPartitionsRequest(TENANTS, new)] if new else []


@dg.sensor(
    job=stage_file_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def file_drop_sensor(
    context: dg.SensorEvaluationContext,
    pipeline: PipelineSettingsResource,
    warehouse: WarehouseResource,
) -> dg.SensorResult:
    """Stages each new or changed CSV/Parquet file in the drop folder, once.

    The cursor remembers each file's size and modification time: a file is looked at again only
    when they change, and a file that failed is reported by its failed run, not retried forever.
    A file whose content the warehouse already records as ingested (by the CLI, `make demo`, or
    an earlier daemon) is not staged again, whatever the cursor says.
    """
    from monitoring_pipelines.sources.files import InputFileError, file_fingerprint
    from monitoring_pipelines.warehouse import INGESTED

    root = Path(pipeline.drop_dir)
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    now = time.time()
    requests = []
    current = {}
    already = 0
    wh = None
    for path in data_files(root):
        stat = path.stat()
        if now - stat.st_mtime < SETTLE_SECONDS:
            continue
        key = source_name(path, root)
        state = f"{stat.st_size}:{stat.st_mtime_ns}"
        current[key] = state
        if seen.get(key) == state:
            continue
        wh = wh or warehouse.get()
        record = wh.read_ingest(key)
        if record is not None and record.status == INGESTED:
            try:
                if record.fingerprint == file_fingerprint(path):
                    already += 1
                    continue
            except InputFileError:
                pass  # unreadable now: its stage run reports why
        requests.append(
            dg.RunRequest(
                run_key=f"{key}@{state}",
                run_config={"ops": {"stage_file_op": {"config": {"path": str(path)}}}},
                tags={"monitoring/source": key, "monitoring/trigger": "file_drop"},
            )
        )
    # Files still settling keep their old state so they are looked at again.
    for key, state in seen.items():
        if key not in current and (root / key).exists():
            current[key] = state
    skip = f"No new or changed files in {root}"
    if already:
        skip += f" ({already} already ingested with the same content)"
    return dg.SensorResult(
        run_requests=requests,
        cursor=json.dumps(current, sort_keys=True),
        dynamic_partitions_requests=_tenant_requests(context.instance, pipeline.tenants),
        skip_reason=None if requests else skip,
    )


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[stage_file_job],
    request_job=ingest_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
)
def staged_file_sensor(context: dg.RunStatusSensorContext, warehouse: WarehouseResource):
    """After a file is staged, runs ingest_job on every day x tenant partition it touched (and
    those its previous content touched): one run per tenant and stretch of consecutive days.
    A file staged earlier whose partitions were never all gated (a crash) is requested again.
    A file staged by ``monitoring-pipelines ingest`` (or the demo) is left to that command, which
    gates it in its own runs: a second ingest of the same days beside it would only repeat them."""
    from monitoring_pipelines.gating import days_of, stretches
    from monitoring_pipelines.warehouse import STAGED

    config = context.dagster_run.run_config["ops"]["stage_file_op"]["config"]
    tags = context.dagster_run.tags
    if tags.get("monitoring/trigger") == "cli":
        return dg.SkipReason(
            f"{Path(config['path']).name}: staged by the command line, which ingests it"
        )
    source = tags.get("monitoring/source") or Path(config["path"]).name
    record = warehouse.get().read_ingest(source)
    if record is None or record.status != STAGED:
        return dg.SkipReason(f"{source}: content unchanged since it was last ingested")
    requests = []
    for stretch in stretches(days_of(list(record.pending or record.partitions))):
        first, last = stretch[0].key, stretch[-1].key
        range_tags = {}
        if first == last:
            key = tenant_day_key(*first.split("|", 1))
        else:
            key = None
            range_tags = {
                "dagster/asset_partition_range_start": first,
                "dagster/asset_partition_range_end": last,
            }
        requests.append(
            dg.RunRequest(
                run_key=f"{context.dagster_run.run_id}:{first}...{last}",
                partition_key=key,
                tags={"monitoring/source": source, **range_tags},
            )
        )
    return requests


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


@dg.sensor(
    job=delivery_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def outbox_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
    """Drains the notification outbox: when notifications are due (new, retrying after backoff,
    or escalations whose deadline passed) and no delivery run is in flight, starts delivery_job.
    The cursor holds the time of the last request."""
    from monitoring_pipelines.alerting.outbox import pending_count

    due = pending_count(warehouse.get())
    if not due:
        return dg.SkipReason("Outbox empty: nothing due")
    in_flight = context.instance.get_runs_count(
        dg.RunsFilter(
            job_name=delivery_job.name,
            statuses=[
                dg.DagsterRunStatus.QUEUED,
                dg.DagsterRunStatus.NOT_STARTED,
                dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED,
            ],
        )
    )
    if in_flight:
        return dg.SkipReason(f"{due} notifications due; a delivery run is already in flight")
    now = time.time()
    context.update_cursor(str(now))
    return dg.RunRequest(run_key=f"deliver@{now:.0f}", tags={"monitoring/due": str(due)})


def _failed_blocking_checks(
    instance: dg.DagsterInstance, run_id: str
) -> list[tuple[str, str, str | None]]:
    """(check name, description, partition) of the blocking checks that failed with ERROR in a
    run; a ranged ingest run reports the partition of each evaluation."""
    out = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.asset_check_evaluation_data
        if (
            not evaluation.passed
            and evaluation.blocking
            and evaluation.severity == dg.AssetCheckSeverity.ERROR
        ):
            out.append(
                (
                    evaluation.check_name,
                    evaluation.description or "check failed",
                    evaluation.partition,
                )
            )
    return out


def _crash_explanation(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """Why a run's process died, when Dagster found it dead (killed, out of memory, a crash):
    the code server then logs "Run execution process for <run> was terminated by signal 9"
    and fails the run with only a generic message."""
    for entry in reversed(instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)):
        message = entry.dagster_event.message if entry.dagster_event else None
        if message and "Run execution process" in message:
            return message[message.index("Run execution process") :]
    return None


def _partition_range(tags) -> str | None:
    """A ranged run's partitions (a backfill of several tenant-days) as ``first...last``, cut to
    the 128 characters an incident's partition key holds."""
    first = tags.get("dagster/asset_partition_range_start")
    last = tags.get("dagster/asset_partition_range_end")
    return f"{first}...{last}"[:128] if first and last else None


def failure_incidents(instance: dg.DagsterInstance, run: dg.DagsterRun, error: str) -> list:
    """The incidents a failed run raises: one data-quality incident per blocking check that
    stopped a tenant-day partition (for the data owner), otherwise one pipeline-failure incident
    (for operations) carrying the run's error."""
    from monitoring_pipelines.alerting.pipeline_incidents import (
        data_quality_incident,
        pipeline_failure_incident,
    )

    partition = run.tags.get("dagster/partition")
    ranged = _partition_range(run.tags)
    blocked = _failed_blocking_checks(instance, run.run_id) if partition or ranged else []
    incidents = [
        data_quality_incident(key.split("|", 1)[1], key, name, reason, run.run_id)
        for name, reason, evaluated in blocked
        for key in [evaluated or partition]
        if key and "|" in key
    ]
    if incidents:
        return incidents
    where = partition or ranged
    return [pipeline_failure_incident(run.job_name, run.run_id, error, where)]


def raise_failure_incidents(
    instance: dg.DagsterInstance,
    run: dg.DagsterRun,
    error: str,
    warehouse,
    policy,
    dagster_url: str,
) -> list:
    """Raise (and queue the notifications of) the incidents a failed run raises, keyed so that
    seeing the same run again updates them instead of raising new ones. The failure sensor and
    the CLI (for its own in-process runs, which the sensor does not see) both call this."""
    from monitoring_pipelines.alerting.service import raise_incident

    incidents = failure_incidents(instance, run, error)
    for incident in incidents:
        raise_incident(warehouse, policy, incident, dagster_url=dagster_url)
    return incidents


@dg.run_failure_sensor(default_status=dg.DefaultSensorStatus.RUNNING)
def run_failure_alert_sensor(
    context: dg.RunFailureSensorContext,
    warehouse: WarehouseResource,
    alerting: AlertingResource,
):
    """Tells someone when a run fails. A partition stopped by a blocking quality check raises one
    data-quality incident per check for the data owner (not the tenant's on-call); any other
    failure raises a pipeline-failure incident for operations, with the run and its error. The
    notifications go through the outbox like every alert."""
    run = context.dagster_run
    error = context.failure_event.message or "run failed"
    steps = context.get_step_failure_events()
    if not steps:
        error = _crash_explanation(context.instance, run.run_id) or error
    if steps:
        failure = steps[0].step_failure_data
        if failure.user_failure_data is not None and failure.user_failure_data.description:
            error = failure.user_failure_data.description
        elif failure.error is not None:
            error = failure.error.message.strip().splitlines()[-1]
    incidents = raise_failure_incidents(
        context.instance, run, error, warehouse.get(), alerting.policy(), alerting.dagster_url
    )
    context.log.info(f"{run.job_name} run {run.run_id}: raised {len(incidents)} incident(s)")
