"""Ingestion assets: landed rows through the quality gate into ``metrics``, then onto a grid."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from monitoring_pipelines.partitions import tenant_day_key, tenant_day_partitions
from monitoring_pipelines.quality.checks import CHECK_SPECS
from monitoring_pipelines.quality.gate import GateConfig
from monitoring_pipelines.quality.report import write_validation
from monitoring_pipelines.resources import PipelineSettingsResource, WarehouseResource
from monitoring_pipelines.warehouse import Warehouse

GAP_CHECK = "gap_fraction"
# Above this share of empty grid steps the day is too sparse to train on without a look.
GAP_WARN_FRACTION = 0.2


# A run gates up to a month of days (a dropped file's days in one run, per tenant): one landing
# read and one GX validation per tenant and stretch of days, and Dagster's per-run cost once.
MAX_DAYS_PER_RUN = 31


def _keys(context: dg.AssetExecutionContext) -> list[str]:
    return sorted(str(k) for k in context.partition_keys)


def _pull_configured_sources(
    context: dg.AssetExecutionContext,
    warehouse: Warehouse,
    pipeline: PipelineSettingsResource,
    keys: list[str],
) -> list[str]:
    """Fetch the run's days from the Prometheus and SQL sources in ``sources.yaml`` into landing."""
    if not pipeline.sources_file.exists():
        return []
    from monitoring_pipelines.gating import days_of
    from monitoring_pipelines.sources.config import load_sources

    pulled = []
    for day, source in ((d, s) for d in days_of(keys) for s in load_sources(pipeline.sources_file)):
        result = source.fetch(day.start.to_pydatetime(), day.end.to_pydatetime(), tenant=day.tenant)
        for name, rows in result.records.groupby("source", sort=True):
            key = f"{name}@{day.key}"
            warehouse.replace_source("landing", key, rows.assign(source=key))
            pulled.append(key)
        for name, rows in result.rejected.groupby("source", sort=True):
            key = f"{name}@{day.key}"
            warehouse.replace_quarantine(rows.assign(source=key), stage="parse", source=key)
    return pulled


def _evaluations(asset: str, key: str, outcomes) -> list[dg.AssetCheckEvaluation]:
    """One partition's check results; a ranged run reports each partition's own."""
    blocking = {spec.name: spec.blocking for spec in CHECK_SPECS}
    return [
        dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey(asset),
            check_name=outcome.name,
            passed=outcome.passed,
            severity=dg.AssetCheckSeverity(outcome.severity),
            description=outcome.description,
            metadata=outcome.metadata,
            blocking=blocking.get(outcome.name, False),
            partition=key,
        )
        for outcome in outcomes
    ]


def _check_outputs(context: dg.AssetExecutionContext):
    """The (empty) outputs Dagster expects of each selected check: the results themselves are the
    per-partition evaluations, which ``AssetCheckResult`` cannot give for a ranged run."""
    selected = context.selected_asset_check_keys
    for name, spec in context.assets_def.check_specs_by_output_name.items():
        if spec.key in selected:
            yield dg.Output(None, output_name=name)


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
    rows is bad. Re-running replaces the partition's rows, it never adds to them. A run may
    cover a range of days (a dropped file's days): one validation for all of them, and each day
    keeps its own check results, quarantine, counts and blocked state. A day left with no
    landed row (a corrected file dropped it) is cleared.
    """
    from monitoring_pipelines.gating import gate_days

    wh = warehouse.get()
    keys = _keys(context)
    pulled = _pull_configured_sources(context, wh, pipeline, keys)
    gated = gate_days(
        wh,
        keys,
        config=GateConfig(
            tolerance=pipeline.quality_tolerance, resolution_seconds=pipeline.resolution_seconds
        ),
        now=datetime.now(UTC),
        clear_empty=not pipeline.sources_file.exists(),
    )
    evaluations = []
    totals = {"rows_in": 0, "accepted": 0, "quarantined": 0, "blocked": 0}
    for item in gated:
        day, gate = item.day, item.gate
        key = tenant_day_key(day.date, day.tenant)
        if gate is None:
            context.add_asset_metadata(
                {
                    "dagster/row_count": 0,
                    "rows_in": 0,
                    "cleared": True,
                    "date": day.date,
                    "tenant": day.tenant,
                },
                partition_key=key,
            )
            continue
        json_path, html_path = write_validation(gate, pipeline.quality_dir, day.key)
        sources = sorted(set(gate.accepted["source"]) | set(gate.quarantined["source"]))
        context.add_asset_metadata(
            {
                "dagster/row_count": len(gate.accepted),
                "rows_in": gate.rows_in,
                "accepted": len(gate.accepted),
                "quarantined": len(gate.quarantined),
                "series": int(gate.accepted[["service", "metric"]].drop_duplicates().shape[0]),
                "sources": dg.MetadataValue.json(sources),
                "pulled_from_configured_sources": sum(1 for p in pulled if p.endswith(day.key)),
                "gx_validation": dg.MetadataValue.path(str(json_path)),
                "gx_report": dg.MetadataValue.url(html_path.resolve().as_uri()),
                "date": day.date,
                "tenant": day.tenant,
            },
            partition_key=key,
        )
        evaluations += _evaluations("raw_metrics", day.key, gate.checks)
        totals["rows_in"] += gate.rows_in
        totals["accepted"] += len(gate.accepted)
        totals["quarantined"] += len(gate.quarantined)
        totals["blocked"] += int(gate.blocked)
    wh.settle_ingests()
    yield dg.MaterializeResult(metadata={"partitions": len(keys), **totals})
    yield from _check_outputs(context)
    # After the materialization: a failed blocking check fails the step, as for one partition.
    yield from evaluations


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
    A day blocked by its quality checks is not gridded.
    """
    from monitoring_pipelines.gating import grid_days

    wh = warehouse.get()
    gridded = grid_days(
        wh,
        _keys(context),
        resolution_seconds=pipeline.resolution_seconds,
        now=datetime.now(UTC),
    )
    evaluations = []
    steps = 0
    for item in gridded:
        day, summary, grid = item.day, item.summary, item.grid
        key = tenant_day_key(day.date, day.tenant)
        if summary is None:
            context.add_asset_metadata(
                {"blocked": item.blocked, "gridded": False, "date": day.date, "tenant": day.tenant},
                partition_key=key,
            )
            continue
        steps += summary.steps
        per_metric = grid.groupby("metric")["is_gap"].mean().round(4).to_dict() if len(grid) else {}
        context.add_asset_metadata(
            {
                "dagster/row_count": summary.steps,
                "series": summary.series,
                "grid_steps": summary.steps,
                "points_in": summary.points_in,
                "gaps": summary.gaps,
                "merged_points": summary.merged,
                "resolution_seconds": pipeline.resolution_seconds,
                "date": day.date,
                "tenant": day.tenant,
            },
            partition_key=key,
        )
        evaluations.append(
            dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey("clean_metrics"),
                check_name=GAP_CHECK,
                passed=summary.gap_fraction <= GAP_WARN_FRACTION,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "gap_fraction": round(summary.gap_fraction, 4),
                    "gaps": summary.gaps,
                    "grid_steps": summary.steps,
                    "gap_fraction_by_metric": dg.MetadataValue.json(per_metric),
                },
                blocking=False,
                partition=day.key,
            )
        )
    wh.settle_ingests()
    yield dg.MaterializeResult(metadata={"partitions": len(gridded), "grid_steps": steps})
    yield from _check_outputs(context)
    yield from evaluations
