"""Real local servers for the receiver and outbox tests: an HTTP endpoint that records requests,
checks each receiver's payload shape, honours Idempotency-Key and can be told to fail, and an SMTP
server (aiosmtpd) that keeps what it receives.

The checks here are written from the services' documentation, independently of the receivers
(e.g. the HMAC signature is recomputed here, not with ``receivers.verify_signature``).
"""

import contextlib
import hashlib
import hmac
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLACK_BLOCK_TYPES = {"header", "section", "context", "actions", "divider", "image", "rich_text"}
ADAPTIVE_ELEMENTS = {"TextBlock", "FactSet", "ColumnSet", "Container", "Image", "ActionSet"}
PD_SEVERITIES = {"critical", "error", "warning", "info"}


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def key(self) -> str | None:
        return self.headers.get("idempotency-key")


# -- payload checks (each returns a list of problems) ---------------------------------------------


def check_slack(body: dict, headers: dict) -> list[str]:
    errors = []
    if not isinstance(body.get("text"), str) or not body["text"]:
        errors.append("slack: fallback text missing")
    blocks = body.get("blocks")
    if not isinstance(blocks, list) or not 0 < len(blocks) <= 50:
        return [*errors, "slack: blocks must be a list of 1..50"]
    for i, block in enumerate(blocks):
        kind = block.get("type")
        if kind not in SLACK_BLOCK_TYPES:
            errors.append(f"slack: block {i} has unknown type {kind!r}")
        if kind == "header":
            text = block.get("text", {})
            if text.get("type") != "plain_text" or not 0 < len(text.get("text", "")) <= 150:
                errors.append("slack: header needs plain_text of at most 150 characters")
        if kind == "section":
            if "text" not in block and "fields" not in block:
                errors.append(f"slack: section {i} has neither text nor fields")
            if "text" in block and len(block["text"].get("text", "")) > 3000:
                errors.append(f"slack: section {i} text over 3000 characters")
            for f in block.get("fields", []):
                if f.get("type") not in ("mrkdwn", "plain_text") or len(f.get("text", "")) > 2000:
                    errors.append(f"slack: bad field in section {i}")
            if len(block.get("fields", [])) > 10:
                errors.append(f"slack: section {i} has more than 10 fields")
        if kind == "actions":
            for element in block.get("elements", []):
                if element.get("type") == "button":
                    if element.get("text", {}).get("type") != "plain_text":
                        errors.append("slack: button text must be plain_text")
                    if len(element["text"].get("text", "")) > 75:
                        errors.append("slack: button text over 75 characters")
                    if not str(element.get("url", "")).startswith("http"):
                        errors.append("slack: button without url")
        if kind == "context" and not 0 < len(block.get("elements", [])) <= 10:
            errors.append("slack: context needs 1..10 elements")
    return errors


def check_teams(body: dict, headers: dict) -> list[str]:
    errors = []
    if body.get("type") != "message":
        errors.append("teams: type must be 'message'")
    attachments = body.get("attachments")
    if not isinstance(attachments, list) or len(attachments) != 1:
        return [*errors, "teams: exactly one attachment expected"]
    attachment = attachments[0]
    if attachment.get("contentType") != "application/vnd.microsoft.card.adaptive":
        errors.append("teams: contentType must be the adaptive card type")
    card = attachment.get("content") or {}
    if card.get("type") != "AdaptiveCard":
        errors.append("teams: content.type must be AdaptiveCard")
    if card.get("$schema") != "http://adaptivecards.io/schemas/adaptive-card.json":
        errors.append("teams: $schema missing")
    if card.get("version") not in ("1.0", "1.1", "1.2", "1.3", "1.4"):
        errors.append("teams: version must be at most 1.4 (what Teams renders)")
    body_elements = card.get("body")
    if not isinstance(body_elements, list) or not body_elements:
        errors.append("teams: card body empty")
    for element in body_elements or []:
        kind = element.get("type")
        if kind not in ADAPTIVE_ELEMENTS:
            errors.append(f"teams: unknown element {kind!r}")
        if kind == "TextBlock" and not isinstance(element.get("text"), str):
            errors.append("teams: TextBlock without text")
        if kind == "FactSet":
            for fact in element.get("facts", []):
                if not isinstance(fact.get("title"), str) or not isinstance(fact.get("value"), str):
                    errors.append("teams: facts need string title and value")
    for action in card.get("actions", []):
        if (
            action.get("type") != "Action.OpenUrl"
            or not action.get("url")
            or not action.get("title")
        ):
            errors.append("teams: actions must be Action.OpenUrl with url and title")
    return errors


