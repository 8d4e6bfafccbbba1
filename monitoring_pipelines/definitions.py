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

# What every celery worker must share with the executor (deploy/celery.yaml holds the same for
# `dagster-celery worker start -y`; a test keeps the two equal). A step's message is acknowledged
# only when the step is done, and given back to the broker if its worker dies, so another worker
# runs it; each worker reserves no step beyond the one it runs.
CELERY_CONFIG_SOURCE = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
}


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


def celery_executor_config(settings: Settings) -> dict:
    """The celery executor's config: the broker, results over the broker, the workers' settings."""
    # The broker URL may carry a password: from the environment, it stays out of run configs.
    broker = (
        {"env": "MONITORING_CELERY_BROKER_URL"}
        if os.environ.get("MONITORING_CELERY_BROKER_URL")
        else settings.celery_broker_url
    )
    return {"broker": broker, "backend": "rpc://", "config_source": CELERY_CONFIG_SOURCE}


def heavy_job_executor(settings: Settings) -> dg.ExecutorDefinition | None:
    """The executor of ingest, training and scoring runs: ``None`` (the location's in-process
    default) unless ``MONITORING_EXECUTOR=celery``, then Dagster's celery executor, one celery
    task per step on the broker's workers."""
    if settings.executor != "celery":
        return None
    from dagster_celery import celery_executor

    return celery_executor.configured(celery_executor_config(settings), name="celery")


def heavy_jobs(settings: Settings) -> dict:
    """ingest_job, training_job and scoring_job on the configured executor. The sensor and the
    schedule that start ingest_job get the same job object (see build_defs)."""
    from dagster_shared.record import copy

    executor = heavy_job_executor(settings)
    jobs = [ingest_job, training_job_for(settings.detectors), scoring_job]
    if executor is not None:
        jobs = [copy(job, executor_def=executor) for job in jobs]
    return {job.name: job for job in jobs}


def _starting(instigator, job):
    """A sensor or schedule that starts ingest_job, pointed at ``job`` (its celery copy under
    MONITORING_EXECUTOR=celery: Dagster refuses two objects of one name); unchanged otherwise."""
    return instigator if job is ingest_job else instigator.with_updated_job(job)


def build_defs(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or load_settings()
    heavy = heavy_jobs(settings)
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
        # In production the heavy jobs run their steps on celery workers (heavy_jobs).
        executor=dg.in_process_executor,
        assets=[bind_start_date(a, settings.start_date) for a in assets],
        asset_checks=DRIFT_ASSET_CHECKS,
        jobs=[
            stage_file_job,
            *heavy.values(),
            grid_job,
            alerting_job,
            delivery_job,
            weekly_report_job,
            monthly_report_job,
            retention_job,
        ],
        sensors=[
            file_drop_sensor,
            _starting(staged_file_sensor, heavy["ingest_job"]),
            automation_condition_sensor,
            outbox_sensor,
            run_failure_alert_sensor,
            drift_retrain_sensor,
        ],
        schedules=[
            _starting(ingest_schedule, heavy["ingest_job"]),
            weekly_report_schedule,
            monthly_report_schedule,
            build_retrain_schedule(settings.retrain_cron),
            retention_schedule,
        ],
        resources=build_resources(settings),
    )


defs = build_defs()
