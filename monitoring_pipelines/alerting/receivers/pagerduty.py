"""PagerDuty through the Events API v2: trigger and resolve share the incident's dedup key. The
routing key is a secret: the spec names its environment variable in ``routing_key_env``."""

import os
from dataclasses import dataclass
from typing import ClassVar

from monitoring_pipelines.alerting import types
from monitoring_pipelines.alerting.message import Message
from monitoring_pipelines.alerting.receivers.base import DeliveryError, SpecReader, env_secret
from monitoring_pipelines.alerting.receivers.http import HTTP_KEYS, HttpReceiver, clip, dumps
from monitoring_pipelines.alerting.redaction import credentials
from monitoring_pipelines.alerting.types import Notification

PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
PAGERDUTY_SEVERITY = {"critical": "critical", "high": "error", "medium": "warning", "low": "info"}


@dataclass
class PagerDutyReceiver(HttpReceiver):
    """PagerDuty Events API v2. Trigger, repeat and escalate send ``trigger`` and resolve sends
    ``resolve``, all with ``dedup_key`` = the incident fingerprint, so PagerDuty keeps one incident
    per fingerprint and the resolve closes it."""

    routing_key_env: str = ""
    url: str = PAGERDUTY_EVENTS_URL
    client: str = "monitoring-pipelines"

    type: ClassVar[str] = "pagerduty"
    spec_keys: ClassVar[frozenset[str]] = HTTP_KEYS | {"routing_key_env", "url", "client"}

    @classmethod
    def from_spec(cls, spec: SpecReader, locale: str) -> "PagerDutyReceiver":
        return cls(
            name=spec.name,
            locale=locale,
            routing_key_env=spec.env_name("routing_key_env", required=True),
            url=spec.url("url", default=PAGERDUTY_EVENTS_URL),
            client=spec.string("client", default="monitoring-pipelines"),
            **cls.timeouts(spec),
        )

    def secrets(self) -> list[str]:
        return [os.environ.get(self.routing_key_env, ""), *credentials(self.url)]

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
                "summary": clip(message.title, 1024),
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
        if notification.event in (types.REPORT, types.DIGEST):
            # Reports and history digests are never routed here; a row that got here is dead.
            raise DeliveryError("PagerDuty takes incidents, not summaries", retryable=False)
        key = env_secret(self.routing_key_env, "pagerduty routing key")
        self.post_json(
            self.url, dumps(self.build(notification, message, key)), notification, secrets=[key]
        )