class PagerDutyChecker:
    """Events API v2 rules, plus: a resolve uses the dedup_key its trigger used."""

    def __init__(self, routing_key: str):
        self.routing_key = routing_key
        self.triggered: dict[str, str] = {}  # dedup_key -> source of the trigger

    def __call__(self, body: dict, headers: dict) -> list[str]:
        errors = []
        if body.get("routing_key") != self.routing_key:
            errors.append("pagerduty: wrong routing_key")
        action = body.get("event_action")
        dedup = body.get("dedup_key")
        if not isinstance(dedup, str) or not 0 < len(dedup) <= 255:
            errors.append("pagerduty: dedup_key must be 1..255 characters")
        if action == "trigger":
            payload = body.get("payload") or {}
            summary = payload.get("summary")
            if not isinstance(summary, str) or not 0 < len(summary) <= 1024:
                errors.append("pagerduty: payload.summary must be 1..1024 characters")
            if not payload.get("source"):
                errors.append("pagerduty: payload.source missing")
            if payload.get("severity") not in PD_SEVERITIES:
                errors.append(f"pagerduty: bad severity {payload.get('severity')!r}")
            for link in body.get("links", []):
                if not link.get("href"):
                    errors.append("pagerduty: link without href")
            if not errors:
                self.triggered[dedup] = payload["source"]
        elif action == "resolve":
            if dedup not in self.triggered:
                errors.append("pagerduty: resolve for a dedup_key that was never triggered")
        else:
            errors.append(f"pagerduty: bad event_action {action!r}")
        return errors


