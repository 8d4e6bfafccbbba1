"""Jobs: stage a dropped file, and gate + grid the partitions it touched.

Asset jobs on day x tenant partitions take them from their assets, so they follow the start date
``build_defs`` binds the assets to."""

from pathlib import Path

import dagster as dg

from monitoring_pipelines.assets.alerting import alerts, policy_or_failure
from monitoring_pipelines.assets.ingestion import clean_metrics, raw_metrics
from monitoring_pipelines.assets.scoring import anomaly_scores, detection_policy
from monitoring_pipelines.assets.training import MODEL_ASSETS
from monitoring_pipelines.ingest import stage_file
from monitoring_pipelines.partitions import TENANTS, missing_tenants, tenant_partitions
from monitoring_pipelines.resources import (
    AlertingResource,
    PipelineSettingsResource,
    WarehouseResource,
)
from monitoring_pipelines.sources.files import InputFileError


class StageFileConfig(dg.Config):
    path: str
    # Stage again even if this exact content was staged before.
    force: bool = False
    # Folder below which a single-series file's path reads <tenant>/<service>/<metric>;
    # empty: the drop folder.
    layout_root: str = ""


@dg.op(tags={"kind": "ingest"})
def stage_file_op(
    context: dg.OpExecutionContext,
    config: StageFileConfig,
    warehouse: WarehouseResource,
    pipeline: PipelineSettingsResource,
) -> dg.Output[list[str]]:
    """Stream one dropped file into the landing table; unreadable rows go to quarantine."""
    try:
        result = stage_file(
            warehouse.get(),
            Path(config.path),
            root=Path(pipeline.drop_dir),
            layout_root=Path(config.layout_root) if config.layout_root else None,
            earliest=pipeline.earliest,
            force=config.force,
            run_id=context.run_id,
        )
    except InputFileError as exc:
        raise dg.Failure(description=str(exc)) from None
    new = missing_tenants(context.instance, [t for _, t in result.partitions])
    if new:
        context.instance.add_dynamic_partitions(TENANTS, new)
        context.log.info(f"New tenants get their partitions: {', '.join(new)}")
    # What the gate must see: the days touched now and those the previous content touched.
    keys = [f"{date}|{tenant}" for date, tenant in result.pending or result.partitions]
    return dg.Output(
        keys,
        metadata={
            "source": result.source,
            "rows_in": result.rows_in,
            "staged": result.staged,
            "quarantined": result.quarantined,
            "partitions": len(keys),
            "skipped_same_content": result.skipped,
            "resumed_unfinished_ingest": result.resumed,
            "ts_cut_to_microseconds": result.ts_truncated,
            "new_tenants": dg.MetadataValue.json(new),
        },
    )


@dg.job(tags={"pipeline": "ingestion"})
def stage_file_job():
    """Stage one dropped file; the staged-file sensor then runs ingest_job on its partitions."""
    stage_file_op()


ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets(raw_metrics, clean_metrics),
    description="Gate tenant-days of landed metrics (a range of days per run) and put them on "
    "the regular grid.",
    tags={"pipeline": "ingestion"},
)

grid_job = dg.define_asset_job(
    "grid_job",
    selection=dg.AssetSelection.assets(clean_metrics),
    description="Grid gated tenant-days: the days of a ranged ingest run that its blocked days "
    "kept from being gridded.",
    tags={"pipeline": "ingestion"},
)


def training_job_for(kinds: tuple[str, ...] = ()):
    """``training_job`` training the given detector kinds (every catalogued kind when empty),
    as ``MONITORING_DETECTORS`` chooses."""
    models = [MODEL_ASSETS[kind] for kind in kinds or MODEL_ASSETS]
    return dg.define_asset_job(
        "training_job",
        selection=dg.AssetSelection.assets(*models, detection_policy),
        partitions_def=tenant_partitions,
        description="Train, validate and register a tenant's detectors; fit its alert policy.",
        tags={"pipeline": "training"},
    )


scoring_job = dg.define_asset_job(
    "scoring_job",
    selection=dg.AssetSelection.assets(anomaly_scores),
    description="Score one tenant-day with the champion detectors.",
    tags={"pipeline": "scoring"},
)

alerting_job = dg.define_asset_job(
    "alerting_job",
    selection=dg.AssetSelection.assets(alerts),
    description="Raise one tenant-day's incidents from its anomaly scores and queue notifications.",
    tags={"pipeline": "alerting"},
)


@dg.op(tags={"kind": "alerting"})
def deliver_notifications_op(
    context: dg.OpExecutionContext, warehouse: WarehouseResource, alerting: AlertingResource
) -> dg.Output[int]:
    """Send every notification due in the outbox. A receiver that fails is retried later with
    backoff (it never holds up the others); the run itself fails only if nothing could be read."""
    from monitoring_pipelines.alerting.service import deliver

    report = deliver(warehouse.get(), policy_or_failure(alerting))
    for key, error in sorted(report.errors.items()):
        context.log.warning(f"notification {key}: {error}")
    return dg.Output(
        report.sent,
        metadata={
            **report.as_metadata(),
            "by_receiver": dg.MetadataValue.json(report.by_receiver),
        },
    )


@dg.job(tags={"pipeline": "alerting"})
def delivery_job():
    """Drain the outbox: deliver due notifications at least once, each with its idempotency key."""
    deliver_notifications_op()
