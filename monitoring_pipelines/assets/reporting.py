"""Reporting assets: the weekly and monthly reports, one partition per week or month; each
materialization queues the reports' delivery to the receivers of the policy's ``reports:``
section (the outbox sensor sends them, once per receiver and report however often re-run)."""

from dataclasses import replace
from pathlib import Path

import dagster as dg

from monitoring_pipelines.resources import (
    MlflowResource,
    PipelineSettingsResource,
    WarehouseResource,
)
from monitoring_pipelines.settings import load_settings

_settings = load_settings()
# Weeks run Monday to Sunday and months are calendar months, in the report timezone.
weekly_partitions = dg.WeeklyPartitionsDefinition(
    start_date=_settings.start_date, day_offset=1, timezone=_settings.report_timezone
)
monthly_partitions = dg.MonthlyPartitionsDefinition(
    start_date=_settings.start_date[:8] + "01", timezone=_settings.report_timezone
)


def _write(
    kind: str,
    context: dg.AssetExecutionContext,
    pipeline: PipelineSettingsResource,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    from monitoring_pipelines.reports.periods import period_from_key
    from monitoring_pipelines.reports.registry import default_registry
    from monitoring_pipelines.reports.service import (
        describe_queued,
        materialization,
        queue_delivery,
        write_reports,
    )

    settings = replace(load_settings(), home=Path(pipeline.home), tenants=tuple(pipeline.tenants))
    period = period_from_key(kind, context.partition_key, settings.report_timezone)
    registry = default_registry(mlflow.tracking_uri, Path(mlflow.artifact_root))
    wh = warehouse.get()
    written = write_reports(settings, period, registry=registry, warehouse=wh)
    shown = materialization(written)
    queued = queue_delivery(settings, written, warehouse=wh)
    for note in queued.queued:
        context.log.info(f"report queued: {describe_queued(note)}")
    return dg.MaterializeResult(
        metadata={
            "summary": dg.MetadataValue.md(shown["summary"]),
            "report": dg.MetadataValue.path(shown["html"]),
            "reports": shown["reports"],
            "has_data": shown["has_data"],
            "incidents": shown["incidents"],
            "paths": dg.MetadataValue.json(shown["paths"]),
            # Report notifications stored by this run, and those an earlier run had stored.
            "queued": len(queued.queued),
            "already_queued": len(queued.already),
            "delivery": dg.MetadataValue.json(
                {
                    "queued": [describe_queued(n) for n in queued.queued],
                    "already_queued": [describe_queued(n) for n in queued.already],
                }
            ),
        }
    )


@dg.asset(partitions_def=weekly_partitions, group_name="reporting", kinds={"html"})
def weekly_report(
    context: dg.AssetExecutionContext,
    pipeline: PipelineSettingsResource,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """The week's report (Monday to Sunday), across all tenants and one per tenant in its locale:
    incidents, pages, MTTA/MTTR and the noisiest series; SLO health and error budget; detection
    precision from operator feedback and label windows; data quality; model promotions and
    rejections; the next 7 days' traffic and load forecast with capacity crossings. Each figure
    is compared with the week before. Written as HTML, JSON and Markdown under
    MONITORING_HOME/reports/weekly/<week start>/; the summary below is the all-tenants one.
    Then queued for the receivers the policy's reports: section names."""
    return _write("week", context, pipeline, warehouse, mlflow)


@dg.asset(partitions_def=monthly_partitions, group_name="reporting", kinds={"html"})
def monthly_report(
    context: dg.AssetExecutionContext,
    pipeline: PipelineSettingsResource,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """The calendar month's report, across all tenants and one per tenant in its locale: the
    weekly report's sections over the month, compared with the month before, and a 30-day
    forecast. Written as HTML, JSON and Markdown under MONITORING_HOME/reports/monthly/<month
    start>/; the summary below is the all-tenants one. Then queued for the receivers the
    policy's reports: section names."""
    return _write("month", context, pipeline, warehouse, mlflow)


weekly_report_job = dg.define_asset_job(
    "weekly_report_job",
    selection=dg.AssetSelection.assets(weekly_report),
    partitions_def=weekly_partitions,
    description="Write one week's reports.",
    tags={"pipeline": "reporting"},
)
monthly_report_job = dg.define_asset_job(
    "monthly_report_job",
    selection=dg.AssetSelection.assets(monthly_report),
    partitions_def=monthly_partitions,
    description="Write one month's reports.",
    tags={"pipeline": "reporting"},
)
# Monday 08:00 and the 1st at 08:00 in the report timezone, each for the period just ended.
weekly_report_schedule = dg.build_schedule_from_partitioned_job(
    weekly_report_job,
    name="weekly_report_schedule",
    description="Every Monday at 08:00: the reports of the week that just ended.",
    hour_of_day=8,
    day_of_week=1,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
monthly_report_schedule = dg.build_schedule_from_partitioned_job(
    monthly_report_job,
    name="monthly_report_schedule",
    description="On the 1st at 08:00: the reports of the month that just ended.",
    hour_of_day=8,
    day_of_month=1,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
