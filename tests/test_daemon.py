"""The pipeline runs itself: the real ``dagster-webserver`` and ``dagster-daemon`` on a home the CLI
trained and scored, a file for today dropped with an incident in its last hour, and nothing else.

Each test records the runs it saw with their timings: printed (``pytest -s``) and written to
``$MONITORING_TEST_RECORD_DIR`` (default: the system's temporary folder) as
``daemon-runs-<backend>.txt``.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from monitoring_pipelines.cli.common import DAGSTER_YAML
from monitoring_pipelines.devservices import temporary_database
from monitoring_pipelines.sources.demo import DemoConfig, generate
from tests.alerting.servers import RecordingServer, free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SENSORS = (
    "file_drop_sensor",
    "staged_file_sensor",
    "automation_condition_sensor",
    "outbox_sensor",
    "run_failure_alert_sensor",
)
# Generous: the machine may be shared by a whole test suite; the timings are recorded, not
# asserted.
CHAIN_TIMEOUT = 20 * 60
DEMO_TIMEOUT = 30 * 60
HOT_METRIC = "latency_p95_ms"


def _wait(what: str, predicate, timeout: float, every: float = 3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@contextlib.contextmanager
def _process(args: list[str], env: dict, log: Path):
    """A server process in its own process group, stopped with everything it started."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _live_file(path: Path, now: pd.Timestamp, start: str) -> None:
    """Today's metrics of acme's api up to ``now``, one latency series far off from 50 minutes
    ago: an incident still firing. The day continues the history that began on ``start`` (its
    weekly growth included), so only the incident is new, not the level of every series."""
    first = pd.Timestamp(start, tz="UTC")
    config = DemoConfig(
        tenants=("acme",),
        services=("api",),
        start=first.strftime("%Y-%m-%dT00:00:00Z"),
        days=(now.floor("D") - first).days + 1,
        incidents=False,
        gaps=False,
        bad_rows=False,
        broken_partition=False,
    )
    records = generate(config).records
    ts = pd.to_datetime(records["ts"], utc=True)
    records = records[(ts >= now.floor("D")) & (ts <= now)].copy()
    ts = pd.to_datetime(records["ts"], utc=True)
    hot = (records["metric"] == HOT_METRIC) & (ts >= now - pd.Timedelta(minutes=50))
    assert hot.sum() >= 5
    records.loc[hot, "value"] = records.loc[hot, "value"] * 10 + 500
    path.parent.mkdir(parents=True, exist_ok=True)
    records.to_parquet(path, index=False)


def _ticks(instance: dg.DagsterInstance, since: float) -> dict[str, int]:
    """Ticks each of our sensors has completed since ``since``."""
    out = dict.fromkeys(SENSORS, 0)
    for state in instance.all_instigator_state():
        if state.name in out:
            ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=50)
            out[state.name] = sum(1 for t in ticks if t.timestamp >= since and t.end_timestamp)
    return out


def _runs(instance: dg.DagsterInstance, exclude: set[str]) -> list:
    records = instance.get_run_records(limit=500)
    return sorted(
        (r for r in records if r.dagster_run.run_id not in exclude),
        key=lambda r: r.create_timestamp,
    )


def _describe(record, origin: float) -> str:
    run = record.dagster_run
    tags = run.tags
    assets = ",".join(sorted(k.path[-1] for k in run.asset_selection or []))
    trigger = tags.get("dagster/sensor_name") or tags.get("dagster/schedule_name") or "?"
    reason = (
        "automation condition"
        if tags.get("dagster/from_automation_condition")
        else tags.get("dagster/run_key", "")
    )

    def at(value) -> str:
        return "-" if value is None else f"+{value - origin:5.0f}s"

    created = record.create_timestamp.timestamp()
    return (
        f"{run.job_name:<16} {assets or '-':<22} {tags.get('dagster/partition', '-'):<16} "
        f"{run.status.value:<8} by {trigger} ({reason}) created {at(created)} "
        f"started {at(record.start_time)} ended {at(record.end_time)}"
    )


def _graphql_run_ids(port: int) -> set[str]:
    query = b'{"query": "{ runsOrError { ... on Runs { results { runId } } } }"}'
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=query,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.load(response)
    return {r["runId"] for r in body["data"]["runsOrError"]["results"]}


def _serving(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=10) as r:
            return r.status == 200
    except OSError:
        return False


def _pages(hook: RecordingServer) -> list[dict]:
    with hook.lock:
        return [r.json for r in hook.deliveries]


def _live_page(hook: RecordingServer, day: str) -> dict | None:
    """The trigger of today's latency incident, if it arrived."""
    for body in _pages(hook):
        text = json.dumps(body)
        if body.get("event") == "trigger" and HOT_METRIC in text and day in text:
            return body
    return None


