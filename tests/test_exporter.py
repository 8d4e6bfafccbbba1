"""``monitoring-pipelines exporter`` scraped by a real Prometheus and queried back with PromQL.

One small real state for the module: a day file of one tenant ingested through the CLI (parse
rejects, rows quarantined by the quality gate, a day blocked by a blocking check and the failed
run that comes with it), half a day of scores, incidents, notifications pending, dead and sent,
and a champion in a real MLflow store. Every figure Prometheus answers must equal what the
warehouse, the registry and the Dagster instance hold.
"""

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from tests.alerting.servers import sample_incident, sample_notification
from tests.prometheus_server import (
    config,
    free_port,
    prometheus_binary,
    prometheus_server,
    query,
    scrape_job,
)

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus-rules.yml"
DAY, BLOCKED_DAY = "2026-11-01", "2026-11-02"
SCORED_UNTIL = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)  # scores end 11:55, the grid 23:55
SENT_AFTER = 42.0  # seconds from due to sent of the one notification delivered
# The only labels a series may carry: none names a series (service, metric) or anything unbounded.
ALLOWED_LABELS = {
    "tenant",
    "stage",
    "field",
    "severity",
    "kind",
    "receiver",
    "dagster_job",
    "source",
    "le",
}


def _day_file(path: Path) -> None:
    """Two days of one series: the first with one value out of range (quarantined, the day
    passes), the second with one in seven (blocked); three rows no parser accepts."""
    lines = ["tenant,service,metric,ts,value"]
    for day, bad in ((DAY, {100: 150}), (BLOCKED_DAY, dict.fromkeys(range(0, 288, 7), -5))):
        lines += [
            f"acme,api,cpu_percent,{day}T{i // 12:02d}:{i % 12 * 5:02d}:00Z,{value}"
            for i, value in ((i, bad.get(i, 40 + i % 9)) for i in range(288))
        ]
    lines += [
        f"acme,api,cpu_percent,{DAY}T00:00:00Z,abc",
        "acme,api,cpu_percent,yesterday,1",
        f"bad tenant!,api,cpu_percent,{DAY}T00:00:00Z,1",
    ]
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(lines) + "\n")


def _scores(warehouse) -> None:
    """Half of the first day scored, written as scoring writes them."""
    from monitoring_pipelines.ml.catalogue import CATALOGUE

    day = datetime(2026, 11, 1, tzinfo=UTC)
    grid = warehouse.read_records("clean_metrics", tenant="acme", start=day, end=SCORED_UNTIL)
    frame = grid[["tenant", "service", "metric", "ts", "value"]].assign(
        ensemble_score=0.1, threshold=0.7, is_anomaly=False, model_versions="{}", run_id="r"
    )
    for row in CATALOGUE.values():
        frame[row.score_column] = 0.1
    warehouse.replace_partition("anomaly_scores", "acme", day, SCORED_UNTIL, frame)


def _alerting(warehouse) -> float:
    from monitoring_pipelines.alerting import leases, outbox, store, types

    store.upsert_incidents(
        warehouse,
        [
            sample_incident(fingerprint="a" * 16, severity="high"),
            sample_incident(fingerprint="b" * 16, severity="low", status="acknowledged"),
            sample_incident(fingerprint="c" * 16, severity="critical", status="resolved"),
            sample_incident(fingerprint="d" * 16, tenant="globex", severity="high"),
        ],
    )
    t0 = datetime.now(UTC) - timedelta(hours=1)
    outbox.enqueue(
        warehouse,
        [sample_notification("files", key=k, fingerprint="a" * 16) for k in ("k1", "k2", "k3")],
        now=t0,
    )
    claimed = {c.key for c in leases.claim(warehouse, t0, 60, 2, "tok", set())}
    assert claimed == {"k1", "k2"}
    assert leases.finish(
        warehouse, "k1", "tok", status=types.SENT, sent_at=t0 + timedelta(seconds=SENT_AFTER)
    )
    assert leases.finish(warehouse, "k2", "tok", status=types.DEAD, last_error="HTTP 500")
    return t0.timestamp()


