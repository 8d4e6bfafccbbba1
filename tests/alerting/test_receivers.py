"""Receivers against real local servers: payload shapes, signatures, threading, failure classes."""

import dataclasses
import json
import threading
import time

import pytest

from monitoring_pipelines.alerting import receivers, templates, types
from monitoring_pipelines.alerting.receivers import (
    DeliveryError,
    ReceiverConfigError,
    receiver_from_spec,
)
from monitoring_pipelines.alerting.receivers.pagerduty import PAGERDUTY_EVENTS_URL
from tests.alerting.servers import (
    PagerDutyChecker,
    SMTPSink,
    WebhookChecker,
    check_slack,
    check_teams,
    closed_port_url,
    sample_notification,
)

# Short timeouts: a hung server must cost the suite well under a second.
FAST = {"connect_timeout": 0.5, "read_timeout": 0.5}
SECRET_PATH = "/services/T0000/B0000/XXsecretXXtokenXX"


def delivery_of(notification: types.Notification, thread_key: str | None = None):
    """The notification as the outbox hands it to a receiver."""
    return dataclasses.replace(notification, thread_key=thread_key)


def send(receiver, notification, thread_key=None):
    message = templates.render(notification.payload, notification.locale)
    receiver.send(delivery_of(notification, thread_key), message)
    return message


# -- specs ----------------------------------------------------------------------------------------


def test_specs_build_each_type_without_network_or_secrets():
    specs = {
        "s": {"type": "slack", "url_env": "SLACK_URL", "locale": "fr"},
        "t": {"type": "teams", "url_env": "TEAMS_URL", "read_timeout": 5},
        "p": {"type": "pagerduty", "routing_key_env": "PD_KEY"},
        "e": {
            "type": "email",
            "host": "smtp.example.com",
            "port": 587,
            "starttls": True,
            "username_env": "SMTP_USER",
            "password_env": "SMTP_PASSWORD",
            "from": "alerts@example.com",
            "to": ["oncall@example.com"],
        },
        "w": {"type": "webhook", "url": "https://hooks.example.com/x", "secret_env": "HOOK_KEY"},
        "f": {"type": "file", "path": "/tmp/out.jsonl"},
    }
    built = {name: receiver_from_spec(name, spec) for name, spec in specs.items()}
    assert [r.type for r in built.values()] == [
        "slack",
        "teams",
        "pagerduty",
        "email",
        "webhook",
        "file",
    ]
    assert built["s"].locale == "fr"
    assert built["t"].read_timeout == 5.0
    assert built["p"].url == PAGERDUTY_EVENTS_URL
    assert receiver_from_spec("m", {"type": "msteams", "url_env": "X"}).type == "teams"


@pytest.mark.parametrize(
    ("spec", "key", "words"),
    [
        ({"type": "sms"}, "type", "must be one of"),
        ({"type": "slack"}, "url_env", "required"),
        ({"type": "slack", "url_env": "X", "channel": "#ops"}, "channel", "unknown key"),
        ({"type": "slack", "url": "https://hooks.slack.com/x"}, "url", "url_env"),
        ({"type": "pagerduty", "routing_key": "abc"}, "routing_key", "routing_key_env"),
        ({"type": "slack", "url_env": "https://hooks"}, "url_env", "environment variable"),
        ({"type": "slack", "url_env": "X", "read_timeout": 0}, "read_timeout", "must be in"),
        ({"type": "slack", "url_env": "X", "locale": "pt"}, "locale", "must be one of"),
        ({"type": "webhook", "secret_env": "K"}, "url", "exactly one"),
        ({"type": "webhook", "url": "ftp://x", "secret_env": "K"}, "url", "http"),
        ({"type": "webhook", "url": "https://x", "secret": "s3cr3t"}, "secret", "secret_env"),
        ({"type": "email", "host": "h", "from": "a@b.c", "to": []}, "to", "non-empty"),
        ({"type": "email", "host": "h", "from": "a@b.c", "to": ["nope"]}, "to", "address"),
        (
            {"type": "email", "host": "h", "from": "a@b.c", "to": ["x@y.z"], "password": "p"},
            "password",
            "password_env",
        ),
        (
            {
                "type": "email",
                "host": "h",
                "from": "a@b.c",
                "to": ["x@y.z"],
                "ssl": True,
                "starttls": True,
            },
            "ssl",
            "one of",
        ),
        (
            {"type": "email", "host": "h", "from": "a@b.c", "to": ["x@y.z"], "username_env": "U"},
            "password_env",
            "together",
        ),
        ({"type": "file"}, "path", "required"),
    ],
)
def test_bad_specs_name_the_key(spec, key, words):
    with pytest.raises(ReceiverConfigError) as info:
        receiver_from_spec("ops", spec)
    assert info.value.key == key
    assert words in info.value.message
    assert "receiver 'ops'" in str(info.value)
    # A literal secret in the spec never comes back in the error.
    for value in ("abc", "s3cr3t", "p"):
        if spec.get("routing_key") == value or spec.get("secret") == value:
            assert value not in str(info.value)