def _environ_without_settings() -> dict[str, str]:
    """This process's environment without its pipeline, Dagster and MLflow settings."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MONITORING_", "DAGSTER_", "MLFLOW_"))
    }


def pipeline_env(home: Path, dagster_home: Path) -> dict[str, str]:
    """The environment of the processes a test starts: this one's, without its pipeline, Dagster
    and MLflow settings, for one tenant scored by the z-score. The drift checks judge nothing here:
    the generated platform grows a few percent a week, which is real drift from a training window
    that ends two weeks before today, and its retrain would be one more run (drift retraining is
    tested in tests/test_retraining.py)."""
    env = _environ_without_settings()
    env.update(
        MONITORING_HOME=str(home),
        DAGSTER_HOME=str(dagster_home),
        MONITORING_TENANTS="acme",
        MONITORING_DETECTORS="zscore",
        MONITORING_DRIFT_MIN_POINTS="1000000",
        PYTHONUNBUFFERED="1",
    )
    return env


@contextlib.contextmanager
def backend_env(name: str, tmp_path: Path):
    """Environment of the CLI and the servers: a home under ``tmp_path``; on PostgreSQL, both the
    warehouse and the Dagster instance storage in fresh databases."""
    home = tmp_path / "home"
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    env = pipeline_env(home, dagster_home)
    with contextlib.ExitStack() as stack:
        storage = ""
        if name == "postgresql":
            warehouse_url = stack.enter_context(temporary_database(prefix="mp_daemon_wh"))
            dagster_url = stack.enter_context(temporary_database(prefix="mp_daemon_dg"))
            env["MONITORING_WAREHOUSE_URL"] = warehouse_url
            storage = f"storage:\n  postgres:\n    postgres_url: {dagster_url}\n"
        # What `prepare_home` writes, plus the storage: the queued coordinator is under test too.
        (dagster_home / "dagster.yaml").write_text(DAGSTER_YAML + storage)
        yield name, home, env


@pytest.fixture
def backend(tmp_path):
    """SQLite here; tests/test_daemon_postgresql.py runs the same test on the PostgreSQL server,
    in a file of its own so pytest-xdist gives the two backends different workers."""
    with backend_env("sqlite", tmp_path) as found:
        yield found


def test_a_dropped_file_pages_with_only_the_daemon_and_history_starts_nothing(backend):
    name, home, env = backend
    hook = RecordingServer()
    env["MONITORING_WEBHOOK_URL"] = hook.url
    env["MONITORING_WEBHOOK_SECRET"] = "daemon-test-signing-secret"
    lines: list[str] = []
    try:
        # History, by the CLI: 22 days up to yesterday of one tenant's api, trained (z-score),
        # scored, alerted and delivered.
        now = pd.Timestamp(datetime.now(UTC))
        start = (now.floor("D") - pd.Timedelta(days=22)).strftime("%Y-%m-%d")
        demo_started = time.monotonic()
        demo = subprocess.run(
            [
                str(BIN / "monitoring-pipelines"),
                "demo",
                "--tenants=1",
                "--days=22",
                f"--start={start}",
                "--services=api",
                "--workers=1",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=DEMO_TIMEOUT,
        )
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        assert "acme: zscore v1" in demo.stdout
        lines.append(f"[{name}] demo (CLI): {time.monotonic() - demo_started:.0f}s")
        history_pages = len(_pages(hook))

        instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
        cli_runs = {r.dagster_run.run_id for r in instance.get_run_records(limit=1000)}
        assert cli_runs, "the CLI's runs are recorded in the instance"
        port = free_port()
        started = time.time()
        with (
            _process(
                [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port)],
                env,
                home / "webserver.log",
            ),
            _process([str(BIN / "dagster-daemon"), "run"], env, home / "daemon.log"),
        ):
            _wait("the webserver", lambda: _serving(port), 300)
            # Every sensor ticks twice over the CLI's history: nothing is launched for it.
            _wait(
                "two ticks of every sensor",
                lambda: min(_ticks(instance, started).values()) >= 2,
                CHAIN_TIMEOUT,
            )
            assert [_describe(r, started) for r in _runs(instance, cli_runs)] == []
            assert len(_pages(hook)) == history_pages
            lines.append(f"[{name}] after the demo, two ticks of each sensor: no run")

            # A new day: today's file with an incident still firing.
            day = now.strftime("%Y-%m-%d")
            live = pd.Timestamp(datetime.now(UTC))
            dropped = time.time()
            _live_file(home / "drop" / "live" / f"acme-{day}.parquet", live, start)
            page = _wait("the live page", lambda: _live_page(hook, day), CHAIN_TIMEOUT, 2.0)
            paged = time.time()
            assert page is not None

            def settled():
                runs = _runs(instance, cli_runs)
                return runs and all(r.dagster_run.is_finished for r in runs) and runs

            _wait("the runs to finish", settled, CHAIN_TIMEOUT)
            # Two more ticks of each sensor once all is done: nothing else starts.
            quiet = time.time()
            _wait(
                "two more ticks of every sensor",
                lambda: min(_ticks(instance, quiet).values()) >= 2,
                CHAIN_TIMEOUT,
            )
            runs = _runs(instance, cli_runs)
            ui_runs = _graphql_run_ids(port)
        lines += [_describe(r, dropped) for r in runs]
        lines.append(
            f"[{name}] file dropped -> page delivered: {paged - dropped:.0f}s; "
            f"{len(runs)} runs (times from the drop)"
        )
        # The webserver shows the same runs.
        assert {r.dagster_run.run_id for r in runs} <= ui_runs
        key = f"{day}|acme"
        seen = [
            (
                r.dagster_run.job_name,
                tuple(sorted(k.path[-1] for k in r.dagster_run.asset_selection or [])),
                r.dagster_run.tags.get("dagster/partition"),
                r.dagster_run.tags.get("dagster/sensor_name"),
                r.dagster_run.status,
            )
            for r in runs
        ]
        success = dg.DagsterRunStatus.SUCCESS
        assert seen == [
            ("stage_file_job", (), None, "file_drop_sensor", success),
            ("ingest_job", (), key, "staged_file_sensor", success),
            (
                "__ASSET_JOB",
                ("alerts", "anomaly_scores"),
                key,
                "automation_condition_sensor",
                success,
            ),
            ("delivery_job", (), None, "outbox_sensor", success),
        ], "\n".join(lines)
        assert runs[2].dagster_run.tags.get("dagster/from_automation_condition") == "true"
        # Only today's incident was paged after the demo: no page for history.
        new_pages = _pages(hook)[history_pages:]
        assert new_pages and all(day in json.dumps(p) for p in new_pages)
    finally:
        hook.close()
        report = "\n".join(lines)
        print(report)
        record_dir = Path(os.environ.get("MONITORING_TEST_RECORD_DIR") or tempfile.gettempdir())
        (record_dir / f"daemon-runs-{name}.txt").write_text(report + "\n")


KILL_POLICY = """receivers:
  hook:
    type: webhook
    url_env: MONITORING_WEBHOOK_URL
    secret_env: MONITORING_WEBHOOK_SECRET
    read_timeout: 300
