"""What every receiver shares: the base class, the two errors, reading a spec, secrets from the
environment and their redaction, and an exclusive file lock.

A receiver is built from its policy spec by its class's :meth:`Receiver.from_spec`, which
validates the spec without touching the network. Secrets never appear in a spec: it names the
environment variables that hold them (``url_env``, ``routing_key_env``, ``password_env``,
``secret_env``), and they are read when a notification is sent, so a policy file can be reviewed
and committed safely.

``Receiver.send(notification, message)`` delivers one rendered notification or raises
:class:`DeliveryError`, which says whether trying again later can help (``retryable``) or not.
Error texts are redacted (:mod:`monitoring_pipelines.alerting.redaction`): they never contain a
webhook URL or a part of it, a routing key, a password or a signing secret.
"""

import contextlib
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from monitoring_pipelines.alerting.message import Message
from monitoring_pipelines.alerting.redaction import remember
from monitoring_pipelines.alerting.types import Notification

try:  # POSIX only: the lock across processes.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ReceiverConfigError(ValueError):
    """A receiver spec that cannot work; ``key`` names the offending key of the spec."""

    def __init__(self, key: str, message: str, receiver: str | None = None):
        self.key = key
        self.message = message
        self.receiver = receiver
        where = f"receiver {receiver!r}: " if receiver else ""
        super().__init__(f"{where}{key}: {message}")


class DeliveryError(Exception):
    """A failed delivery. ``message`` is already redacted and safe to store and log."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None):
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(message)


def env_secret(variable: str, what: str) -> str:
    """The secret held by environment variable ``variable`` (registered for redaction); ``what``
    names it in the error. An unset variable is retryable: the environment may be fixed before
    the notification gives up (``give_up_after``)."""
    value = os.environ.get(variable)
    if not value:
        # Naming the variable is fine; its value is the secret.
        raise DeliveryError(f"{what}: environment variable {variable} is not set", retryable=True)
    remember(value)
    return value


# Keys every spec may carry; HTTP receivers add their timeouts.
COMMON_KEYS = frozenset({"type", "locale"})

# Pointers to the environment variable for keys that would hold a secret in clear text.
SECRET_HINTS = {
    "url": "webhook URLs are secrets: name the environment variable that holds it in url_env",
    "webhook_url": "webhook URLs are secrets: name the environment variable in url_env",
    "routing_key": "routing keys are secrets: name the environment variable in routing_key_env",
    "integration_key": "routing keys are secrets: name the environment variable in routing_key_env",
    "password": "passwords are secrets: name the environment variable in password_env",
    "username": "use username_env",
    "secret": "signing secrets are secrets: name the environment variable in secret_env",
}


class SpecReader:
    """Reads typed values out of a receiver spec, naming the key in every error."""

    def __init__(
        self,
        name: str,
        spec: dict,
        allowed: set[str],
        hints: dict[str, str],
        home: Path | None = None,
    ):
        self.name = name
        self.spec = spec
        # MONITORING_HOME when the spec comes from a policy: local paths must stay inside it.
        self.home = home
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


@dataclass
class Receiver:
    """Base class: a named destination with a default locale.

    A subclass names its ``type`` (the policy's ``type:``), the keys its spec may carry
    (``spec_keys``, with ``spec_hints`` for keys that are refused with a pointer), and reads its
    spec in :meth:`from_spec`."""

    name: str
    locale: str = "en"
    type: ClassVar[str] = ""
    spec_keys: ClassVar[frozenset[str]] = COMMON_KEYS
    spec_hints: ClassVar[dict[str, str]] = SECRET_HINTS

    @classmethod
    def from_spec(cls, spec: SpecReader, locale: str) -> "Receiver":
        """The receiver a validated spec describes (no network, no secrets read)."""
        raise NotImplementedError

    def send(self, notification: Notification, message: Message) -> None:
        raise NotImplementedError

    def secrets(self) -> list[str]:
        """The secret values this receiver currently holds (read from the environment), for
        redaction."""
        return []

    def remember_secrets(self) -> None:
        """Register this receiver's current secret values for :func:`redact`."""
        remember(*self.secrets())

    def describe(self) -> str:
        """A one-line, secret-free description for logs and the CLI."""
        return f"{self.type} receiver {self.name!r}"


# What a report notification tells machines (webhook, file) about its report.
REPORT_FIELDS = (
    "kind",
    "tenant",
    "period",
    "title",
    "scope",
    "period_text",
    "has_data",
    "headlines",
    "summary",
    "paths",
    "url",
)


def report_body(report: dict) -> dict:
    """A report notification's report as JSON for machines: kind, tenant (None: all tenants),
    period, titles, headline figures, the Markdown summary, the files' paths and the link."""
    return {key: report.get(key) for key in REPORT_FIELDS}


_FILE_LOCKS: dict[str, threading.Lock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def locked_file(path: Path, mode: str = "a+b"):
    """``path`` opened in ``mode`` under an exclusive lock, between the threads of this process
    and (on POSIX) between processes, released when the block ends."""
    with _FILE_LOCKS_GUARD:
        thread_lock = _FILE_LOCKS.setdefault(str(path.resolve()), threading.Lock())
    with thread_lock, open(path, mode) as fh:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield fh
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