# -- Slack, Teams ---------------------------------------------------------------------------------


def test_slack_posts_block_kit_with_fallback_text(server, monkeypatch):
    srv = server(check_slack)
    monkeypatch.setenv("TEST_SLACK_URL", srv.url)
    slack = receiver_from_spec("slack", {"type": "slack", "url_env": "TEST_SLACK_URL", **FAST})
    notification = sample_notification("slack", summary="p95 <up> & away")
    message = send(slack, notification)
    assert srv.errors == []
    [request] = srv.requests
    body = request.json
    assert body["text"] == message.title
    assert body["blocks"][0]["type"] == "header"
    assert request.key == notification.idempotency_key
    text = json.dumps(body)
    assert "latency_p95_ms" in text and "recent deploys" in text
    buttons = next(b for b in body["blocks"] if b["type"] == "actions")["elements"]
    assert buttons[0]["url"] == "http://dagster.local:3000/runs/0f8e-run-42"


def test_teams_posts_an_adaptive_card_in_the_receivers_language(server, monkeypatch):
    srv = server(check_teams, ok_status=202)
    monkeypatch.setenv("TEST_TEAMS_URL", srv.url)
    teams = receiver_from_spec("teams", {"type": "teams", "url_env": "TEST_TEAMS_URL", **FAST})
    send(teams, sample_notification("teams", locale="de"))
    assert srv.errors == []
    card = srv.requests[0].json["attachments"][0]["content"]
    assert card["version"] == "1.4"
    facts = {f["title"]: f["value"] for f in card["body"][2]["facts"]}
    assert facts["Mandant"] == "acme" and facts["Schweregrad"] == "Hoch"
    assert {a["title"] for a in card["actions"]} == {
        "Dagster-Lauf öffnen",
        "Bewertete Partition öffnen",
    }


# -- PagerDuty ------------------------------------------------------------------------------------


def test_pagerduty_trigger_and_resolve_share_the_dedup_key(server, monkeypatch):
    monkeypatch.setenv("TEST_PD_KEY", "R0UT1NGKEY0123456789abcdef012345")
    checker = PagerDutyChecker("R0UT1NGKEY0123456789abcdef012345")
    srv = server(checker, ok_status=202)
    pd = receiver_from_spec(
        "pager", {"type": "pagerduty", "routing_key_env": "TEST_PD_KEY", "url": srv.url, **FAST}
    )
    trigger = sample_notification("pager", "trigger", severity="critical")
    resolve = sample_notification("pager", "resolve", severity="critical")
    send(pd, trigger)
    send(pd, resolve)
    assert srv.errors == []
    first, second = (r.json for r in srv.requests)
    assert first["event_action"] == "trigger" and second["event_action"] == "resolve"
    assert first["dedup_key"] == second["dedup_key"] == trigger.fingerprint
    payload = first["payload"]
    assert payload["severity"] == "critical"
    assert payload["source"] == "acme/api"
    assert payload["component"] == "api" and payload["group"] == "acme"
    assert payload["class"] == "anomaly/latency_p95_ms"
    assert payload["custom_details"]["model_versions"] == {
        "isolation_forest": 3,
        "lstm": 2,
        "prophet": 1,
    }
    assert first["links"][0]["href"].endswith("/runs/0f8e-run-42")


