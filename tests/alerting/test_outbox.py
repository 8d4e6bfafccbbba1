"""The outbox on SQLite and PostgreSQL, delivering to real local servers: idempotent enqueue,
backoff with jitter, dead letters, isolation between receivers, cancelled escalations, concurrent
dispatchers, and a dispatcher killed with a request in flight."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from monitoring_pipelines.alerting import dispatcher, outbox, receivers, retries
from monitoring_pipelines.warehouse import alerts, notifications
from tests.alerting.servers import (
    PagerDutyChecker,
    WebhookChecker,
    closed_port_url,
    sample_notification,
)

T0 = datetime(2026, 10, 5, 15, 0, tzinfo=UTC)
SECRET = "whsec-outbox-test-secret"
FAST = {"connect_timeout": 0.5, "read_timeout": 0.5}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _hook_secret(monkeypatch):
    monkeypatch.setenv("TEST_HOOK_SECRET", SECRET)


def hook(name, url, **extra):
    spec = {"type": "webhook", "url": url, "secret_env": "TEST_HOOK_SECRET", **FAST, **extra}
    return receivers.receiver_from_spec(name, spec)


def rows(warehouse) -> dict[str, dict]:
    return {r["idempotency_key"]: r for r in outbox.read_notifications(warehouse, limit=None)}


def batch(receiver, count, *, prefix="k", **kwargs):
    return [
        sample_notification(
            receiver, key=f"{prefix}-{receiver}-{i}", fingerprint=f"{i:016x}", **kwargs
        )
        for i in range(count)
    ]


def add_alert(warehouse, fingerprint, status):
    now = datetime.now(UTC)
    with warehouse.engine.begin() as conn:
        conn.execute(
            alerts.insert(),
            [
                {
                    "fingerprint": fingerprint,
                    "tenant": "acme",
                    "service": "api",
                    "kind": "anomaly",
                    "severity": "high",
                    "status": status,
                    "started_at": now,
                    "last_seen_at": now,
                    "score": 7.0,
                    "metrics": "[]",
                    "summary": "",
                    "labels": "{}",
                    "model_versions": "{}",
                    "updated_at": now,
                }
            ],
        )


# -- enqueue --------------------------------------------------------------------------------------


def test_enqueue_is_insert_if_absent_and_keeps_suppressed(warehouse, tmp_path):
    items = [
        *batch("files", 2),
        sample_notification(
            "files", key="silenced", status="suppressed", reason="silenced by maintenance window"
        ),
    ]
    assert outbox.enqueue(warehouse, items) == 3
    assert outbox.enqueue(warehouse, items + items) == 0
    assert warehouse.count("notifications") == 3
    stored = rows(warehouse)
    assert stored["silenced"]["status"] == "suppressed"
    assert stored["silenced"]["reason"] == "silenced by maintenance window"
    assert stored["k-files-0"]["payload"] == items[0].payload

    files = receivers.receiver_from_spec("files", {"type": "file", "path": str(tmp_path / "o")})
    report = dispatcher.dispatch(warehouse, {"files": files})
    assert report.sent == 2  # the suppressed one is never sent
    # Re-planning the same partition after delivery changes nothing.
    assert outbox.enqueue(warehouse, items) == 0
    assert {r["status"] for k, r in rows(warehouse).items() if k != "silenced"} == {"sent"}
    assert outbox.pending_count(warehouse) == 0


def test_enqueue_joins_the_callers_transaction(warehouse):
    with pytest.raises(RuntimeError), warehouse.engine.begin() as conn:
        outbox.enqueue(warehouse, batch("files", 2), conn=conn)
        raise RuntimeError("the incident update failed")
    assert warehouse.count("notifications") == 0
    with warehouse.engine.begin() as conn:
        assert outbox.enqueue(None, batch("files", 2), conn=conn) == 2
    assert warehouse.count("notifications") == 2


# -- delivery and retries -------------------------------------------------------------------------


def test_dispatch_delivers_and_reports_latency(warehouse, server, tmp_path):
    srv = server(WebhookChecker(SECRET))
    outbox.enqueue(warehouse, batch("hook", 3) + batch("files", 2))
    files = receivers.receiver_from_spec("files", {"type": "file", "path": str(tmp_path / "n")})
    assert outbox.pending_count(warehouse) == 5
    report = dispatcher.dispatch(warehouse, {"hook": hook("hook", srv.url), "files": files})
    assert (report.claimed, report.sent, report.retried, report.dead) == (5, 5, 0, 0)
    assert srv.errors == []
    assert sorted(srv.delivered) == [f"k-hook-{i}" for i in range(3)]
    assert len((tmp_path / "n" / "notifications.jsonl").read_text().splitlines()) == 2
    assert set(report.latencies) == {r for r in rows(warehouse)}
    assert all(0 <= v < 30 for v in report.latencies.values())
    stored = rows(warehouse)
    assert all(r["status"] == "sent" and r["attempts"] == 1 for r in stored.values())
    assert all(r["sent_at"] >= r["created_at"] for r in stored.values())
    assert outbox.pending_count(warehouse) == 0
    assert report.as_metadata()["sent"] == 5


def test_backoff_delay_is_full_jitter_within_bounds():
    rng = random.Random(7)
    for attempt, ceiling in [(1, 30), (2, 60), (3, 120), (4, 240), (8, 3600), (20, 3600)]:
        delays = [retries.backoff_delay(attempt, base=30, cap=3600, rng=rng) for _ in range(400)]
        assert all(0 <= d <= ceiling for d in delays)
        # Full jitter spreads over the whole range, not around its top.
        assert min(delays) < 0.1 * ceiling and max(delays) > 0.9 * ceiling
    assert retries.backoff_delay(1, base=30, retry_after=120, rng=rng) >= 120


def test_retries_back_off_then_go_dead_with_a_redacted_reason(warehouse, server, monkeypatch):
    srv = server()
    srv.script.extend([500] * 10)
    # The URL is the secret here (as for Slack); it must not reach the stored error.
    monkeypatch.setenv("TEST_HOOK_URL", srv.url + "/T000/B000/XXsecretXX")
    flaky = receivers.receiver_from_spec(
        "hook", {"type": "webhook", "url_env": "TEST_HOOK_URL", "secret_env": "TEST_HOOK_SECRET"}
    )
    outbox.enqueue(warehouse, batch("hook", 1), now=T0)
    key = "k-hook-0"
    now = T0
    schedule = []
    for attempt in (1, 2, 3):
        report = dispatcher.dispatch(
            warehouse,
            {"hook": flaky},
            now=now,
            max_attempts=3,
            backoff_base=10,
            backoff_cap=25,
            rng=random.Random(attempt),
        )
        row = rows(warehouse)[key]
        assert row["attempts"] == attempt
        if attempt < 3:
            assert report.retried == 1 and row["status"] == "pending"
            delay = (row["next_attempt_at"] - now).total_seconds()
            assert 0 <= delay <= min(25, 10 * 2 ** (attempt - 1)) + 1
            schedule.append(delay)
            # Not due before its time.
            early = dispatcher.dispatch(warehouse, {"hook": flaky}, now=now + timedelta(seconds=0))
            assert early.claimed == 0 or delay < 0.01
            now = row["next_attempt_at"] + timedelta(milliseconds=1)
        else:
            assert report.dead == 1 and row["status"] == "dead"
            assert row["reason"].startswith("gave up after 3 attempts: HTTP 500")
    assert len(srv.requests) == 3
    for row in rows(warehouse).values():
        for text in (row["last_error"], row["reason"]):
            assert "XXsecretXX" not in text and "127.0.0.1" not in text


def test_retry_after_is_honoured(warehouse, server):
    srv = server()
    srv.script.append((429, {"Retry-After": "90"}))
    outbox.enqueue(warehouse, batch("hook", 1), now=T0)
    report = dispatcher.dispatch(warehouse, {"hook": hook("hook", srv.url)}, now=T0, backoff_base=1)
    row = rows(warehouse)["k-hook-0"]
    assert report.retried == 1
    assert (row["next_attempt_at"] - T0).total_seconds() >= 90
    assert "HTTP 429" in row["last_error"]


def test_a_refusal_goes_dead_at_once_an_unknown_receiver_waits(warehouse, server):
    srv = server()
    srv.script.append(403)
    outbox.enqueue(warehouse, batch("hook", 1) + batch("gone", 1))
    report = dispatcher.dispatch(warehouse, {"hook": hook("hook", srv.url)})
    assert (report.dead, report.retried) == (1, 1)
    stored = rows(warehouse)
    assert stored["k-hook-0"]["status"] == "dead" and "HTTP 403" in stored["k-hook-0"]["reason"]
    # The policy may be fixed before the notification gives up (give_up_after).
    assert stored["k-gone-0"]["status"] == "pending"
    assert "receiver 'gone' is not configured" in stored["k-gone-0"]["reason"]
    assert outbox.requeue(warehouse, ["k-hook-0"]) == 1
    assert dispatcher.dispatch(warehouse, {"hook": hook("hook", srv.url)}).sent == 1


def test_a_failing_or_hanging_receiver_does_not_hold_up_the_others(warehouse, server):
    good = server(WebhookChecker(SECRET))
    hung = server(hang_seconds=3)
    hung.script.extend(["hang"] * 5)
    outbox.enqueue(warehouse, batch("good", 4) + batch("hung", 3) + batch("refused", 2))
    receivers_ = {
        "good": hook("good", good.url),
        "hung": hook("hung", hung.url, read_timeout=0.4),
        "refused": hook("refused", closed_port_url()),
    }
    report = dispatcher.dispatch(warehouse, receivers_)
    assert report.by_receiver["good"] == {"sent": 4}
    assert sorted(good.delivered) == [f"k-good-{i}" for i in range(4)]
    # Each broken receiver costs one attempt this round; its other rows wait with it.
    assert report.by_receiver["hung"] == {"retried": 1, "deferred": 2}
    assert report.by_receiver["refused"] == {"retried": 1, "deferred": 1}
    assert len(hung.requests) == 1
    stored = rows(warehouse)
    assert "no response within 0.4s" in stored["k-hung-0"]["last_error"]
    assert stored["k-hung-1"]["attempts"] == 0 and stored["k-hung-1"]["status"] == "pending"
    assert "connection failed" in stored["k-refused-0"]["last_error"]


def test_dispatch_stops_waiting_for_a_receiver_that_outlives_the_lease(warehouse, server):
    good = server()
    hung = server(hang_seconds=8)
    hung.script.append("hang")
    outbox.enqueue(warehouse, batch("good", 2) + batch("hung", 1))
    started = time.monotonic()
    report = dispatcher.dispatch(
        warehouse,
        {"good": hook("good", good.url), "hung": hook("hung", hung.url, read_timeout=5)},
        lease_seconds=0.6,
    )
    # Back long before the hung receiver answers (8 s): the round stops waiting at the lease.
    assert time.monotonic() - started < 6
    assert report.sent == 2 and report.unfinished == 1
    assert rows(warehouse)["k-hung-0"]["status"] == "sending"  # left to its lease
    # When the receiver finally hangs up, the late outcome is still recorded (the lease is ours).
    hung.release()
    deadline = time.monotonic() + 15
    while rows(warehouse)["k-hung-0"]["status"] == "sending" and time.monotonic() < deadline:
        time.sleep(0.05)
    late = rows(warehouse)["k-hung-0"]
    assert late["status"] == "pending" and "connection failed" in late["last_error"]


# -- escalations and ordering ---------------------------------------------------------------------


def test_escalation_waits_for_its_deadline_and_is_cancelled_once_acknowledged(warehouse, server):
    srv = server(WebhookChecker(SECRET))
    deadline = T0 + timedelta(minutes=15)
    acked = sample_notification(
        "pager", "escalate", key="esc-acked", fingerprint="a" * 16, not_before=deadline
    )
    resolved = sample_notification(
        "pager", "escalate", key="esc-resolved", fingerprint="b" * 16, not_before=deadline
    )
    firing = sample_notification(
        "pager", "escalate", key="esc-firing", fingerprint="c" * 16, not_before=deadline
    )
    outbox.enqueue(warehouse, [acked, resolved, firing], now=T0)
    add_alert(warehouse, "a" * 16, "acknowledged")
    add_alert(warehouse, "b" * 16, "resolved")
    add_alert(warehouse, "c" * 16, "firing")
    pager = {"pager": hook("pager", srv.url)}

    assert outbox.pending_count(warehouse, T0 + timedelta(minutes=5)) == 0
    assert dispatcher.dispatch(warehouse, pager, now=T0 + timedelta(minutes=5)).claimed == 0
    assert outbox.next_due_at(warehouse) == deadline

    report = dispatcher.dispatch(warehouse, pager, now=deadline + timedelta(seconds=1))
    assert (report.sent, report.cancelled) == (1, 2)
    stored = rows(warehouse)
    assert stored["esc-firing"]["status"] == "sent"
    assert stored["esc-acked"]["status"] == "cancelled"
    assert "incident acknowledged" in stored["esc-acked"]["reason"]
    assert "incident resolved" in stored["esc-resolved"]["reason"]
    assert list(srv.delivered) == ["esc-firing"]


def test_resolve_never_overtakes_its_trigger(warehouse, server, monkeypatch):
    monkeypatch.setenv("TEST_PD_KEY", "R0UT1NGKEY0123456789abcdef012345")
    srv = server(PagerDutyChecker("R0UT1NGKEY0123456789abcdef012345"), ok_status=202)
    pd = receivers.receiver_from_spec(
        "pager", {"type": "pagerduty", "routing_key_env": "TEST_PD_KEY", "url": srv.url, **FAST}
    )
    trigger = sample_notification("pager", "trigger", key="t1")
    resolve = sample_notification("pager", "resolve", key="r1")
    # Enqueued together (a short incident inside one partition), resolve listed first.
    outbox.enqueue(warehouse, [resolve, trigger], now=T0)
    srv.script.append(500)  # the trigger fails once
    report = dispatcher.dispatch(warehouse, {"pager": pd}, now=T0, backoff_base=5)
    assert report.retried == 1 and [r.json["event_action"] for r in srv.requests] == ["trigger"]
    assert rows(warehouse)["r1"]["status"] == "pending"
    later = rows(warehouse)["t1"]["next_attempt_at"] + timedelta(seconds=1)
    report = dispatcher.dispatch(warehouse, {"pager": pd}, now=later)
    assert report.sent == 2
    assert srv.errors == []  # the checker refuses a resolve it has not seen triggered
    assert [r.json["event_action"] for r in srv.requests] == ["trigger", "trigger", "resolve"]


# -- concurrency and crashes ----------------------------------------------------------------------


def test_two_dispatchers_never_send_the_same_row(warehouse, server):
    srv = server()
    outbox.enqueue(warehouse, batch("hook", 24))
    receivers_ = {"hook": hook("hook", srv.url)}
    reports = []

    def run():
        reports.append(dispatcher.dispatch(warehouse, receivers_, limit=8))

    while outbox.pending_count(warehouse):
        threads = [threading.Thread(target=run) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    per_key = Counter(r.key for r in srv.requests)
    assert set(per_key) == {f"k-hook-{i}" for i in range(24)}
    assert max(per_key.values()) == 1
    assert sum(r.sent for r in reports) == 24


CRASHING_DISPATCHER = textwrap.dedent(
    """
    import sys, time
    from monitoring_pipelines.alerting import dispatcher, outbox, receivers
    from monitoring_pipelines.alerting.receivers.file import FileReceiver
    from monitoring_pipelines.warehouse import Warehouse

    url, hook_url, file_path, marker = sys.argv[1:5]

    class CrashAfterWrite(FileReceiver):
        # The file is written, then the process dies before the outbox row is marked sent.
        def send(self, delivery, message):
            super().send(delivery, message)
            with open(marker, "w") as fh:
                fh.write(delivery.idempotency_key)
            time.sleep(60)

    hook = receivers.receiver_from_spec(
        "hook", {"type": "webhook", "url": hook_url, "secret_env": "TEST_HOOK_SECRET",
                 "read_timeout": 60}
    )
    files = CrashAfterWrite(name="files", path=file_path)
    dispatcher.dispatch(Warehouse(url, create=False), {"hook": hook, "files": files},
                    lease_seconds=30)
    """
)


def test_dispatcher_killed_mid_request_delivers_each_key_once_after_the_lease(
    warehouse, warehouse_url, server, tmp_path
):
    srv = server(WebhookChecker(SECRET))
    srv.script.append("stall")  # the first request arrives, its response never does
    hook_items, file_items = batch("hook", 5), batch("files", 3)
    outbox.enqueue(warehouse, hook_items + file_items)
    out_file, marker = tmp_path / "out.jsonl", tmp_path / "written"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CRASHING_DISPATCHER,
            warehouse_url,
            srv.url,
            str(out_file),
            str(marker),
        ],
        cwd=REPO,
        env={**os.environ, "TEST_HOOK_SECRET": SECRET},
    )
    try:
        deadline = time.monotonic() + 30
        while not (srv.in_flight.is_set() and marker.exists()):
            assert proc.poll() is None, "the dispatcher exited early"
            assert time.monotonic() < deadline, "the dispatcher never got a request in flight"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    srv.release()
    stuck = rows(warehouse)
    assert {r["status"] for r in stuck.values()} == {"sending"}
    # Nothing is claimed again while the dead dispatcher's lease runs.
    assert dispatcher.dispatch(warehouse, {}).claimed == 0

    files = receivers.receiver_from_spec("files", {"type": "file", "path": str(out_file)})
    after_lease = datetime.now(UTC) + timedelta(seconds=31)
    report = dispatcher.dispatch(
        warehouse, {"hook": hook("hook", srv.url), "files": files}, now=after_lease
    )
    assert report.sent == 8
    assert {r["status"] for r in rows(warehouse).values()} == {"sent"}
    # The server saw the in-flight key twice and delivered it once; every key exactly once.
    requested = Counter(r.key for r in srv.requests)
    assert set(requested) == {n.idempotency_key for n in hook_items}
    assert requested[hook_items[0].idempotency_key] == 2
    assert sorted(srv.delivered) == sorted(n.idempotency_key for n in hook_items)
    assert len(srv.deliveries) == 5
    assert srv.errors == []
    written = [json.loads(line)["idempotency_key"] for line in out_file.read_text().splitlines()]
    assert sorted(written) == sorted(n.idempotency_key for n in file_items)


def test_claim_is_a_single_conditional_update(warehouse):
    """A row claimed by one dispatcher is invisible to another until its lease expires."""
    outbox.enqueue(warehouse, batch("hook", 1), now=T0)
    with warehouse.engine.begin() as conn:
        conn.execute(
            notifications.update().values(
                status="sending", lease_until=T0 + timedelta(seconds=60), lease_token="other"
            )
        )
    assert outbox.pending_count(warehouse, T0 + timedelta(seconds=30)) == 0
    assert outbox.pending_count(warehouse, T0 + timedelta(seconds=61)) == 1
    with warehouse.engine.connect() as conn:
        assert conn.execute(sa.select(notifications.c.attempts)).scalar_one() == 0


def test_email_follow_ups_thread_onto_the_trigger_through_the_outbox(warehouse):
    from tests.alerting.servers import SMTPSink

    sink = SMTPSink()
    try:
        mail = receivers.receiver_from_spec(
            "mail",
            {
                "type": "email",
                "host": "127.0.0.1",
                "port": sink.port,
                "timeout": 2,
                "from": "alerts@monitoring.example",
                "to": ["oncall@example.com"],
            },
        )
        trigger = sample_notification("mail", "trigger", key="mail-t", locale="es")
        resolve = sample_notification("mail", "resolve", key="mail-r", locale="es")
        outbox.enqueue(warehouse, [trigger, resolve])
        assert dispatcher.dispatch(warehouse, {"mail": mail}).sent == 2
        first, second = sink.messages
        assert first["Subject"].startswith("[Alta] Anomalía en acme/api")
        assert second["In-Reply-To"] == first["Message-ID"] == "<mail-t.mail@monitoring.example>"
    finally:
        sink.close()
