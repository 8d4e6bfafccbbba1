"""A page is dead only when its receiver refused it: missing configuration, network errors and
5xx are retried for the policy's ``give_up_after``; a receiver failing longer than
``receiver_failing_after`` tells operations once; ``alerts retry`` re-queues dead pages."""

import json
import random
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from monitoring_pipelines import cli
from monitoring_pipelines.alerting import dispatcher, outbox, receivers, service, store, types
from monitoring_pipelines.alerting.policy import PolicyError, loads_policy
from monitoring_pipelines.settings import load_settings
from monitoring_pipelines.warehouse import Warehouse, notifications
from tests.alerting.servers import (
    WebhookChecker,
    closed_port_url,
    sample_incident,
    sample_notification,
)
from tests.alerting.test_outbox import batch, rows

T0 = datetime(2026, 10, 5, 15, 0, tzinfo=UTC)
SECRET = "whsec-dead-letter-secret"


@pytest.fixture
def home_warehouse(home):
    settings = load_settings()
    settings.ensure_dirs()
    wh = Warehouse(settings.warehouse_url)
    yield wh
    wh.dispose()


def _due_now(wh) -> None:
    """Time passes: every pending row's backoff is over."""
    with wh.engine.begin() as conn:
        conn.execute(
            notifications.update()
            .where(notifications.c.status == outbox.PENDING)
            .values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
        )


def test_a_delivery_without_the_receivers_environment_kills_no_page(
    home_warehouse, server, monkeypatch, capsys
):
    wh = home_warehouse
    monkeypatch.delenv("MONITORING_WEBHOOK_URL", raising=False)
    monkeypatch.setenv("MONITORING_WEBHOOK_SECRET", SECRET)
    queued = batch("webhook", 10)
    outbox.enqueue(wh, queued)

    assert cli.main(["alerts", "deliver"]) == 0
    out = capsys.readouterr().out
    assert "dead 0" in out and "webhook: receiver 'webhook' is not configured" in out
    stored = rows(wh)
    assert {r["status"] for r in stored.values()} == {outbox.PENDING}
    assert all("'webhook' is not configured" in r["reason"] for r in stored.values())

    srv = server(WebhookChecker(SECRET))
    monkeypatch.setenv("MONITORING_WEBHOOK_URL", srv.url)
    _due_now(wh)
    assert cli.main(["alerts", "deliver"]) == 0
    assert "delivered 10" in capsys.readouterr().out
    assert srv.errors == []
    assert sorted(srv.delivered) == sorted(n.idempotency_key for n in queued)
    assert len(srv.requests) == 10  # each exactly once
    stored = rows(wh)
    assert {r["status"] for r in stored.values()} == {outbox.SENT}
    assert all(r["reason"] is None for r in stored.values())


def test_an_unset_secret_is_retried_not_dead(warehouse, server, monkeypatch):
    srv = server(WebhookChecker(SECRET))
    monkeypatch.delenv("TEST_HOOK_SECRET", raising=False)
    hook = receivers.receiver_from_spec(
        "hook", {"type": "webhook", "url": srv.url, "secret_env": "TEST_HOOK_SECRET"}
    )
    outbox.enqueue(warehouse, batch("hook", 2), now=T0)
    report = dispatcher.dispatch(warehouse, {"hook": hook}, now=T0)
    assert (report.dead, report.retried, report.deferred) == (0, 1, 1)
    for row in rows(warehouse).values():
        assert row["status"] == outbox.PENDING
        assert "environment variable TEST_HOOK_SECRET is not set" in row["reason"]
    monkeypatch.setenv("TEST_HOOK_SECRET", SECRET)
    report = dispatcher.dispatch(warehouse, {"hook": hook}, now=T0 + timedelta(hours=1))
    assert report.sent == 2 and len(srv.delivered) == 2


