"""Alerting through Dagster: the alerts asset on a real instance, the delivery job, the three
sensors evaluated as the daemon would, and the `alerts` command."""

import contextlib
import json
from datetime import UTC, datetime

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from monitoring_pipelines import cli
from monitoring_pipelines.alerting import outbox, store, types
from monitoring_pipelines.alerting.policy_file import default_policy_text
from monitoring_pipelines.definitions import build_defs
from monitoring_pipelines.partitions import TENANTS, tenant_day_key
from monitoring_pipelines.settings import load_settings
from monitoring_pipelines.warehouse import Warehouse

DAY1, DAY2 = "2026-10-01", "2026-10-02"
SERIES = [
    ("api", "error_rate"),
    ("api", "latency_p95_ms"),
    ("playback", "buffering_ratio"),
    ("recommendations", "cpu_percent"),
]
HOT = [
    # api: two metrics move together for an hour: one incident.
    ("api", "error_rate", "2026-10-01 10:00", "2026-10-01 11:00"),
    ("api", "latency_p95_ms", "2026-10-01 10:05", "2026-10-01 11:00"),
    # playback: one 5-minute blip, shorter than the minimum duration: no incident.
    ("playback", "buffering_ratio", "2026-10-01 14:00", "2026-10-01 14:00"),
    # recommendations: still anomalous at midnight, over by 01:00.
    ("recommendations", "cpu_percent", "2026-10-01 23:00", "2026-10-02 01:00"),
]


