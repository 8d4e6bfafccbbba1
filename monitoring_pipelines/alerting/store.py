"""Incidents in the warehouse's ``alerts`` table: idempotent writes and the on-call actions.

Rows are keyed by fingerprint, so writing the incidents of a re-run partition updates them instead
of adding new ones. What people did is never undone by a re-run: an acknowledged incident stays
acknowledged while it fires (and becomes resolved when the data says it ended), an incident
resolved by hand stays resolved, and feedback (false positive) is kept.

When two runs disagree about an incident (re-running yesterday after today), the one that saw more
of it wins: the later ``last_seen_at``, and at the same point, resolved over firing.

Commands take a fingerprint or an unambiguous prefix of at least 6 characters, like git.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from monitoring_pipelines.alerting import types
from monitoring_pipelines.alerting.types import Incident
from monitoring_pipelines.warehouse import Warehouse, alerts, audit

MIN_PREFIX = 6
FALSE_POSITIVE = "false_positive"


@dataclass(frozen=True)
class StoredIncident:
    """An incident as stored, with what people did about it."""

    incident: Incident
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    resolved_by: str | None = None
    feedback: str | None = None
    feedback_note: str | None = None
    updated_at: datetime | None = None

    @property
    def fingerprint(self) -> str:
        return self.incident.fingerprint

    @property
    def status(self) -> str:
        return self.incident.status


def _now() -> datetime:
    return datetime.now(UTC)


def _data_columns(incident: Incident) -> dict:
    """The incident's row: its JSON-safe form, with the times as UTC datetimes and the metrics,
    labels and model versions as JSON text."""
    data = types.incident_to_dict(incident)
    return {
        **data,
        "started_at": types.utc(incident.started_at),
        "last_seen_at": types.utc(incident.last_seen_at),
        "resolved_at": types.utc(incident.resolved_at),
        "score": float(incident.score),
        "metrics": json.dumps(data["metrics"], sort_keys=True),
        "labels": json.dumps(data["labels"], sort_keys=True),
        "model_versions": json.dumps(data["model_versions"], sort_keys=True),
    }


def _from_row(row) -> StoredIncident:
    def iso(value):
        return None if value is None else types.utc(value).isoformat()

    incident = types.incident_from_dict(
        {
            "fingerprint": row.fingerprint,
            "tenant": row.tenant,
            "service": row.service,
            "kind": row.kind,
            "severity": row.severity,
            "status": row.status,
            "started_at": iso(row.started_at),
            "last_seen_at": iso(row.last_seen_at),
            "resolved_at": iso(row.resolved_at),
            "score": row.score,
            "metrics": json.loads(row.metrics or "[]"),
            "model_versions": json.loads(row.model_versions or "{}"),
            "run_id": row.run_id,
            "partition_key": row.partition_key,
            "summary": row.summary,
            "labels": json.loads(row.labels or "{}"),
        }
    )
    return StoredIncident(
        incident=incident,
        acknowledged_by=row.acknowledged_by,
        acknowledged_at=types.utc(row.acknowledged_at),
        resolved_by=row.resolved_by,
        feedback=row.feedback,
        feedback_note=row.feedback_note,
        updated_at=types.utc(row.updated_at),
    )


def _knows_more(new: dict, old) -> bool:
    """Whether the new version saw at least as much of the incident as the stored one."""
    old_seen = types.utc(old.last_seen_at)
    if new["last_seen_at"] != old_seen:
        return new["last_seen_at"] > old_seen
    return new["status"] == types.RESOLVED or old.status != types.RESOLVED


def _chunks(items: list, size: int = 500):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def upsert_incidents(
    warehouse: Warehouse, incidents: Iterable[Incident], conn: sa.Connection | None = None
) -> dict[str, int]:
    """Write incidents by fingerprint; returns counts of ``inserted``, ``updated``, ``unchanged``.

    Inside ``conn``'s transaction when given (so the outbox rows can commit with them)."""
    incidents = list({i.fingerprint: i for i in incidents}.values())
    if conn is None:
        with warehouse.engine.begin() as own:
            return upsert_incidents(warehouse, incidents, own)
    counts = {"inserted": 0, "updated": 0, "unchanged": 0}
    existing = {}
    for chunk in _chunks([i.fingerprint for i in incidents]):
        for row in conn.execute(sa.select(alerts).where(alerts.c.fingerprint.in_(chunk))):
            existing[row.fingerprint] = row
    now = _now()
    inserts = []
    for incident in incidents:
        values = _data_columns(incident)
        old = existing.get(incident.fingerprint)
        if old is None:
            if incident.status == types.ACKNOWLEDGED:
                values["status"] = types.FIRING
            inserts.append({**values, "updated_at": now})
            counts["inserted"] += 1
            continue
        if not _knows_more(values, old):
            counts["unchanged"] += 1
            continue
        # Identity (started_at) never moves later: a re-run seeing less history keeps the start.
        values["started_at"] = min(values["started_at"], types.utc(old.started_at))
        if old.resolved_by:
            values["status"] = types.RESOLVED
            values["resolved_at"] = types.utc(old.resolved_at)
        elif old.status == types.ACKNOWLEDGED and values["status"] != types.RESOLVED:
            values["status"] = types.ACKNOWLEDGED
        changed = {
            k: v for k, v in values.items() if k != "fingerprint" and _differs(getattr(old, k), v)
        }
        if not changed:
            counts["unchanged"] += 1
            continue
        conn.execute(
            alerts.update()
            .where(alerts.c.fingerprint == incident.fingerprint)
            .values(**changed, updated_at=now)
        )
        counts["updated"] += 1
    if inserts:
        conn.execute(alerts.insert(), inserts)
    return counts


