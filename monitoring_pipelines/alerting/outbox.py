"""The notification outbox: stored once, delivered at least once, never lost without a trace.

:func:`enqueue` writes notifications in the caller's transaction (the same one that updates the
incident), keyed by idempotency key, so re-planning a partition never duplicates one. The
dispatcher (:mod:`dispatcher`) then delivers what is due, through the leases this module takes and
releases:

- :func:`claim`: one conditional ``UPDATE ... RETURNING`` moves due rows to ``sending`` with a
  lease (``lease_until``, ``lease_token``); on PostgreSQL the candidate rows are picked with
  ``FOR UPDATE SKIP LOCKED``, on SQLite the write lock serialises claims. Two dispatchers never
  hold the same row; a row whose lease expired (its dispatcher died) is claimed again.
- :func:`finish`: records an outcome, only while the claim still holds the lease.

Statuses (:data:`~monitoring_pipelines.alerting.types.STATUSES`): ``pending``, ``sending``,
``sent``, ``dead`` (given up, with the redacted reason), ``cancelled`` (a follow-up whose incident
was handled first) and ``suppressed`` (held back as history, silenced, inhibited or rate limited
when planned).

History (incidents found in past data, see ``planning.plan_notifications``) is stored suppressed
with the reason ``history`` and summarised instead: :func:`hold_digests` keeps one ``digest``
notification waiting per tenant and receiver, due :data:`DIGEST_SETTLE` after the last history
found (a backfill run day by day keeps pushing it back, so it yields one summary), and any
delivery before that takes it along; when it is sent, :func:`fold_history` counts every held
incident of its tenant and receiver not summarised yet, and :func:`mark_summarised` records which
digest summarised them (reason ``history, summarised in <key>``).
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

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
from monitoring_pipelines.warehouse import Warehouse, alerts, notifications

n = notifications

# How long a history digest waits for more history of its tenant and receiver before it is due
# (as Alertmanager's group_interval): the alerting runs of a backfill follow each other closer.
DIGEST_SETTLE = timedelta(minutes=5)
__all__ = [
    "CANCELLED",
    "DEAD",
    "PENDING",
    "SENDING",
    "SENT",
    "STATUSES",
    "SUPPRESSED",
    "claim",
    "enqueue",
    "enqueue_new",
    "finish",
    "fold_history",
    "history_only",
    "hold_digests",
    "mark_summarised",
    "next_due_at",
    "paged_receivers",
    "pending_count",
    "read_notifications",
    "requeue",
]


def _now() -> datetime:
    return datetime.now(UTC)


# -- enqueue --------------------------------------------------------------------------------------


def _row(notification: Notification, now: datetime) -> dict:
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
        unique.setdefault(item.idempotency_key, _row(item, now))
    if not unique:
        return []
    if conn is None:
        if warehouse is None:
            raise ValueError("enqueue needs a warehouse or a connection")
        with warehouse.engine.begin() as own:
            return _insert_absent(own, list(unique.values()))
    return _insert_absent(conn, list(unique.values()))


def _insert_absent(conn: sa.Connection, rows: list[dict]) -> list[str]:
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


def _due(now: datetime, *, waiting_digests: bool = False):
    """Rows due at ``now``; with ``waiting_digests``, also history digests still settling that
    were never tried (a delivery that runs anyway takes them along)."""
    due = [
        sa.and_(
            n.c.status == PENDING,
            n.c.next_attempt_at <= now,
            sa.or_(n.c.not_before.is_(None), n.c.not_before <= now),
        ),
        sa.and_(n.c.status == SENDING, n.c.lease_until < now),
    ]
    if waiting_digests:
        due.append(sa.and_(n.c.status == PENDING, n.c.event == types.DIGEST, n.c.attempts == 0))
    return sa.or_(*due)


def pending_count(warehouse: Warehouse, now: datetime | None = None) -> int:
    """How many notifications a dispatch at ``now`` would claim (due, or with an expired lease)."""
    now = types.utc(now) or _now()
    query = sa.select(sa.func.count()).select_from(n).where(_due(now))
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


# -- dispatch -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    """A row this dispatch holds the lease on: its notification, how many attempts it has had
    (this one included), and why its stored payload cannot be read, if it cannot."""

    notification: Notification
    attempts: int
    unreadable: str | None = None

    @property
    def key(self) -> str:
        return self.notification.idempotency_key

    @property
    def due_at(self) -> datetime | None:
        """When the notification first became due: created, or its ``not_before`` (an escalation's
        deadline; reset by :func:`requeue`). Retries give up ``give_up_after`` from here."""
        created, not_before = self.notification.created_at, self.notification.not_before
        if not_before is None or (created is not None and created > not_before):
            return created
        return not_before


def _claimed(row) -> Claimed:
    try:
        payload, unreadable = json.loads(row.payload), None
    except Exception as exc:  # a payload this code cannot read will not be readable next time
        payload, unreadable = {}, f"{type(exc).__name__}: {str(exc)[:200]}"
    notification = Notification(
        idempotency_key=row.idempotency_key,
        fingerprint=row.fingerprint,
        tenant=row.tenant,
        receiver=row.receiver,
        event=row.event,
        locale=row.locale,
        payload=payload,
        status=SENDING,
        created_at=types.utc(row.created_at),
        not_before=types.utc(row.not_before),
    )
    return Claimed(notification, int(row.attempts), unreadable)


def claim(
    warehouse: Warehouse,
    now: datetime,
    lease_seconds: float,
    limit: int,
    token: str,
    exclude: set[str],
) -> list[Claimed]:
    """Lease up to ``limit`` due notifications (not in ``exclude``) to the claim ``token`` for
    ``lease_seconds``, counting the attempt; in send order (creation, then event order)."""
    stmt = _claim_statement(warehouse.dialect, now, lease_seconds, limit, token, exclude)
    with warehouse.engine.begin() as conn:
        rows = conn.execute(stmt).all()
    claimed = [_claimed(r) for r in rows]
    claimed.sort(
        key=lambda c: (
            c.notification.created_at,
            types.EVENT_ORDER.get(c.notification.event, 9),
            c.key,
        )
    )
    return claimed


def _claim_statement(
    dialect: str, now: datetime, lease_seconds: float, limit: int, token: str, exclude: set[str]
):
    due = _due(now, waiting_digests=True)
    # A resolve waits while an earlier notification of the same incident to the same receiver is
    # in flight or due, so PagerDuty never sees the resolve before the trigger it closes.
    earlier = n.alias("earlier")
    blocked = (
        sa.exists()
        .where(
            earlier.c.fingerprint == n.c.fingerprint,
            earlier.c.receiver == n.c.receiver,
            earlier.c.event != types.RESOLVE,
            sa.or_(
                earlier.c.status == SENDING,
                sa.and_(
                    earlier.c.status == PENDING,
                    sa.or_(earlier.c.not_before.is_(None), earlier.c.not_before <= now),
                ),
            ),
        )
        .correlate(n)
    )
    candidates = (
        sa.select(n.c.idempotency_key)
        .where(due, sa.or_(n.c.event != types.RESOLVE, ~blocked))
        .order_by(n.c.next_attempt_at, n.c.created_at, n.c.idempotency_key)
        .limit(limit)
    )
    if exclude:
        candidates = candidates.where(n.c.idempotency_key.not_in(sorted(exclude)))
    if dialect == "postgresql":
        candidates = candidates.with_for_update(of=n, skip_locked=True)
    stmt = (
        n.update()
        .where(n.c.idempotency_key.in_(candidates.scalar_subquery()), due)
        .values(
            status=SENDING,
            lease_until=now + timedelta(seconds=lease_seconds),
            lease_token=token,
            attempts=n.c.attempts + 1,
        )
        .returning(
            n.c.idempotency_key,
            n.c.fingerprint,
            n.c.tenant,
            n.c.receiver,
            n.c.event,
            n.c.locale,
            n.c.payload,
            n.c.attempts,
            n.c.created_at,
            n.c.not_before,
        )
    )
    return stmt


def _held(table=n):
    """Rows held back as history (summarised or not)."""
    return sa.and_(table.c.status == SUPPRESSED, table.c.reason.startswith(types.HISTORY))


def follow_up_context(
    warehouse: Warehouse, fingerprints: Iterable[str]
) -> tuple[dict[str, str], dict[tuple[str, str], str], set[tuple[str, str]]]:
    """What the dispatcher needs to judge follow-ups of these incidents: each incident's status
    (by fingerprint); the key of its first trigger to each receiver that was not held back as
    history (by fingerprint and receiver), which follow-ups thread onto; and the (fingerprint,
    receiver) pairs that were sent a trigger, repeat or escalation (a resolve needs one)."""
    fingerprints = sorted(fingerprints)
    opening = (types.TRIGGER, types.REPEAT, types.ESCALATE)
    with warehouse.engine.connect() as conn:
        statuses = dict(
            conn.execute(
                sa.select(alerts.c.fingerprint, alerts.c.status).where(
                    alerts.c.fingerprint.in_(fingerprints)
                )
            ).all()
        )
        firsts = conn.execute(
            sa.select(n.c.fingerprint, n.c.receiver, n.c.idempotency_key, n.c.created_at)
            .where(n.c.fingerprint.in_(fingerprints), n.c.event == types.TRIGGER, ~_held())
            .order_by(n.c.created_at, n.c.idempotency_key)
        ).all()
        sent = conn.execute(
            sa.select(n.c.fingerprint, n.c.receiver)
            .where(n.c.fingerprint.in_(fingerprints), n.c.event.in_(opening), n.c.status == SENT)
            .distinct()
        ).all()
    thread_keys: dict[tuple[str, str], str] = {}
    for fp, receiver, key, _ in firsts:
        thread_keys.setdefault((fp, receiver), key)
    return statuses, thread_keys, {(fp, receiver) for fp, receiver in sent}


def paged_receivers(
    warehouse: Warehouse | None, fingerprints: Iterable[str], conn: sa.Connection | None = None
) -> dict[str, set[str]]:
    """The receivers paged about each incident: a trigger or escalation stored for them that was
    not held back as history (the ``paged`` of ``planning.plan_notifications``)."""
    if conn is None:
        with warehouse.engine.connect() as own:
            return paged_receivers(warehouse, fingerprints, own)
    out: dict[str, set[str]] = {}
    fingerprints = sorted(set(fingerprints))
    for start in range(0, len(fingerprints), 500):
        rows = conn.execute(
            sa.select(n.c.fingerprint, n.c.receiver).where(
                n.c.fingerprint.in_(fingerprints[start : start + 500]),
                n.c.event.in_((types.TRIGGER, types.ESCALATE)),
                ~_held(),
            )
        ).all()
        for fp, receiver in rows:
            out.setdefault(fp, set()).add(receiver)
    return out


def history_only(warehouse: Warehouse, fingerprints: Iterable[str]) -> set[str]:
    """The incidents among these that were held back as history and paged to nobody since
    (what ``alerts list`` marks as history)."""
    fingerprints = sorted(set(fingerprints))
    held: set[str] = set()
    with warehouse.engine.connect() as conn:
        for start in range(0, len(fingerprints), 500):
            query = sa.select(n.c.fingerprint).where(
                n.c.fingerprint.in_(fingerprints[start : start + 500]),
                n.c.event == types.TRIGGER,
                _held(),
            )
            held.update(conn.execute(query.distinct()).scalars())
        paged = paged_receivers(warehouse, held, conn)
    return held - set(paged)


# -- history digests ------------------------------------------------------------------------------


def hold_digests(
    conn: sa.Connection,
    digests: Iterable[Notification],
    now: datetime,
    settle: timedelta = DIGEST_SETTLE,
) -> int:
    """Keep one digest waiting per tenant and receiver (see the module doc): a digest already
    waiting for the same pair is due ``settle`` from ``now`` again, else this one is stored, due
    then. Returns how many were stored."""
    now = types.utc(now)
    due = now + settle
    stored = 0
    for digest in digests:
        waiting = conn.execute(
            sa.select(n.c.idempotency_key, n.c.attempts).where(
                n.c.fingerprint == digest.fingerprint,
                n.c.receiver == digest.receiver,
                n.c.event == types.DIGEST,
                n.c.status == PENDING,
            )
        ).first()
        if waiting is not None:
            if waiting.attempts == 0:  # a digest retrying after a failure keeps its backoff
                conn.execute(
                    n.update()
                    .where(n.c.idempotency_key == waiting.idempotency_key)
                    .values(next_attempt_at=due)
                )
            continue
        row = _row(replace(digest, not_before=None), now)
        row["next_attempt_at"] = due
        stored += len(_insert_absent(conn, [row]))
    return stored


def fold_history(warehouse: Warehouse, tenant: str, receiver: str) -> dict:
    """The figures of a tenant's history not summarised yet for ``receiver``: how many incidents,
    by severity (most severe first), the period they span (first start, last anomaly) and their
    fingerprints; ``count`` 0 when there is none (incidents paged since they fired again live are
    not history any more)."""
    query = sa.select(n.c.fingerprint, n.c.payload).where(
        n.c.tenant == tenant,
        n.c.receiver == receiver,
        n.c.event == types.TRIGGER,
        n.c.status == SUPPRESSED,
        n.c.reason == types.HISTORY,
    )
    with warehouse.engine.connect() as conn:
        rows = conn.execute(query).all()
        paged = paged_receivers(warehouse, [fp for fp, _ in rows], conn)
    incidents = {}
    for fp, payload in rows:
        if receiver not in paged.get(fp, ()):
            incidents.setdefault(fp, json.loads(payload).get("incident") or {})
    order = [s.label for s in sorted(types.Severity, reverse=True)]
    by_severity = {label: 0 for label in order}
    for incident in incidents.values():
        label = incident.get("severity") or "medium"
        by_severity[label] = by_severity.get(label, 0) + 1
    starts = [i["started_at"] for i in incidents.values() if i.get("started_at")]
    lasts = [i["last_seen_at"] for i in incidents.values() if i.get("last_seen_at")]
    return {
        "tenant": tenant,
        "count": len(incidents),
        "by_severity": {k: v for k, v in by_severity.items() if v},
        "first_started_at": min(starts, key=types.utc) if starts else None,
        "last_seen_at": max(lasts, key=types.utc) if lasts else None,
        "fingerprints": sorted(incidents),
    }


def mark_summarised(
    warehouse: Warehouse, receiver: str, fingerprints: Iterable[str], digest_key: str
) -> int:
    """Record that the digest ``digest_key`` summarised these incidents' history for
    ``receiver`` (their held triggers' reason names it); returns how many rows changed."""
    fingerprints = sorted(fingerprints)
    total = 0
    with warehouse.engine.begin() as conn:
        for start in range(0, len(fingerprints), 500):
            stmt = (
                n.update()
                .where(
                    n.c.fingerprint.in_(fingerprints[start : start + 500]),
                    n.c.receiver == receiver,
                    n.c.event == types.TRIGGER,
                    n.c.status == SUPPRESSED,
                    n.c.reason == types.HISTORY,
                )
                .values(reason=f"{types.HISTORY_SUMMARISED}{digest_key}")
            )
            total += conn.execute(stmt).rowcount
    return total


def finish(warehouse: Warehouse, key: str, token: str, **values) -> bool:
    """Record an outcome (column values), only if the claim ``token`` still holds the lease."""
    stmt = (
        n.update()
        .where(n.c.idempotency_key == key, n.c.lease_token == token, n.c.status == SENDING)
        .values(lease_until=None, lease_token=None, **values)
    )
    with warehouse.engine.begin() as conn:
        return conn.execute(stmt).rowcount == 1
