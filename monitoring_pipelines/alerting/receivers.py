"""Where notifications go: Slack, Microsoft Teams, PagerDuty, email, signed webhooks and files.

A receiver is built from its policy spec by :func:`receiver_from_spec`, which validates the spec
without touching the network. Secrets never appear in a spec: it names the environment variables
that hold them (``url_env``, ``routing_key_env``, ``password_env``, ``secret_env``), and they are
read when a notification is sent, so a policy file can be reviewed and committed safely.

``Receiver.send(notification, message)`` delivers one rendered notification or raises
:class:`DeliveryError`, which says whether trying again later can help (``retryable``: 5xx, 408,
429, timeouts, refused connections) or not (other 4xx, bad configuration). Error texts are
redacted: they never contain a webhook URL, a routing key, a password or a signing secret.

Every HTTP receiver sends an ``Idempotency-Key`` header (the notification's key), so endpoints that
honour it deliver a retried notification once; the email receiver derives the ``Message-ID`` from
the same key, and the file receiver never writes a key twice.
"""

import contextlib
import email.utils
import hashlib
import hmac
import json
import os
import re
import smtplib
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import requests

from monitoring_pipelines.alerting import types
from monitoring_pipelines.alerting.templates import LOCALES, Message
from monitoring_pipelines.alerting.types import Notification

try:  # POSIX only: the file receiver's lock across processes.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
PAGERDUTY_SEVERITY = {"critical": "critical", "high": "error", "medium": "warning", "low": "info"}
USER_AGENT = "monitoring-pipelines/0.1"
DEFAULT_CONNECT_TIMEOUT = 3.05
DEFAULT_READ_TIMEOUT = 10.0
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")


class ReceiverConfigError(ValueError):
    """A receiver spec that cannot work; ``key`` names the offending key of the spec."""

    def __init__(self, key: str, message: str, receiver: str | None = None):
        self.key = key
        self.message = message
        self.receiver = receiver
        where = f"receiver {receiver!r}: " if receiver else ""
        super().__init__(f"{where}{key}: {message}")


