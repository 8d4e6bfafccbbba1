"""The notification outbox: stored once, delivered at least once, never lost without a trace.

:func:`enqueue` writes notifications in the caller's transaction (the same one that updates the
incident), keyed by idempotency key, so re-planning a partition never duplicates one. The
dispatcher (:mod:`dispatcher`) then delivers what is due (:func:`due`), through the leases
:mod:`.leases` takes and releases.

Statuses (:data:`~monitoring_pipelines.alerting.types.STATUSES`): ``pending``, ``sending``,
``sent``, ``dead`` (given up, with the redacted reason), ``cancelled`` (a follow-up whose incident
was handled first) and ``suppressed`` (held back as history, silenced, inhibited or rate limited
when planned).

History (incidents found in past data) is stored suppressed with the reason ``history`` and
summarised by one digest per tenant and receiver: :mod:`.history` reads and holds those.
"""

import json
from collections.abc import Iterable
from datetime import UTC, datetime

import sqlalchemy as sa

from monitoring_pipelines.alerting import types
from monitoring_pipelines.alerting.types import (
    CANCELLED,
    DEAD,
    PENDING,
    SENDING,
    SENT,
    STATUSES,
    SUPPRESSED,
    Notification,
)
from monitoring_pipelines.warehouse import Warehouse, notifications

n = notifications

__all__ = [
    "CANCELLED",
    "DEAD",
    "PENDING",
    "SENDING",
    "SENT",
    "STATUSES",
    "SUPPRESSED",
    "due",
    "enqueue",
    "enqueue_new",
    "insert_absent",
    "next_due_at",
    "pending_count",
    "read_notifications",
    "requeue",
    "row_of",
]


def _now() -> datetime:
    return datetime.now(UTC)


# -- enqueue --------------------------------------------------------------------------------------


def row_of(notification: Notification, now: datetime) -> dict:
    status = notification.status or PENDING
    if status not in (PENDING, SUPPRESSED):
        raise ValueError(f"cannot enqueue a notification with status {status!r}")
    not_before = types.utc(notification.not_before)
    return {
        "idempotency_key": notification.idempotency_key,
        "fingerprint": notification.fingerprint,
        "tenant": notification.tenant,
        "receiver": notification.receiver,
        "event": notification.event,
        "locale": notification.locale,
        "payload": json.dumps(notification.payload, sort_keys=True, default=str),
        "status": status,
        "reason": notification.reason,
        "attempts": 0,
        "not_before": not_before,
        "next_attempt_at": max(now, not_before) if not_before else now,
        "lease_until": None,
        "lease_token": None,
        "last_error": None,
        "created_at": now,
        "sent_at": None,
    }


def enqueue(
    warehouse: Warehouse | None,
    items: Iterable[Notification],
    conn: sa.Connection | None = None,
    *,
    now: datetime | None = None,
) -> int:
    """Store notifications that are not stored yet (by idempotency key); returns how many were new.

    Pass ``conn`` to write inside the caller's transaction (the incident update); otherwise a
    transaction of its own is used. Suppressed notifications keep their status and reason. An
    existing row is never touched: re-enqueueing a delivered notification does not resend it.
    """
    return len(enqueue_new(warehouse, items, conn, now=now))


def enqueue_new(
    warehouse: Warehouse | None,
    items: Iterable[Notification],
    conn: sa.Connection | None = None,
    *,
    now: datetime | None = None,
) -> list[str]:
    """:func:`enqueue`, returning the idempotency keys that were new (the others were stored
    before and are left as they are)."""
    now = types.utc(now) or _now()
    unique: dict[str, dict] = {}
    for item in items:
        unique.setdefault(item.idempotency_key, row_of(item, now))
    if not unique:
        return []
    if conn is None:
        if warehouse is None:
            raise ValueError("enqueue needs a warehouse or a connection")
        with warehouse.engine.begin() as own:
            return insert_absent(own, list(unique.values()))
    return insert_absent(conn, list(unique.values()))


