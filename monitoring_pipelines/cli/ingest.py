"""``ingest PATH`` and ``quarantine``: stage files, gate and grid the partitions they touched."""

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from monitoring_pipelines.cli.common import PROCESS_TAG, QUIET, CliError, prepare_home
from monitoring_pipelines.cli.runner import (
    dagster_instance,
    fail_dead_runs,
    failure_reason,
    process_id,
    run_all,
    step_metadata,
)
from monitoring_pipelines.settings import Settings, load_settings, redact_url
from monitoring_pipelines.sources.listing import data_files


@dataclass
class IngestSummary:
    files: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    rows_in: int = 0
    parse_quarantined: int = 0
    partitions: set[str] = field(default_factory=set)
    partition_failures: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    # Sources staged by this ingest (not those skipped as unchanged): what its counts cover.
    sources: list[str] = field(default_factory=list)
    grid_steps: int = 0
    grid_gaps: int = 0
    # Rows whose timestamps had nanosecond digits, stored cut to the microsecond.
    ts_truncated: int = 0
    # Runs a dead process left STARTED, marked failed before this ingest retried their work.
    dead_runs: int = 0


def _data_files(path: Path, drop_dir: Path) -> list[tuple[Path, Path]]:
    """The data files of ``path``, each with the folder its ``<tenant>/<service>/<metric>``
    layout is read below: the folder given; for a file given alone, the drop folder when it lies
    in it, else the current directory (its path as typed)."""
    if path.is_file():
        absolute = path.resolve()
        inside_drop = absolute.is_relative_to(drop_dir.resolve())
        return [(path, drop_dir if inside_drop else Path.cwd())]
    if path.is_dir():
        return [(p, path) for p in data_files(path)]
    raise CliError(f"{path}: no such file or directory")


def ingest_paths(
    paths: list[Path],
    settings: Settings,
    *,
    force: bool = False,
    workers: int | None = None,
) -> IngestSummary:
    """Stage each file, then gate and grid every partition the files touched (or touched before
    they changed), a tenant's consecutive days in one run. A file is done ("ingested") only when
    each of its partitions is gated and gridded or recorded as blocked; until then a re-run
    redoes what is missing, whatever point a crash stopped at."""
    from monitoring_pipelines.definitions import build_defs
    from monitoring_pipelines.partitions import TENANTS, missing_tenants
    from monitoring_pipelines.warehouse import Warehouse

    defs = build_defs(settings)
    instance = dagster_instance()
    summary = IngestSummary()
    summary.dead_runs = fail_dead_runs()
    new = missing_tenants(instance, settings.tenants)
    if new:
        instance.add_dynamic_partitions(TENANTS, new)
    warehouse = Warehouse(settings.warehouse_url)
    files = [f for p in paths for f in _data_files(p, settings.drop_dir)]
    stage_job = defs.resolve_job_def("stage_file_job")
    summary.partitions = _stage_files(stage_job, instance, files, force, summary)
    keys = sorted(summary.partitions)
    _gate_and_grid(keys, warehouse, workers, summary)
    states = warehouse.partition_states(keys)
    blocked_checks = _blocked_checks(keys, states)
    summary.blocked = sorted(
        f"{k} ({', '.join(blocked_checks.get(k, ['quality checks']))})"
        for k in keys
        if k in states and states[k].gated and states[k].blocked
    )
    warehouse.settle_ingests(summary.sources)
    warehouse.dispose()
    return summary


def _stage_files(
    stage_job, instance, files: list[tuple[Path, Path]], force: bool, summary: IngestSummary
) -> set[str]:
    """Stage each file in its own run, counting into ``summary``; the partitions they touched."""
    pending: set[str] = set()
    for path, layout_root in files:
        summary.files += 1
        config = {"path": str(path), "force": force, "layout_root": str(layout_root)}
        result = stage_job.execute_in_process(
            run_config={**QUIET, "ops": {"stage_file_op": {"config": config}}},
            instance=instance,
            raise_on_error=False,
            tags={"monitoring/trigger": "cli", PROCESS_TAG: process_id()},
        )
        if not result.success:
            summary.failed.append(failure_reason(result, path))
            continue
        stage_meta = step_metadata(result, "stage_file_op")
        if stage_meta.get("skipped_same_content"):
            summary.skipped += 1
        summary.rows_in += int(stage_meta.get("rows_in", 0))
        summary.parse_quarantined += int(stage_meta.get("quarantined", 0))
        summary.ts_truncated += int(stage_meta.get("ts_cut_to_microseconds", 0))
        if not stage_meta.get("skipped_same_content"):
            summary.sources.append(str(stage_meta["source"]))
            pending.update(result.output_for_node("stage_file_op"))
    return pending


def _gate_and_grid(keys: list[str], warehouse, workers: int | None, summary: IngestSummary) -> None:
    """Gate and grid ``keys`` a tenant's consecutive days per run, then grid the days a blocked
    neighbour left ungridded, counting into ``summary``."""
    for key, blocked, failure, grid in run_all("ingest_job", _day_ranges(keys), workers):
        summary.grid_steps += grid["steps"]
        summary.grid_gaps += grid["gaps"]
        if failure and not blocked:
            summary.partition_failures.append(f"{key}: {failure}")
    # A ranged run with a blocked day grids none of its days: grid the others now.
    states = warehouse.partition_states(keys)
    to_grid = [k for k in keys if k in states and states[k].gated and not states[k].settled]
    for key, _, failure, grid in run_all("grid_job", _day_ranges(to_grid), workers):
        summary.grid_steps += grid["steps"]
        summary.grid_gaps += grid["gaps"]
        if failure:
            summary.partition_failures.append(f"{key}: {failure}")