def _scores(day: str) -> pd.DataFrame:
    ts = pd.date_range(day, periods=288, freq="5min", tz="UTC")
    rng = np.random.default_rng(7)
    parts = []
    for service, metric in SERIES:
        score = rng.uniform(0.05, 0.3, len(ts))
        for s, m, start, end in HOT:
            if (s, m) == (service, metric):
                hot = (ts >= pd.Timestamp(start, tz="UTC")) & (ts <= pd.Timestamp(end, tz="UTC"))
                score[hot] = 0.97
        parts.append(
            pd.DataFrame(
                {
                    "tenant": "acme",
                    "service": service,
                    "metric": metric,
                    "ts": ts,
                    "value": 1.0 + score,
                    "ensemble_score": score,
                    "threshold": 0.6,
                    "is_anomaly": score >= 0.6,
                    "model_versions": json.dumps({"isolation_forest": 3, "zscore": 2}),
                    "run_id": f"scoring-run-{day}",
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


@pytest.fixture
def env(home):
    stack = contextlib.ExitStack()
    settings = load_settings()
    settings.ensure_dirs()
    # The asset pages against the wall clock and these days are fixed: a page lookback longer
    # than the time since keeps their incidents live (paged); history has tests of its own.
    live = default_policy_text().replace("page_lookback: 2h", "page_lookback: 36500d")
    (settings.home / "alerting.yaml").write_text(live, encoding="utf-8")
    defs = build_defs(settings)
    instance = stack.enter_context(dg.instance_for_test())
    instance.add_dynamic_partitions(TENANTS, ["acme"])
    warehouse = Warehouse(settings.warehouse_url)
    for day in (DAY1, DAY2):
        start = pd.Timestamp(day, tz="UTC")
        warehouse.replace_partition(
            "anomaly_scores", "acme", start, start + pd.Timedelta(days=1), _scores(day)
        )
    yield {"settings": settings, "defs": defs, "instance": instance, "warehouse": warehouse}
    warehouse.dispose()
    stack.close()


def _alerts(env, day, raise_on_error=True):
    return (
        env["defs"]
        .resolve_job_def("alerting_job")
        .execute_in_process(
            partition_key=tenant_day_key(day, "acme"),
            instance=env["instance"],
            raise_on_error=raise_on_error,
        )
    )


def _deliver(env):
    job = env["defs"].resolve_job_def("delivery_job")
    return job.execute_in_process(instance=env["instance"])


def _file_lines(env) -> list[dict]:
    path = env["settings"].home / "notifications" / "notifications.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_day_of_scores_raises_grouped_incidents_once_however_often_it_is_rerun(env):
    wh = env["warehouse"]
    result = _alerts(env, DAY1)
    meta = result.asset_materializations_for_node("alerts")[0].metadata
    assert meta["incidents"].value == 2
    incidents = {s.incident.service: s.incident for s in store.read_incidents(wh)}
    assert set(incidents) == {"api", "recommendations"}
    api = incidents["api"]
    assert {m.metric for m in api.metrics} == {"error_rate", "latency_p95_ms"}
    assert api.status == types.RESOLVED
    assert incidents["recommendations"].status == types.FIRING
    assert api.run_id == f"scoring-run-{DAY1}"
    assert api.model_versions == {"isolation_forest": 3, "zscore": 2}
    queued = outbox.read_notifications(wh, limit=None)
    assert queued and all(n["receiver"] == "files" for n in queued)

    _alerts(env, DAY1)
    assert len(store.read_incidents(wh)) == 2
    assert len(outbox.read_notifications(wh, limit=None)) == len(queued)


def test_an_incident_over_midnight_keeps_its_fingerprint_and_resolves_the_next_day(env):
    wh = env["warehouse"]
    _alerts(env, DAY1)
    firing = store.read_incidents(wh, status=types.FIRING)
    assert [s.incident.service for s in firing] == ["recommendations"]
    _alerts(env, DAY2)
    after = store.read_incidents(wh, fingerprints=[firing[0].fingerprint])[0].incident
    assert after.status == types.RESOLVED
    assert after.started_at == firing[0].incident.started_at
    assert len(store.read_incidents(wh)) == 2
    events = {
        n["event"]
        for n in outbox.read_notifications(wh, fingerprint=firing[0].fingerprint, limit=None)
    }
    assert events == {types.TRIGGER, types.RESOLVE}


def test_a_ranged_run_raises_its_days_in_order_as_runs_of_one_day_would(env):
    """Both days in one run (as a backfill or the demo runs them): the incident over midnight
    still opens on the first day and resolves on the second, and each day keeps its own
    materialization and counts."""
    wh = env["warehouse"]
    result = (
        env["defs"]
        .resolve_job_def("alerting_job")
        .execute_in_process(
            instance=env["instance"],
            tags={
                "dagster/asset_partition_range_start": f"{DAY1}|acme",
                "dagster/asset_partition_range_end": f"{DAY2}|acme",
            },
        )
    )
    by_day = {
        str(m.partition): m.metadata["incidents"].value
        for m in result.asset_materializations_for_node("alerts")
    }
    assert by_day == {f"{DAY1}|acme": 2, f"{DAY2}|acme": 1}
    incidents = store.read_incidents(wh)
    assert len(incidents) == 2
    assert all(s.incident.status == types.RESOLVED for s in incidents)


def test_delivery_writes_each_notification_once_to_the_file_receiver(env):
    _alerts(env, DAY1)
    _alerts(env, DAY2)
    assert _deliver(env).success
    lines = _file_lines(env)
    keys = [line["idempotency_key"] for line in lines]
    assert len(keys) == len(set(keys)) == len(outbox.read_notifications(env["warehouse"]))
    assert _deliver(env).success
    assert len(_file_lines(env)) == len(lines)
    sent = outbox.read_notifications(env["warehouse"], status=outbox.SENT, limit=None)
    assert len(sent) == len(lines)


def test_outbox_sensor_starts_delivery_only_when_something_is_due(env):
    instance, defs = env["instance"], env["defs"]
    sensor = defs.resolve_sensor_def("outbox_sensor")

    def tick():
        return sensor(dg.build_sensor_context(instance=instance, resources=defs.resources))

    assert isinstance(tick(), dg.SkipReason)
    _alerts(env, DAY1)
    assert isinstance(tick(), dg.RunRequest)
    _deliver(env)
    assert isinstance(tick(), dg.SkipReason)


def _failure_context(env, run_result):
    instance = env["instance"]
    run = instance.get_run_by_id(run_result.run_id)
    failure = next(
        e
        for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        if e.dagster_event
    ).dagster_event
    return dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert_sensor",
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=run,
        resources=env["defs"].resources,
    ).for_run_failure()


def test_a_failed_run_pages_operations_with_its_error(env, monkeypatch):
    bad = env["settings"].home / "alerting.yaml"
    bad.write_text("route:\n  receiver: nobody\n")
    failed = _alerts(env, DAY1, raise_on_error=False)
    assert not failed.success
    sensor = env["defs"].resolve_sensor_def("run_failure_alert_sensor")
    bad.unlink()
    sensor(_failure_context(env, failed))
    raised = store.read_incidents(env["warehouse"])
    assert [s.incident.kind for s in raised] == [types.PIPELINE_FAILURE]
    incident = raised[0].incident
    assert incident.service == "alerting_job" and incident.run_id == failed.run_id
    assert "alerting.yaml" in incident.summary
    note = outbox.read_notifications(env["warehouse"], limit=None)[0]
    assert note["receiver"] == "files" and note["status"] == outbox.PENDING


def test_a_failed_backfill_run_names_its_range_of_tenant_days(env):
    from monitoring_pipelines.sensors import failure_incidents

    run = dg.DagsterRun(
        job_name="scoring_job",
        run_id="r-range",
        tags={
            "dagster/asset_partition_range_start": "2026-10-01|acme",
            "dagster/asset_partition_range_end": "2026-10-31|acme",
        },
    )
    [incident] = failure_incidents(env["instance"], run, "MlflowException: no champion")
    assert incident.kind == types.PIPELINE_FAILURE
    assert incident.partition_key == "2026-10-01|acme...2026-10-31|acme"
    assert incident.summary == (
        "scoring_job failed for partition 2026-10-01|acme...2026-10-31|acme: "
        "MlflowException: no champion"
    )


def test_alerts_command_lists_acknowledges_and_records_false_positives(env, capsys):
    _alerts(env, DAY1)
    firing = store.read_incidents(env["warehouse"], status=types.FIRING)[0]
    assert cli.main(["alerts", "list"]) == 0
    out = capsys.readouterr().out
    assert firing.fingerprint[:12] in out and "recommendations" in out
    assert cli.main(["alerts", "ack", firing.fingerprint[:8], "--by", "alice"]) == 0
    assert "ack by alice" in capsys.readouterr().out
    assert cli.main(["alerts", "false-positive", firing.fingerprint, "--note", "load test"]) == 0
    capsys.readouterr()
    stored = store.read_incidents(env["warehouse"], fingerprints=[firing.fingerprint])[0]
    assert stored.incident.status == types.ACKNOWLEDGED
    assert stored.feedback == store.FALSE_POSITIVE and stored.feedback_note == "load test"
    assert cli.main(["alerts", "show", "nothere"]) == 2
    assert "nothere" in capsys.readouterr().err


def test_a_partition_blocked_by_a_quality_check_pages_the_data_owner_not_the_tenant(env):
    from monitoring_pipelines.assets.ingestion import clean_metrics, raw_metrics
    from monitoring_pipelines.ingest import stage_file
    from monitoring_pipelines.sources.demo import DemoConfig, generate, write_demo

    settings, wh = env["settings"], env["warehouse"]
    (settings.home / "alerting.yaml").write_text(
        "receivers:\n"
        "  oncall: {type: file, path: oncall}\n"
        "  data-team: {type: file, path: data-team}\n"
        "route: {receiver: oncall}\n"
        "data_owner: data-team\n"
        "operations: oncall\n"
    )
    data = generate(DemoConfig(tenants=("acme",), days=2, broken_partition=False))
    write_demo(data, settings.drop_dir, fmt="parquet")
    stage_file(
        wh,
        settings.drop_dir / "acme.parquet",
        root=settings.drop_dir,
        earliest=datetime(2026, 9, 1, tzinfo=UTC),
    )
    day = data.records["ts"].min().strftime("%Y-%m-%d")
    landed = wh.read_records("landing", source="acme.parquet")
    garbage = landed[landed["ts"].dt.strftime("%Y-%m-%d") == day].copy()
    garbage["value"] = -5.0  # every row out of physical range
    wh.replace_source("landing", "acme.parquet", garbage)
    failed = dg.materialize(
        [raw_metrics, clean_metrics],
        partition_key=tenant_day_key(day, "acme"),
        instance=env["instance"],
        resources=env["defs"].resources,
        raise_on_error=False,
    )
    assert not failed.success
    env["defs"].resolve_sensor_def("run_failure_alert_sensor")(_failure_context(env, failed))
    raised = [s.incident for s in store.read_incidents(wh)]
    assert {(i.kind, i.tenant, i.partition_key) for i in raised} == {
        (types.DATA_QUALITY, "acme", f"{day}|acme")
    }
    assert "values_in_range" in {i.labels.get("check") for i in raised}
    notes = outbox.read_notifications(wh, limit=None)
    assert len(notes) == len(raised) and {n["receiver"] for n in notes} == {"data-team"}
    # Re-running the same blocked partition updates the incidents instead of paging again.
    env["defs"].resolve_sensor_def("run_failure_alert_sensor")(_failure_context(env, failed))
    assert len(store.read_incidents(wh)) == len(raised)
    assert len(outbox.read_notifications(wh, limit=None)) == len(notes)


def _default_policy(env) -> None:
    """Back to the embedded default policy (2h page lookback, receivers from the environment)."""
    (env["settings"].home / "alerting.yaml").unlink()


def test_receivers_configured_in_the_environment_get_one_summary_of_history(env, monkeypatch):
    from tests.alerting.servers import RecordingServer, WebhookChecker, check_slack

    _default_policy(env)
    slack, hook = RecordingServer(check_slack), RecordingServer(WebhookChecker("s3cret-signing"))
    try:
        monkeypatch.setenv("MONITORING_SLACK_WEBHOOK_URL", slack.url)
        monkeypatch.setenv("MONITORING_WEBHOOK_URL", hook.url)
        monkeypatch.setenv("MONITORING_WEBHOOK_SECRET", "s3cret-signing")
        # Two days of 2026-10 alerted in 2026-12: history, run day by day, then delivered.
        _alerts(env, DAY1)
        _alerts(env, DAY2)
        assert _deliver(env).success
        lines = _file_lines(env)
        assert [line["event"] for line in lines] == [types.DIGEST]
        assert lines[0]["digest"]["count"] == 2
        for server in (slack, hook):
            assert server.errors == []
            assert len(server.delivered) == 1
        [body] = [r.json for r in hook.requests]
        assert body["event"] == types.DIGEST and body["digest"]["tenant"] == "acme"
        assert body["digest"]["by_severity"] == lines[0]["digest"]["by_severity"]
        notes = outbox.read_notifications(env["warehouse"], receiver="slack", limit=None)
        held = [n for n in notes if n["event"] == types.TRIGGER]
        assert len(held) == 2 and {n["status"] for n in held} == {outbox.SUPPRESSED}
        [digest] = [n for n in notes if n["event"] == types.DIGEST]
        assert digest["status"] == outbox.SENT
        summarised = f"history, summarised in {digest['idempotency_key']}"
        assert {n["reason"] for n in held} == {summarised}
        # Re-running the days and delivering again sends nothing more.
        _alerts(env, DAY1)
        _alerts(env, DAY2)
        assert _deliver(env).success
        assert len(_file_lines(env)) == 1 and len(slack.delivered) == len(hook.delivered) == 1
    finally:
        slack.close()
        hook.close()


def test_the_delivery_job_logs_and_metadata_carry_no_secret(env, monkeypatch):
    from tests.alerting.servers import RecordingServer, sample_notification

    password, token, signing = "hookP4ss-dagster-1", "tok3nDAGSTER12345678", "whsec-dagster-99"
    _default_policy(env)
    server = RecordingServer()
    try:
        url = server.url.replace("http://", f"http://ops:{password}@") + f"/{token}"
        monkeypatch.setenv("MONITORING_WEBHOOK_URL", url)
        monkeypatch.setenv("MONITORING_WEBHOOK_SECRET", signing)
        server.script.append((500, {}, f"bad {password} {token} {signing} at {{path}}".encode()))
        outbox.enqueue(env["warehouse"], [sample_notification("webhook", key="k-webhook")])
        result = _deliver(env)
        assert result.success and result.output_for_node("deliver_notifications_op") == 0
        events = env["instance"].all_logs(result.run_id)
        text = " ".join(repr(event) for event in events)
        assert "HTTP 500: bad ***" in text  # the warning is there, redacted
        for secret in (password, token, signing, url):
            assert secret not in text
        [note] = outbox.read_notifications(env["warehouse"])
        assert note["status"] == outbox.PENDING and password not in note["last_error"]
    finally:
        server.close()