@pytest.mark.parametrize(
    ("severity", "expected"),
    [("critical", "critical"), ("high", "error"), ("medium", "warning"), ("low", "info")],
)
def test_pagerduty_severity_mapping_and_summary_limit(severity, expected):
    pd = receiver_from_spec("pager", {"type": "pagerduty", "routing_key_env": "K"})
    notification = sample_notification("pager", severity=severity)
    message = templates.render(notification.payload, "en")
    long = dataclasses.replace(message, title="x" * 3000)
    event = pd.build(delivery_of(notification), long, "key")
    assert event["payload"]["severity"] == expected
    assert len(event["payload"]["summary"]) == 1024


# -- signed webhook -------------------------------------------------------------------------------


def test_webhook_is_signed_with_hmac_and_verifiable(server, monkeypatch):
    secret = "whsec-test-0123456789"
    monkeypatch.setenv("TEST_HOOK_SECRET", secret)
    srv = server(WebhookChecker(secret))
    hook = receiver_from_spec(
        "hook", {"type": "webhook", "url": srv.url, "secret_env": "TEST_HOOK_SECRET", **FAST}
    )
    notification = sample_notification("hook")
    send(hook, notification)
    assert srv.errors == []
    [request] = srv.requests
    assert request.json["incident"]["fingerprint"] == notification.fingerprint
    assert request.headers["x-monitoring-event"] == "trigger"
    ts, sig = request.headers["x-monitoring-timestamp"], request.headers["x-monitoring-signature"]
    assert receivers.verify_signature(secret, ts, request.body, sig)
    assert not receivers.verify_signature("other-secret", ts, request.body, sig)
    assert not receivers.verify_signature(secret, ts, request.body + b" ", sig)
    assert not receivers.verify_signature(secret, ts, request.body, sig, now=int(ts) + 3600)


def test_webhook_with_wrong_secret_is_refused_permanently(server, monkeypatch):
    srv = server(WebhookChecker("the-real-secret"))
    monkeypatch.setenv("TEST_HOOK_SECRET", "a-wrong-secret")
    hook = receiver_from_spec(
        "hook", {"type": "webhook", "url": srv.url, "secret_env": "TEST_HOOK_SECRET", **FAST}
    )
    with pytest.raises(DeliveryError) as info:
        send(hook, sample_notification("hook"))
    assert not info.value.retryable
    assert "HTTP 400" in info.value.message and "bad signature" in info.value.message
    assert "a-wrong-secret" not in info.value.message


# -- failure classes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "retryable", "retry_after"),
    [
        (500, True, None),
        (503, True, None),
        ((429, {"Retry-After": "7"}), True, 7.0),
        (408, True, None),
        (400, False, None),
        (403, False, None),
        (404, False, None),
        (410, False, None),
    ],
)
def test_http_failures_are_classified(server, monkeypatch, answer, retryable, retry_after):
    srv = server()
    srv.script.append(answer)
    monkeypatch.setenv("TEST_SLACK_URL", srv.url + SECRET_PATH)
    slack = receiver_from_spec("slack", {"type": "slack", "url_env": "TEST_SLACK_URL", **FAST})
    with pytest.raises(DeliveryError) as info:
        send(slack, sample_notification("slack"))
    assert info.value.retryable is retryable
    assert info.value.retry_after == retry_after
    assert "XXsecretXX" not in info.value.message and str(srv.url) not in info.value.message