@pytest.mark.parametrize(
    ("status", "dead"),
    [
        *[(status, True) for status in (400, 401, 404, 410)],
        *[(status, False) for status in (408, 429, 500, 502, 503)],
    ],
)
def test_only_a_refusal_is_dead_at_once(warehouse, server, monkeypatch, status, dead):
    monkeypatch.setenv("TEST_HOOK_SECRET", SECRET)
    srv = server()
    srv.script.append(status)
    hook = receivers.receiver_from_spec(
        "hook", {"type": "webhook", "url": srv.url, "secret_env": "TEST_HOOK_SECRET"}
    )
    outbox.enqueue(warehouse, batch("hook", 1), now=T0)
    dispatcher.dispatch(warehouse, {"hook": hook}, now=T0)
    [row] = rows(warehouse).values()
    assert row["status"] == (outbox.DEAD if dead else outbox.PENDING)
    assert f"HTTP {status}" in row["last_error"]


def test_retryable_failures_are_retried_until_give_up_after(warehouse, monkeypatch):
    monkeypatch.setenv("TEST_HOOK_SECRET", SECRET)
    down = receivers.receiver_from_spec(
        "hook",
        {
            "type": "webhook",
            "url": closed_port_url(),
            "secret_env": "TEST_HOOK_SECRET",
            "connect_timeout": 0.5,
        },
    )
    outbox.enqueue(warehouse, batch("hook", 1), now=T0)
    now, attempts = T0, []
    rng = random.Random(3)
    for _ in range(200):
        dispatcher.dispatch(warehouse, {"hook": down}, now=now, rng=rng)
        [row] = rows(warehouse).values()
        attempts.append(now)
        if row["status"] == outbox.DEAD:
            break
        assert "connection failed" in row["reason"]
        assert row["next_attempt_at"] <= T0 + timedelta(hours=24)
        now = row["next_attempt_at"]
    assert row["status"] == outbox.DEAD
    # Alive for the whole day (far more than the old 8 attempts), dead at its deadline.
    assert attempts[-2] < T0 + timedelta(hours=24) <= attempts[-1] < T0 + timedelta(hours=25)
    assert len(attempts) > 8
    assert row["reason"].startswith(f"gave up after {len(attempts)} attempts: connection failed")


def test_give_up_after_is_read_from_the_policy_defaults():
    base = "receivers: {files: {type: file, path: n}}\nroute: {receiver: files}\n"
    policy = loads_policy(base + "defaults: {give_up_after: 2h, receiver_failing_after: 15m}")
    assert policy.give_up_after == timedelta(hours=2)
    assert policy.receiver_failing_after == timedelta(minutes=15)
    assert loads_policy(base).give_up_after == timedelta(hours=24)
    assert loads_policy(base).receiver_failing_after == timedelta(hours=1)
    with pytest.raises(PolicyError) as bad:
        loads_policy(base + "defaults: {give_up_after: forever}")
    assert str(bad.value).startswith("alerting.yaml: defaults.give_up_after: bad duration")
    with pytest.raises(PolicyError) as tenant:
        loads_policy(base + "tenants: {acme: {give_up_after: 2h}}")
    assert "tenants.acme.give_up_after: unknown key" in str(tenant.value)


FAILING_POLICY = """
defaults: {receiver_failing_after: 1h}
receivers:
  hook: {type: webhook, url_env: TEST_HOOK_URL, secret_env: TEST_HOOK_SECRET}
  ops: {type: file, path: ops}
route: {receiver: hook}
operations: ops
"""


