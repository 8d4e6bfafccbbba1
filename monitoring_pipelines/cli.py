"""The ``monitoring-pipelines`` command.

Every command runs the same Dagster jobs the sensors and schedules run, against the instance in
``DAGSTER_HOME``, so what a command did shows up as runs in the Dagster UI.
"""

import argparse
import functools
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from monitoring_pipelines.ml.catalogue import KINDS
from monitoring_pipelines.settings import Settings, load_settings, redact_url

DATA_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
# Runs are fully logged in the Dagster instance; the terminal only gets the summary.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


class CliError(Exception):
    """A one-line reason for a non-zero exit."""


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


# Dagster's run monitoring (the daemon) marks a run whose worker died as failed instead of
# leaving it STARTED forever; the CLI's in-process runs are checked by _fail_dead_runs.
DAGSTER_YAML = """telemetry:
  enabled: false
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  max_resume_run_attempts: 0
  poll_interval_seconds: 60
"""
_OLD_DAGSTER_YAML = "telemetry:\n  enabled: false\n"
# Which process runs a CLI run: a run left STARTED by a process that is gone is failed.
PROCESS_TAG = "monitoring/process"


def _prepare(settings: Settings) -> None:
    settings.ensure_dirs()
    os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home))
    dagster_yaml = settings.dagster_home / "dagster.yaml"
    if not dagster_yaml.exists() or dagster_yaml.read_text() == _OLD_DAGSTER_YAML:
        dagster_yaml.write_text(DAGSTER_YAML)


def _process_id(pid: int | None = None) -> str:
    """host:pid:start time, so a recycled pid is not mistaken for the process that ran."""
    import socket

    pid = os.getpid() if pid is None else pid
    try:
        with open(f"/proc/{pid}/stat") as fh:
            started = fh.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        started = "?"
    return f"{socket.gethostname()}:{pid}:{started}"


def _alive(process: str) -> bool:
    import socket

    host, pid, started = process.rsplit(":", 2)
    if host != socket.gethostname():
        return True  # another machine's run: its own monitoring decides
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return started == "?" or _process_id(int(pid)) == process


def _fail_dead_runs() -> int:
    """Mark failed the CLI runs whose process died (kill -9, a crash) while they ran."""
    import dagster as dg

    instance = _instance()
    active = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING]
    dead = [
        run
        for run in instance.get_runs(dg.RunsFilter(statuses=active))
        if run.tags.get(PROCESS_TAG) and not _alive(run.tags[PROCESS_TAG])
    ]
    for run in dead:
        instance.report_run_failed(
            run, f"The process that ran it ({run.tags[PROCESS_TAG]}) is gone; its work is retried."
        )
    return len(dead)


@functools.cache
def _instance():
    import dagster as dg

    return dg.DagsterInstance.get()


@functools.cache
def _job(job_name: str):
    """Definitions are built once per process, not once per partition run."""
    from monitoring_pipelines.definitions import build_defs

    return build_defs().resolve_job_def(job_name)


def _data_files(path: Path, drop_dir: Path) -> list[tuple[Path, Path]]:
    """The data files of ``path``, each with the folder its ``<tenant>/<service>/<metric>``
    layout is read below: the folder given; for a file given alone, the drop folder when it lies
    in it, else the current directory (its path as typed)."""
    if path.is_file():
        absolute = path.resolve()
        inside_drop = absolute.is_relative_to(drop_dir.resolve())
        return [(path, drop_dir if inside_drop else Path.cwd())]
    if path.is_dir():
        return [
            (p, path)
            for p in sorted(path.rglob("*"))
            if p.is_file() and p.name.lower().endswith(DATA_SUFFIXES)
        ]
    raise CliError(f"{path}: no such file or directory")