def _differs(old, new) -> bool:
    if isinstance(new, datetime) or isinstance(old, datetime):
        return types.utc(old) != types.utc(new)
    return old != new


def read_incidents(
    warehouse: Warehouse,
    tenant: str | None = None,
    status: str | Iterable[str] | None = None,
    since: datetime | None = None,
    *,
    fingerprints: Iterable[str] | None = None,
    conn: sa.Connection | None = None,
) -> list[StoredIncident]:
    """Stored incidents, oldest first; ``since`` keeps those last seen at or after it. Inside
    ``conn``'s transaction when given."""
    query = sa.select(alerts).order_by(alerts.c.started_at, alerts.c.fingerprint)
    if tenant is not None:
        query = query.where(alerts.c.tenant == tenant)
    if status is not None:
        statuses = [status] if isinstance(status, str) else list(status)
        query = query.where(alerts.c.status.in_(statuses))
    if since is not None:
        query = query.where(alerts.c.last_seen_at >= types.utc(since))
    if conn is None:
        with warehouse.engine.connect() as own:
            return read_incidents(
                warehouse, tenant, status, since, fingerprints=fingerprints, conn=own
            )
    if fingerprints is None:
        return [_from_row(r) for r in conn.execute(query)]
    rows = []
    for chunk in _chunks(list(fingerprints)):
        rows.extend(conn.execute(query.where(alerts.c.fingerprint.in_(chunk))))
    return sorted(
        (_from_row(r) for r in rows), key=lambda s: (s.incident.started_at, s.fingerprint)
    )


def load_states(
    warehouse: Warehouse, fingerprints: Iterable[str], conn: sa.Connection | None = None
) -> dict[str, StoredIncident]:
    """The stored state of these fingerprints (the ``previous`` of ``plan_notifications``)."""
    stored = read_incidents(warehouse, fingerprints=list(fingerprints), conn=conn)
    return {s.fingerprint: s for s in stored}


