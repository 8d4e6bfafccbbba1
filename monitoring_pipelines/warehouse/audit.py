"""The audit trail: who did what, when, to what, and why, in the append-only ``audit`` table.

This module offers two operations, :func:`record` (insert one entry) and :func:`read`; there is no
update or delete. On PostgreSQL a trigger (:func:`forbid_changes`) refuses UPDATE and DELETE on
the table as well, so even a hand-written statement cannot rewrite history.

Writers call :func:`record` inside the transaction of the change they record, where there is
one, so the change and its entry are kept or lost together. ``actor`` is the person (``--by`` or
``$USER`` on the command line) or ``"pipeline"`` for automatic actions.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from monitoring_pipelines.warehouse.schema import audit

PIPELINE = "pipeline"

ACKNOWLEDGE = "alert.acknowledge"
RESOLVE = "alert.resolve"
FALSE_POSITIVE = "alert.false_positive"
PROMOTE = "model.promote"
KEEP_CHAMPION = "model.keep_champion"
CHALLENGER = "model.challenger"
ROLLBACK = "model.rollback"
TENANT_PURGE = "tenant.purge"
POLICY_CHANGE = "policy.change"
RETENTION = "retention.apply"
ACTIONS = (
    ACKNOWLEDGE,
    RESOLVE,
    FALSE_POSITIVE,
    PROMOTE,
    KEEP_CHAMPION,
    CHALLENGER,
    ROLLBACK,
    TENANT_PURGE,
    POLICY_CHANGE,
    RETENTION,
)


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    tenant: str | None
    target: str | None
    before: Any
    after: Any
    reason: str | None


def _json(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def record(
    engine_or_conn: sa.Engine | sa.Connection,
    *,
    actor: str,
    action: str,
    tenant: str | None = None,
    target: str | None = None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    reason: str | None = None,
) -> None:
    """Append one entry; in the caller's transaction when given a connection."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r} (known: {', '.join(ACTIONS)})")
    if not isinstance(actor, str) or not actor.strip():
        raise ValueError("an audit entry needs an actor (a name, or 'pipeline')")
    row = {
        "at": datetime.now(UTC),
        "actor": actor.strip()[:128],
        "action": action,
        "tenant": tenant,
        "target": None if target is None else str(target)[:512],
        "before": _json(before),
        "after": _json(after),
        "reason": reason,
    }
    if isinstance(engine_or_conn, sa.Connection):
        engine_or_conn.execute(audit.insert().values(**row))
        return
    with engine_or_conn.begin() as conn:
        conn.execute(audit.insert().values(**row))


def read(
    engine: sa.Engine,
    *,
    tenant: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    limit: int | None = None,
) -> list[AuditEntry]:
    """Entries, oldest first; with ``limit``, the newest ``limit`` of those matching."""
    query = sa.select(audit).order_by(audit.c.id.desc())
    if tenant is not None:
        query = query.where(audit.c.tenant == tenant)
    if action is not None:
        query = query.where(audit.c.action == action)
    if since is not None:
        query = query.where(audit.c.at >= since)
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        rows = list(conn.execute(query))
    return [_entry(row) for row in reversed(rows)]


def last(engine: sa.Engine, action: str, target: str | None = None) -> AuditEntry | None:
    """The newest entry of ``action`` (on ``target`` when given), or None."""
    query = sa.select(audit).where(audit.c.action == action).order_by(audit.c.id.desc()).limit(1)
    if target is not None:
        query = query.where(audit.c.target == target)
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return None if row is None else _entry(row)


def _entry(row) -> AuditEntry:
    at = row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)
    return AuditEntry(
        id=int(row.id),
        at=at,
        actor=row.actor,
        action=row.action,
        tenant=row.tenant,
        target=row.target,
        before=None if row.before is None else json.loads(row.before),
        after=None if row.after is None else json.loads(row.after),
        reason=row.reason,
    )


_GUARD_FUNCTION = """
CREATE OR REPLACE FUNCTION monitoring_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the audit table is append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql
"""
_GUARD_TRIGGER = """
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
FOR EACH ROW EXECUTE FUNCTION monitoring_audit_append_only()
"""


def forbid_changes(engine: sa.Engine) -> None:
    """On PostgreSQL, a trigger that refuses UPDATE and DELETE on ``audit`` (created once)."""
    if engine.dialect.name != "postgresql":
        return
    exists = sa.text("SELECT 1 FROM pg_trigger WHERE tgname = 'audit_append_only'")
    with engine.begin() as conn:
        if conn.execute(exists).first() is not None:
            return
        # Another process creating the same trigger at the same moment waits here.
        conn.execute(sa.text("LOCK TABLE audit IN SHARE ROW EXCLUSIVE MODE"))
        if conn.execute(exists).first() is not None:
            return
        conn.execute(sa.text(_GUARD_FUNCTION))
        conn.execute(sa.text(_GUARD_TRIGGER))