def test_a_receiver_failing_for_an_hour_tells_operations_once_then_resolves(
    home_warehouse, server, monkeypatch
):
    wh = home_warehouse
    monkeypatch.setenv("TEST_HOOK_SECRET", SECRET)
    monkeypatch.delenv("TEST_HOOK_URL", raising=False)
    policy = loads_policy(FAILING_POLICY)
    outbox.enqueue(wh, batch("hook", 3), now=T0)

    def deliver(at):
        return service.deliver(wh, policy, now=at)

    def receiver_incidents():
        return [
            s.incident
            for s in store.read_incidents(wh, status=None)
            if s.incident.labels.get("receiver") == "hook"
        ]

    assert deliver(T0).failing_receivers == []
    assert deliver(T0 + timedelta(minutes=50)).failing_receivers == []
    assert receiver_incidents() == []
    report = deliver(T0 + timedelta(minutes=61))
    assert report.failing_receivers == ["hook"]
    [incident] = receiver_incidents()
    assert incident.kind == types.PIPELINE_FAILURE and incident.tenant == "_platform"
    assert incident.started_at == T0 and incident.status == types.FIRING
    assert "TEST_HOOK_URL is not set" in incident.summary
    to_ops = outbox.read_notifications(wh, receiver="ops", limit=None)
    assert [(n["event"], n["fingerprint"]) for n in to_ops] == [("trigger", incident.fingerprint)]

    # Still failing: raised once, nothing more queued for operations.
    for minutes in (90, 150):
        assert deliver(T0 + timedelta(minutes=minutes)).failing_receivers == []
    assert len(receiver_incidents()) == 1
    assert len(outbox.read_notifications(wh, receiver="ops", limit=None)) == 1
    ops_file = load_settings().home / "ops" / "notifications.jsonl"
    assert [json.loads(line)["event"] for line in ops_file.read_text().splitlines()] == ["trigger"]

    srv = server(WebhookChecker(SECRET))
    monkeypatch.setenv("TEST_HOOK_URL", srv.url)
    report = deliver(T0 + timedelta(hours=4))
    assert report.recovered_receivers == ["hook"] and report.sent >= 3
    assert len(srv.delivered) == 3
    [incident] = receiver_incidents()
    assert incident.status == types.RESOLVED
    deliver(T0 + timedelta(hours=4, minutes=1))
    lines = [json.loads(line) for line in ops_file.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["trigger", "resolve"]


def test_alerts_retry_requeues_dead_pages_under_the_same_keys(
    home_warehouse, server, monkeypatch, capsys
):
    wh = home_warehouse
    srv = server(WebhookChecker(SECRET))
    monkeypatch.setenv("MONITORING_WEBHOOK_URL", srv.url)
    monkeypatch.setenv("MONITORING_WEBHOOK_SECRET", SECRET)
    incident = sample_incident(fingerprint="00000000000000aa")
    store.upsert_incidents(wh, [incident])
    queued = batch("webhook", 3) + batch("files", 1)
    queued[0] = sample_notification("webhook", key="fp-webhook", fingerprint=incident.fingerprint)
    outbox.enqueue(wh, queued)
    srv.script.extend([404, 404, 404])
    assert cli.main(["alerts", "deliver"]) == 0
    capsys.readouterr()
    dead = {k for k, r in rows(wh).items() if r["status"] == outbox.DEAD}
    assert dead == {n.idempotency_key for n in queued if n.receiver == "webhook"}

    assert cli.main(["alerts", "retry", incident.fingerprint[:8]]) == 0
    assert "re-queued 1 " in capsys.readouterr().out
    assert cli.main(["alerts", "retry", "--receiver", "webhook"]) == 0
    assert "re-queued 2 " in capsys.readouterr().out
    assert cli.main(["alerts", "retry"]) == 0
    assert "re-queued 0 " in capsys.readouterr().out
    assert {rows(wh)[k]["status"] for k in dead} == {outbox.PENDING}

    assert cli.main(["alerts", "deliver"]) == 0
    assert sorted(srv.delivered) == sorted(dead)
    assert len(srv.deliveries) == 3
    assert {rows(wh)[k]["status"] for k in dead} == {outbox.SENT}
    # A second retry finds nothing dead: a receiver is never sent the same key twice.
    assert cli.main(["alerts", "retry"]) == 0
    assert cli.main(["alerts", "deliver"]) == 0
    assert len(srv.deliveries) == 3
    with wh.engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(notifications)).scalar()
    assert count == len(queued)
