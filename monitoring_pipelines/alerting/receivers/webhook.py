"""A generic webhook: JSON POSTed and signed with HMAC-SHA256 (see :class:`WebhookReceiver` for
how to check the signature). The URL is given as ``url`` or, when it is a secret, ``url_env``; the
signing secret's environment variable as ``secret_env``."""

import os
import time
from dataclasses import dataclass
from typing import ClassVar

from monitoring_pipelines.alerting import types
from monitoring_pipelines.alerting.message import Message
from monitoring_pipelines.alerting.receivers.base import (
    SECRET_HINTS,
    SpecReader,
    env_secret,
    report_body,
)
from monitoring_pipelines.alerting.receivers.http import HTTP_KEYS, HttpReceiver, dumps, sign
from monitoring_pipelines.alerting.redaction import credentials
from monitoring_pipelines.alerting.types import Notification


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
       (``hmac.compare_digest``); ``receivers.verify_signature`` does all three;
    4. deduplicate on ``Idempotency-Key`` (also in the body): retries resend the same key.

    The body is the same for every attempt of a notification: ``idempotency_key``, ``event``,
    ``receiver``, ``tenant``, ``locale``, ``title``, ``text``, ``next_step``, ``incident`` and
    ``links``. A report (``event: report``) carries ``report`` instead of ``incident``: its kind,
    tenant (null: all tenants), period, headline figures, Markdown ``summary``, ``paths`` (html,
    json, md) and ``url`` (null without ``MONITORING_REPORTS_URL``). A history digest
    (``event: digest``) carries ``digest`` instead: ``tenant``, ``count``, ``by_severity``,
    ``first_started_at``, ``last_seen_at``, ``page_lookback`` and the incidents' ``fingerprints``.
    """

    url: str | None = None
    url_env: str | None = None
    secret_env: str = ""

    type: ClassVar[str] = "webhook"
    spec_keys: ClassVar[frozenset[str]] = HTTP_KEYS | {"url", "url_env", "secret_env"}
    # Here a plain ``url`` is allowed (the signature authenticates the request).
    spec_hints: ClassVar[dict[str, str]] = {k: v for k, v in SECRET_HINTS.items() if k != "url"}

    @classmethod
    def from_spec(cls, spec: SpecReader, locale: str) -> "WebhookReceiver":
        url, url_env = spec.url("url"), spec.env_name("url_env")
        if (url is None) == (url_env is None):
            raise spec.error("url", "give exactly one of url and url_env")
        return cls(
            name=spec.name,
            locale=locale,
            url=url,
            url_env=url_env,
            secret_env=spec.env_name("secret_env", required=True),
            **cls.timeouts(spec),
        )

    def secrets(self) -> list[str]:
        values = [os.environ.get(self.secret_env, ""), *credentials(self.url)]
        if self.url_env:
            values.append(os.environ.get(self.url_env, ""))
        return values

    def build(self, notification: Notification, message: Message) -> dict:
        body = {
            "idempotency_key": notification.idempotency_key,
            "event": notification.event,
            "receiver": notification.receiver,
            "tenant": notification.tenant,
            "locale": message.locale,
            "title": message.title,
            "text": message.text,
        }
        if notification.event == types.REPORT:
            body["report"] = report_body(notification.report)
        elif notification.event == types.DIGEST:
            body.update(next_step=message.next_step, digest=notification.digest)
        else:
            body.update(next_step=message.next_step, incident=notification.incident)
        body["links"] = notification.links
        return body

    def send(self, notification: Notification, message: Message) -> None:
        secret = env_secret(self.secret_env, "webhook signing secret")
        url = self.url or env_secret(self.url_env or "", "webhook URL")
        body = dumps(self.build(notification, message))
        timestamp = str(int(time.time()))
        headers = {
            "X-Monitoring-Timestamp": timestamp,
            "X-Monitoring-Signature": sign(secret, timestamp, body),
            "X-Monitoring-Event": notification.event,
        }
        secrets = [secret] + ([url] if self.url_env else [])
        self.post_json(url, body, notification, headers=headers, secrets=secrets)
