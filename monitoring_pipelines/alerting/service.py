"""The alerting steps the pipeline runs, as plain functions over a warehouse and a policy.

The Dagster asset, the sensors, the CLI and the benchmark all call these, so what they do is the
same everywhere:

- :func:`raise_incidents`: a tenant's anomaly scores over a span become incidents, and the
  incidents' notifications are queued in the outbox, in one transaction; those of incidents
  found in the past (older than the tenant's ``page_lookback``) are held back as history, and
  one digest per tenant and receiver waits to summarise them;
- :func:`raise_incident`: one incident built elsewhere (a blocked partition, a failed run);
- :func:`queue_reports`: written weekly or monthly reports are queued to the receivers the
  policy's ``reports:`` section names (once per receiver and report, however often re-written);
- :func:`deliver`: the outbox is drained to the policy's receivers, and a receiver failing for
  longer than ``receiver_failing_after`` raises (or, delivering again, resolves) an incident for
  operations (:mod:`receiver_health`).

Incident texts are redacted (:mod:`redaction`) before they are stored or queued.
"""

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from monitoring_pipelines.alerting import dispatcher, history, outbox, policy_audit, store, types
from monitoring_pipelines.alerting.incidents import detect_incidents
from monitoring_pipelines.alerting.planning import (
    plan_history_digests,
    plan_notifications,
    plan_report_notifications,
)
from monitoring_pipelines.alerting.policy import AlertingPolicy
from monitoring_pipelines.alerting.receiver_health import receiver_incidents
from monitoring_pipelines.alerting.receivers import Receiver, build_receivers
from monitoring_pipelines.alerting.redaction import redact
from monitoring_pipelines.alerting.types import Incident
from monitoring_pipelines.warehouse import Warehouse, alerts

# Scores read before the span, so an incident that began before midnight is seen from its start
# (same fingerprint) and one that ended just before the span is not raised again.
LOOKBACK = timedelta(days=1)
SCORE_COLUMNS = (
    "tenant",
    "service",
    "metric",
    "ts",
    "value",
    "ensemble_score",
    "threshold",
    "model_versions",
    "run_id",
)


