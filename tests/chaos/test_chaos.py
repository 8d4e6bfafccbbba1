"""Chaos: two ingests, a scoring run and a delivery run at once against one home, each killed
(SIGKILL of its process group) at a seeded random moment, then everything run again. Every table
must equal a clean home's that ran the same steps once, one after the other, and the receiver,
which honours Idempotency-Key, must have got every notification the clean run sent, none lost.

The homes start from one trained base (two tenants, three weeks of history, a z-score champion,
a week of incidents queued) copied for each run, so the runs differ only by the kills."""

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from monitoring_pipelines.sources.demo import DemoConfig, generate
from tests.alerting.servers import RecordingServer, WebhookChecker
from tests.table_snapshot import table_snapshot

pytestmark = pytest.mark.slow

CONFIG = DemoConfig(tenants=("acme", "globex"), days=24, bad_rows=True, broken_partition=False)
LIVE_FROM = pd.Timestamp("2026-10-19", tz="UTC")  # the files dropped during the chaos start here
SECRET = "chaos-hook-secret"
POLICY = """defaults: {min_duration: 5m, sensitivity: 2.0}
receivers:
  hook: {type: webhook, url_env: CHAOS_HOOK_URL, secret_env: CHAOS_HOOK_SECRET}
route:
  receiver: hook
"""
# Columns that differ between two correct runs: row ids, wall-clock times, Dagster run ids,
# delivery attempts and leases.
VOLATILE = {
    "id", "quarantined_at", "ingested_at", "run_id", "updated_at", "computed_at", "created_at",
    "attempts", "not_before", "next_attempt_at", "lease_until", "lease_token", "last_error",
    "sent_at",
}  # fmt: skip
TABLES = (
    "landing", "metrics", "quarantine", "clean_metrics", "ingests", "partition_states",
    "anomaly_scores", "alerts", "notifications",
)  # fmt: skip
SEED = 20261207


def _env(home: Path, hook_url: str) -> dict[str, str]:
    env = {
        **os.environ,
        "MONITORING_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "MONITORING_START_DATE": "2026-09-28",
        "MONITORING_TENANTS": "acme,globex",
        "CHAOS_HOOK_URL": hook_url,
        "CHAOS_HOOK_SECRET": SECRET,
    }
    for name in ("MONITORING_WAREHOUSE_URL", "MLFLOW_TRACKING_URI", "MONITORING_ALERTING_FILE"):
        env.pop(name, None)
    return env


def _command(step: str, *args: str) -> list[str]:
    if step == "ingest":
        return [sys.executable, "-m", "monitoring_pipelines.cli", "ingest", *args, "--workers", "1"]
    return [sys.executable, "-m", "tests.chaos.steps", step, *args]


def _run(env: dict, step: str, *args: str) -> float:
    """Run one step to its end; its seconds."""
    started = time.monotonic()
    done = subprocess.run(
        _command(step, *args),
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=900,
        start_new_session=True,
    )
    assert done.returncode == 0, f"{step} {args}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return time.monotonic() - started


def _drain(env: dict, home: Path) -> None:
    """Deliver until nothing is left in flight, as the outbox sensor does tick after tick (one
    delivery run sends what is due now; what a killed run held comes back when its lease ends)."""
    engine = sa.create_engine(f"sqlite:///{home / 'warehouse.db'}")
    left = "SELECT COUNT(*) FROM notifications WHERE status IN ('pending', 'sending')"
    try:
        for _ in range(10):
            _run(env, "deliver")
            with engine.connect() as conn:
                if not conn.execute(sa.text(left)).scalar():
                    return
            time.sleep(2.5)
    finally:
        engine.dispose()