def _day_ranges(keys: list[str]) -> list[str]:
    """One run per tenant and stretch of consecutive days: ``date|tenant`` alone or
    ``first...last``."""
    from monitoring_pipelines.gating import days_of, stretches

    out = []
    for stretch in stretches(days_of(keys)):
        first, last = stretch[0].key, stretch[-1].key
        out.append(first if first == last else f"{first}...{last}")
    return out


def _blocked_checks(keys: list[str], states) -> dict[str, list[str]]:
    """The blocking checks that failed with ERROR on each blocked partition, latest evaluation."""
    import dagster as dg
    from dagster._core.storage.asset_check_execution_record import (
        AssetCheckExecutionRecordStatus,
    )

    from monitoring_pipelines.quality.checks import CHECK_SPECS

    blocked = {k for k in keys if k in states and states[k].blocked}
    if not blocked:
        return {}
    out: dict[str, list[str]] = {}
    instance = dagster_instance()
    for spec in (s for s in CHECK_SPECS if s.blocking):
        # Failed evaluations only: a blocked partition's is rarely among the latest of a backfill.
        records = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey("raw_metrics"), spec.name),
            limit=len(blocked) * 4 + 50,
            status={AssetCheckExecutionRecordStatus.FAILED},
        )
        seen = set()
        for record in records:
            event = record.event.dagster_event if record.event else None
            # A run killed before the check ran leaves only its planned event.
            if event is None or event.event_type_value != "ASSET_CHECK_EVALUATION":
                continue
            evaluation = event.asset_check_evaluation_data
            if evaluation is None or evaluation.partition not in blocked:
                continue
            if evaluation.partition in seen:
                continue
            seen.add(evaluation.partition)
            if not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR:
                out.setdefault(evaluation.partition, []).append(spec.name)
    return out


def cmd_ingest(args: argparse.Namespace) -> int:
    settings = load_settings()
    prepare_home(settings)
    paths = [Path(p) for p in args.paths]
    for path in paths:
        if not path.exists():
            raise CliError(f"{path}: no such file or directory")
    summary = ingest_paths(paths, settings, force=args.force, workers=args.workers)
    print_ingest(summary, settings)
    return 1 if summary.failed or summary.partition_failures else 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    from monitoring_pipelines.warehouse import Warehouse

    settings = load_settings()
    warehouse = Warehouse(settings.warehouse_url)
    rows = warehouse.read_quarantine(source=args.source)
    warehouse.dispose()
    if rows.empty:
        print("quarantine is empty")
        return 0
    for row in rows.head(args.limit).itertuples():
        print(f"{row.stage:8} {row.source}:{row.source_row}  {row.reason}")
    if len(rows) > args.limit:
        print(f"... {len(rows) - args.limit} more (use --limit)")
    return 0


def print_ingest(summary: IngestSummary, settings: Settings) -> None:
    from monitoring_pipelines.warehouse import Warehouse

    # This ingest's rows: those of the sources it staged, wherever they ended up.
    warehouse = Warehouse(settings.warehouse_url)
    accepted = quality_q = parse_q = 0
    for source in summary.sources:
        accepted += warehouse.count("metrics", source=source)
        quality_q += warehouse.count("quarantine", stage="quality", source=source)
        parse_q += warehouse.count("quarantine", stage="parse", source=source)
    warehouse.dispose()
    steps, gaps = summary.grid_steps, summary.grid_gaps
    print(
        f"files: {summary.files - len(summary.failed)} ingested"
        + (f", {summary.skipped} unchanged since last ingest" if summary.skipped else "")
        + (f", {len(summary.failed)} refused" if summary.failed else "")
    )
    for reason in summary.failed:
        print(f"  refused: {reason}")
    if summary.dead_runs:
        print(f"recovered: {summary.dead_runs} runs left STARTED by a dead process marked failed")
    print(
        f"rows: {accepted + quality_q + parse_q:,} in = {accepted:,} accepted"
        f" + {quality_q + parse_q:,} quarantined ({parse_q:,} unreadable, {quality_q:,} by checks)"
    )
    print(
        f"partitions (day x tenant): {len(summary.partitions)} gated, "
        f"{len(summary.blocked)} blocked by quality checks"
    )
    for line in summary.blocked:
        print(f"  blocked: {line}")
    for line in summary.partition_failures:
        print(f"  failed: {line}")
    if steps:
        print(f"grid: {steps:,} steps, {gaps:,} gaps ({gaps / steps:.2%})")
    if summary.ts_truncated:
        print(
            f"timestamps: {summary.ts_truncated:,} rows had digits below the microsecond; "
            "stored cut to the microsecond (the warehouse's precision)"
        )
    print(f"warehouse: {redact_url(settings.warehouse_url)}")
    print(f"quality reports: {settings.quality_dir}")


def register(sub) -> None:
    """Add this module's commands to the ``monitoring-pipelines`` parser."""
    ingest = sub.add_parser(
        "ingest",
        help="ingest a CSV/Parquet file or a folder of them",
        description="Stage each file, then gate and grid every day x tenant partition it touched.",
    )
    ingest.add_argument("paths", nargs="+", metavar="PATH", help="file or folder")
    ingest.add_argument("--force", action="store_true", help="re-stage files even if unchanged")
    ingest.add_argument("--workers", type=int, help="parallel partition runs (default: cores)")
    ingest.set_defaults(func=cmd_ingest)

    quarantine = sub.add_parser("quarantine", help="list quarantined rows and why")
    quarantine.add_argument("--source", help="only rows from this source (file or query)")
    quarantine.add_argument("--limit", type=int, default=50)
    quarantine.set_defaults(func=cmd_quarantine)
