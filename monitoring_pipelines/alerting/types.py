"""The alert data model: incidents (what happened) and notifications (who is told about it).

Every alerting module passes these around; the warehouse keeps incidents in its ``alerts`` table
and notifications in its ``notifications`` table (see ``store`` and ``outbox``).

An incident is identified by its fingerprint, computed from the data alone (tenant, service, kind
and the first anomalous timestamp), so re-running a partition finds the same incident instead of
raising a second one. A notification is identified by its idempotency key (fingerprint, receiver,
event and sequence): the outbox stores it once, and receivers that honour the key deliver it once.

A weekly or monthly report is a notification too, of its own event (``report``), not about an
incident: its fingerprint is the report's (kind, period start, tenant or all tenants), so
re-running a period queues nothing new (:func:`report_fingerprint`).
"""

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
# A weekly or monthly report, routed by the policy's ``reports:`` section (not an incident).
REPORT = "report"
# One summary per tenant and receiver of the incidents found in past data (history: their last
# anomaly older than the tenant's ``page_lookback``), which are recorded but not paged.
DIGEST = "digest"
# The reason of a notification held back as history, before and after a digest summarised it.
HISTORY = "history"
HISTORY_SUMMARISED = "history, summarised in "
# Report kinds as the policy names them, and the scope name of the all-tenants report.
REPORT_KINDS = ("weekly", "monthly")
ALL_TENANTS = "all"
# Notification statuses (the ``notifications`` table's ``status``): planned as pending or
# suppressed (silenced, inhibited, rate limited; kept with the reason); then the outbox's sending,
# sent, dead (given up, with the reason) or cancelled (a follow-up whose incident was handled).
PENDING = "pending"
SENDING = "sending"
SENT = "sent"
DEAD = "dead"
CANCELLED = "cancelled"
SUPPRESSED = "suppressed"
STATUSES = (PENDING, SENDING, SENT, DEAD, CANCELLED, SUPPRESSED)

# The order of an incident's events at the same moment: planning lists them so, and the outbox
# sends them so (a resolve never goes before the trigger it closes).
EVENT_ORDER = {TRIGGER: 0, REPEAT: 1, ESCALATE: 2, RESOLVE: 3, REPORT: 4, DIGEST: 5}


