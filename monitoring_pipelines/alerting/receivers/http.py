"""What HTTP receivers share: posting JSON, classifying the outcome, Retry-After, and signing.

A failure is ``retryable`` when trying again later can help (5xx, 408, 429, timeouts, refused
connections) and permanent otherwise (other 4xx, redirects, a malformed request). Every request
carries an ``Idempotency-Key`` header (the notification's key), so endpoints that honour it
deliver a retried notification once. URLs never reach an error message: for incoming webhooks
the URL is the credential.
"""

import email.utils
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

import requests

from monitoring_pipelines.alerting.message import Message
from monitoring_pipelines.alerting.receivers.base import (
    COMMON_KEYS,
    DeliveryError,
    Receiver,
    SpecReader,
    env_secret,
)
from monitoring_pipelines.alerting.redaction import redact
from monitoring_pipelines.alerting.types import Notification

USER_AGENT = "monitoring-pipelines/0.1"
DEFAULT_CONNECT_TIMEOUT = 3.05
DEFAULT_READ_TIMEOUT = 10.0
HTTP_KEYS = COMMON_KEYS | {"connect_timeout", "read_timeout"}


@dataclass
class HttpReceiver(Receiver):
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    spec_keys: ClassVar[frozenset[str]] = HTTP_KEYS

    @staticmethod
    def timeouts(spec: SpecReader) -> dict[str, float]:
        """``connect_timeout`` and ``read_timeout`` of a spec, in seconds."""
        return {
            "connect_timeout": spec.number(
                "connect_timeout", DEFAULT_CONNECT_TIMEOUT, low=0, high=60
            ),
            "read_timeout": spec.number("read_timeout", DEFAULT_READ_TIMEOUT, low=0, high=300),
        }

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


@dataclass
class SecretUrlReceiver(HttpReceiver):
    """An HTTP receiver whose URL is itself the credential (incoming webhooks): the spec names
    the environment variable that holds it in ``url_env``; subclasses build the JSON body."""

    url_env: str = ""
    spec_keys: ClassVar[frozenset[str]] = HTTP_KEYS | {"url_env"}
    # What the URL is called in the error when its variable is not set.
    url_what: ClassVar[str] = "webhook URL"

    @classmethod
    def from_spec(cls, spec: SpecReader, locale: str) -> "SecretUrlReceiver":
        return cls(
            name=spec.name,
            locale=locale,
            url_env=spec.env_name("url_env", required=True),
            **cls.timeouts(spec),
        )

    def secrets(self) -> list[str]:
        return [os.environ.get(self.url_env, "")]

    def build(self, notification: Notification, message: Message) -> dict:
        raise NotImplementedError

    def send(self, notification: Notification, message: Message) -> None:
        url = env_secret(self.url_env, self.url_what)
        self.post_json(url, dumps(self.build(notification, message)), notification)


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


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), None if absent
    or unreadable."""
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
    wait = retry_after(response.headers.get("Retry-After"))
    if status in (408, 429) or status >= 500:
        raise DeliveryError(detail, retryable=True, retry_after=wait)
    if 300 <= status < 400:
        raise DeliveryError(f"HTTP {status}: unexpected redirect", retryable=False)
    raise DeliveryError(detail, retryable=False)


def dumps(data: dict) -> bytes:
    """Compact UTF-8 JSON, the body every HTTP receiver sends."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis (payload fields have limits)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
    """Check a signed webhook request the way a receiving service should (see
    :class:`~monitoring_pipelines.alerting.receivers.webhook.WebhookReceiver`)."""
    try:
        sent = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature or "")