class DeliveryError(Exception):
    """A failed notification. ``message`` is already redacted and safe to store and log."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None):
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(message)


def redact(text: str, secrets: list[str | None]) -> str:
    """``text`` with every secret value (and its URL-quoted form) replaced by ``***``."""
    from urllib.parse import quote

    out = text
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        if len(secret) < 4:
            continue
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            out = out.replace(form, "***")
    return out


def _env_secret(variable: str, what: str) -> str:
    value = os.environ.get(variable)
    if not value:
        # Naming the variable is fine; its value is the secret.
        raise DeliveryError(f"{what}: environment variable {variable} is not set", retryable=False)
    return value


# -- spec validation ------------------------------------------------------------------------------

_COMMON_KEYS = {"type", "locale", "connect_timeout", "read_timeout"}


class _Spec:
    """Reads typed values out of a receiver spec, naming the key in every error."""

    def __init__(self, name: str, spec: dict, allowed: set[str], hints: dict[str, str]):
        self.name = name
        self.spec = spec
        for key in spec:
            if key not in allowed:
                hint = hints.get(key) or f"expected one of {', '.join(sorted(allowed))}"
                raise ReceiverConfigError(key, f"unknown key ({hint})", name)

    def error(self, key: str, message: str) -> ReceiverConfigError:
        return ReceiverConfigError(key, message, self.name)

    def string(self, key: str, *, required: bool = False, default: str | None = None):
        value = self.spec.get(key, default)
        if value is None:
            if required:
                raise self.error(key, "is required")
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, "must be a non-empty string")
        return value.strip()

    def env_name(self, key: str, *, required: bool = False) -> str | None:
        value = self.string(key, required=required)
        if value is not None and not _ENV_NAME.match(value):
            raise self.error(key, f"must name an environment variable, got {value!r}")
        return value

    def number(self, key: str, default: float, *, low: float, high: float) -> float:
        value = self.spec.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, "must be a number")
        if not low < float(value) <= high:
            raise self.error(key, f"must be in ({low}, {high}]")
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.spec.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, "must be true or false")
        return value

    def url(self, key: str, *, required: bool = False, default: str | None = None) -> str | None:
        value = self.string(key, required=required, default=default)
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise self.error(key, "must be an http(s) URL")
        return value


_SECRET_HINTS = {
    "url": "webhook URLs are secrets: name the environment variable that holds it in url_env",
    "webhook_url": "webhook URLs are secrets: name the environment variable in url_env",
    "routing_key": "routing keys are secrets: name the environment variable in routing_key_env",
    "integration_key": "routing keys are secrets: name the environment variable in routing_key_env",
    "password": "passwords are secrets: name the environment variable in password_env",
    "username": "use username_env",
    "secret": "signing secrets are secrets: name the environment variable in secret_env",
}


# -- receivers ------------------------------------------------------------------------------------


@dataclass
class Receiver:
    """Base class: a named destination with a default locale."""

    name: str
    locale: str = "en"
    type: str = field(default="", init=False)

    def send(self, notification: Notification, message: Message) -> None:
        raise NotImplementedError

    def secrets(self) -> list[str]:
        """The secret values this receiver currently holds, for redaction."""
        return []

    def describe(self) -> str:
        """A one-line, secret-free description for logs and the CLI."""
        return f"{self.type} receiver {self.name!r}"


@dataclass
class HttpReceiver(Receiver):
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT

    def post_json(
        self,
        url: str,
        body: bytes,
        notification: Notification,
        *,
        headers: dict[str, str] | None = None,
        secrets: list[str | None] = (),
    ) -> requests.Response:
        """POST ``body`` and classify the outcome; the URL never reaches an error message."""
        all_headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            "Idempotency-Key": notification.idempotency_key,
            **(headers or {}),
        }
        secret_values = [url, *secrets]
        try:
            response = requests.post(
                url,
                data=body,
                headers=all_headers,
                timeout=(self.connect_timeout, self.read_timeout),
                allow_redirects=False,
            )
        except requests.exceptions.ConnectTimeout:
            raise DeliveryError(
                f"connect timed out after {self.connect_timeout:g}s", retryable=True
            ) from None
        except requests.exceptions.ReadTimeout:
            raise DeliveryError(
                f"no response within {self.read_timeout:g}s", retryable=True
            ) from None
        except requests.exceptions.ConnectionError as exc:
            raise DeliveryError(f"connection failed ({_root_cause(exc)})", retryable=True) from None
        except requests.exceptions.RequestException as exc:
            raise DeliveryError(f"request failed ({type(exc).__name__})", retryable=False) from None
        _raise_for_status(response, secret_values)
        return response


def _root_cause(exc: BaseException) -> str:
    """The innermost exception's class name (its text may carry the URL)."""
    seen = exc
    while True:
        inner = seen.__cause__ or seen.__context__
        if inner is None or inner is seen:
            break
        seen = inner
    reason = getattr(seen, "reason", None)
    if isinstance(reason, BaseException):
        seen = reason
    name = type(seen).__name__
    if "refused" in str(seen).lower() and "Refused" not in name:
        name = f"{name}: connection refused"
    return name


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _raise_for_status(response: requests.Response, secrets: list[str | None]) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    snippet = redact(response.text[:200].strip(), list(secrets)).replace("\n", " ")
    detail = f"HTTP {status}" + (f": {snippet}" if snippet else "")
    retry_after = _retry_after(response.headers.get("Retry-After"))
    if status in (408, 429) or status >= 500:
        raise DeliveryError(detail, retryable=True, retry_after=retry_after)
    if 300 <= status < 400:
        raise DeliveryError(f"HTTP {status}: unexpected redirect", retryable=False)
    raise DeliveryError(detail, retryable=False)


