"""Training assets: one detector kind per asset, one partition per tenant, logged to MLflow."""

import dagster as dg

from monitoring_pipelines.assets.ingestion import clean_metrics
from monitoring_pipelines.ml.catalogue import CATALOGUE
from monitoring_pipelines.partitions import tenant_partitions
from monitoring_pipelines.resources import (
    MlflowResource,
    PipelineSettingsResource,
    WarehouseResource,
)

# Every tenant-day of clean metrics feeds the tenant's models.
BY_TENANT = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="tenant")


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
            "labelled incidents. A first candidate becomes `champion` if it is not worse than the "
            "reference baseline (a rolling z-score); later ones become `challenger`, are scored "
            "in shadow on live days and promoted by `anomaly_scores` when not worse than the "
            "champion on the labelled week and on operator feedback. The decision and its "
            "reasons are written on the model version."
        ),
    )
    def _model(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        pipeline: PipelineSettingsResource,
        mlflow: MlflowResource,
    ) -> dg.MaterializeResult:
        from monitoring_pipelines.ml.train_and_promote import (
            NoCleanData,
            NothingToFit,
            train_tenant,
        )

        tenant = context.partition_key
        tags = {"dagster.run_id": context.run.run_id, "dagster.partition": tenant}
        reason = context.run.tags.get("monitoring/retrain_reason")
        if reason:
            tags["retrain.reason"] = reason
        try:
            outcome = train_tenant(
                kind,
                tenant,
                warehouse.get(),
                pipeline.labels_file,
                pipeline.resolution_seconds,
                mlflow.registry(),
                tags,
                pipeline.shadow_days,
            )
        except (NoCleanData, NothingToFit) as exc:
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
