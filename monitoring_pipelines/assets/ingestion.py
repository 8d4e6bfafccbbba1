"""Ingestion assets: landed rows through the quality gate into ``metrics``, then onto a grid."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from monitoring_pipelines.grid import regular_grid
from monitoring_pipelines.partitions import tenant_day_partitions
from monitoring_pipelines.quality.checks import CHECK_SPECS
from monitoring_pipelines.quality.gate import GateConfig, run_gate
from monitoring_pipelines.quality.report import write_validation
from monitoring_pipelines.resources import PipelineSettingsResource, WarehouseResource
from monitoring_pipelines.sources.records import FRAME_COLUMNS
from monitoring_pipelines.warehouse import Warehouse

GAP_CHECK = "gap_fraction"
# Above this share of empty grid steps the day is too sparse to train on without a look.
GAP_WARN_FRACTION = 0.2


def _window(context: dg.AssetExecutionContext) -> tuple[str, str, datetime, datetime]:
    keys = context.partition_key.keys_by_dimension
    window = context.partition_time_window
    return keys["date"], keys["tenant"], window.start, window.end


def _pull_configured_sources(
    context: dg.AssetExecutionContext,
    warehouse: Warehouse,
    pipeline: PipelineSettingsResource,
    tenant: str,
    start: datetime,
    end: datetime,
) -> list[str]:
    """Fetch this window from the Prometheus and SQL sources in ``sources.yaml`` into landing."""
    if not pipeline.sources_file.exists():
        return []
    from monitoring_pipelines.sources.config import load_sources

    pulled = []
    for source in load_sources(pipeline.sources_file):
        result = source.fetch(start, end, tenant=tenant)
        for name, rows in result.records.groupby("source", sort=True):
            key = f"{name}@{context.partition_key}"
            warehouse.replace_source("landing", key, rows.assign(source=key))
            pulled.append(key)
        for name, rows in result.rejected.groupby("source", sort=True):
            key = f"{name}@{context.partition_key}"
            warehouse.replace_quarantine(rows.assign(source=key), stage="parse", source=key)
    return pulled


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
)
def raw_metrics(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    pipeline: PipelineSettingsResource,
) -> dg.MaterializeResult:
    """Metric records of one tenant for one UTC day, after the data-quality gate.

    Reads every row landed for the partition (dropped files, Prometheus and SQL pulls), runs the
    Great Expectations suite over them, writes the accepted rows to the `metrics` table and the
    refused ones to `quarantine` with their reason. One check per quality property; the blocking
    ones stop model training and scoring on this partition when more than the tolerated share of
    rows is bad. Re-running replaces the partition's rows, it never adds to them.
    """
    date, tenant, start, end = _window(context)
    wh = warehouse.get()
    pulled = _pull_configured_sources(context, wh, pipeline, tenant, start, end)
    landed = wh.read_records("landing", tenant=tenant, start=start, end=end)
    landed = landed.sort_values(["source", "source_row"], kind="stable")[list(FRAME_COLUMNS)]
    expected = {
        *wh.series("landing", tenant, start, end),
        *wh.series("metrics", tenant, start - timedelta(days=1), start),
    }
    gate = run_gate(
        landed,
        tenant=tenant,
        start=start,
        end=end,
        expected_series=len(expected),
        now=datetime.now(UTC),
        config=GateConfig(
            tolerance=pipeline.quality_tolerance, resolution_seconds=pipeline.resolution_seconds
        ),
    )
    wh.replace_partition("metrics", tenant, start, end, gate.accepted)
    wh.replace_quarantine(gate.quarantined, stage="quality", partition_key=context.partition_key)
    json_path, html_path = write_validation(gate, pipeline.quality_dir, context.partition_key)

    checks = [
        dg.AssetCheckResult(
            check_name=outcome.name,
            passed=outcome.passed,
            severity=dg.AssetCheckSeverity(outcome.severity),
            description=outcome.description,
            metadata=outcome.metadata,
        )
        for outcome in gate.checks
    ]
    sources = sorted(set(landed["source"])) if len(landed) else []
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(gate.accepted),
            "rows_in": gate.rows_in,
            "accepted": len(gate.accepted),
            "quarantined": len(gate.quarantined),
            "series": int(gate.accepted[["service", "metric"]].drop_duplicates().shape[0]),
            "sources": dg.MetadataValue.json(sources),
            "pulled_from_configured_sources": len(pulled),
            "gx_validation": dg.MetadataValue.path(str(json_path)),
            "gx_report": dg.MetadataValue.url(html_path.resolve().as_uri()),
            "date": date,
            "tenant": tenant,
        },
        check_results=checks,
    )


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
)
def clean_metrics(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    pipeline: PipelineSettingsResource,
) -> dg.MaterializeResult:
    """One regular grid per series for one tenant and day: the input of every model.

    Points are placed on the step that contains them; several points in one step become their
    mean; a step with no point is a gap (value empty, `is_gap` true), never an invented value.
    A series seen the day before and silent today appears as all gaps, so outages are visible.
    """
    date, tenant, start, end = _window(context)
    wh = warehouse.get()
    accepted = wh.read_records("metrics", tenant=tenant, start=start, end=end)
    previous = wh.series("metrics", tenant, start - timedelta(days=1), start)
    grid, summary = regular_grid(
        accepted,
        start=start,
        end=end,
        resolution_seconds=pipeline.resolution_seconds,
        until=datetime.now(UTC),
        series=previous,
    )
    wh.replace_partition("clean_metrics", tenant, start, end, grid)
    per_metric = grid.groupby("metric")["is_gap"].mean().round(4).to_dict() if len(grid) else {}
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": summary.steps,
            "series": summary.series,
            "grid_steps": summary.steps,
            "points_in": summary.points_in,
            "gaps": summary.gaps,
            "merged_points": summary.merged,
            "resolution_seconds": pipeline.resolution_seconds,
            "date": date,
            "tenant": tenant,
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=GAP_CHECK,
                passed=summary.gap_fraction <= GAP_WARN_FRACTION,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "gap_fraction": round(summary.gap_fraction, 4),
                    "gaps": summary.gaps,
                    "grid_steps": summary.steps,
                    "gap_fraction_by_metric": dg.MetadataValue.json(per_metric),
                },
            )
        ],
    )
