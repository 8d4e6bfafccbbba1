"""The use cases behind ``raw_metrics`` and ``clean_metrics``: one run pulls the configured
sources, gates or grids its partitions (:mod:`~monitoring_pipelines.gating`), writes the GX
evidence and reports, per partition, what the UI shows (metadata, links, check outcomes, the
blocking checks that failed).
"""

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from monitoring_pipelines.gating import days_of, gate_days, grid_days
from monitoring_pipelines.quality.checks import CHECK_SPECS
from monitoring_pipelines.quality.checks.base import ERROR, WARN, CheckOutcome
from monitoring_pipelines.quality.gate import GateConfig
from monitoring_pipelines.quality.report import quality_url, write_validation
from monitoring_pipelines.warehouse import Warehouse

GAP_CHECK = "gap_fraction"
# Above this share of empty grid steps the day is too sparse to train on without a look.
GAP_WARN_FRACTION = 0.2


@dataclass(frozen=True)
class IngestOptions:
    """What gating needs from the settings: where evidence goes and where the UI reaches it."""

    quality_dir: Path
    sources_file: Path
    files_url: str
    tolerance: float = 0.01
    resolution_seconds: int = 300


@dataclass
class PartitionReport:
    """What one partition of a run shows in the UI: its metadata, links and check outcomes.

    ``blocked_by`` names the blocking checks that failed: such a partition is not materialized,
    so the UI shows it failed rather than done."""

    key: str  # "YYYY-MM-DD|tenant"
    metadata: dict
    links: dict[str, str] = field(default_factory=dict)
    checks: list[CheckOutcome] = field(default_factory=list)
    blocked_by: tuple[str, ...] = ()


@dataclass
class RunReport:
    partitions: list[PartitionReport]
    totals: dict

    @property
    def blocked(self) -> list[PartitionReport]:
        return [p for p in self.partitions if p.blocked_by]


def pull_configured_sources(wh: Warehouse, sources_file: Path, keys: list[str]) -> list[str]:
    """Fetch the days of ``keys`` from the Prometheus and SQL sources of ``sources_file`` into
    landing (rows a source could not read go to quarantine); returns ``source@day`` keys pulled."""
    if not sources_file.exists():
        return []
    from monitoring_pipelines.sources import pseudonyms
    from monitoring_pipelines.sources.config import load_sources

    pseudonymiser = pseudonyms.from_environment()
    pulled = []
    for day, source in ((d, s) for d in days_of(keys) for s in load_sources(sources_file)):
        result = source.fetch(day.start.to_pydatetime(), day.end.to_pydatetime(), tenant=day.tenant)
        records = pseudonyms.apply(pseudonymiser, result.records)
        rejected = pseudonyms.apply_rejected(pseudonymiser, result.rejected)
        for name, rows in records.groupby("source", sort=True):
            key = f"{name}@{day.key}"
            wh.replace_source("landing", key, rows.assign(source=key))
            pulled.append(key)
        for name, rows in rejected.groupby("source", sort=True):
            key = f"{name}@{day.key}"
            wh.replace_quarantine(rows.assign(source=key), stage="parse", source=key)
    return pulled


def _blocking_failures(checks: list[CheckOutcome]) -> tuple[str, ...]:
    blocking = {spec.name for spec in CHECK_SPECS if spec.blocking}
    return tuple(
        c.name for c in checks if c.name in blocking and not c.passed and c.severity == ERROR
    )


def gate_partitions(
    wh: Warehouse, keys: list[str], options: IngestOptions, *, now: datetime
) -> RunReport:
    """Pull the configured sources, gate every partition of ``keys`` (:func:`gate_days`), write
    each one's GX evidence and report what the UI shows for it."""
    pulled = pull_configured_sources(wh, options.sources_file, keys)
    gated = gate_days(
        wh,
        keys,
        config=GateConfig(
            tolerance=options.tolerance, resolution_seconds=options.resolution_seconds
        ),
        now=now,
        clear_empty=not options.sources_file.exists(),
    )
    reports = []
    totals = {"partitions": len(keys), "rows_in": 0, "accepted": 0, "quarantined": 0, "blocked": 0}
    for item in gated:
        day, gate = item.day, item.gate
        where = {"date": day.date, "tenant": day.tenant}
        if gate is None:
            reports.append(
                PartitionReport(
                    day.key, {"dagster/row_count": 0, "rows_in": 0, "cleared": True, **where}
                )
            )
            continue
        write_validation(gate, options.quality_dir, day.key)
        sources = sorted(set(gate.accepted["source"]) | set(gate.quarantined["source"]))
        reports.append(
            PartitionReport(
                day.key,
                {
                    "dagster/row_count": len(gate.accepted),
                    "rows_in": gate.rows_in,
                    "accepted": len(gate.accepted),
                    "quarantined": len(gate.quarantined),
                    "series": int(gate.accepted[["service", "metric"]].drop_duplicates().shape[0]),
                    "sources": sources,
                    "pulled_from_configured_sources": sum(1 for p in pulled if p.endswith(day.key)),
                    **where,
                },
                links={
                    name: quality_url(options.files_url, day.key, name)
                    for name in ("gx_report", "gx_validation", "quarantine_rows")
                },
                checks=list(gate.checks),
                blocked_by=_blocking_failures(gate.checks),
            )
        )
        totals["rows_in"] += gate.rows_in
        totals["accepted"] += len(gate.accepted)
        totals["quarantined"] += len(gate.quarantined)
        totals["blocked"] += int(gate.blocked)
    wh.settle_ingests()
    return RunReport(reports, totals)


def grid_partitions(
    wh: Warehouse, keys: list[str], *, resolution_seconds: int, now: datetime
) -> RunReport:
    """Grid every partition of ``keys`` the gate let through (:func:`grid_days`) and report what
    the UI shows for each, with the gap check; a blocked day is reported blocked, not gridded."""
    reports = []
    steps = 0
    for item in grid_days(wh, keys, resolution_seconds=resolution_seconds, now=now):
        day, summary, grid = item.day, item.summary, item.grid
        where = {"date": day.date, "tenant": day.tenant}
        if summary is None:
            reports.append(
                PartitionReport(
                    day.key,
                    {"blocked": item.blocked, "gridded": False, **where},
                    # The gate's blocking checks are on raw_metrics; this names the cause.
                    blocked_by=("raw_metrics quality checks",) if item.blocked else (),
                )
            )
            continue
        steps += summary.steps
        per_metric = grid.groupby("metric")["is_gap"].mean().round(4).to_dict() if len(grid) else {}
        gap = CheckOutcome(
            name=GAP_CHECK,
            passed=summary.gap_fraction <= GAP_WARN_FRACTION,
            severity=WARN,
            description=f"At most {GAP_WARN_FRACTION:.0%} of the day's grid steps are gaps.",
            metadata={
                "gap_fraction": round(summary.gap_fraction, 4),
                "gaps": summary.gaps,
                "grid_steps": summary.steps,
                "gap_fraction_by_metric": per_metric,
            },
        )
        reports.append(
            PartitionReport(
                day.key,
                {
                    "dagster/row_count": summary.steps,
                    "series": summary.series,
                    "grid_steps": summary.steps,
                    "points_in": summary.points_in,
                    "gaps": summary.gaps,
                    "merged_points": summary.merged,
                    "resolution_seconds": resolution_seconds,
                    **where,
                },
                checks=[gap],
            )
        )
    wh.settle_ingests()
    return RunReport(reports, {"partitions": len(reports), "grid_steps": steps})
