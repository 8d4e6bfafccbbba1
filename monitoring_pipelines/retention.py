"""The daily retention run: ``retention_schedule`` starts ``retention_job``, whose one op deletes
what is older than each store's retention (:mod:`monitoring_pipelines.warehouse.retention`)."""

from pathlib import Path

import dagster as dg

from monitoring_pipelines.resources import PipelineSettingsResource, WarehouseResource
from monitoring_pipelines.warehouse.retention import DEFAULT_RETENTION_CRON, apply_retention


@dg.op(tags={"kind": "retention"})
def apply_retention_op(
    context: dg.OpExecutionContext,
    warehouse: WarehouseResource,
    pipeline: PipelineSettingsResource,
) -> dg.Output[dict]:
    """Delete warehouse rows and report folders older than their retention
    (``MONITORING_RETENTION``), in short batches; the rows deleted per store are in the metadata."""
    from monitoring_pipelines.settings import load_settings

    days = dict(load_settings().retention)
    outcome = apply_retention(
        warehouse.get().engine, Path(pipeline.home) / "reports", days, log=context.log.info
    )
    metadata = {
        f"deleted_{name}": dg.MetadataValue.int(count) for name, count in outcome.deleted.items()
    }
    metadata["retention_days"] = dg.MetadataValue.json(days)
    metadata["cutoffs"] = dg.MetadataValue.json(
        {name: cutoff.isoformat() for name, cutoff in outcome.cutoffs.items()}
    )
    return dg.Output(outcome.deleted, metadata=metadata)


@dg.job(tags={"pipeline": "retention"})
def retention_job():
    """Delete rows and reports older than their retention (see README, Retention)."""
    apply_retention_op()


retention_schedule = dg.ScheduleDefinition(
    name="retention_schedule",
    job=retention_job,
    cron_schedule=DEFAULT_RETENTION_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every day at 03:30 UTC: retention_job deletes what is older than its retention.",
)
