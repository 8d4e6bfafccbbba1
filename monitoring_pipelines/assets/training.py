"""Training assets: one detector kind per asset, one partition per tenant, logged to MLflow."""

import json
from pathlib import Path

import dagster as dg
import pandas as pd

from monitoring_pipelines.assets.ingestion import clean_metrics
from monitoring_pipelines.ml.catalogue import CATALOGUE
from monitoring_pipelines.ml.evaluation import parse_windows
from monitoring_pipelines.ml.frames import group_frames
from monitoring_pipelines.ml.training import (
    TrainingPlan,
)
from monitoring_pipelines.partitions import tenant_partitions
from monitoring_pipelines.resources import (
    MlflowResource,
    PipelineSettingsResource,
    WarehouseResource,
)
from monitoring_pipelines.warehouse import Warehouse

# Every tenant-day of clean metrics feeds the tenant's models.
BY_TENANT = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="tenant")


def tenant_frames(
    warehouse: Warehouse, tenant: str, plan: TrainingPlan, step_seconds: int
) -> dict[tuple, pd.DataFrame]:
    grid = warehouse.read_records(
        "clean_metrics", tenant=tenant, start=plan.train_start, end=plan.validation_end
    )
    return group_frames(grid, step_seconds=step_seconds) if len(grid) else {}


def latest_day_end(warehouse: Warehouse, tenant: str) -> pd.Timestamp | None:
    """Midnight after the tenant's last clean day: the rolling window ends there."""
    newest = warehouse.newest_ts("clean_metrics", tenant)
    return None if newest is None else pd.Timestamp(newest).floor("D") + pd.Timedelta(days=1)


def tenant_windows(labels_file: Path, tenant: str) -> dict[str, list]:
    """Label windows of the tenant's series, from the labels file if there is one."""
    if not labels_file.exists():
        return {}
    labels = json.loads(labels_file.read_text())
    return parse_windows({k: v for k, v in labels.items() if k.startswith(f"{tenant}/")})


def tenant_history(
    warehouse: Warehouse, pipeline: PipelineSettingsResource, tenant: str
) -> tuple[TrainingPlan, dict[tuple, pd.DataFrame], dict[str, list]]:
    """The rolling plan ending at the tenant's last clean day, its grid frames and label windows."""
    as_of = latest_day_end(warehouse, tenant)
    if as_of is None:
        raise dg.Failure(f"{tenant}: no clean metrics yet; run ingest_job first")
    plan = TrainingPlan.ending(as_of)
    frames = tenant_frames(warehouse, tenant, plan, pipeline.resolution_seconds)
    return plan, frames, tenant_windows(pipeline.labels_file, tenant)


def build_model_asset(kind: str) -> dg.AssetsDefinition:
    row = CATALOGUE[kind]

    @dg.asset(
        name=row.asset_name,
        partitions_def=tenant_partitions,
        group_name="training",
        kinds={"mlflow", row.library},
        deps=[dg.AssetDep(clean_metrics, partition_mapping=BY_TENANT)],
        description=(
            f"{row.description} One MLflow registered model per tenant "
            f"(`anomaly-{kind}-<tenant>`). Each run fits a candidate on the last three weeks but "
            "two, fits thresholds on the next week and judges it on the last week against the "
            "labelled incidents; the `champion` alias moves to it only if it is not worse than the "
            "current champion on that same week (a first candidate: than the reference baseline, a "
            "rolling z-score). The decision and its reasons are written on the model version."
        ),
    )
    def _model(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        pipeline: PipelineSettingsResource,
        mlflow: MlflowResource,
    ) -> dg.MaterializeResult:
        from monitoring_pipelines.ml.train_and_promote import NothingToFit, train_and_promote

        tenant = context.partition_key
        plan, frames, windows = tenant_history(warehouse.get(), pipeline, tenant)
        tags = {"dagster.run_id": context.run.run_id, "dagster.partition": tenant}
        try:
            outcome = train_and_promote(
                kind, tenant, plan, frames, windows, mlflow.registry(), tags
            )
        except NothingToFit as exc:
            raise dg.Failure(str(exc)) from None
        context.log.info(outcome.summary())
        return dg.MaterializeResult(metadata=_training_metadata(outcome))

    return _model


def _training_metadata(outcome) -> dict:
    plan = outcome.plan
    return {
        "registered_model": outcome.registered_name,
        "version": outcome.version,
        "promoted": outcome.promoted,
        "decision": dg.MetadataValue.md("\n".join(f"- {r}" for r in outcome.reasons)),
        "mlflow_run_id": outcome.run_id,
        "train_window": f"{plan.train_start.date()} to {plan.train_end.date()}",
        "validation_window": f"{plan.calibration_end.date()} to {plan.validation_end.date()}",
        "groups": outcome.groups,
        "skipped_groups": dg.MetadataValue.json(outcome.skipped),
        **{f"validation/{k}": v for k, v in outcome.metrics.items()},
    }


# One training asset per catalogued kind, keyed by kind.
MODEL_ASSETS: dict[str, dg.AssetsDefinition] = {kind: build_model_asset(kind) for kind in CATALOGUE}
