"""The shapes alerting passes around: incidents (what happened) and notifications (who is told).

An incident is identified by its fingerprint, computed from the data alone (tenant, service, kind
and the first anomalous timestamp), so re-running a partition finds the same incident instead of
raising a second one. A notification is identified by its idempotency key (fingerprint, receiver,
event and sequence): the outbox stores it once, and receivers that honour the key deliver it once.
"""

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum


class Severity(IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> "Severity":
        try:
            return cls[text.strip().upper()]
        except KeyError:
            choices = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown severity {text!r} (expected one of {choices})") from None


# Incident kinds: anomalies in a tenant's metrics, a partition blocked by a quality check (goes to
# the data owner, not the tenant's on-call), and a failed pipeline run (goes to operations).
ANOMALY = "anomaly"
DATA_QUALITY = "data_quality"
PIPELINE_FAILURE = "pipeline_failure"

# Lifecycle. Acknowledged incidents stay acknowledged when the same partition is re-run.
FIRING = "firing"
ACKNOWLEDGED = "acknowledged"
RESOLVED = "resolved"

# Notification events.
TRIGGER = "trigger"
REPEAT = "repeat"
ESCALATE = "escalate"
RESOLVE = "resolve"


def fingerprint(*parts: object) -> str:
    """A stable 16-hex-digit identity for the given parts (same parts, same fingerprint)."""
    text = "\x1f".join(str(p) for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class MetricEvidence:
    """One metric's part in an incident: where it peaked and how far over its threshold."""

    metric: str
    peak_score: float
    peak_value: float | None
    threshold: float
    first_ts: datetime
    last_ts: datetime
    points: int


@dataclass
class Incident:
    fingerprint: str
    tenant: str
    service: str
    kind: str
    severity: Severity
    status: str
    started_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None
    score: float
    metrics: tuple[MetricEvidence, ...] = ()
    model_versions: dict[str, int] = field(default_factory=dict)
    run_id: str | None = None
    partition_key: str | None = None
    summary: str = ""
    # Labels that routing, silences and inhibition match on: tenant, service, severity, kind,
    # metric (the strongest one) and metrics (comma-separated).
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Notification:
    idempotency_key: str
    fingerprint: str
    tenant: str
    receiver: str
    event: str
    locale: str
    # Everything a template needs, as JSON-safe values: the incident, links, suggested next step.
    payload: dict
    # Delivery does not start before this time (escalations wait for their deadline).
    not_before: datetime | None = None