def _models(tracking_uri: str) -> dict[int, float]:
    """Two versions of the z-score model of acme, the first champion; and a model that is not
    the pipeline's. Returns the versions' creation times (epoch seconds)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    client.create_registered_model("anomaly-zscore-acme")
    client.create_registered_model("someone-elses-model")
    created = {}
    for version in (1, 2):
        mv = client.create_model_version("anomaly-zscore-acme", source=f"/nowhere/v{version}")
        created[int(mv.version)] = int(mv.creation_timestamp) / 1000
    client.set_registered_model_alias("anomaly-zscore-acme", "champion", "1")
    return created


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    """The home with the state above, and the figures the sources hold, read directly."""
    home = tmp_path_factory.mktemp("exporter") / "home"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MONITORING_", "MLFLOW_"))},
        "MONITORING_HOME": str(home),
        "MONITORING_START_DATE": "2026-10-01",
        "MONITORING_TENANTS": "acme",
    }
    env.pop("DAGSTER_HOME", None)
    drop = home.parent / "in"
    _day_file(drop / "acme.csv")
    out = subprocess.run(
        [sys.executable, "-m", "monitoring_pipelines.cli", "ingest", str(drop), "--workers", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "blocked: 2026-11-02|acme (values_in_range)" in out.stdout, out.stdout + out.stderr
    with pytest.MonkeyPatch.context() as mp:
        # What earlier tests of this worker left in the environment (a DAGSTER_HOME, MLflow
        # variables) must not point the readers at another home.
        for key in list(os.environ):
            if key.startswith(("MONITORING_", "MLFLOW_", "DAGSTER_")) and key not in env:
                mp.delenv(key)
        for key, value in env.items():
            mp.setenv(key, value)
        yield {"env": env, "home": home, **_build(home)}


def _build(home: Path) -> dict:
    import dagster as dg

    from monitoring_pipelines.settings import load_settings
    from monitoring_pipelines.warehouse import Warehouse

    settings = load_settings()
    warehouse = Warehouse(settings.warehouse_url)
    _scores(warehouse)
    outbox_since = _alerting(warehouse)
    versions = _models(settings.mlflow_tracking_uri)
    with warehouse.engine.connect() as conn:

        def scalar(sql: str):
            return conn.execute(sa.text(sql)).scalar()

        stages = "select stage, count(*) from quarantine group by stage"
        held = {
            "quarantine_acme": scalar("select count(*) from quarantine where tenant = 'acme'"),
            "quarantine_by_stage": dict(conn.execute(sa.text(stages)).all()),
            "accepted": scalar("select count(*) from metrics where tenant = 'acme'"),
            "newest": pd.Timestamp(scalar("select max(ts) from metrics"), tz="UTC").timestamp(),
        }
    warehouse.dispose()
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        failed = instance.get_runs_count(
            dg.RunsFilter(job_name="ingest_job", statuses=[dg.DagsterRunStatus.FAILURE])
        )
    return {
        **held,
        "versions": versions,
        "failed_ingest_runs": failed,
        "outbox_since": outbox_since,
    }


@pytest.fixture(scope="module")
def exporter_url(state):
    port = free_port()
    log = (state["home"].parent / "exporter.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "monitoring_pipelines.cli", "exporter", "--port", str(port)],
        env=state["env"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while "/metrics" not in (state["home"].parent / "exporter.log").read_text():
            assert process.poll() is None, (state["home"].parent / "exporter.log").read_text()
            assert time.monotonic() < deadline, "the exporter did not start within 120 s"
            time.sleep(0.25)
        yield url
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0  # SIGTERM stops it cleanly
        log.close()


@pytest.fixture(scope="module")
def prometheus(exporter_url, tmp_path_factory):
    target = exporter_url.removeprefix("http://")
    workdir = tmp_path_factory.mktemp("prometheus-exporter")

    def scraped(url: str) -> bool:
        return bool(query(url, 'monitoring_pipelines_exporter_source_up{source="warehouse"}'))

    configuration = config([scrape_job("pipeline", target)], rule_files=(RULES,))
    with prometheus_server(workdir, free_port(), configuration, scraped) as url:
        yield url


def _answer(url: str, promql: str) -> list[dict]:
    """The query's samples; a scrape that missed Prometheus' 1 s timeout on a busy machine
    leaves its series stale for a moment, so an empty answer is asked again for a while."""
    deadline = time.monotonic() + 20
    while not (result := query(url, promql)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return result


def _value(url: str, promql: str) -> float:
    [sample] = _answer(url, promql)
    return float(sample["value"][1])


def _by(url: str, promql: str, label: str) -> dict[str, float]:
    return {r["metric"][label]: float(r["value"][1]) for r in _answer(url, promql)}


@pytest.mark.slow
def test_prometheus_reads_back_the_rows_partitions_and_freshness(prometheus, state):
    assert (
        _value(prometheus, 'sum(monitoring_pipelines_quarantined_rows{tenant="acme"})')
        == (state["quarantine_acme"])
    )
    assert _by(prometheus, "sum by (stage) (monitoring_pipelines_quarantined_rows)", "stage") == {
        stage: float(n) for stage, n in state["quarantine_by_stage"].items()
    }
    # The row naming a tenant no one configured is counted, under a bounded label.
    assert _value(prometheus, 'monitoring_pipelines_quarantined_rows{tenant="unknown"}') == 1
    assert _by(
        prometheus, 'monitoring_pipelines_quarantined_rows{tenant="acme",stage="parse"}', "field"
    ) == {"ts": 1, "value": 1}
    accepted = _value(prometheus, 'monitoring_pipelines_accepted_rows{tenant="acme"}')
    assert accepted == state["accepted"]
    # Rows in = accepted + quarantined, as `monitoring-pipelines ingest` prints them.
    ingested = _value(prometheus, 'monitoring_pipelines_ingested_rows{tenant="acme"}')
    assert ingested == state["accepted"] + state["quarantine_acme"]
    assert _value(prometheus, 'monitoring_pipelines_blocked_partitions{tenant="acme"}') == 1
    newest = 'monitoring_pipelines_newest_accepted_point_timestamp_seconds{tenant="acme"}'
    assert _value(prometheus, newest) == state["newest"]
    # Freshness is computed at scrape time: the scrape's time minus the newest point.
    freshness = 'monitoring_pipelines_data_freshness_seconds{tenant="acme"}'
    assert abs(_value(prometheus, f"{freshness} - (timestamp({freshness}) - {newest})")) < 2
    # Grid to 23:55, scores to 11:55.
    assert (
        _value(prometheus, 'monitoring_pipelines_scoring_lag_seconds{tenant="acme"}') == 12 * 3600
    )


@pytest.mark.slow
def test_prometheus_reads_back_incidents_and_notifications(prometheus, state):
    severities = _by(
        prometheus, "sum by (severity) (monitoring_pipelines_open_incidents)", "severity"
    )
    assert severities == {"high": 2, "low": 1}
    assert _by(prometheus, "sum by (tenant) (monitoring_pipelines_open_incidents)", "tenant") == {
        "acme": 2,
        "globex": 1,
    }
    assert _value(prometheus, 'monitoring_pipelines_outbox_depth{receiver="files"}') == 1
    assert _value(prometheus, 'monitoring_pipelines_dead_notifications{receiver="files"}') == 1
    age = _value(prometheus, "monitoring_pipelines_oldest_undelivered_notification_age_seconds")
    assert 3600 <= age <= time.time() - state["outbox_since"] + 2
    delivery = "monitoring_pipelines_notification_delivery_seconds"
    assert _value(prometheus, f"{delivery}_count") == 1
    assert _value(prometheus, f"{delivery}_sum") == pytest.approx(SENT_AFTER, abs=1e-3)
    assert _by(prometheus, f'{delivery}_bucket{{le=~"30.0|60.0|\\\\+Inf"}}', "le") == {
        "30.0": 0,
        "60.0": 1,
        "+Inf": 1,
    }


@pytest.mark.slow
def test_prometheus_reads_back_champions_retrains_and_failed_runs(prometheus, state):
    labels = '{tenant="acme",kind="zscore"}'
    assert _value(prometheus, f"monitoring_pipelines_champion_version{labels}") == 1
    created = state["versions"]
    assert _value(
        prometheus, f"monitoring_pipelines_champion_created_timestamp_seconds{labels}"
    ) == pytest.approx(created[1], abs=1e-3)
    assert _value(
        prometheus, f"monitoring_pipelines_last_retrain_timestamp_seconds{labels}"
    ) == pytest.approx(created[2], abs=1e-3)
    age = _value(prometheus, f"monitoring_pipelines_champion_age_seconds{labels}")
    assert 0 < age < time.time() - created[1] + 5
    # Only the pipeline's registered models are read.
    assert len(_answer(prometheus, "monitoring_pipelines_champion_version")) == 1
    assert state["failed_ingest_runs"] >= 1
    failed = 'monitoring_pipelines_failed_runs_total{dagster_job="ingest_job"}'
    assert _value(prometheus, failed) == state["failed_ingest_runs"]
    assert _by(prometheus, "monitoring_pipelines_exporter_source_up", "source") == {
        "warehouse": 1,
        "mlflow": 1,
        "dagster": 1,
    }


@pytest.mark.slow
def test_the_alert_rules_are_valid_and_fire_on_this_state(prometheus):
    promtool = prometheus_binary("promtool")
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    deadline = time.monotonic() + 30
    expected = {
        ("PipelineDataStale", "acme"),
        ("PipelineScoringBehind", "acme"),
        ("PipelinePartitionsBlocked", "acme"),
        ("PipelineDeadNotifications", ""),
    }
    while True:
        active = {
            (r["metric"]["alertname"], r["metric"].get("tenant", ""))
            for r in query(prometheus, "ALERTS")
        }
        if expected <= active or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert expected <= active
    # Every source is read, so none is reported down.
    assert not any(name == "PipelineHealthSourceDown" for name, _ in active)
    # Nothing failed within the last hour of Prometheus' history (it started after the run).
    assert not any(name == "PipelineRunsFailing" for name, _ in active)


@pytest.mark.slow
def test_exposition_parses_has_no_series_labels_and_survives_mlflow_down(state, caplog):
    """In process, on the same state, with the MLflow server gone: the registry's figures are
    missing and its source reads as down, everything else is served, and the log line names
    the source without the password of its URL."""
    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from monitoring_pipelines.health import PipelineHealthCollector
    from monitoring_pipelines.settings import load_settings

    dead = f"http://exporter:s3cret@127.0.0.1:{free_port()}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", dead)
        mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        mp.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
        collector = PipelineHealthCollector(load_settings())
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        started = time.monotonic()
        text = generate_latest(registry).decode()
        took = time.monotonic() - started
        collector.close()
    assert took < 10  # inside Prometheus' default scrape timeout
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = [s for f in families.values() for s in f.samples]
    assert samples and all(f.name.startswith("monitoring_pipelines_") for f in families.values())
    assert {label for s in samples for label in s.labels} <= ALLOWED_LABELS
    up = {
        s.labels["source"]: s.value
        for s in families["monitoring_pipelines_exporter_source_up"].samples
    }
    assert up == {"warehouse": 1, "mlflow": 0, "dagster": 1}
    assert "monitoring_pipelines_champion_version" not in families
    assert families["monitoring_pipelines_blocked_partitions"].samples[0].value == 1
    assert families["monitoring_pipelines_failed_runs"].type == "counter"
    assert families["monitoring_pipelines_notification_delivery_seconds"].type == "histogram"
    [line] = [r.getMessage() for r in caplog.records if r.name.startswith("monitoring_pipelines")]
    # The source's address with its credentials masked: ours masks the password; a library's
    # log filter loaded by an earlier test in the same process may mask the whole user part.
    assert line.startswith(
        ("mlflow (http://exporter:***@127.0.0.1:", "mlflow (http://***@127.0.0.1:")
    )
    assert "s3cret" not in line
    assert "\n" not in line


@pytest.mark.parametrize("url", ["postgresql://u:s3cret@db:notaport/x", "nosuch://u:s3cret@db/x"])
def test_a_bad_warehouse_url_is_one_line_without_its_password(home, url):
    out = subprocess.run(
        [sys.executable, "-m", "monitoring_pipelines.cli", "exporter", "--port", "0"],
        env={**os.environ, "MONITORING_WAREHOUSE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("monitoring-pipelines: error: MONITORING_WAREHOUSE_URL: ")
    assert "s3cret" not in out.stdout + out.stderr