def find_fingerprint(warehouse: Warehouse, fingerprint: str, conn=None) -> str:
    """The full fingerprint for a fingerprint or a unique prefix; LookupError (one line) if none
    or several match, ValueError if the prefix is too short."""
    text = (fingerprint or "").strip().lower()
    if len(text) < MIN_PREFIX:
        raise ValueError(
            f"fingerprint {fingerprint!r} is too short: give at least {MIN_PREFIX} characters"
        )
    if any(c not in "0123456789abcdef" for c in text):
        raise LookupError(f"no incident with fingerprint {fingerprint!r} (not hexadecimal)")
    query = (
        sa.select(alerts.c.fingerprint)
        .where(alerts.c.fingerprint.like(f"{text}%"))
        .order_by(alerts.c.fingerprint)
        .limit(6)
    )
    if conn is None:
        with warehouse.engine.connect() as own:
            found = list(own.execute(query).scalars())
    else:
        found = list(conn.execute(query).scalars())
    if not found:
        raise LookupError(f"no incident with fingerprint {fingerprint!r}")
    if len(found) > 1:
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise LookupError(f"fingerprint prefix {fingerprint!r} is ambiguous: matches {shown}")
    return found[0]


# What an operator's change touched, recorded before and after in the audit trail.
_AUDITED = ("status", "acknowledged_by", "resolved_by", "feedback", "feedback_note")


def _change(
    warehouse: Warehouse, fingerprint: str, action, *, audit_action: str, by: str
) -> StoredIncident:
    """Apply ``action`` to one incident and append the change to the audit trail, in one
    transaction (an unchanged incident is recorded too: someone asked for it)."""
    with warehouse.engine.begin() as conn:
        full = find_fingerprint(warehouse, fingerprint, conn)
        before = conn.execute(sa.select(alerts).where(alerts.c.fingerprint == full)).one()
        values = action(before)
        if values:
            conn.execute(
                alerts.update()
                .where(alerts.c.fingerprint == full)
                .values(**values, updated_at=_now())
            )
        row = conn.execute(sa.select(alerts).where(alerts.c.fingerprint == full)).one()
        audit.record(
            conn,
            actor=by,
            action=audit_action,
            tenant=row.tenant,
            target=f"incident {full}",
            before={k: getattr(before, k) for k in _AUDITED},
            after={k: getattr(row, k) for k in _AUDITED},
            reason=row.feedback_note if audit_action == audit.FALSE_POSITIVE else None,
        )
    return _from_row(row)


def acknowledge(warehouse: Warehouse, fingerprint: str, by: str) -> StoredIncident:
    """Someone is on it: no more repeats or escalations. A resolved incident cannot be
    acknowledged (ValueError)."""
    who = _who(by)

    def action(row):
        if row.status == types.RESOLVED:
            raise ValueError(f"incident {row.fingerprint} is already resolved")
        if row.status == types.ACKNOWLEDGED:
            return {}
        return {"status": types.ACKNOWLEDGED, "acknowledged_by": who, "acknowledged_at": _now()}

    return _change(warehouse, fingerprint, action, audit_action=audit.ACKNOWLEDGE, by=who)


def resolve(warehouse: Warehouse, fingerprint: str, by: str) -> StoredIncident:
    """Resolve by hand; re-runs keep it resolved. Resolving a resolved incident changes nothing."""
    who = _who(by)

    def action(row):
        if row.status == types.RESOLVED:
            return {}
        return {"status": types.RESOLVED, "resolved_by": who, "resolved_at": _now()}

    return _change(warehouse, fingerprint, action, audit_action=audit.RESOLVE, by=who)


def mark_false_positive(
    warehouse: Warehouse, fingerprint: str, note: str, by: str = audit.PIPELINE
) -> StoredIncident:
    """Record that the incident was not a real problem (for the reports and model reviews);
    ``by`` is who says so (the audit trail's actor)."""
    return _change(
        warehouse,
        fingerprint,
        lambda row: {"feedback": FALSE_POSITIVE, "feedback_note": (note or "").strip() or None},
        audit_action=audit.FALSE_POSITIVE,
        by=_who(by),
    )


def _who(by: str) -> str:
    if not isinstance(by, str) or not by.strip():
        raise ValueError("say who did it (by must be a non-empty name)")
    return by.strip()[:128]
