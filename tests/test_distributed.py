"""The heavy jobs on Dagster's celery executor, for real: the local RabbitMQ, two celery workers
started as in deploy/Procfile (``dagster-celery worker start -y deploy/celery.yaml``), and the
warehouse, the Dagster instance and the MLflow backend in fresh PostgreSQL databases.

One tenant, z-score only, 22 days (training validates on the last week and fits thresholds on
the week before). Each celery run is started as an operator would, ``dagster job execute`` on the
code location; the run's process orchestrates and the steps go through the broker. The reference
runs the same jobs of the same code location with the in-process executor in the test's own
process (the stack's environment applied, its own PostgreSQL databases and Dagster instance): four
process starts fewer. The timings of both are printed (``pytest -s``) and written to
``$MONITORING_TEST_RECORD_DIR`` (default: the system's temporary folder) as
``distributed-timings.txt``.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from monitoring_pipelines.devservices import (
    ensure_rabbitmq,
    temporary_database,
    temporary_vhost,
)
from monitoring_pipelines.sources.demo import DemoConfig, generate, write_demo
from tests.test_daemon import _process, _wait, pipeline_env

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
START, DAYS = "2026-09-28", 22
LAST = (pd.Timestamp(START) + pd.Timedelta(days=DAYS - 1)).strftime("%Y-%m-%d")
SCORED_FROM = (pd.Timestamp(LAST) - pd.Timedelta(days=2)).strftime("%Y-%m-%d")
RUN_TIMEOUT = 15 * 60
# Columns that name a run or a moment, not a result.
VOLATILE = {"id", "run_id", "quarantined_at", "computed_at", "created_at", "policy"}
TABLES = ("metrics", "quarantine", "clean_metrics", "anomaly_scores", "thresholds")
TIMINGS: dict[str, dict[str, float]] = {}


def _range(first: str, last: str) -> dict[str, str]:
    return {
        "dagster/asset_partition_range_start": f"{first}|acme",
        "dagster/asset_partition_range_end": f"{last}|acme",
    }


@contextlib.contextmanager
def _stack(tmp_path: Path, name: str, broker: str | None):
    """A home with the demo's file and labels, three fresh databases, and the environment every
    process of this pipeline (the runs' and the workers') shares; on celery with ``broker``."""
    home = tmp_path / name / "home"
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    data = generate(
        DemoConfig(
            tenants=("acme",),
            services=("api",),
            start=f"{START}T00:00:00Z",
            days=DAYS,
            broken_partition=False,
        )
    )
    write_demo(data, home / "drop")
    (home / "labels.json").write_text(json.dumps(data.labels))
    env = {**pipeline_env(home, dagster_home), "MONITORING_START_DATE": START}
    if broker:
        env.update(MONITORING_EXECUTOR="celery", MONITORING_CELERY_BROKER_URL=broker)
    with (
        temporary_database(prefix="mp_dist_wh") as warehouse_url,
        temporary_database(prefix="mp_dist_dg") as dagster_url,
        temporary_database(prefix="mp_dist_ml") as mlflow_url,
    ):
        env.update(MONITORING_WAREHOUSE_URL=warehouse_url, MLFLOW_TRACKING_URI=mlflow_url)
        storage = f"storage:\n  postgres:\n    postgres_url: {dagster_url}\n"
        (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n" + storage)
        if broker:
            # MLflow's schema once, before two workers would both migrate a new store.
            subprocess.run(
                [
                    str(BIN / "python"),
                    "-c",
                    "import mlflow; mlflow.MlflowClient().search_experiments()",
                ],
                env=env,
                check=True,
                capture_output=True,
            )
        yield {"home": home, "env": env, "name": name}


@contextlib.contextmanager
def _workers(stack: dict, count: int = 2):
    """``count`` celery workers of one slot each, started as deploy/Procfile starts them."""
    with contextlib.ExitStack() as started:
        procs = {}
        for i in range(1, count + 1):
            log = stack["home"] / f"worker{i}.log"
            procs[f"w{i}"] = started.enter_context(
                _process(
                    [
                        str(BIN / "dagster-celery"),
                        "worker",
                        "start",
                        "-A",
                        "dagster_celery.app",
                        "-y",
                        str(REPO / "deploy" / "celery.yaml"),
                        "-n",
                        f"w{i}",
                        "--",
                        "--concurrency=1",
                    ],
                    {**stack["env"], "PATH": f"{BIN}:{os.environ.get('PATH', '')}"},
                    log,
                )
            )
            _wait(f"worker w{i} ready", lambda log=log: " ready." in log.read_text(), 180, 1)
        yield procs


def _job(stack: dict, job: str, tags: dict | None = None, config: dict | None = None, wait=True):
    """``dagster job execute`` of ``job``; returns the finished process, or the running one."""
    args = [
        str(BIN / "dagster"),
        "job",
        "execute",
        "-m",
        "monitoring_pipelines.definitions",
        "-a",
        "defs",
        "-j",
        job,
        "--tags",
        json.dumps(tags or {}),
    ]
    if config:
        path = stack["home"] / f"{job}.json"
        path.write_text(json.dumps(config))
        args += ["-c", str(path)]
    started = time.monotonic()
    with open(stack["home"] / f"{job}.log", "ab") as log:
        proc = subprocess.Popen(
            args, cwd=REPO, env=stack["env"], stdout=log, stderr=subprocess.STDOUT
        )
    if not wait:
        return proc
    try:
        code = proc.wait(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, (stack["home"] / f"{job}.log").read_text()[-3000:]
    TIMINGS.setdefault(stack["name"], {})[job] = time.monotonic() - started
    return proc


@contextlib.contextmanager
def _in_process(stack: dict):
    """A ``_job`` of the test's process: the stack's environment applied (and the variables of
    other homes cleared), the code location built from it, its Dagster instance."""
    from monitoring_pipelines.definitions import build_defs
    from monitoring_pipelines.settings import load_settings

    with pytest.MonkeyPatch.context() as patch:
        for key in list(os.environ):
            if key.startswith(("MONITORING_", "DAGSTER_", "MLFLOW_")):
                patch.delenv(key)
        for key, value in stack["env"].items():
            patch.setenv(key, value)
        defs = build_defs(load_settings())
        with dg.DagsterInstance.from_config(stack["env"]["DAGSTER_HOME"]) as instance:

            def run(stack: dict, job: str, tags: dict | None = None, config: dict | None = None):
                started = time.monotonic()
                result = defs.resolve_job_def(job).execute_in_process(
                    run_config=config, instance=instance, tags=tags, raise_on_error=False
                )
                assert result.success, [
                    e.message for e in result.all_events if e.is_failure or e.is_step_failure
                ]
                TIMINGS.setdefault(stack["name"], {})[job] = time.monotonic() - started

            yield run


def _stage(stack: dict, job=_job) -> None:
    path = stack["home"] / "drop" / "acme.parquet"
    job(stack, "stage_file_job", config={"ops": {"stage_file_op": {"config": {"path": str(path)}}}})


def _pipeline(stack: dict, job=_job) -> None:
    """Stage the file, gate and grid the 22 days, train, score the last three days; each run by
    ``job`` (default: ``dagster job execute``)."""
    _stage(stack, job)
    job(stack, "ingest_job", _range(START, LAST))
    job(stack, "training_job", {"dagster/partition": "acme"})
    job(stack, "scoring_job", _range(SCORED_FROM, LAST))


def _tables(stack: dict) -> dict[str, pd.DataFrame]:
    """Every result table, sorted, without the columns naming runs or moments."""
    engine = sa.create_engine(stack["env"]["MONITORING_WAREHOUSE_URL"])
    out = {}
    with engine.connect() as conn:
        for table in TABLES:
            frame = pd.read_sql_table(table, conn)
            frame = frame.drop(columns=[c for c in frame.columns if c in VOLATILE])
            keys = [c for c in frame.columns if frame[c].dtype == object or "ts" in c]
            out[table] = frame.sort_values(keys or list(frame.columns)).reset_index(drop=True)
    engine.dispose()
    return out


def _models(stack: dict) -> list[tuple]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=stack["env"]["MLFLOW_TRACKING_URI"])
    return sorted(
        (m.name, v.version, tuple(sorted(v.aliases)))
        for m in client.search_registered_models()
        for v in client.search_model_versions(f"name = '{m.name}'")
    )


def _step_workers(stack: dict) -> list[tuple[str, str, str]]:
    """(job, step, celery worker) for every step a celery worker started, in order."""
    with dg.DagsterInstance.from_config(stack["env"]["DAGSTER_HOME"]) as instance:
        found = []
        for record in sorted(instance.get_run_records(), key=lambda r: r.create_timestamp):
            run = record.dagster_run
            for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
                data = entry.dagster_event.engine_event_data
                worker = data.metadata.get("Celery worker") if data else None
                if worker is not None:
                    found.append((run.job_name, entry.step_key, str(worker.value)))
        return found


def _assert_same_results(ours: dict, reference: dict, tables=TABLES) -> None:
    for table in tables:
        left, right = ours[table], reference[table]
        assert len(left) == len(right) > 0, table
        pd.testing.assert_frame_equal(left, right, check_exact=False, rtol=0, atol=1e-9)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same pipeline with the in-process executor, in this process: what the workers must
    match."""
    with _stack(tmp_path_factory.mktemp("dist"), "in_process", broker=None) as stack:
        with _in_process(stack) as job:
            _pipeline(stack, job)
        yield {"tables": _tables(stack), "models": _models(stack)}