def _dumps(data: dict) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class SlackReceiver(HttpReceiver):
    """Slack incoming webhook: Block Kit blocks, with the title as the notification fallback."""

    url_env: str = ""

    def __post_init__(self):
        self.type = "slack"

    def secrets(self) -> list[str]:
        return [os.environ.get(self.url_env, "")]

    def build(self, notification: Notification, message: Message) -> dict:
        esc = _slack_escape
        facts = [
            {"type": "mrkdwn", "text": _clip(f"*{esc(k)}*\n{esc(v)}", 2000)}
            for k, v in message.facts[:10]
        ]
        blocks: list[dict] = [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": _clip(message.title, 150), "emoji": True},
            },
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _clip(esc(message.intro), 3000)},
            },
            {"type": "section", "fields": facts},
        ]
        if message.metrics:
            h = message.metric_header
            lines = [
                f"• `{esc(m.metric)}`: {h[1]} {m.value}, {h[2]} *{m.score}* / {h[3]} {m.threshold}"
                for m in message.metrics
            ]
            blocks.append(
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": _clip("\n".join(lines), 3000)},
                }
            )
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": _clip(f":point_right: {esc(message.next_step)}", 3000),
                },
            }
        )
        if message.links:
            blocks.append(
                {
                    "type": "actions",
                    "elements": [
                        {
                            "type": "button",
                            "text": {"type": "plain_text", "text": _clip(label, 75)},
                            "url": url,
                            "action_id": f"link_{i}",
                        }
                        for i, (label, url) in enumerate(message.links[:5])
                    ],
                }
            )
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": esc(message.footer)}]}
        )
        return {"text": message.title, "blocks": blocks}

    def send(self, notification: Notification, message: Message) -> None:
        url = _env_secret(self.url_env, "slack webhook URL")
        self.post_json(url, _dumps(self.build(notification, message)), notification)


@dataclass
class TeamsReceiver(HttpReceiver):
    """Microsoft Teams through a Power Automate "post to a channel when a webhook request is
    received" workflow: a message with one Adaptive Card 1.4 attachment."""

    url_env: str = ""

    def __post_init__(self):
        self.type = "teams"

    def secrets(self) -> list[str]:
        return [os.environ.get(self.url_env, "")]

    def build(self, notification: Notification, message: Message) -> dict:
        color = (
            "Good"
            if message.event == types.RESOLVE
            else ("Attention" if message.severity in ("critical", "high") else "Warning")
        )
        body: list[dict] = [
            {
                "type": "TextBlock",
                "text": message.title,
                "weight": "Bolder",
                "size": "Medium",
                "color": color,
                "wrap": True,
                "style": "heading",
            },
            {"type": "TextBlock", "text": message.intro, "wrap": True},
            {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in message.facts]},
        ]
        if message.metrics:
            h = message.metric_header
            body.append(
                {
                    "type": "FactSet",
                    "separator": True,
                    "facts": [
                        {
                            "title": m.metric,
                            "value": f"{h[1]} {m.value} · {h[2]} {m.score} / {h[3]} {m.threshold}",
                        }
                        for m in message.metrics
                    ],
                }
            )
        body.append(
            {"type": "TextBlock", "text": message.next_step, "wrap": True, "separator": True}
        )
        body.append(
            {
                "type": "TextBlock",
                "text": message.footer,
                "wrap": True,
                "isSubtle": True,
                "size": "Small",
            }
        )
        card = {
            "type": "AdaptiveCard",
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "version": "1.4",
            "msteams": {"width": "Full"},
            "body": body,
            "actions": [
                {"type": "Action.OpenUrl", "title": label, "url": url}
                for label, url in message.links
            ],
        }
        return {
            "type": "message",
            "summary": message.title,
            "attachments": [
                {
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": None,
                    "content": card,
                }
            ],
        }

    def send(self, notification: Notification, message: Message) -> None:
        url = _env_secret(self.url_env, "teams workflow URL")
        self.post_json(url, _dumps(self.build(notification, message)), notification)