route:
  receiver: hook
data_owner: hook
operations: hook
"""


def test_a_run_killed_outside_any_step_raises_one_pipeline_failure_incident(tmp_path):
    """A delivery run hangs on a receiver that never answers; its processes are killed (as a
    worker crash or the OOM killer would). Dagster fails the run, and the failure sensor raises
    exactly one pipeline-failure incident for it."""
    from monitoring_pipelines.alerting import store, types
    from monitoring_pipelines.alerting.outbox import enqueue
    from monitoring_pipelines.warehouse import Warehouse
    from tests.alerting.servers import sample_notification

    home = tmp_path / "home"
    (home / "dagster").mkdir(parents=True)
    (home / "dagster" / "dagster.yaml").write_text(DAGSTER_YAML)
    (home / "alerting.yaml").write_text(KILL_POLICY)
    hook = RecordingServer()
    hook.script.append("stall")
    env = _environ_without_settings()
    env.update(
        MONITORING_HOME=str(home),
        DAGSTER_HOME=str(home / "dagster"),
        MONITORING_TENANTS="acme",
        MONITORING_WEBHOOK_URL=hook.url,
        MONITORING_WEBHOOK_SECRET="kill-test-signing-secret",
    )
    warehouse = Warehouse(f"sqlite:///{home / 'warehouse.db'}")
    enqueue(warehouse, [sample_notification("hook", key="k-stalled")])
    instance = dg.DagsterInstance.from_config(str(home / "dagster"))
    try:
        with _process([str(BIN / "dagster-daemon"), "run"], env, home / "daemon.log"):
            _wait("the delivery to hang", hook.in_flight.is_set, CHAIN_TIMEOUT, 0.2)
            [run] = instance.get_runs(dg.RunsFilter(job_name="delivery_job"))
            # The run worker (which started the run and runs its step); not the daemon or the
            # code server, which log the run's queueing and launch.
            pids = {
                e.dagster_event.pid
                for e in instance.all_logs(run.run_id)
                if e.dagster_event
                and e.dagster_event.event_type_value in ("PIPELINE_START", "STEP_START")
            }
            assert pids and None not in pids, pids
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

            def failed():
                current = instance.get_run_by_id(run.run_id)
                return current.status == dg.DagsterRunStatus.FAILURE

            _wait("the killed run to be marked failed", failed, CHAIN_TIMEOUT)

            def incidents():
                return [
                    s.incident
                    for s in store.read_incidents(warehouse)
                    if s.incident.kind == types.PIPELINE_FAILURE
                ]

            _wait("the pipeline-failure incident", incidents, CHAIN_TIMEOUT)
            # Two more ticks of the failure sensor: still one incident.
            quiet = time.time()
            _wait(
                "two more ticks of the failure sensor",
                lambda: _ticks(instance, quiet)["run_failure_alert_sensor"] >= 2,
                CHAIN_TIMEOUT,
            )
            [incident] = incidents()
            assert incident.run_id == run.run_id
            assert incident.service == "delivery_job"
            # It says why: the process was killed, not only that the run failed.
            assert "terminated by signal 9" in incident.summary
            print(f"killed run {run.run_id}: {incident.summary}")
    finally:
        hook.release()
        hook.close()
        warehouse.dispose()