@pytest.fixture
def broker():
    """A RabbitMQ virtual host of this test alone: no other worker takes its steps."""
    ensure_rabbitmq()
    with temporary_vhost(prefix="mp_dist") as url:
        yield url


def _record(lines: list[str]) -> None:
    print("\n".join(lines))
    folder = Path(os.environ.get("MONITORING_TEST_RECORD_DIR") or tempfile.gettempdir())
    with open(folder / "distributed-timings.txt", "a") as out:
        out.write("\n".join(lines) + "\n")


def test_celery_workers_produce_what_the_in_process_run_does(reference, broker, tmp_path):
    with _stack(tmp_path, "celery", broker) as stack, _workers(stack):
        _pipeline(stack)
        ran = _step_workers(stack)
        tables, models = _tables(stack), _models(stack)
    _assert_same_results(tables, reference["tables"])
    assert models == reference["models"]
    assert [name for name, _, _ in models] == ["anomaly-zscore-acme"]
    # Every step of the three heavy jobs (their assets and checks) ran on a worker, once; the
    # light stage_file_job stayed in its run's process.
    steps = [(job, step) for job, step, _ in ran]
    assert len(steps) == len(set(steps))
    assert {job for job, _ in steps} == {"ingest_job", "training_job", "scoring_job"}
    assert {
        ("ingest_job", "raw_metrics"),
        ("ingest_job", "clean_metrics"),
        ("training_job", "zscore_model"),
        ("training_job", "detection_policy"),
        ("scoring_job", "anomaly_scores"),
    } <= set(steps)
    assert {worker.split("@")[0] for _, _, worker in ran} <= {"w1", "w2"}
    lines = [
        "distributed (celery, 2 workers; `dagster job execute`) vs in-process (in the test's "
        "process), seconds per run:"
    ]
    for job in ("stage_file_job", "ingest_job", "training_job", "scoring_job"):
        lines.append(
            f"  {job:<15} celery {TIMINGS['celery'][job]:6.1f}  "
            f"in-process {TIMINGS['in_process'][job]:6.1f}"
        )
    lines.append("  steps: " + ", ".join(f"{job}.{step} on {w}" for job, step, w in ran))
    _record(lines)