def _tables(home: Path) -> dict[str, pd.DataFrame]:
    return table_snapshot(f"sqlite:///{home / 'warehouse.db'}", TABLES, VOLATILE)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A home with three weeks of both tenants' history ingested, acme's z-score champion and
    alert policy, a week of acme's days scored and their incidents queued; and the files of the
    next three days waiting to be dropped."""
    root = tmp_path_factory.mktemp("chaos")
    home = root / "base"
    records = generate(CONFIG).records
    # Two plain outages in the scored week, so there are incidents to page whatever the detector
    # learnt from three weeks.
    acme = records["tenant"] == "acme"
    for start in ("2026-10-07 10:00", "2026-10-09 15:00"):
        hour = pd.Timestamp(start, tz="UTC")
        spike = (
            acme
            & (records["service"] == "api")
            & (records["metric"] == "latency_p95_ms")
            & (records["ts"] >= hour)
            & (records["ts"] < hour + pd.Timedelta(hours=1))
        )
        records.loc[spike, "value"] = records.loc[spike, "value"] * 20 + 100
    history, live = root / "history", root / "live"
    for folder, rows in (
        (history, records[records["ts"] < LIVE_FROM]),
        (live, records[records["ts"] >= LIVE_FROM]),
    ):
        folder.mkdir()
        for tenant, frame in rows.groupby("tenant"):
            frame.reset_index(drop=True).to_parquet(folder / f"{tenant}.parquet", index=False)
    home.mkdir()
    (home / "alerting.yaml").write_text(POLICY)
    env = _env(home, "http://127.0.0.1:9/unused")
    _run(env, "ingest", str(history))
    _run(env, "train", "acme")
    _run(env, "score", "2026-10-05", "2026-10-11", "acme")
    _run(env, "alert", "2026-10-05", "2026-10-11", "acme")
    return root


def _home(base: Path, name: str) -> Path:
    home = base / name
    shutil.copytree(base / "base", home)
    return home


def _steps(root: Path) -> list[tuple[str, ...]]:
    return [
        ("ingest", str(root / "live" / "acme.parquet")),
        ("ingest", str(root / "live" / "globex.parquet")),
        ("score", "2026-10-12", "2026-10-18", "acme"),
        ("deliver",),
    ]


def test_killed_at_random_then_run_again_every_table_equals_a_clean_run(base):
    clean_hook = RecordingServer(WebhookChecker(SECRET))
    chaos_hook = RecordingServer(WebhookChecker(SECRET))
    try:
        clean = _home(base, "clean")
        env = _env(clean, clean_hook.url)
        seconds = [_run(env, *step) for step in _steps(base)]
        _drain(env, clean)

        chaos = _home(base, "chaos")
        env = _env(chaos, chaos_hook.url)
        rng = random.Random(SEED)
        started = time.monotonic()
        running = []
        # Each process dies somewhere inside the work it would do alone (it is slower with the
        # others running at once), whatever the machine's speed.
        for step, alone in zip(_steps(base), seconds, strict=True):
            process = subprocess.Popen(
                _command(*step),
                env=env,
                cwd=Path(__file__).resolve().parents[2],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            running.append((step, process, rng.uniform(0.1, 0.9) * alone))
        killed = []
        for step, process, kill_at in running:
            try:
                process.wait(timeout=max(0.0, started + kill_at - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()
                killed.append((step[0], round(kill_at, 1)))
        print(f"alone: {[round(s, 1) for s in seconds]} s; killed at: {killed}")
        assert killed, "no process was still running at its kill time"
        # Everything again, as an operator (or the daemon's retries) would; the delivery's
        # leases are 2 s, so rows a killed delivery held are due again.
        time.sleep(2.5)
        for step in _steps(base):
            _run(env, *step)
        _drain(env, chaos)

        expected, got = _tables(clean), _tables(chaos)
        for name in TABLES:
            pd.testing.assert_frame_equal(got[name], expected[name], obj=name)
        sent = set(expected["notifications"].query("status == 'sent'")["idempotency_key"])
        assert sent, "the clean run sent nothing: the delivery step proves nothing"
        assert set(clean_hook.delivered) == sent
        # Every page the clean run delivered reached the receiver once by its key, none lost.
        assert set(chaos_hook.delivered) == sent
        assert not chaos_hook.errors and not clean_hook.errors
    finally:
        clean_hook.close()
        chaos_hook.close()