@dataclass
class PagerDutyReceiver(HttpReceiver):
    """PagerDuty Events API v2. Trigger, repeat and escalate send ``trigger`` and resolve sends
    ``resolve``, all with ``dedup_key`` = the incident fingerprint, so PagerDuty keeps one incident
    per fingerprint and the resolve closes it."""

    routing_key_env: str = ""
    url: str = PAGERDUTY_EVENTS_URL
    client: str = "monitoring-pipelines"

    def __post_init__(self):
        self.type = "pagerduty"

    def secrets(self) -> list[str]:
        return [os.environ.get(self.routing_key_env, "")]

    def build(self, notification: Notification, message: Message, routing_key: str) -> dict:
        incident = notification.incident
        if notification.event == types.RESOLVE:
            return {
                "routing_key": routing_key,
                "event_action": "resolve",
                "dedup_key": notification.fingerprint,
            }
        metric = (incident.get("labels") or {}).get("metric") or next(
            (m["metric"] for m in incident.get("metrics") or []), None
        )
        event = {
            "routing_key": routing_key,
            "event_action": "trigger",
            "dedup_key": notification.fingerprint,
            "payload": {
                "summary": _clip(message.title, 1024),
                "source": f"{notification.tenant}/{incident.get('service', '')}",
                "severity": PAGERDUTY_SEVERITY.get(message.severity, "warning"),
                "timestamp": incident.get("started_at"),
                "component": incident.get("service"),
                "group": notification.tenant,
                "class": f"{incident.get('kind')}/{metric}" if metric else incident.get("kind"),
                "custom_details": {
                    "event": notification.event,
                    "intro": message.intro,
                    "summary": incident.get("summary"),
                    "score": incident.get("score"),
                    "metrics": incident.get("metrics"),
                    "model_versions": incident.get("model_versions"),
                    "run_id": incident.get("run_id"),
                    "partition_key": incident.get("partition_key"),
                    "next_step": message.next_step,
                    "fingerprint": notification.fingerprint,
                },
            },
            "client": self.client,
            "links": [{"href": url, "text": label} for label, url in message.links],
        }
        if notification.links.get("run"):
            event["client_url"] = notification.links["run"]
        return event

    def send(self, notification: Notification, message: Message) -> None:
        key = _env_secret(self.routing_key_env, "pagerduty routing key")
        self.post_json(
            self.url, _dumps(self.build(notification, message, key)), notification, secrets=[key]
        )


@dataclass
class WebhookReceiver(HttpReceiver):
    """A generic JSON POST signed with HMAC-SHA256.

    Headers: ``X-Monitoring-Timestamp`` (Unix seconds), ``X-Monitoring-Signature:
    sha256=<hex>``, ``Idempotency-Key`` and ``X-Monitoring-Event``. The signature is
    ``HMAC-SHA256(secret, timestamp + "." + raw_body)`` in lowercase hex. To verify:

    1. read the raw body bytes (before any JSON parsing) and the two headers;
    2. refuse timestamps more than five minutes from your clock (replays);
    3. compute ``hmac.new(secret, f"{timestamp}.".encode() + body, sha256).hexdigest()`` and
       compare it with the header after ``sha256=`` using a constant-time comparison
       (``hmac.compare_digest``); :func:`verify_signature` does all three;
    4. deduplicate on ``Idempotency-Key`` (also in the body): retries resend the same key.

    The body is the same for every attempt of a notification: ``idempotency_key``, ``event``,
    ``receiver``, ``tenant``, ``locale``, ``title``, ``text``, ``next_step``, ``incident`` and
    ``links``.
    """

    url: str | None = None
    url_env: str | None = None
    secret_env: str = ""

    def __post_init__(self):
        self.type = "webhook"

    def secrets(self) -> list[str]:
        values = [os.environ.get(self.secret_env, "")]
        if self.url_env:
            values.append(os.environ.get(self.url_env, ""))
        return values

    def build(self, notification: Notification, message: Message) -> dict:
        return {
            "idempotency_key": notification.idempotency_key,
            "event": notification.event,
            "receiver": notification.receiver,
            "tenant": notification.tenant,
            "locale": message.locale,
            "title": message.title,
            "text": message.text,
            "next_step": message.next_step,
            "incident": notification.incident,
            "links": notification.links,
        }

    def send(self, notification: Notification, message: Message) -> None:
        secret = _env_secret(self.secret_env, "webhook signing secret")
        url = self.url or _env_secret(self.url_env or "", "webhook URL")
        body = _dumps(self.build(notification, message))
        timestamp = str(int(time.time()))
        headers = {
            "X-Monitoring-Timestamp": timestamp,
            "X-Monitoring-Signature": sign(secret, timestamp, body),
            "X-Monitoring-Event": notification.event,
        }
        secrets = [secret] + ([url] if self.url_env else [])
        self.post_json(url, body, notification, headers=headers, secrets=secrets)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Monitoring-Signature`` header value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    tolerance_seconds: float = 300,
    now: float | None = None,
) -> bool:
    """Check a webhook request the way a receiving service should (see :class:`WebhookReceiver`)."""
    try:
        sent = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature or "")