def test_hung_server_times_out_quickly_and_retryably(server, monkeypatch):
    srv = server(hang_seconds=8)
    srv.script.append("hang")
    monkeypatch.setenv("TEST_SLACK_URL", srv.url + SECRET_PATH)
    slack = receiver_from_spec(
        "slack",
        {"type": "slack", "url_env": "TEST_SLACK_URL", "connect_timeout": 0.5, "read_timeout": 0.3},
    )
    started = time.monotonic()
    with pytest.raises(DeliveryError) as info:
        send(slack, sample_notification("slack"))
    # Well before the server would have answered: the 0.3 s read timeout cut the wait short.
    assert time.monotonic() - started < 6
    assert info.value.retryable
    assert "0.3s" in info.value.message
    assert "XXsecretXX" not in info.value.message and "127.0.0.1" not in info.value.message


def test_refused_connection_is_retryable_and_redacted(monkeypatch):
    monkeypatch.setenv("TEST_SLACK_URL", closed_port_url() + SECRET_PATH)
    slack = receiver_from_spec("slack", {"type": "slack", "url_env": "TEST_SLACK_URL", **FAST})
    with pytest.raises(DeliveryError) as info:
        send(slack, sample_notification("slack"))
    assert info.value.retryable
    assert "connection failed" in info.value.message
    assert "XXsecretXX" not in info.value.message and "127.0.0.1" not in info.value.message


def test_missing_secret_is_retryable_and_names_only_the_variable(monkeypatch):
    monkeypatch.delenv("TEST_UNSET_URL", raising=False)
    slack = receiver_from_spec("slack", {"type": "slack", "url_env": "TEST_UNSET_URL"})
    with pytest.raises(DeliveryError) as info:
        send(slack, sample_notification("slack"))
    # The environment may be fixed before the notification gives up (give_up_after).
    assert info.value.retryable
    assert "TEST_UNSET_URL is not set" in info.value.message


def test_redact_hides_raw_and_url_quoted_secrets():
    text = "failed for https://x/a b?k=s3cr3t-value and s3cr3t-value%2F"
    out = receivers.redact(text, ["s3cr3t-value", "https://x/a b"])
    assert "s3cr3t" not in out and "https://x/a b" not in out


# -- email ----------------------------------------------------------------------------------------


@pytest.fixture
def smtp():
    sinks = []

    def start(**kwargs):
        sink = SMTPSink(**kwargs)
        sinks.append(sink)
        return sink

    yield start
    for sink in sinks:
        sink.close()


def email_spec(port, **extra):
    return {
        "type": "email",
        "host": "127.0.0.1",
        "port": port,
        "from": "Monitoring <alerts@monitoring.example>",
        "to": ["oncall@example.com", "sre@example.com"],
        "timeout": 2,
        **extra,
    }


def mail_logging_in(port: int, password: str, monkeypatch):
    """The ``mail`` receiver logging in as ``mailer`` with ``password``, both read from the
    environment variables its spec names."""
    monkeypatch.setenv("TEST_SMTP_USER", "mailer")
    monkeypatch.setenv("TEST_SMTP_PASSWORD", password)
    return receiver_from_spec(
        "mail", email_spec(port, username_env="TEST_SMTP_USER", password_env="TEST_SMTP_PASSWORD")
    )


