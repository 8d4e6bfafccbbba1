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
    baseline_validation,
    data_hash,
    fit_candidate,
    slice_frames,
    validate,
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


def _example(frames: dict[tuple, pd.DataFrame], rows: int = 48) -> pd.DataFrame:
    key = sorted(frames)[0]
    head = frames[key].iloc[-rows:]
    out = head.reset_index(names="ts")
    out.insert(1, "tenant", key[0])
    out.insert(2, "service", key[1])
    return out


def _plot(frames, model_set, plan: TrainingPlan, windows, kind: str):
    from monitoring_pipelines.ml.plots import score_plot

    key = sorted(model_set.detectors)[0]
    recent = slice_frames(frames, plan.train_start, plan.validation_end)[key]
    scores = model_set.detectors[key].score(recent)
    labelled = [w for column in recent.columns for w in windows.get("/".join((*key, column)), [])]
    return score_plot(recent, scores, labelled, title=f"{kind} on {'/'.join(key)}")


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
        from monitoring_pipelines.ml.registry import ModelNotFound

        tenant = context.partition_key
        plan, frames, windows = tenant_history(warehouse.get(), pipeline, tenant)
        train = slice_frames(frames, plan.train_start, plan.train_end)
        candidate = fit_candidate(kind, frames, plan)
        if not len(candidate):
            raise dg.Failure(f"{tenant}: no group could be fitted: {candidate.skipped}")
        judged = validate({kind: candidate}, frames, plan, windows)
        models = mlflow.registry()
        info = models.log_candidate(
            candidate,
            kind=kind,
            scope=tenant,
            params={
                "detector": next(iter(candidate.detectors.values())).config.to_dict(),
                "plan": plan.to_dict(),
                "groups": len(candidate),
            },
            metrics=judged.metrics,
            data_window=(plan.train_start, plan.train_end),
            data_hash=data_hash(train),
            training_rows=int(sum(f.notna().to_numpy().sum() for f in train.values())),
            plots={"scores": _plot(frames, candidate, plan, windows, kind)},
            input_example=_example(train),
            description=(
                f"Validated on {plan.calibration_end.date()} to {plan.validation_end.date()}: "
                f"event F1 {judged.metrics['event_f1']:.3f}, "
                f"{judged.metrics['false_alarms_per_series_week']:.2f} false alarms per "
                "series-week."
            ),
            tags={"dagster.run_id": context.run.run_id, "dagster.partition": tenant},
            group_columns=("tenant", "service"),
        )
        try:
            champion, _ = models.load_by_alias(kind, tenant)
            champion_metrics = validate({kind: champion}, frames, plan, windows).metrics
            baseline_metrics = None
        except ModelNotFound:
            champion_metrics = None
            baseline_metrics = baseline_validation(frames, plan, windows).metrics
        decision = models.promote_if_not_worse(
            kind,
            tenant,
            info.version,
            judged.metrics,
            champion_metrics,
            validation_window=(plan.calibration_end, plan.validation_end),
            baseline_metrics=baseline_metrics,
        )
        context.log.info(f"{info.registered_name} v{info.version}: {'; '.join(decision.reasons)}")
        return dg.MaterializeResult(
            metadata={
                "registered_model": info.registered_name,
                "version": info.version,
                "promoted": decision.promoted,
                "decision": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
                "mlflow_run_id": info.run_id,
                "train_window": f"{plan.train_start.date()} to {plan.train_end.date()}",
                "validation_window": f"{plan.calibration_end.date()} to "
                f"{plan.validation_end.date()}",
                "groups": len(candidate),
                "skipped_groups": dg.MetadataValue.json(
                    {"/".join(k): r for k, r in candidate.skipped.items()}
                ),
                **{f"validation/{k}": float(v) for k, v in judged.metrics.items()},
            }
        )

    return _model


# One training asset per catalogued kind, keyed by kind.
MODEL_ASSETS: dict[str, dg.AssetsDefinition] = {kind: build_model_asset(kind) for kind in CATALOGUE}
