"""Receivers that keep failing: one incident for operations per receiver and failing spell.

Judged after each delivery, from what it did and what the outbox holds:

- a receiver that delivered something is healthy: its open failure incident (if any) resolves,
  and operations get the resolve;
- a receiver whose every attempt failed is *failing since* the later of its last successful
  delivery and the moment its oldest failing notification (retrying or dead, with an error)
  became due. Once that is longer ago than the policy's ``receiver_failing_after``, one
  pipeline-failure incident is raised for operations, naming the receiver and its last (redacted)
  error; it is not raised again while it is open.

The incidents are built like a failed run's
(:func:`pipeline_incidents.pipeline_failure_incident`), with the tenant ``_platform``, the service
``delivery to <receiver>`` and a ``receiver`` label.
"""

from dataclasses import replace
from datetime import datetime

import sqlalchemy as sa

from monitoring_pipelines.alerting import store, types
from monitoring_pipelines.alerting.pipeline_incidents import PLATFORM, pipeline_failure_incident
from monitoring_pipelines.alerting.policy import AlertingPolicy
from monitoring_pipelines.alerting.redaction import redact
from monitoring_pipelines.alerting.types import Incident
from monitoring_pipelines.warehouse import Warehouse, notifications

n = notifications


def receiver_failure_incident(
    receiver: str, since: datetime, error: str, now: datetime
) -> Incident:
    """The incident of ``receiver`` failing since ``since`` (one per failing spell)."""
    incident = pipeline_failure_incident(
        f"delivery to {receiver}",
        None,
        redact(f"failing since {since:%Y-%m-%d %H:%M} UTC: {error}"),
        None,
        at=since,
        identity=f"receiver {receiver} {since.isoformat()}",
    )
    return replace(
        incident, last_seen_at=max(now, since), labels={**incident.labels, "receiver": receiver}
    )


def open_receiver_incidents(warehouse: Warehouse) -> dict[str, Incident]:
    """The firing or acknowledged receiver-failure incidents, by receiver."""
    stored = store.read_incidents(
        warehouse, tenant=PLATFORM, status=[types.FIRING, types.ACKNOWLEDGED]
    )
    return {
        s.incident.labels["receiver"]: s.incident
        for s in stored
        if s.incident.kind == types.PIPELINE_FAILURE and s.incident.labels.get("receiver")
    }


def failing_since(warehouse: Warehouse, receiver: str) -> datetime | None:
    """When ``receiver`` started failing (see the module doc); None if nothing of it fails."""
    due = sa.case((n.c.not_before > n.c.created_at, n.c.not_before), else_=n.c.created_at)
    mine = n.c.receiver == receiver
    with warehouse.engine.connect() as conn:
        last_success = conn.execute(
            sa.select(sa.func.max(n.c.sent_at)).where(mine, n.c.status == types.SENT)
        ).scalar()
        oldest = conn.execute(
            sa.select(sa.func.min(due)).where(
                mine,
                n.c.status.in_([types.PENDING, types.SENDING, types.DEAD]),
                n.c.last_error.is_not(None),
            )
        ).scalar()
    if oldest is None:
        return None
    candidates = [types.utc(v) for v in (oldest, last_success) if v is not None]
    return max(candidates)


def receiver_incidents(
    warehouse: Warehouse,
    policy: AlertingPolicy,
    outcomes: dict[str, dict[str, int]],
    errors: dict[str, str],
    now: datetime,
) -> list[Incident]:
    """The receiver-failure incidents to raise or resolve after a delivery whose outcomes per
    receiver are ``outcomes`` (``DispatchReport.by_receiver``) and last errors ``errors``."""
    open_ones = open_receiver_incidents(warehouse)
    out = []
    for receiver, counts in sorted(outcomes.items()):
        current = open_ones.get(receiver)
        if counts.get("sent"):
            if current is not None:
                out.append(
                    replace(current, status=types.RESOLVED, resolved_at=now, last_seen_at=now)
                )
            continue
        if current is not None or not (counts.get("retried") or counts.get("dead")):
            continue
        since = failing_since(warehouse, receiver)
        if since is not None and now - since >= policy.receiver_failing_after:
            error = errors.get(receiver) or "delivery failed"
            out.append(receiver_failure_incident(receiver, since, error, now))
    return out