def test_email_is_multipart_and_the_resolve_threads_onto_the_trigger(smtp, monkeypatch):
    sink = smtp(credentials=("mailer", "smtp-pass-123"))
    mail = mail_logging_in(sink.port, "smtp-pass-123", monkeypatch)
    trigger = sample_notification("mail", "trigger", locale="it")
    resolve = sample_notification("mail", "resolve", locale="it")
    send(mail, trigger)
    send(mail, resolve, thread_key=trigger.idempotency_key)
    assert sink.logins == ["mailer", "mailer"]
    first, second = sink.messages
    assert sink.envelopes[0] == (
        "alerts@monitoring.example",
        ["oncall@example.com", "sre@example.com"],
    )
    assert first.get_content_type() == "multipart/alternative"
    parts = {p.get_content_type(): p.get_content() for p in first.iter_parts()}
    assert set(parts) == {"text/plain", "text/html"}
    assert "Prossimo passo suggerito" in parts["text/plain"]
    assert "<table" in parts["text/html"]
    assert first["Subject"].startswith("[Alta] Anomalia in acme/api")
    assert first["Message-ID"] == f"<{trigger.idempotency_key}.mail@monitoring.example>"
    assert first["In-Reply-To"] is None
    assert second["In-Reply-To"] == first["Message-ID"]
    assert second["References"] == first["Message-ID"]
    assert second["Subject"].startswith("[Risolto]")
    assert first["Auto-Submitted"] == "auto-generated"
    assert first["X-Monitoring-Idempotency-Key"] == trigger.idempotency_key


def test_email_retry_resends_the_same_message_id(smtp):
    sink = smtp()
    mail = receiver_from_spec("mail", email_spec(sink.port))
    notification = sample_notification("mail")
    send(mail, notification)
    send(mail, notification)
    assert sink.messages[0]["Message-ID"] == sink.messages[1]["Message-ID"]


@pytest.mark.parametrize(
    ("reply", "retryable"), [("451 4.3.0 try later", True), ("554 5.6.0 rejected", False)]
)
def test_email_server_answers_are_classified(smtp, reply, retryable):
    sink = smtp()
    sink.reply = reply
    mail = receiver_from_spec("mail", email_spec(sink.port))
    with pytest.raises(DeliveryError) as info:
        send(mail, sample_notification("mail"))
    assert info.value.retryable is retryable
    assert reply.split()[0] in info.value.message


def test_email_wrong_password_is_permanent_and_redacted(smtp, monkeypatch):
    sink = smtp(credentials=("mailer", "right-password"))
    mail = mail_logging_in(sink.port, "wrong-password", monkeypatch)
    with pytest.raises(DeliveryError) as info:
        send(mail, sample_notification("mail"))
    assert not info.value.retryable
    assert "wrong-password" not in info.value.message
    assert sink.messages == []


def test_email_refused_connection_is_retryable():
    port = int(closed_port_url().split(":")[2].split("/")[0])
    mail = receiver_from_spec("mail", email_spec(port))
    with pytest.raises(DeliveryError) as info:
        send(mail, sample_notification("mail"))
    assert info.value.retryable


# -- file -----------------------------------------------------------------------------------------


def test_file_receiver_writes_each_key_once_even_concurrently(tmp_path):
    path = tmp_path / "out" / "notifications.jsonl"
    sink = receiver_from_spec("files", {"type": "file", "path": str(path)})
    notifications = [sample_notification("files", key=f"key-{i}") for i in range(5)]
    other = receiver_from_spec("files", {"type": "file", "path": str(path)})  # another process

    def write_all(receiver):
        for notification in notifications:
            send(receiver, notification)

    threads = [threading.Thread(target=write_all, args=(r,)) for r in (sink, sink, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(line["idempotency_key"] for line in lines) == [f"key-{i}" for i in range(5)]
    assert lines[0]["title"].startswith("[High] Anomaly in acme/api")


def test_file_receiver_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "n.jsonl"
    path.write_text('{"idempotency_key": "done"}\n{"idempotency_key": "torn", "ti')
    sink = receiver_from_spec("files", {"type": "file", "path": str(path)})
    send(sink, sample_notification("files", key="done"))
    send(sink, sample_notification("files", key="torn"))
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["idempotency_key"] == "done"
    assert json.loads(lines[-1])["idempotency_key"] == "torn"
    assert len(lines) == 3  # the torn fragment stays, the retry is on a line of its own


def test_file_receiver_relative_path_is_under_monitoring_home(home):
    sink = receiver_from_spec("files", {"type": "file", "path": "notifications"})
    send(sink, sample_notification("files"))
    assert (home / "notifications" / "notifications.jsonl").exists()
