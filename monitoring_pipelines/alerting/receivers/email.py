"""Email over SMTP: plain text and HTML, one thread per incident; a report is its own HTML file
with its Markdown summary as the plain-text part. Credentials, when the server wants them, come
from the environment variables named by ``username_env`` and ``password_env``."""

import email.utils
import os
import re
import smtplib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import ClassVar

from monitoring_pipelines.alerting import types
from monitoring_pipelines.alerting.message import Message
from monitoring_pipelines.alerting.receivers.base import (
    COMMON_KEYS,
    DeliveryError,
    Receiver,
    SpecReader,
    env_secret,
)
from monitoring_pipelines.alerting.receivers.http import DEFAULT_READ_TIMEOUT
from monitoring_pipelines.alerting.redaction import redact
from monitoring_pipelines.alerting.types import Notification

_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")
_KEYS = {"host", "port", "starttls", "ssl", "username_env", "password_env", "from", "to", "timeout"}


@dataclass
class EmailReceiver(Receiver):
    """SMTP: multipart/alternative (plain text and HTML), one thread per incident.

    ``Message-ID`` is derived from the idempotency key, so a retried send carries the same id and
    mail systems that deduplicate on it show one message; follow-ups (repeat, escalate, resolve)
    set ``In-Reply-To``/``References`` to the first notification's id so clients thread them.

    A report's HTML part is the report's own self-contained HTML file (inline CSS and SVG, no
    external request) and its plain-text part the Markdown summary with the file's path; while
    the file cannot be read the send fails, retryably (re-writing the report brings it back).
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

    type: ClassVar[str] = "email"
    spec_keys: ClassVar[frozenset[str]] = COMMON_KEYS | _KEYS

    @classmethod
    def from_spec(cls, spec: SpecReader, locale: str) -> "EmailReceiver":
        port = spec.spec.get("port", 25)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise spec.error("port", "must be a TCP port number")
        starttls, use_ssl = spec.boolean("starttls", False), spec.boolean("ssl", False)
        if starttls and use_ssl:
            raise spec.error("ssl", "choose one of starttls and ssl")
        username_env, password_env = spec.env_name("username_env"), spec.env_name("password_env")
        if (username_env is None) != (password_env is None):
            raise spec.error("password_env", "username_env and password_env go together")
        sender = spec.string("from", required=True)
        if not _EMAIL.match(sender.split("<")[-1].strip(">").strip()):
            raise spec.error("from", f"not an email address: {sender!r}")
        to = _recipients(spec)
        return cls(
            name=spec.name,
            locale=locale,
            host=spec.string("host", required=True),
            port=port,
            starttls=starttls,
            ssl=use_ssl,
            username_env=username_env,
            password_env=password_env,
            sender=sender,
            to=to,
            timeout=spec.number("timeout", DEFAULT_READ_TIMEOUT, low=0, high=300),
        )

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
        if notification.event == types.REPORT and not message.html:
            name = (notification.report.get("paths") or {}).get("html") or "its HTML file"
            raise DeliveryError(f"cannot read the report {name}", retryable=True)
        mail.set_content(message.text)
        mail.add_alternative(message.html, subtype="html")
        return mail

    def send(self, notification: Notification, message: Message) -> None:
        username = password = None
        if self.username_env:
            username = env_secret(self.username_env, "smtp username")
            password = env_secret(self.password_env or "", "smtp password")
        mail = self.build(notification, message)
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
        except OSError as exc:  # smtplib's errors are OSErrors too
            raise _delivery_error(exc, self.timeout, [password, username]) from None


def _recipients(spec: SpecReader) -> tuple[str, ...]:
    to = spec.spec.get("to")
    if isinstance(to, str):
        to = [to]
    if not isinstance(to, list) or not to:
        raise spec.error("to", "must be a non-empty list of addresses")
    for address in to:
        if not isinstance(address, str) or not _EMAIL.match(address.strip()):
            raise spec.error("to", f"not an email address: {address!r}")
    return tuple(a.strip() for a in to)


def _delivery_error(exc: OSError, timeout: float, secrets: list[str | None]) -> DeliveryError:
    """What a failed SMTP exchange means: 4xx replies and lost connections are worth retrying,
    5xx replies, refused credentials and TLS failures are not."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return DeliveryError(
            f"recipients refused (SMTP {', '.join(map(str, codes))})",
            retryable=all(400 <= c < 500 for c in codes),
        )
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return DeliveryError(f"SMTP authentication failed ({exc.smtp_code})", retryable=False)
    if isinstance(exc, smtplib.SMTPResponseException):
        text = (
            exc.smtp_error.decode(errors="replace")
            if isinstance(exc.smtp_error, bytes)
            else str(exc.smtp_error)
        )
        return DeliveryError(
            redact(f"SMTP {exc.smtp_code}: {text[:200]}", secrets),
            retryable=400 <= exc.smtp_code < 500,
        )
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return DeliveryError("SMTP server disconnected", retryable=True)
    if isinstance(exc, TimeoutError):
        return DeliveryError(f"SMTP timed out after {timeout:g}s", retryable=True)
    if isinstance(exc, ssl.SSLError):
        return DeliveryError(f"TLS failed ({type(exc).__name__})", retryable=False)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return DeliveryError(redact(f"SMTP not supported: {exc}", secrets), retryable=False)
    return DeliveryError(f"SMTP connection failed ({type(exc).__name__})", retryable=True)