def _quiet_libraries() -> None:
    """The terminal gets the summary; runs keep their full logs in the Dagster instance."""
    import logging
    import warnings

    # Dagster flags its own beta parameters at definition time; users cannot act on that.
    warnings.filterwarnings("ignore", message=".*is currently in beta.*")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow sets its own logger level when imported; this is the setting it reads.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in ("mlflow", "tensorflow", "absl", "prophet", "cmdstanpy", "py.warnings"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _worker_init(environ: dict[str, str]) -> None:
    os.environ.update(environ)
    _quiet_libraries()
    # Libraries in the workers (TensorFlow's C++ runtime, MLflow's registry messages) write to
    # stderr directly; the terminal gets the summary, the runs' logs are in Dagster, and this
    # stray output goes to a file under the home.
    log = load_settings().home / "logs" / "workers.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)


def _run_partition(task: tuple[str, str]) -> tuple[str, list[str], str | None, dict]:
    """Run one job on one partition (``date|tenant`` or ``tenant``) or on a range of them
    (``first...last``, as a backfill under the assets' backfill policy runs them).

    Returns the key, the blocking checks that failed with ERROR, the error if the run failed,
    and the grid steps and gaps ``clean_metrics`` reported (when the job materializes it).
    """
    import dagster as dg

    from monitoring_pipelines.partitions import tenant_day_key

    job_name, key = task
    tags = {"monitoring/trigger": "cli", PROCESS_TAG: _process_id()}
    partition_key = None
    if "..." in key:
        first, last = key.split("...", 1)
        tags.update(
            {
                "dagster/asset_partition_range_start": first,
                "dagster/asset_partition_range_end": last,
            }
        )
    else:
        partition_key = tenant_day_key(*key.split("|", 1)) if "|" in key else key
    run = _job(job_name).execute_in_process(
        partition_key=partition_key,
        run_config=QUIET,
        instance=_instance(),
        raise_on_error=False,
        tags=tags,
    )
    # Check names, as "partition: check" where the run reported per partition (ranged runs).
    blocked = sorted(
        {
            f"{data.partition}: {data.check_name}" if data.partition else data.check_name
            for e in run.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
            for data in [e.asset_check_evaluation_data]
            if not data.passed and data.severity == dg.AssetCheckSeverity.ERROR
        }
    )
    grid = {"steps": 0, "gaps": 0}
    for materialization in run.asset_materializations_for_node("clean_metrics"):
        if "gaps" in materialization.metadata:
            grid["steps"] += int(materialization.metadata["grid_steps"].value)
            grid["gaps"] += int(materialization.metadata["gaps"].value)
    return key, blocked, None if run.success else _failure_reason(run, None), grid


def _run_all(job_name: str, keys: list[str], workers: int | None):
    """Run ``job_name`` on every key; independent partitions run one process per core."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(keys)))
    tasks = [(job_name, key) for key in keys]
    _progress_start(job_name, len(keys))
    if workers == 1:
        outcomes = map(_run_partition, tasks)
    else:
        ctx = multiprocessing.get_context("spawn")
        pool = ctx.Pool(workers, initializer=_worker_init, initargs=(dict(os.environ),))
        outcomes = pool.imap_unordered(_run_partition, tasks)
    try:
        for i, outcome in enumerate(outcomes, start=1):
            _progress(i, len(keys))
            yield outcome
    finally:
        if workers > 1:
            pool.close()
            pool.join()


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
    instance = _instance()
    summary = IngestSummary()
    summary.dead_runs = _fail_dead_runs()
    new = missing_tenants(instance, settings.tenants)
    if new:
        instance.add_dynamic_partitions(TENANTS, new)
    stage_job = defs.resolve_job_def("stage_file_job")
    warehouse = Warehouse(settings.warehouse_url)
    files = [f for p in paths for f in _data_files(p, settings.drop_dir)]
    pending: set[str] = set()
    for path, layout_root in files:
        summary.files += 1
        config = {"path": str(path), "force": force, "layout_root": str(layout_root)}
        result = stage_job.execute_in_process(
            run_config={**QUIET, "ops": {"stage_file_op": {"config": config}}},
            instance=instance,
            raise_on_error=False,
            tags={"monitoring/trigger": "cli", PROCESS_TAG: _process_id()},
        )
        if not result.success:
            summary.failed.append(_failure_reason(result, path))
            continue
        stage_meta = _step_metadata(result, "stage_file_op")
        if stage_meta.get("skipped_same_content"):
            summary.skipped += 1
        summary.rows_in += int(stage_meta.get("rows_in", 0))
        summary.parse_quarantined += int(stage_meta.get("quarantined", 0))
        summary.ts_truncated += int(stage_meta.get("ts_cut_to_microseconds", 0))
        if not stage_meta.get("skipped_same_content"):
            summary.sources.append(str(stage_meta["source"]))
            pending.update(result.output_for_node("stage_file_op"))
    summary.partitions = pending
    keys = sorted(pending)
    for key, blocked, failure, grid in _run_all("ingest_job", _day_ranges(keys), workers):
        summary.grid_steps += grid["steps"]
        summary.grid_gaps += grid["gaps"]
        if failure and not blocked:
            summary.partition_failures.append(f"{key}: {failure}")
    # A ranged run with a blocked day grids none of its days: grid the others now.
    states = warehouse.partition_states(keys)
    to_grid = [k for k in keys if k in states and states[k].gated and not states[k].settled]
    for key, _, failure, grid in _run_all("grid_job", _day_ranges(to_grid), workers):
        summary.grid_steps += grid["steps"]
        summary.grid_gaps += grid["gaps"]
        if failure:
            summary.partition_failures.append(f"{key}: {failure}")
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

    from monitoring_pipelines.quality.checks import CHECK_SPECS

    blocked = {k for k in keys if k in states and states[k].blocked}
    if not blocked:
        return {}
    out: dict[str, list[str]] = {}
    instance = _instance()
    for spec in (s for s in CHECK_SPECS if s.blocking):
        records = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey("raw_metrics"), spec.name), limit=len(blocked) * 4 + 50
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


def _step_metadata(result, node: str) -> dict:
    for event in result.events_for_node(node):
        if event.event_type_value == "STEP_OUTPUT":
            return {k: v.value for k, v in event.step_output_data.metadata.items()}
    return {}


def _failure_reason(result, path: Path | None) -> str:
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error = event.step_failure_data.user_failure_data
            if error is not None and error.description:
                return error.description
            if event.step_failure_data.error is not None:
                return event.step_failure_data.error.message.strip().splitlines()[-1]
    return f"{path}: run failed" if path else "run failed"


def _progress_start(job_name: str, total: int) -> None:
    if total and sys.stderr.isatty():
        sys.stderr.write(f"{job_name}: {total} partitions\n")


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r  {done}/{total} partitions")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _print_ingest(summary: IngestSummary, settings: Settings) -> None:
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


def cmd_demo(args: argparse.Namespace) -> int:
    from monitoring_pipelines.sources.demo import DemoConfig, generate, write_demo

    settings = load_settings()
    _prepare(settings)
    started = time.perf_counter()
    config = DemoConfig(seed=args.seed, days=args.days, tenants=settings.tenants[: args.tenants])
    data = generate(config)
    drop = settings.drop_dir / "demo"
    manifest = write_demo(data, settings.demo_dir, fmt=args.format)
    drop.mkdir(parents=True, exist_ok=True)
    for tenant in config.tenants:
        src = settings.demo_dir / f"{tenant}.{args.format}"
        shutil.copyfile(src, drop / src.name)
    print(
        f"demo data: {len(config.tenants)} tenants, {data.records['service'].nunique()} services,"
        f" {data.records[['service', 'metric']].drop_duplicates().shape[0]} series per tenant,"
        f" {config.days} days at {config.resolution_seconds // 60}-minute resolution:"
        f" {len(data.records):,} rows, {len(data.incidents)} labelled incidents"
    )
    print(f"  files: {drop}  labels: {manifest['labels']}")
    summary = ingest_paths([drop], settings, force=args.force, workers=args.workers)
    _print_ingest(summary, settings)
    failed = bool(summary.failed or summary.partition_failures)
    if not args.skip_models:
        shutil.copyfile(manifest["labels"], settings.home / "labels.json")
        blocked = {line.split(" ", 1)[0] for line in summary.blocked}
        days = sorted(summary.partitions - blocked)
        failed |= train_and_score(settings, list(config.tenants), days, args.workers)
        failed |= raise_and_deliver(settings, days, sorted(blocked), args.workers)
    print(f"done in {time.perf_counter() - started:.0f}s; see it with: make ui")
    return 1 if failed else 0


def backfill_ranges(keys: list[str]) -> list[str]:
    """``date|tenant`` keys as one ranged run (``first...last``) per tenant and run of
    consecutive days, so each run loads the champions and reads the look-back once.

    A tenant's days are not cut into chunks here: two chunks of one tenant could run at once on
    the worker pool, and the later one would then find no carried state and catch up from the
    first point.
    """
    import pandas as pd

    from monitoring_pipelines.assets.scoring import tenant_spans

    day = pd.Timedelta(days=1)
    return [
        f"{start:%Y-%m-%d}|{tenant}...{end - day:%Y-%m-%d}|{tenant}"
        for tenant, spans in tenant_spans(keys).items()
        for start, end in spans
    ]


def _prepare_mlflow(settings: Settings) -> None:
    """Create the MLflow store once, before worker processes train in parallel.

    Opening a new embedded store runs its schema migrations; two processes doing that at the same
    moment collide ("duplicate column"), so the parent does it first.
    """
    import mlflow

    mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri).search_experiments(max_results=1)


def train_and_score(
    settings: Settings, tenants: list[str], days: list[str], workers: int | None
) -> bool:
    """Train, validate and register every tenant's detectors, then score the given partitions.

    Returns whether anything failed.
    """
    from monitoring_pipelines.warehouse import Warehouse

    _prepare_mlflow(settings)
    failures = [
        f"training {key}: {failure}"
        for key, _, failure, _ in _run_all("training_job", tenants, workers)
        if failure
    ]
    trained = [t for t in tenants if not any(f.startswith(f"training {t}:") for f in failures)]
    failures += [
        f"scoring {key}: {failure}"
        for key, _, failure, _ in _run_all(
            "scoring_job",
            backfill_ranges([d for d in days if d.split("|", 1)[1] in trained]),
            workers,
        )
        if failure
    ]
    warehouse = Warehouse(settings.warehouse_url)
    print("models (validated on the last week, thresholds fitted on the week before):")
    for tenant in tenants:
        _, policy = warehouse.read_thresholds(tenant)
        if not policy:
            print(f"  {tenant}: no alert policy (training failed)")
            continue
        versions = ", ".join(f"{k} v{v}" for k, v in sorted(policy["model_versions"].items()))
        ensemble = policy["validation"]["ensemble"]
        print(
            f"  {tenant}: {versions}; ensemble event F1 {ensemble['event_f1']:.2f}, "
            f"{ensemble['false_alarms_per_series_week']:.2f} false alarms per series-week"
        )
    points = warehouse.count("anomaly_scores")
    flagged = warehouse.count("anomaly_scores", is_anomaly=True)
    warehouse.dispose()
    print(f"scores: {points:,} points scored, {flagged:,} flagged anomalous")
    print(
        f"mlflow: {redact_url(settings.mlflow_tracking_uri)} (artifacts in "
        f"{settings.home / 'mlartifacts'})"
    )
    for line in failures:
        print(f"  failed: {line}")
    return bool(failures)


def _failed_ingest_run(key: str):
    """The latest failed ingest run that gated ``key``, alone or in a range of days."""
    import dagster as dg

    date, tenant = key.split("|", 1)
    runs = _instance().get_runs(
        dg.RunsFilter(job_name="ingest_job", statuses=[dg.DagsterRunStatus.FAILURE]), limit=200
    )
    for run in runs:
        if run.tags.get("dagster/partition") == key:
            return run
        first = run.tags.get("dagster/asset_partition_range_start", "")
        last = run.tags.get("dagster/asset_partition_range_end", "")
        same_tenant = first.endswith(f"|{tenant}") and last.endswith(f"|{tenant}")
        if same_tenant and first.split("|", 1)[0] <= date <= last.split("|", 1)[0]:
            return run
    return None


def raise_and_deliver(
    settings: Settings, days: list[str], blocked: list[str], workers: int | None
) -> bool:
    """Raise the scored partitions' incidents and the blocked partitions' data-quality incidents
    (what the sensors do when the daemon runs), then deliver the outbox once. Returns whether
    anything failed."""
    from monitoring_pipelines.alerting import outbox, store
    from monitoring_pipelines.alerting.policy import PolicyError, load_policy
    from monitoring_pipelines.alerting.service import raise_incident
    from monitoring_pipelines.sensors import failure_incidents
    from monitoring_pipelines.warehouse import Warehouse

    try:
        policy = load_policy(settings.alerting_file, home=settings.home)
    except PolicyError as exc:
        raise CliError(str(exc)) from None
    failures = [
        f"alerting {key}: {failure}"
        for key, _, failure, _ in _run_all("alerting_job", days, workers)
        if failure
    ]
    warehouse = Warehouse(settings.warehouse_url)
    for key in blocked:
        run = _failed_ingest_run(key)
        if run is not None:
            for incident in failure_incidents(_instance(), run, "blocked by a quality check"):
                raise_incident(warehouse, policy, incident, dagster_url=settings.dagster_url)
    result = _job("delivery_job").execute_in_process(
        run_config=QUIET, instance=_instance(), raise_on_error=False
    )
    if not result.success:
        failures.append(f"delivery: {_failure_reason(result, None)}")
    incidents = store.read_incidents(warehouse)
    notes = outbox.read_notifications(warehouse, limit=None)
    warehouse.dispose()
    _print_alerts(incidents, notes, policy)
    for line in failures:
        print(f"  failed: {line}")
    return bool(failures)


def _counts(values) -> str:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "0"


def _print_alerts(incidents, notes, policy) -> None:
    from monitoring_pipelines.alerting import types

    anomalies = [s.incident for s in incidents if s.incident.kind == types.ANOMALY]
    order = [s.label for s in sorted(types.Severity, reverse=True)]
    severities = {label: 0 for label in order}
    for incident in anomalies:
        severities[incident.severity.label] += 1
    print(
        f"alerts: {len(anomalies)} incidents from anomalies ("
        + ", ".join(f"{n} {label}" for label, n in severities.items())
        + f"); {sum(1 for s in incidents if s.incident.kind == types.DATA_QUALITY)} data-quality "
        "incidents for the data owner"
    )
    print(f"  notifications: {len(notes)} ({_counts(n['status'] for n in notes)})")
    for name, spec in sorted(policy.receivers.items()):
        sent = sum(1 for n in notes if n["receiver"] == name and n["status"] == "sent")
        where = ""
        if spec.get("type") == "file":
            from monitoring_pipelines.alerting.receivers import receiver_from_spec

            where = f" -> {receiver_from_spec(name, spec).target}"
        print(f"  receiver {name} ({spec.get('type')}): {sent} delivered{where}")
    print(f"  policy: {policy.source}; list them with: monitoring-pipelines alerts list")


def cmd_ingest(args: argparse.Namespace) -> int:
    settings = load_settings()
    _prepare(settings)
    paths = [Path(p) for p in args.paths]
    for path in paths:
        if not path.exists():
            raise CliError(f"{path}: no such file or directory")
    summary = ingest_paths(paths, settings, force=args.force, workers=args.workers)
    _print_ingest(summary, settings)
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


def cmd_backtest(args: argparse.Namespace) -> int:
    import pandas as pd

    from monitoring_pipelines.ml.backtest import run_backtest
    from monitoring_pipelines.ml.backtest_io import (
        BacktestInputError,
        read_inputs,
        read_labels,
        unmatched_labels,
        write_series,
    )
    from monitoring_pipelines.ml.catalogue import detector_class, parse_kinds

    try:
        kinds = parse_kinds(args.detectors) if args.detectors else list(KINDS)
    except ValueError as exc:
        raise CliError(f"--detectors: {exc}") from None
    try:
        inputs = read_inputs(Path(args.data))
        labels = read_labels(Path(args.labels)) if args.labels else {}
    except BacktestInputError as exc:
        raise CliError(str(exc).splitlines()[0]) from None
    unmatched = unmatched_labels(labels, inputs.series_names())
    if unmatched:
        print(unmatched, file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    detectors = [detector_class(k) for k in kinds]
    options = {
        "train_fraction": args.train_fraction,
        "max_train_points": args.max_train_points,
        "detectors": detectors,
        "refit_every": args.refit_every,
        "progress": not args.quiet,
    }
    from monitoring_pipelines.ml.evaluation import summarise

    evaluations = []
    for batch in (b for b in (inputs.series or None, inputs.records_frame) if b is not None):
        result = run_backtest(batch, labels, **options)
        for name, frame in result.series.items():
            write_series(out, name, frame, result.detectors)
        evaluations += result.evaluations
    summary = summarise(evaluations)
    summary.to_csv(out / "summary.csv", index=False)
    shown = [
        "series",
        "windows",
        "detected",
        "alerts",
        "precision",
        "recall",
        "f1",
        "delay_median_minutes",
        "false_alarms_per_day",
    ]
    with pd.option_context("display.width", 160, "display.max_rows", 60):
        print(summary[shown].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"per-series scores and summary.csv written to {out}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from monitoring_pipelines.ml import registry

    settings = load_settings()
    _prepare(settings)
    with registry.tracking(settings.mlflow_tracking_uri, settings.home / "mlartifacts"):
        if args.action == "list":
            for tenant in args.tenant or settings.tenants:
                versions = registry.champion_versions(tenant)
                shown = ", ".join(f"{k} v{versions[k]}" for k in KINDS if k in versions)
                print(f"{tenant}: {shown or 'no champion yet'}")
            return 0
        if not args.kind or not args.tenant:
            raise CliError("models rollback needs --kind and --tenant")
        try:
            before, after = registry.rollback(
                args.kind, args.tenant[0], args.to_version, reason=args.reason
            )
        except registry.ModelNotFound as exc:
            raise CliError(str(exc)) from None
    name = registry.registered_model_name(args.kind, args.tenant[0])
    print(f"{name}: champion v{before} -> v{after}")
    return 0


def _incident_line(stored) -> str:
    i = stored.incident
    metrics = ", ".join(m.metric for m in i.metrics) or i.summary
    flags = []
    if stored.acknowledged_by:
        flags.append(f"ack by {stored.acknowledged_by}")
    if stored.feedback:
        flags.append(stored.feedback.replace("_", " "))
    extra = f"  [{'; '.join(flags)}]" if flags else ""
    return (
        f"{i.fingerprint[:12]}  {i.started_at:%Y-%m-%d %H:%M}  {i.severity.label:8} "
        f"{i.status:12} {i.tenant}/{i.service}: {metrics}{extra}"
    )


def cmd_alerts(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from monitoring_pipelines.alerting import outbox, store
    from monitoring_pipelines.alerting.policy import PolicyError, load_policy
    from monitoring_pipelines.alerting.types import incident_to_dict
    from monitoring_pipelines.warehouse import Warehouse

    settings = load_settings()
    warehouse = Warehouse(settings.warehouse_url)
    by = args.by or os.environ.get("USER") or "cli"
    try:
        if args.action == "list":
            since = datetime.fromisoformat(args.since).replace(tzinfo=UTC) if args.since else None
            status = None if args.status == "all" else args.status
            rows = store.read_incidents(warehouse, tenant=args.tenant, status=status, since=since)
            if args.severity:
                rows = [r for r in rows if r.incident.severity.label == args.severity]
            if not rows:
                print("no alerts match")
            for stored in rows[-args.limit :]:
                print(_incident_line(stored))
            if len(rows) > args.limit:
                print(f"... {len(rows) - args.limit} older (use --limit)")
            return 0
        if args.action == "deliver":
            _prepare(settings)
            policy = load_policy(settings.alerting_file, home=settings.home)
            from monitoring_pipelines.alerting.service import deliver

            report = deliver(warehouse, policy)
            print(
                f"delivered {report.sent}, retrying {report.retried}, dead {report.dead}, "
                f"cancelled {report.cancelled}; {outbox.pending_count(warehouse)} still due"
            )
            return 0
        if not args.fingerprint:
            raise CliError(f"alerts {args.action} needs a FINGERPRINT (or a prefix of 6+)")
        if args.action == "show":
            fingerprint = store.find_fingerprint(warehouse, args.fingerprint)
            stored = store.read_incidents(warehouse, fingerprints=[fingerprint])[0]
            print(json.dumps(incident_to_dict(stored.incident), indent=2))
            for note in outbox.read_notifications(warehouse, fingerprint=fingerprint, limit=None):
                reason = f" ({note['reason']})" if note.get("reason") else ""
                print(f"  {note['event']:8} -> {note['receiver']}: {note['status']}{reason}")
            return 0
        action = {
            "ack": lambda fp: store.acknowledge(warehouse, fp, by),
            "resolve": lambda fp: store.resolve(warehouse, fp, by),
            "false-positive": lambda fp: store.mark_false_positive(warehouse, fp, args.note or ""),
        }[args.action]
        print(_incident_line(action(args.fingerprint)))
        return 0
    except (LookupError, ValueError, PolicyError) as exc:
        raise CliError(str(exc).splitlines()[0]) from None
    finally:
        warehouse.dispose()


def cmd_ui(args: argparse.Namespace) -> int:
    settings = load_settings()
    _prepare(settings)
    bin_dir = Path(sys.executable).parent
    artifacts = settings.home / "mlartifacts"
    procs = [
        subprocess.Popen(
            [
                str(bin_dir / "dagster"),
                "dev",
                "-m",
                "monitoring_pipelines.definitions",
                "-h",
                args.host,
                "-p",
                str(args.dagster_port),
            ],
        ),
        subprocess.Popen(
            [
                str(bin_dir / "mlflow"),
                "server",
                "--host",
                args.host,
                "--port",
                str(args.mlflow_port),
                "--backend-store-uri",
                settings.mlflow_tracking_uri,
                "--default-artifact-root",
                str(artifacts),
            ],
        ),
    ]
    print(
        f"Dagster UI: http://{args.host}:{args.dagster_port}   "
        f"MLflow UI: http://{args.host}:{args.mlflow_port}   (Ctrl-C stops both)"
    )
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitoring-pipelines",
        description="Ingest, check, model and alert on streaming-platform metrics.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="generate the demo platform's metrics and run the pipeline on them",
        description="Generate seeded demo metrics with labelled incidents, then ingest and "
        "quality-check them through the same jobs the sensors run.",
    )
    demo.add_argument("--tenants", type=int, default=5, help="how many tenants (default 5)")
    demo.add_argument("--days", type=int, default=35, help="days of history (default 35)")
    demo.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    demo.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    demo.add_argument("--force", action="store_true", help="re-stage files even if unchanged")
    demo.add_argument("--workers", type=int, help="parallel partition runs (default: cores)")
    demo.add_argument(
        "--skip-models", action="store_true", help="only generate, ingest and check the data"
    )
    demo.set_defaults(func=cmd_demo)

    ingest = sub.add_parser(
        "ingest",
        help="ingest a CSV/Parquet file or a folder of them",
        description="Stage each file, then gate and grid every day x tenant partition it touched.",
    )
    ingest.add_argument("paths", nargs="+", metavar="PATH", help="file or folder")
    ingest.add_argument("--force", action="store_true", help="re-stage files even if unchanged")
    ingest.add_argument("--workers", type=int, help="parallel partition runs (default: cores)")
    ingest.set_defaults(func=cmd_ingest)

    backtest = sub.add_parser(
        "backtest",
        help="judge the detectors on your own labelled history",
        description="Fit each series on its first points, score the rest causally, and report "
        "event-level precision, recall, F1 and detection delay against the label windows.",
    )
    backtest.add_argument("--data", required=True, help="a CSV/Parquet file or a folder of them")
    backtest.add_argument("--labels", help="label windows JSON {series: [[start, end], ...]}")
    backtest.add_argument("--train-fraction", type=float, default=0.15)
    backtest.add_argument("--max-train-points", type=int)
    backtest.add_argument("--refit-every", type=int, help="refit on past data every N points")
    backtest.add_argument(
        "--detectors",
        help=f"comma-separated kinds to run (default: every kind, {','.join(KINDS)}, and the "
        "pipeline's ensemble of them)",
    )
    backtest.add_argument("--out", required=True, help="folder for per-series CSVs and summary")
    backtest.add_argument("--quiet", action="store_true", help="no progress bar")
    backtest.set_defaults(func=cmd_backtest)

    models = sub.add_parser("models", help="list champions or roll a model back")
    models.add_argument("action", choices=["list", "rollback"])
    models.add_argument("--kind", choices=KINDS)
    models.add_argument("--tenant", action="append", help="tenant (repeat for list)")
    models.add_argument("--to-version", type=int, help="default: the previous champion")
    models.add_argument("--reason", default="manual rollback from the command line")
    models.set_defaults(func=cmd_models)

    quarantine = sub.add_parser("quarantine", help="list quarantined rows and why")
    quarantine.add_argument("--source", help="only rows from this source (file or query)")
    quarantine.add_argument("--limit", type=int, default=50)
    quarantine.set_defaults(func=cmd_quarantine)

    alerts = sub.add_parser(
        "alerts",
        help="list, acknowledge, resolve alerts; mark false positives; deliver the outbox",
        description="Work with incidents: `list` (firing by default), `show FP`, `ack FP`, "
        "`resolve FP`, `false-positive FP --note ...` (kept for reports and the promotion gate), "
        "`deliver` (send what is due in the outbox now). FP is a fingerprint or a prefix of 6+.",
    )
    alerts.add_argument(
        "action", choices=["list", "show", "ack", "resolve", "false-positive", "deliver"]
    )
    alerts.add_argument("fingerprint", nargs="?", metavar="FP")
    alerts.add_argument("--tenant")
    alerts.add_argument(
        "--status", choices=["firing", "acknowledged", "resolved", "all"], default="firing"
    )
    alerts.add_argument("--severity", choices=["critical", "high", "medium", "low"])
    alerts.add_argument("--since", help="only incidents seen since this UTC date or time")
    alerts.add_argument("--limit", type=int, default=50)
    alerts.add_argument("--by", help="who acknowledges or resolves (default: $USER)")
    alerts.add_argument("--note", help="why it is a false positive")
    alerts.set_defaults(func=cmd_alerts)

    ui = sub.add_parser("ui", help="start the Dagster UI and the MLflow UI side by side")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--dagster-port", type=int, default=3000)
    ui.add_argument("--mlflow-port", type=int, default=5000)
    ui.set_defaults(func=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    from monitoring_pipelines.sources.files import InputFileError

    _quiet_libraries()

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CliError, InputFileError) as exc:
        print(f"monitoring-pipelines: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