def insert_absent(conn: sa.Connection, rows: list[dict]) -> list[str]:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - the warehouse runs on SQLite or PostgreSQL
        insert = None
    inserted: list[str] = []
    for start in range(0, len(rows), 500):
        chunk = rows[start : start + 500]
        if insert is None:
            keys = [r["idempotency_key"] for r in chunk]
            existing = set(
                conn.execute(sa.select(n.c.idempotency_key).where(n.c.idempotency_key.in_(keys)))
                .scalars()
                .all()
            )
            fresh = [r for r in chunk if r["idempotency_key"] not in existing]
            if fresh:
                conn.execute(n.insert(), fresh)
            inserted.extend(r["idempotency_key"] for r in fresh)
            continue
        stmt = (
            insert(n)
            .values(chunk)
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(n.c.idempotency_key)
        )
        inserted.extend(conn.execute(stmt).scalars().all())
    return inserted


# -- reads ----------------------------------------------------------------------------------------


def due(now: datetime, *, waiting_digests: bool = False):
    """Rows due at ``now``; with ``waiting_digests``, also history digests still settling that
    were never tried (a delivery that runs anyway takes them along)."""
    conditions = [
        sa.and_(
            n.c.status == PENDING,
            n.c.next_attempt_at <= now,
            sa.or_(n.c.not_before.is_(None), n.c.not_before <= now),
        ),
        sa.and_(n.c.status == SENDING, n.c.lease_until < now),
    ]
    if waiting_digests:
        conditions.append(
            sa.and_(n.c.status == PENDING, n.c.event == types.DIGEST, n.c.attempts == 0)
        )
    return sa.or_(*conditions)


def pending_count(warehouse: Warehouse, now: datetime | None = None) -> int:
    """How many notifications a dispatch at ``now`` would claim (due, or with an expired lease)."""
    now = types.utc(now) or _now()
    query = sa.select(sa.func.count()).select_from(n).where(due(now))
    with warehouse.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def next_due_at(warehouse: Warehouse) -> datetime | None:
    """When the next pending notification becomes due (None when nothing is waiting)."""
    at = sa.case(
        (
            sa.and_(n.c.not_before.is_not(None), n.c.not_before > n.c.next_attempt_at),
            n.c.not_before,
        ),
        else_=n.c.next_attempt_at,
    )
    lease = sa.select(sa.func.min(n.c.lease_until)).where(n.c.status == SENDING)
    with warehouse.engine.connect() as conn:
        pending = conn.execute(sa.select(sa.func.min(at)).where(n.c.status == PENDING)).scalar()
        leased = conn.execute(lease).scalar()
    candidates = [types.utc(v) for v in (pending, leased) if v is not None]
    return min(candidates) if candidates else None


def read_notifications(
    warehouse: Warehouse,
    *,
    status: str | None = None,
    tenant: str | None = None,
    fingerprint: str | None = None,
    receiver: str | None = None,
    limit: int | None = 100,
) -> list[dict]:
    """Stored notifications, newest first, with their payload parsed (for the CLI and reports)."""
    query = sa.select(n).order_by(n.c.created_at.desc(), n.c.idempotency_key)
    for column, value in (
        ("status", status),
        ("tenant", tenant),
        ("fingerprint", fingerprint),
        ("receiver", receiver),
    ):
        if value is not None:
            query = query.where(n.c[column] == value)
    if limit is not None:
        query = query.limit(limit)
    with warehouse.engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    out = []
    for row in rows:
        record = dict(row)
        record["payload"] = json.loads(record["payload"])
        for col in ("not_before", "next_attempt_at", "lease_until", "created_at", "sent_at"):
            record[col] = types.utc(record[col])
        out.append(record)
    return out


def requeue(
    warehouse: Warehouse,
    keys: Iterable[str],
    *,
    now: datetime | None = None,
) -> int:
    """Give dead or cancelled notifications a fresh start (after fixing a receiver's config):
    pending again under the same idempotency key, so a receiver that honours the key never shows
    one twice, and due from ``now`` (``give_up_after`` counts from here)."""
    keys = list(keys)
    if not keys:
        return 0
    now = types.utc(now) or _now()
    stmt = (
        n.update()
        .where(n.c.status.in_([DEAD, CANCELLED]))
        .values(
            status=PENDING,
            attempts=0,
            next_attempt_at=now,
            not_before=now,
            lease_until=None,
            lease_token=None,
            reason=None,
        )
    )
    total = 0
    with warehouse.engine.begin() as conn:
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            total += conn.execute(stmt.where(n.c.idempotency_key.in_(chunk))).rowcount
    return total