@dataclass
class EmailReceiver(Receiver):
    """SMTP: multipart/alternative (plain text and HTML), one thread per incident.

    ``Message-ID`` is derived from the idempotency key, so a retried send carries the same id and
    mail systems that deduplicate on it show one message; follow-ups (repeat, escalate, resolve)
    set ``In-Reply-To``/``References`` to the first notification's id so clients thread them.
    """

    host: str = "localhost"
    port: int = 25
    starttls: bool = False
    ssl: bool = False
    username_env: str | None = None
    password_env: str | None = None
    sender: str = ""
    to: tuple[str, ...] = ()
    timeout: float = DEFAULT_READ_TIMEOUT

    def __post_init__(self):
        self.type = "email"

    def secrets(self) -> list[str]:
        return [
            os.environ.get(self.password_env or "", ""),
            os.environ.get(self.username_env or "", ""),
        ]

    def describe(self) -> str:
        return f"email receiver {self.name!r} via {self.host}:{self.port} to {', '.join(self.to)}"

    @property
    def domain(self) -> str:
        return self.sender.rsplit("@", 1)[-1].strip(">") or "monitoring-pipelines.local"

    def message_id(self, idempotency_key: str) -> str:
        return f"<{idempotency_key}.{self.name}@{self.domain}>"

    def build(self, notification: Notification, message: Message) -> EmailMessage:
        mail = EmailMessage()
        mail["Subject"] = message.title
        mail["From"] = self.sender
        mail["To"] = ", ".join(self.to)
        mail["Date"] = email.utils.format_datetime(datetime.now(UTC))
        mail["Message-ID"] = self.message_id(notification.idempotency_key)
        if notification.thread_key and notification.thread_key != notification.idempotency_key:
            root = self.message_id(notification.thread_key)
            mail["In-Reply-To"] = root
            mail["References"] = root
        mail["Auto-Submitted"] = "auto-generated"
        mail["Content-Language"] = message.locale
        mail["X-Monitoring-Idempotency-Key"] = notification.idempotency_key
        mail["X-Monitoring-Fingerprint"] = notification.fingerprint
        mail["X-Monitoring-Event"] = notification.event
        mail.set_content(message.text)
        mail.add_alternative(message.html, subtype="html")
        return mail

    def send(self, notification: Notification, message: Message) -> None:
        username = password = None
        if self.username_env:
            username = _env_secret(self.username_env, "smtp username")
            password = _env_secret(self.password_env or "", "smtp password")
        mail = self.build(notification, message)
        secrets = [password, username]
        try:
            if self.ssl:
                client = smtplib.SMTP_SSL(
                    self.host,
                    self.port,
                    timeout=self.timeout,
                    context=ssl.create_default_context(),
                )
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with client:
                if self.starttls:
                    client.starttls(context=ssl.create_default_context())
                if username:
                    client.login(username, password)
                client.send_message(mail, from_addr=self.sender, to_addrs=list(self.to))
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise DeliveryError(
                f"recipients refused (SMTP {', '.join(map(str, codes))})",
                retryable=all(400 <= c < 500 for c in codes),
            ) from None
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(
                f"SMTP authentication failed ({exc.smtp_code})", retryable=False
            ) from None
        except smtplib.SMTPResponseException as exc:
            text = (
                exc.smtp_error.decode(errors="replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            raise DeliveryError(
                redact(f"SMTP {exc.smtp_code}: {text[:200]}", secrets),
                retryable=400 <= exc.smtp_code < 500,
            ) from None
        except smtplib.SMTPServerDisconnected:
            raise DeliveryError("SMTP server disconnected", retryable=True) from None
        except TimeoutError:
            raise DeliveryError(f"SMTP timed out after {self.timeout:g}s", retryable=True) from None
        except ssl.SSLError as exc:
            raise DeliveryError(f"TLS failed ({type(exc).__name__})", retryable=False) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise DeliveryError(
                redact(f"SMTP not supported: {exc}", secrets), retryable=False
            ) from None
        except OSError as exc:
            raise DeliveryError(
                f"SMTP connection failed ({type(exc).__name__})", retryable=True
            ) from None


_FILE_LOCKS: dict[str, threading.Lock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


@dataclass
class FileReceiver(Receiver):
    """Appends one JSON line per notification to ``path``; the offline default of ``make demo``.

    Each line carries its ``idempotency_key`` and a key is never written twice: before appending,
    under an exclusive lock (between threads and between processes), the file is scanned for the
    key. So a dispatcher killed after writing but before marking the row sent writes nothing the
    second time. A line cut short by a crash is ignored and the next line starts on its own.
    """

    path: str = ""
    _index: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        self.type = "file"

    def describe(self) -> str:
        return f"file receiver {self.name!r} at {self.target}"

    @property
    def target(self) -> Path:
        """The JSON-lines file: a relative ``path`` is under ``MONITORING_HOME``, and a path
        without a suffix is a directory holding ``notifications.jsonl``."""
        path = Path(self.path).expanduser()
        if not path.is_absolute():
            from monitoring_pipelines.settings import load_settings

            path = load_settings().home / path
        return path if path.suffix else path / "notifications.jsonl"

    def _thread_lock(self) -> threading.Lock:
        with _FILE_LOCKS_GUARD:
            return _FILE_LOCKS.setdefault(str(self.target.resolve()), threading.Lock())

    def _scan(self, fh) -> set[str]:
        """Keys in the file, read incrementally from where the previous scan stopped."""
        stat = os.fstat(fh.fileno())
        identity = (stat.st_dev, stat.st_ino)
        if self._index.get("identity") != identity or stat.st_size < self._index.get("offset", 0):
            self._index = {"identity": identity, "offset": 0, "keys": set()}
        fh.seek(self._index["offset"])
        data = fh.read()
        # Only complete lines count; a torn last line is re-read (and ignored) next time.
        complete = data[: data.rfind(b"\n") + 1]
        for line in complete.splitlines():
            with contextlib.suppress(ValueError, AttributeError):
                key = json.loads(line).get("idempotency_key")
                if key:
                    self._index["keys"].add(key)
        self._index["offset"] += len(complete)
        return self._index["keys"]

    def send(self, notification: Notification, message: Message) -> None:
        record = {
            "idempotency_key": notification.idempotency_key,
            "fingerprint": notification.fingerprint,
            "receiver": notification.receiver,
            "tenant": notification.tenant,
            "event": notification.event,
            "locale": message.locale,
            "severity": message.severity,
            "title": message.title,
            "text": message.text,
            "next_step": message.next_step,
            "incident": notification.incident,
            "links": notification.links,
            "written_at": datetime.now(UTC).isoformat(),
        }
        line = json.dumps(record, ensure_ascii=False, sort_keys=True).encode() + b"\n"
        target = self.target
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with self._thread_lock(), open(target, "a+b") as fh:
                if fcntl is not None:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                try:
                    if notification.idempotency_key in self._scan(fh):
                        return
                    fh.seek(0, os.SEEK_END)
                    if fh.tell() > 0:
                        fh.seek(-1, os.SEEK_END)
                        if fh.read(1) != b"\n":
                            line = b"\n" + line  # after a torn line, start a fresh one
                    fh.seek(0, os.SEEK_END)
                    fh.write(line)
                    fh.flush()
                    os.fsync(fh.fileno())
                finally:
                    if fcntl is not None:
                        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        except OSError as exc:
            raise DeliveryError(
                f"cannot write {target.name} ({type(exc).__name__}: {exc.strerror})",
                retryable=True,
            ) from None


# -- specs ----------------------------------------------------------------------------------------

RECEIVER_TYPES = ("slack", "teams", "pagerduty", "email", "webhook", "file")
_ALIASES = {"msteams": "teams"}


def receiver_from_spec(name: str, spec: dict) -> Receiver:
    """Build a receiver from its policy spec, validating types and keys (no network, no secrets).

    Common keys: ``type`` (one of :data:`RECEIVER_TYPES`), ``locale`` (default ``en``), and for
    HTTP receivers ``connect_timeout`` / ``read_timeout`` in seconds. Per type:

    - ``slack``, ``teams``: ``url_env`` (the webhook or workflow URL is a secret);
    - ``pagerduty``: ``routing_key_env``, optional ``url`` (default the Events API v2 endpoint);
    - ``email``: ``host``, ``port``, ``starttls`` / ``ssl``, ``username_env`` + ``password_env``,
      ``from``, ``to`` (a list), ``timeout``;
    - ``webhook``: ``url`` or ``url_env``, and ``secret_env`` (the HMAC signing secret);
    - ``file``: ``path`` (relative to ``MONITORING_HOME``; without a suffix, a directory that
      gets ``notifications.jsonl``).

    Unknown keys are refused with the key named in the :class:`ReceiverConfigError`.
    """
    if not isinstance(spec, dict):
        raise ReceiverConfigError("type", "a receiver spec must be a mapping", name)
    kind = spec.get("type")
    kind = _ALIASES.get(kind, kind) if isinstance(kind, str) else kind
    if kind not in RECEIVER_TYPES:
        raise ReceiverConfigError(
            "type", f"must be one of {', '.join(RECEIVER_TYPES)}, got {kind!r}", name
        )
    locale = spec.get("locale", "en")
    if locale not in LOCALES:
        raise ReceiverConfigError(
            "locale", f"must be one of {', '.join(LOCALES)}, got {locale!r}", name
        )
    http_keys = _COMMON_KEYS
    if kind in ("slack", "teams"):
        s = _Spec(name, spec, http_keys | {"url_env"}, _SECRET_HINTS)
        cls = SlackReceiver if kind == "slack" else TeamsReceiver
        return cls(
            name=name, locale=locale, url_env=s.env_name("url_env", required=True), **_timeouts(s)
        )
    if kind == "pagerduty":
        s = _Spec(name, spec, http_keys | {"routing_key_env", "url", "client"}, _SECRET_HINTS)
        return PagerDutyReceiver(
            name=name,
            locale=locale,
            routing_key_env=s.env_name("routing_key_env", required=True),
            url=s.url("url", default=PAGERDUTY_EVENTS_URL),
            client=s.string("client", default="monitoring-pipelines"),
            **_timeouts(s),
        )
    if kind == "webhook":
        hints = {k: v for k, v in _SECRET_HINTS.items() if k != "url"}
        s = _Spec(name, spec, http_keys | {"url", "url_env", "secret_env"}, hints)
        url, url_env = s.url("url"), s.env_name("url_env")
        if (url is None) == (url_env is None):
            raise s.error("url", "give exactly one of url and url_env")
        return WebhookReceiver(
            name=name,
            locale=locale,
            url=url,
            url_env=url_env,
            secret_env=s.env_name("secret_env", required=True),
            **_timeouts(s),
        )
    if kind == "email":
        keys = {
            "type",
            "locale",
            "host",
            "port",
            "starttls",
            "ssl",
            "username_env",
            "password_env",
            "from",
            "to",
            "timeout",
        }
        s = _Spec(name, spec, keys, _SECRET_HINTS)
        port = spec.get("port", 25)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise s.error("port", "must be a TCP port number")
        starttls, use_ssl = s.boolean("starttls", False), s.boolean("ssl", False)
        if starttls and use_ssl:
            raise s.error("ssl", "choose one of starttls and ssl")
        username_env, password_env = s.env_name("username_env"), s.env_name("password_env")
        if (username_env is None) != (password_env is None):
            raise s.error("password_env", "username_env and password_env go together")
        sender = s.string("from", required=True)
        if not _EMAIL.match(sender.split("<")[-1].strip(">").strip()):
            raise s.error("from", f"not an email address: {sender!r}")
        to = spec.get("to")
        if isinstance(to, str):
            to = [to]
        if not isinstance(to, list) or not to:
            raise s.error("to", "must be a non-empty list of addresses")
        for address in to:
            if not isinstance(address, str) or not _EMAIL.match(address.strip()):
                raise s.error("to", f"not an email address: {address!r}")
        return EmailReceiver(
            name=name,
            locale=locale,
            host=s.string("host", required=True),
            port=port,
            starttls=starttls,
            ssl=use_ssl,
            username_env=username_env,
            password_env=password_env,
            sender=sender,
            to=tuple(a.strip() for a in to),
            timeout=s.number("timeout", DEFAULT_READ_TIMEOUT, low=0, high=300),
        )
    s = _Spec(name, spec, {"type", "locale", "path"}, {})
    return FileReceiver(name=name, locale=locale, path=s.string("path", required=True))


def _timeouts(s: _Spec) -> dict[str, float]:
    return {
        "connect_timeout": s.number("connect_timeout", DEFAULT_CONNECT_TIMEOUT, low=0, high=60),
        "read_timeout": s.number("read_timeout", DEFAULT_READ_TIMEOUT, low=0, high=300),
    }


def build_receivers(specs: dict[str, dict]) -> dict[str, Receiver]:
    """Every receiver of a policy's ``receivers`` mapping, by name (what ``dispatch`` takes)."""
    return {name: receiver_from_spec(name, dict(spec)) for name, spec in specs.items()}
