"""One runner for Dagster jobs: each partition (or range of them, as a backfill runs it) in its own
process on a pool, against the instance in ``DAGSTER_HOME``, so what a command did shows up as runs
in the Dagster UI exactly as the sensors' runs do."""

import functools
import multiprocessing
import os
import queue
from collections import deque
from pathlib import Path

from monitoring_pipelines.cli.common import PROCESS_TAG, QUIET
from monitoring_pipelines.cli.output import progress_start, show_progress
from monitoring_pipelines.settings import load_settings


@functools.cache
def dagster_instance():
    import dagster as dg

    return dg.DagsterInstance.get()


@functools.cache
def job_def(job_name: str):
    """Definitions are built once per process, not once per partition run."""
    from monitoring_pipelines.definitions import build_defs

    return build_defs().resolve_job_def(job_name)


def quiet_libraries() -> None:
    """The terminal gets the summary; runs keep their full logs in the Dagster instance."""
    import logging
    import warnings

    # Dagster flags its own beta parameters at definition time; users cannot act on that.
    warnings.filterwarnings("ignore", message=".*is currently in beta.*")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow sets its own logger level when imported; this is the setting it reads.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # With a tracking server MLflow prints a "View run" link per logged run; the demo's summary
    # prints the server's address once.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for name in ("mlflow", "tensorflow", "absl", "prophet", "cmdstanpy", "py.warnings"):
        logging.getLogger(name).setLevel(logging.ERROR)


def worker_init(environ: dict[str, str]) -> None:
    os.environ.update(environ)
    quiet_libraries()
    # Libraries in the workers (TensorFlow's C++ runtime, MLflow's registry messages) write to
    # stderr directly; the terminal gets the summary, the runs' logs are in Dagster, and this
    # stray output goes to a file under the home.
    log = load_settings().home / "logs" / "workers.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)


def run_partition(task: tuple) -> tuple[str, list[str], str | None, dict]:
    """Run one job on one partition (``date|tenant`` or ``tenant``) or on a range of them
    (``first...last``, as a backfill under the assets' backfill policy runs them): ``(job, key)``,
    or ``(job, key, assets)`` to run only those assets of the job.

    Returns the key, the blocking checks that failed with ERROR, the error if the run failed,
    and the grid steps and gaps ``clean_metrics`` reported (when the job materializes it).
    """
    import dagster as dg

    from monitoring_pipelines.partitions import tenant_day_key

    job_name, key, *only = task
    assets = only[0] if only else None
    tags = {"monitoring/trigger": "cli", PROCESS_TAG: process_id()}
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
    run = job_def(job_name).execute_in_process(
        partition_key=partition_key,
        run_config=QUIET,
        instance=dagster_instance(),
        raise_on_error=False,
        tags=tags,
        asset_selection=[dg.AssetKey(name) for name in assets] if assets else None,
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
    return key, blocked, None if run.success else failure_reason(run, None), grid


def run_all(job_name: str, keys: list, workers: int | None, then=None):
    """Run ``job_name`` on every key; independent partitions run one process per core. A key
    may be ``(key, assets)`` to run only those assets of the job on it. ``then(outcome)``, if
    given, returns the keys to run next on the same pool once a run is done (a tenant's alert
    policy once its detectors are trained), so no second pool pays the imports again."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(keys)))

    def task(key) -> tuple:
        return (job_name, *key) if isinstance(key, tuple) else (job_name, key)

    todo = deque(task(key) for key in keys)
    total, finished, running = len(todo), 0, 0
    progress_start(job_name, total)
    done: queue.SimpleQueue = queue.SimpleQueue()
    pool = None
    if workers > 1:
        ctx = multiprocessing.get_context("spawn")
        pool = ctx.Pool(workers, initializer=worker_init, initargs=(dict(os.environ),))
    try:
        while todo or running:
            while todo and (pool is not None or not running):
                if pool is None:
                    done.put((True, run_partition(todo.popleft())))
                else:
                    pool.apply_async(
                        run_partition,
                        (todo.popleft(),),
                        callback=lambda outcome: done.put((True, outcome)),
                        error_callback=lambda error: done.put((False, error)),
                    )
                running += 1
            ok, outcome = done.get()
            running -= 1
            if not ok:
                raise outcome
            finished += 1
            more = [task(key) for key in (then(outcome) if then else ())]
            todo.extend(more)
            total += len(more)
            show_progress(finished, total)
            yield outcome
    finally:
        if pool is not None:
            pool.close()
            pool.join()


def backfill_ranges(keys: list[str]) -> list[str]:
    """``date|tenant`` keys as one ranged run (``first...last``) per tenant and run of
    consecutive days, so each run loads the champions and reads the look-back once.

    A tenant's days are not cut into chunks here: two chunks of one tenant could run at once on
    the worker pool, and the later one would then find no carried state and catch up from the
    first point.
    """
    import pandas as pd

    from monitoring_pipelines.ml.scoring_service import tenant_spans

    day = pd.Timedelta(days=1)
    return [
        f"{start:%Y-%m-%d}|{tenant}...{end - day:%Y-%m-%d}|{tenant}"
        for tenant, spans in tenant_spans(keys).items()
        for start, end in spans
    ]


def step_metadata(result, node: str) -> dict:
    for event in result.events_for_node(node):
        if event.event_type_value == "STEP_OUTPUT":
            return {k: v.value for k, v in event.step_output_data.metadata.items()}
    return {}


def failure_reason(result, path: Path | None) -> str:
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error = event.step_failure_data.user_failure_data
            if error is not None and error.description:
                return error.description
            if event.step_failure_data.error is not None:
                return event.step_failure_data.error.message.strip().splitlines()[-1]
    return f"{path}: run failed" if path else "run failed"


def failed_ingest_run(key: str):
    """The latest failed ingest run that gated ``key``, alone or in a range of days."""
    import dagster as dg

    date, tenant = key.split("|", 1)
    runs = dagster_instance().get_runs(
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


def process_id(pid: int | None = None) -> str:
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
    return started == "?" or process_id(int(pid)) == process


def fail_dead_runs() -> int:
    """Mark failed the CLI runs whose process died (kill -9, a crash) while they ran."""
    import dagster as dg

    instance = dagster_instance()
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
