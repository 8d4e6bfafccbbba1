"""The Dagster code location: everything assembled in one place.

Loading it must stay fast (about two seconds): tensorflow, prophet, mlflow and great_expectations
are imported inside the functions that use them, never here.
"""

import os

import dagster as dg

from monitoring_pipelines.assets.alerting import alerts
from monitoring_pipelines.assets.ingestion import clean_metrics, raw_metrics
from monitoring_pipelines.assets.reporting import (
    monthly_report,
    monthly_report_job,
    monthly_report_schedule,
    weekly_report,
    weekly_report_job,
    weekly_report_schedule,
)
from monitoring_pipelines.assets.scoring import anomaly_scores, detection_policy
from monitoring_pipelines.assets.training import MODEL_ASSETS
from monitoring_pipelines.automation import automation_condition_sensor
from monitoring_pipelines.jobs import (
    alerting_job,
    delivery_job,
    grid_job,
    ingest_job,
    scoring_job,
    stage_file_job,
    training_job_for,
)
from monitoring_pipelines.partitions import bind_start_date
from monitoring_pipelines.resources import (
    AlertingResource,
    MlflowResource,
    PipelineSettingsResource,
    WarehouseResource,
)
from monitoring_pipelines.retention import retention_job, retention_schedule
from monitoring_pipelines.retraining import (
    DRIFT_ASSET_CHECKS,
    build_retrain_schedule,
    drift_retrain_sensor,
)
from monitoring_pipelines.sensors import (
    file_drop_sensor,
    ingest_schedule,
    outbox_sensor,
    run_failure_alert_sensor,
    staged_file_sensor,
)
from monitoring_pipelines.settings import Settings, load_settings


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    # A warehouse URL set in the environment may carry a password: pass it as an EnvVar so the
    # value never shows in the UI or in run configs.
    url = (
        dg.EnvVar("MONITORING_WAREHOUSE_URL")
        if os.environ.get("MONITORING_WAREHOUSE_URL")
        else settings.warehouse_url
    )
    mlflow_uri = (
        dg.EnvVar("MLFLOW_TRACKING_URI")
        if os.environ.get("MLFLOW_TRACKING_URI")
        else settings.mlflow_tracking_uri
    )
    return {
        "warehouse": WarehouseResource(url=url),
        "mlflow": MlflowResource(
            tracking_uri=mlflow_uri, artifact_root=str(settings.home / "mlartifacts")
        ),
        "pipeline": PipelineSettingsResource(
            home=str(settings.home),
            drop_dir=str(settings.drop_dir),
            start_date=settings.start_date,
            tenants=list(settings.tenants),
            resolution_seconds=settings.resolution_seconds,
            shadow_days=settings.shadow_days,
            files_url=settings.files_url,
        ),
        "alerting": AlertingResource(
            home=str(settings.home),
            policy_file=str(settings.alerting_file or ""),
            dagster_url=settings.dagster_url,
        ),
    }


def build_defs(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or load_settings()
    assets = [
        raw_metrics,
        clean_metrics,
        *MODEL_ASSETS.values(),
        detection_policy,
        anomaly_scores,
        alerts,
        weekly_report,
        monthly_report,
    ]
    return dg.Definitions(
        # A run is one tenant-day, a tenant's stretch of days or one tenant's training, whose steps
        # depend on each other: a process per step (the multiprocess default) only adds its start
        # (10-30 s of imports each on a loaded 2-core machine) to the file-to-page time. Runs go
        # side by side instead, as many as the queued run coordinator allows (dagster.yaml).
        executor=dg.in_process_executor,
        assets=[bind_start_date(a, settings.start_date) for a in assets],
        asset_checks=DRIFT_ASSET_CHECKS,
        jobs=[
            stage_file_job,
            ingest_job,
            grid_job,
            training_job_for(settings.detectors),
            scoring_job,
            alerting_job,
            delivery_job,
            weekly_report_job,
            monthly_report_job,
            retention_job,
        ],
        sensors=[
            file_drop_sensor,
            staged_file_sensor,
            automation_condition_sensor,
            outbox_sensor,
            run_failure_alert_sensor,
            drift_retrain_sensor,
        ],
        schedules=[
            ingest_schedule,
            weekly_report_schedule,
            monthly_report_schedule,
            build_retrain_schedule(settings.retrain_cron),
            retention_schedule,
        ],
        resources=build_resources(settings),
    )


defs = build_defs()