def fingerprint(*parts: object) -> str:
    """A stable 16-hex-digit identity for the given parts (same parts, same fingerprint)."""
    text = "\x1f".join(str(p) for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def report_fingerprint(kind: str, period_start: str, tenant: str | None) -> str:
    """The identity of one report: its kind (weekly, monthly), the first day of its period and
    its tenant (None: the all-tenants report, which no tenant's name can collide with)."""
    scope = "all-tenants" if tenant is None else f"tenant:{tenant}"
    return fingerprint(REPORT, kind, period_start, scope)


def digest_fingerprint(tenant: str) -> str:
    """The identity a tenant's history digests are stored under (no incident has it)."""
    return fingerprint(DIGEST, tenant)


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
    """One message to one receiver about one incident, from the planner through the outbox to the
    receiver that sends it."""

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
    # As planned: PENDING to be delivered, or SUPPRESSED (silenced, inhibited, rate limited) with
    # a reason; suppressed notifications are stored too, so nothing disappears without a trace.
    # Once stored, the outbox moves it through the other STATUSES.
    status: str = PENDING
    reason: str | None = None
    # Set by the outbox when it hands the notification to a receiver: the idempotency key of the
    # incident's first notification to the same receiver, so that follow-ups (resolve, repeat)
    # can thread onto it (email In-Reply-To; None for the first), and when it was stored.
    thread_key: str | None = None
    created_at: datetime | None = None

    @property
    def incident(self) -> dict:
        return self.payload.get("incident") or {}

    @property
    def links(self) -> dict:
        return self.payload.get("links") or {}

    @property
    def digest(self) -> dict:
        """A history digest's figures (see ``history.fold_history``); else {}."""
        return self.payload.get("digest") or {}

    @property
    def report(self) -> dict:
        """A report notification's report (kind, period, paths, headline figures); else {}."""
        return self.payload.get("report") or {}


def utc(value: datetime | str | None) -> datetime | None:
    """A UTC datetime from a datetime or ISO text (SQLite hands back naive datetimes: UTC)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def incident_to_dict(incident: Incident) -> dict:
    """The incident as JSON-safe values (what notification payloads and the CLI carry)."""
    return {
        "fingerprint": incident.fingerprint,
        "tenant": incident.tenant,
        "service": incident.service,
        "kind": incident.kind,
        "severity": incident.severity.label,
        "status": incident.status,
        "started_at": _iso(incident.started_at),
        "last_seen_at": _iso(incident.last_seen_at),
        "resolved_at": _iso(incident.resolved_at),
        "score": incident.score,
        "metrics": [
            {
                "metric": m.metric,
                "peak_score": m.peak_score,
                "peak_value": m.peak_value,
                "threshold": m.threshold,
                "first_ts": _iso(m.first_ts),
                "last_ts": _iso(m.last_ts),
                "points": m.points,
            }
            for m in incident.metrics
        ],
        "model_versions": dict(incident.model_versions),
        "run_id": incident.run_id,
        "partition_key": incident.partition_key,
        "summary": incident.summary,
        "labels": dict(incident.labels),
    }


def incident_from_dict(data: dict) -> Incident:
    return Incident(
        fingerprint=data["fingerprint"],
        tenant=data["tenant"],
        service=data["service"],
        kind=data["kind"],
        severity=Severity.parse(data["severity"]),
        status=data["status"],
        started_at=_dt(data["started_at"]),
        last_seen_at=_dt(data["last_seen_at"]),
        resolved_at=_dt(data.get("resolved_at")),
        score=float(data["score"]),
        metrics=tuple(
            MetricEvidence(
                metric=m["metric"],
                peak_score=float(m["peak_score"]),
                peak_value=m.get("peak_value"),
                threshold=float(m["threshold"]),
                first_ts=_dt(m["first_ts"]),
                last_ts=_dt(m["last_ts"]),
                points=int(m["points"]),
            )
            for m in data.get("metrics", [])
        ),
        model_versions=dict(data.get("model_versions") or {}),
        run_id=data.get("run_id"),
        partition_key=data.get("partition_key"),
        summary=data.get("summary", ""),
        labels=dict(data.get("labels") or {}),
    )


# The asset whose partition view an incident of each kind links to, and the link's name (its
# label in the message); scored incidents by default.
_PARTITION_VIEW = {DATA_QUALITY: ("raw_metrics", "checked_partition")}


def incident_links(
    incident: Incident, dagster_url: str, files_url: str | None = None
) -> dict[str, str]:
    """Links for the person paged: the run that raised the incident, the partition's view in the
    Dagster UI (``assets/<asset>?view=partitions&partition=<key>``, as the UI's own links), and
    for a data-quality incident its validation report and quarantined rows, under ``files_url``
    (default ``MONITORING_FILES_URL``, where ``monitoring-pipelines ui`` serves them)."""
    from urllib.parse import quote

    base = dagster_url.rstrip("/")
    links = {}
    if incident.run_id:
        links["run"] = f"{base}/runs/{incident.run_id}"
    key = incident.partition_key
    # A tenant-day; a range (``first...last``) of a failed run has no single partition to show.
    if key and "|" in key and "..." not in key:
        asset, name = _PARTITION_VIEW.get(incident.kind, ("anomaly_scores", "partition"))
        links[name] = f"{base}/assets/{asset}?view=partitions&partition={quote(key, safe='')}"
        if incident.kind == DATA_QUALITY:
            from monitoring_pipelines.quality.report import quality_url
            from monitoring_pipelines.settings import files_url as default_files_url

            root = files_url or default_files_url()
            links["validation_report"] = quality_url(root, key, "gx_report")
            links["quarantine"] = quality_url(root, key, "quarantine_rows")
    return links


def notification_payload(incident: Incident, event: str, dagster_url: str) -> dict:
    """What a notification carries: the incident, the event and the links; templates do the rest
    (title, body, suggested next step) in the receiver's locale."""
    return {
        "event": event,
        "incident": incident_to_dict(incident),
        "links": incident_links(incident, dagster_url),
    }


def report_payload(report: dict, receiver: str) -> dict:
    """What a report notification carries: the report's figures, paths and link (see
    ``planning.plan_report_notifications``); templates do the rest in the report's locale."""
    url = report.get("url")
    return {
        "event": REPORT,
        "report": dict(report),
        "links": {"report": url} if url else {},
        "receiver": receiver,
    }