class WebhookChecker:
    """Recomputes HMAC-SHA256(secret, timestamp + "." + body) and checks the headers."""

    def __init__(self, secret: str, tolerance: float = 300):
        self.secret = secret.encode()
        self.tolerance = tolerance

    def __call__(self, body: dict, headers: dict, raw: bytes = b"") -> list[str]:
        errors = []
        timestamp = headers.get("x-monitoring-timestamp", "")
        signature = headers.get("x-monitoring-signature", "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > self.tolerance:
            errors.append("webhook: timestamp missing or stale")
        expected = hmac.new(self.secret, timestamp.encode() + b"." + raw, hashlib.sha256)
        if not hmac.compare_digest(signature, "sha256=" + expected.hexdigest()):
            errors.append("webhook: bad signature")
        if body.get("idempotency_key") != headers.get("idempotency-key"):
            errors.append("webhook: Idempotency-Key header and body disagree")
        return errors


# -- HTTP server ----------------------------------------------------------------------------------


class RecordingServer:
    """A local HTTP endpoint. ``script`` holds the answers to the next requests, in order
    (``500``, ``(429, {"Retry-After": "7"})``, ``(500, {}, b"body")``, ``"hang"``, ``"stall"``);
    afterwards it answers 200. A body may contain ``{path}``, replaced by the request's path (a
    service that echoes the URL it was called on).

    - ``hang``: read the request, then say nothing for ``hang_seconds`` (beyond the client's
      read timeout);
    - ``stall``: record the request as delivered, then hold the response until :meth:`release`
      (a request in flight when its sender is killed).

    Requests are deduplicated by ``Idempotency-Key``: a key already delivered gets 200 and is not
    delivered again, like a service that honours the header.
    """

    def __init__(self, check=None, *, hang_seconds: float = 3.0, ok_status: int = 200):
        self.check = check
        self.hang_seconds = hang_seconds
        self.ok_status = ok_status
        self.script: list = []
        self.requests: list[Recorded] = []
        self.delivered: dict[str, Recorded] = {}
        self.deliveries: list[Recorded] = []
        self.lock = threading.Lock()
        self.released = threading.Event()
        self.in_flight = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                server._handle(self, raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"

    def _handle(self, handler: BaseHTTPRequestHandler, raw: bytes) -> None:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        record = Recorded(path=handler.path, headers=headers, body=raw)
        with self.lock:
            action = self.script.pop(0) if self.script else None
            self.requests.append(record)
        if action == "hang":
            self.released.wait(self.hang_seconds)
            record.status = 0
            handler.close_connection = True  # hang up without an answer
            return
        if action is not None and action != "stall":
            status, extra, body = (
                (*action, b'{"error":"scripted"}')[:3]
                if isinstance(action, tuple)
                else (action, {}, b'{"error":"scripted"}')
            )
            record.status = status
            body = body.replace(b"{path}", handler.path.encode())
            self._reply(handler, status, body, extra)
            return
        try:
            body = json.loads(raw)
        except ValueError:
            record.errors.append("body is not JSON")
            body = {}
        if self.check is not None and not record.errors:
            if isinstance(self.check, WebhookChecker):
                record.errors.extend(self.check(body, headers, raw))
            else:
                record.errors.extend(self.check(body, headers))
        if record.errors:
            record.status = 400
            self._reply(handler, 400, json.dumps(record.errors).encode())
            return
        key = record.key
        with self.lock:
            fresh = key is None or key not in self.delivered
            if fresh:
                self.deliveries.append(record)
                if key is not None:
                    self.delivered[key] = record
        if action == "stall":
            self.in_flight.set()
            self.released.wait(30)
        record.status = self.ok_status
        self._reply(handler, self.ok_status, b"ok")

    @staticmethod
    def _reply(handler, status: int, body: bytes, headers: dict | None = None) -> None:
        with contextlib.suppress(OSError):
            handler.send_response(status)
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)

    @property
    def errors(self) -> list[str]:
        return [e for r in self.requests for e in r.errors]

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.release()
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port_url() -> str:
    """A URL on a port nothing listens on: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


# -- SMTP server ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SMTPSink:
    """An aiosmtpd server on 127.0.0.1 keeping every message; ``reply`` makes DATA answer with
    e.g. ``"451 4.3.0 try later"``; ``credentials`` turns on AUTH PLAIN/LOGIN."""

    def __init__(self, credentials: tuple[str, str] | None = None):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.reply: str | None = None
        self.logins: list[str] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                if sink.reply:
                    return sink.reply
                sink.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
                sink.messages.append(
                    message_from_bytes(envelope.original_content, policy=policy.default)
                )
                return "250 OK"

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                credentials is not None
                and isinstance(auth_data, LoginPassword)
                and (auth_data.login.decode(), auth_data.password.decode()) == credentials
            )
            if ok:
                sink.logins.append(auth_data.login.decode())
            return AuthResult(success=ok, handled=False)

        kwargs = {}
        if credentials is not None:
            kwargs = {"authenticator": authenticator, "auth_require_tls": False}
        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **kwargs)
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()


# -- sample data ----------------------------------------------------------------------------------


def sample_incident(
    *,
    fingerprint: str = "a1b2c3d4e5f60718",
    tenant: str = "acme",
    service: str = "api",
    kind: str = "anomaly",
    severity: str = "high",
    status: str = "firing",
    metric: str = "latency_p95_ms",
    summary: str = "p95 latency 4x its usual level",
):
    from datetime import UTC, datetime

    from monitoring_pipelines.alerting import types

    started = datetime(2026, 10, 5, 14, 5, tzinfo=UTC)
    last = datetime(2026, 10, 5, 14, 40, tzinfo=UTC)
    return types.Incident(
        fingerprint=fingerprint,
        tenant=tenant,
        service=service,
        kind=kind,
        severity=types.Severity.parse(severity),
        status=status,
        started_at=started,
        last_seen_at=last,
        resolved_at=last if status == "resolved" else None,
        score=7.25,
        metrics=(
            types.MetricEvidence(metric, 7.25, 1834.5, 3.1, started, last, 8),
            types.MetricEvidence("error_rate", 4.0, 0.031, 3.5, started, last, 3),
        ),
        model_versions={"isolation_forest": 3, "lstm": 2, "prophet": 1},
        run_id="0f8e-run-42",
        partition_key="2026-10-05|acme",
        summary=summary,
        labels={
            "tenant": tenant,
            "service": service,
            "severity": severity,
            "kind": kind,
            "metric": metric,
        },
    )


def sample_notification(
    receiver: str,
    event: str = "trigger",
    *,
    key: str | None = None,
    locale: str = "en",
    not_before=None,
    status: str = "pending",
    reason: str | None = None,
    **incident_kwargs,
):
    from monitoring_pipelines.alerting import types

    if event == types.RESOLVE:
        incident_kwargs.setdefault("status", "resolved")
    incident = sample_incident(**incident_kwargs)
    return types.Notification(
        idempotency_key=key or types.fingerprint(incident.fingerprint, receiver, event, 0),
        fingerprint=incident.fingerprint,
        tenant=incident.tenant,
        receiver=receiver,
        event=event,
        locale=locale,
        payload=types.notification_payload(incident, event, "http://dagster.local:3000"),
        not_before=not_before,
        status=status,
        reason=reason,
    )
