"""Ingestion assets: landed rows through the quality gate into ``metrics``, then onto a grid.

The bodies call one service each
(:func:`~monitoring_pipelines.partition_reports.gate_partitions`,
:func:`~monitoring_pipelines.partition_reports.grid_partitions`) and turn its report into Dagster
events with :func:`_events`, so that the UI shows each partition of a ranged run as it is: done,
or failed with the check that stopped it.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg

from monitoring_pipelines.automation import gridded_when
from monitoring_pipelines.partition_reports import (
    GAP_CHECK,
    GAP_WARN_FRACTION,
    IngestOptions,
    RunReport,
    gate_partitions,
    grid_partitions,
)
from monitoring_pipelines.partitions import tenant_day_key, tenant_day_partitions
from monitoring_pipelines.quality.checks import CHECK_SPECS
from monitoring_pipelines.resources import PipelineSettingsResource, WarehouseResource

# A run gates up to a month of days (a dropped file's days in one run, per tenant): one landing
# read and one GX validation per tenant and stretch of days, and Dagster's per-run cost once.
MAX_DAYS_PER_RUN = 31

_BLOCKING = {spec.name: spec.blocking for spec in CHECK_SPECS}


def _keys(context: dg.AssetExecutionContext) -> list[str]:
    return sorted(str(k) for k in context.partition_keys)


def _metadata(values: dict, links: dict[str, str]) -> dict:
    plain = {
        k: dg.MetadataValue.json(v) if isinstance(v, list | dict) else v for k, v in values.items()
    }
    return {**plain, **{k: dg.MetadataValue.url(url) for k, url in links.items()}}


def _events(context: dg.AssetExecutionContext, asset: str, report: RunReport, *, fail: bool):
    """The run's events for ``asset``: one materialization per partition that went through, the
    check evaluations of each partition and, with ``fail``, a failure naming the partitions that
    were stopped and the checks that stopped them.

    Dagster marks a partition failed when a failed run planned it and did not materialize it, so
    a stopped partition must not be materialized: with none stopped, one result covers the run's
    partitions (and lets downstream steps run); otherwise each passing partition gets its own
    materialization and the asset's output is left out, as the step fails anyway."""
    if not report.blocked:
        for part in report.partitions:
            context.add_asset_metadata(
                _metadata(part.metadata, part.links),
                partition_key=tenant_day_key(*part.key.split("|", 1)),
            )
        yield dg.MaterializeResult(metadata=report.totals)
    else:
        for part in report.partitions:
            if not part.blocked_by:
                yield dg.AssetMaterialization(
                    asset_key=asset,
                    partition=part.key,
                    metadata=_metadata(part.metadata, part.links),
                )
            elif fail:
                # What stopped it, on the partition itself (its page lists this event).
                yield dg.AssetObservation(
                    asset_key=asset,
                    partition=part.key,
                    description=f"Stopped by {', '.join(part.blocked_by)}",
                    metadata={
                        "blocked_by": dg.MetadataValue.json(list(part.blocked_by)),
                        **_metadata(part.metadata, part.links),
                    },
                )
    yield from _check_events(context, asset, report)
    if not report.blocked:
        return
    stopped = "; ".join(f"{p.key} by {', '.join(p.blocked_by)}" for p in report.blocked)
    if not fail:
        context.log.warning(f"{asset}: not materialized, stopped upstream: {stopped}")
        return
    raise dg.Failure(
        description=f"{asset}: {len(report.blocked)} partition(s) stopped: {stopped}",
        metadata={p.key: dg.MetadataValue.json(list(p.blocked_by)) for p in report.blocked},
    )


def _check_events(context: dg.AssetExecutionContext, asset: str, report: RunReport):
    """The check evaluations of each partition of the run, after the outputs Dagster expects of
    the selected checks."""
    # The (empty) outputs Dagster expects of each selected check: the results themselves are the
    # per-partition evaluations below, which ``AssetCheckResult`` cannot give for a ranged run.
    selected = context.selected_asset_check_keys
    for name, spec in context.assets_def.check_specs_by_output_name.items():
        if spec.key in selected:
            yield dg.Output(None, output_name=name)
    for part in report.partitions:
        for outcome in part.checks:
            yield dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey(asset),
                check_name=outcome.name,
                passed=outcome.passed,
                severity=dg.AssetCheckSeverity(outcome.severity),
                description=outcome.description,
                metadata=_metadata(outcome.metadata, part.links),
                blocking=_BLOCKING.get(outcome.name, False),
                partition=part.key,
            )


@dg.asset(
    partitions_def=tenant_day_partitions,
    group_name="ingestion",
    kinds={"pandas", "sqlalchemy"},
    check_specs=[
        dg.AssetCheckSpec(
            spec.name, asset="raw_metrics", description=spec.description, blocking=spec.blocking
        )
        for spec in CHECK_SPECS
    ],
    freshness_policy=dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=3), warn_window=timedelta(hours=1)
    ),
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=MAX_DAYS_PER_RUN),
    output_required=False,
)
def raw_metrics(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    pipeline: PipelineSettingsResource,
):
    """Metric records of one tenant for one UTC day, after the data-quality gate.

    Reads every row landed for the partition (dropped files, Prometheus and SQL pulls), runs the
    Great Expectations suite over them, writes the accepted rows to the `metrics` table and the
    refused ones to `quarantine` with their reason. One check per quality property; the blocking
    ones stop model training and scoring on this partition when more than the tolerated share of
    rows is bad, and the partition then shows as failed, with the check named in the run's error.
    `gx_report` links the partition's quality page and `quarantine_rows` its refused rows (served
    by `monitoring-pipelines ui`). Re-running replaces the partition's rows, it never adds to
    them. A run may cover a range of days (a dropped file's days): one validation for all of
    them, and each day keeps its own check results, quarantine, counts and status. A day left
    with no landed row (a corrected file dropped it) is cleared.
    """
    options = IngestOptions(
        quality_dir=pipeline.quality_dir,
        sources_file=pipeline.sources_file,
        files_url=pipeline.files_url,
        tolerance=pipeline.quality_tolerance,
        resolution_seconds=pipeline.resolution_seconds,
    )
    report = gate_partitions(warehouse.get(), _keys(context), options, now=datetime.now(UTC))
    yield from _events(context, "raw_metrics", report, fail=True)


@dg.asset(
    partitions_def=tenant_day_partitions,
    group_name="features",
    kinds={"pandas", "sqlalchemy"},
    deps=[raw_metrics],
    check_specs=[
        dg.AssetCheckSpec(
            GAP_CHECK,
            asset="clean_metrics",
            description=f"At most {GAP_WARN_FRACTION:.0%} of the day's grid steps are gaps.",
        )
    ],
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=MAX_DAYS_PER_RUN),
    output_required=False,
    automation_condition=gridded_when(),
)
def clean_metrics(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    pipeline: PipelineSettingsResource,
):
    """One regular grid per series for one tenant and day: the input of every model.

    Points are placed on the step that contains them; several points in one step become their
    mean; a step with no point is a gap (value empty, `is_gap` true), never an invented value.
    A series seen the day before and silent today appears as all gaps, so outages are visible.
    A day blocked by its quality checks is not gridded and shows as failed.
    """
    report = grid_partitions(
        warehouse.get(),
        _keys(context),
        resolution_seconds=pipeline.resolution_seconds,
        now=datetime.now(UTC),
    )
    # The ingest run that stopped a day already failed it; a grid run only leaves it out.
    yield from _events(context, "clean_metrics", report, fail=False)