@dataclass
class RaiseOutcome:
    incidents: list[Incident] = field(default_factory=list)
    queued: int = 0
    # Suppressed in all, of which held back as history (to be summarised, not paged).
    suppressed: int = 0
    history: int = 0
    written: dict = field(default_factory=dict)

    def by_severity(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for incident in self.incidents:
            label = incident.severity.label
            counts[label] = counts.get(label, 0) + 1
        return counts

    def by_status(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for incident in self.incidents:
            counts[incident.status] = counts.get(incident.status, 0) + 1
        return counts


def _serialise(conn, dialect: str) -> None:
    """Alert writes take turns: two runs raising the same incident at once (adjacent days of a
    tenant) must not both insert it, and each must plan against what the other wrote."""
    if dialect == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('monitoring_alerts'))"))
    elif dialect == "sqlite":
        # The first write takes SQLite's write lock for the rest of the transaction.
        conn.execute(alerts.update().where(sa.false()).values(tenant=alerts.c.tenant))


def _record(wh: Warehouse, policy, incidents, *, now, dagster_url) -> RaiseOutcome:
    # A failed run's error or a receiver's echo may carry a secret the policy's receivers hold.
    receivers(policy)
    incidents = [replace(i, summary=redact(i.summary)) for i in incidents]
    outcome = RaiseOutcome(incidents=list(incidents))
    fingerprints = [i.fingerprint for i in incidents]
    with wh.engine.begin() as conn:
        _serialise(conn, wh.dialect)
        previous = store.load_states(wh, fingerprints, conn=conn)
        paged = history.paged_receivers(wh, fingerprints, conn=conn)
        notes = plan_notifications(incidents, previous, policy, now, dagster_url, paged)
        outcome.written = store.upsert_incidents(wh, incidents, conn=conn)
        new = set(outbox.enqueue_new(wh, notes, conn=conn, now=now))
        held = [n for n in notes if n.idempotency_key in new and n.reason == types.HISTORY]
        history.hold_digests(conn, plan_history_digests(held, policy, dagster_url), now)
    outcome.queued = sum(1 for n in notes if n.status == outbox.PENDING)
    outcome.history = sum(1 for n in notes if n.reason == types.HISTORY)
    outcome.suppressed = len(notes) - outcome.queued
    return outcome


def raise_incidents(
    wh: Warehouse,
    policy: AlertingPolicy,
    tenant: str,
    start: datetime,
    end: datetime,
    *,
    run_id: str | None,
    partition_key: str | None,
    dagster_url: str,
    now: datetime | None = None,
) -> RaiseOutcome:
    """Turn the tenant's anomaly scores in ``[start, end)`` into incidents and queue who is told.

    Idempotent: re-running the same span finds the same fingerprints and the same idempotency
    keys, so nothing is raised or queued twice. A policy that changed since the last run is
    recorded in the audit trail first (:func:`policy_audit.note_policy`)."""
    policy_audit.note_policy(wh, policy)
    start, end = types.utc(start), types.utc(end)
    scores = wh.read_records(
        "anomaly_scores", tenant=tenant, start=start - LOOKBACK, end=end, columns=SCORE_COLUMNS
    )
    firing = store.read_incidents(wh, tenant=tenant, status=types.FIRING, since=start - LOOKBACK)
    previous = [s.incident for s in firing if s.incident.kind == types.ANOMALY]
    # The incident's provenance is the scoring run that produced its scores.
    scoring_run = None
    if "run_id" in scores.columns and scores["run_id"].notna().any():
        scoring_run = str(scores["run_id"].dropna().iloc[-1])
    incidents = detect_incidents(
        scores,
        policy,
        run_id=scoring_run or run_id,
        partition_key=partition_key,
        since=start,
        previous=previous,
    )
    return _record(wh, policy, incidents, now=now or datetime.now(UTC), dagster_url=dagster_url)


def raise_incident(
    wh: Warehouse,
    policy: AlertingPolicy,
    incident: Incident,
    *,
    dagster_url: str,
    now: datetime | None = None,
) -> RaiseOutcome:
    """Record one incident built elsewhere (data quality, pipeline failure) and queue its
    notifications to the policy's data owner or operations receiver."""
    return _record(wh, policy, [incident], now=now or datetime.now(UTC), dagster_url=dagster_url)


@dataclass
class ReportQueueOutcome:
    """What :func:`queue_reports` did: the notifications stored now, and those stored by an
    earlier run of the same period (left untouched: sent, or still on their way)."""

    queued: list[types.Notification] = field(default_factory=list)
    already: list[types.Notification] = field(default_factory=list)


def queue_reports(
    wh: Warehouse, policy: AlertingPolicy, reports: list[dict], *, now: datetime | None = None
) -> ReportQueueOutcome:
    """Queue written reports (dicts, see ``planning.plan_report_notifications``) to their
    receivers in the outbox; the dispatcher (``alerts deliver``, the outbox sensor) sends them."""
    notes = plan_report_notifications(reports, policy)
    new = set(outbox.enqueue_new(wh, notes, now=now or datetime.now(UTC)))
    outcome = ReportQueueOutcome()
    for note in notes:
        (outcome.queued if note.idempotency_key in new else outcome.already).append(note)
    return outcome


def receivers(policy: AlertingPolicy) -> dict[str, Receiver]:
    """The policy's receivers (their secrets now registered for redaction)."""
    return build_receivers(policy.receivers, policy.home)


def deliver(
    wh: Warehouse,
    policy: AlertingPolicy,
    *,
    now: datetime | None = None,
    dagster_url: str = "",
    **options,
) -> dispatcher.DispatchReport:
    """Send what is due in the outbox to the policy's receivers (:func:`dispatcher.dispatch`),
    retrying failures for the policy's ``give_up_after``; then raise or resolve the incidents
    of receivers failing longer than ``receiver_failing_after`` (named in the report's
    ``failing_receivers`` and ``recovered_receivers``). A changed policy is audited first."""
    policy_audit.note_policy(wh, policy)
    options.setdefault("give_up_after", policy.give_up_after)
    report = dispatcher.dispatch(wh, receivers(policy), now=now, **options)
    at = types.utc(now) or datetime.now(UTC)
    changes = receiver_incidents(wh, policy, report.by_receiver, report.receiver_errors, at)
    if changes:
        _record(wh, policy, changes, now=at, dagster_url=dagster_url)
    for incident in changes:
        recovered = incident.status == types.RESOLVED
        names = report.recovered_receivers if recovered else report.failing_receivers
        names.append(incident.labels["receiver"])
    return report