def test_a_killed_worker_s_step_is_run_again_by_the_other_with_nothing_duplicated(
    reference, broker, tmp_path
):
    with _stack(tmp_path, "killed", broker) as stack, _workers(stack) as workers:
        _stage(stack)
        run = _job(stack, "ingest_job", _range(START, LAST), wait=False)
        try:
            # The worker that took the gate (raw_metrics) dies in the middle of it.
            first = _wait("a worker starting raw_metrics", lambda: _step_workers(stack), 300, 1)[0]
            victim = first[2].split("@")[0]
            time.sleep(3)
            os.killpg(workers[victim].pid, signal.SIGKILL)
            killed_at = time.monotonic()
            code = run.wait(timeout=RUN_TIMEOUT)
            assert code == 0, (stack["home"] / "ingest_job.log").read_text()[-3000:]
            recovered = time.monotonic() - killed_at
        finally:
            if run.poll() is None:
                run.kill()
        ran = _step_workers(stack)
        tables = _tables(stack)
    gate = [worker.split("@")[0] for _, step, worker in ran if step == "raw_metrics"]
    assert gate[0] == victim and gate[1:] == [w for w in ("w1", "w2") if w != victim]
    assert [step for _, step, _ in ran].count("clean_metrics") == 1
    _assert_same_results(tables, reference["tables"], ("metrics", "quarantine", "clean_metrics"))
    _record(
        [
            f"worker {victim} killed (SIGKILL) 3 s into raw_metrics; the step ran again on the "
            f"other worker and the run finished {recovered:.0f} s later"
        ]
    )
