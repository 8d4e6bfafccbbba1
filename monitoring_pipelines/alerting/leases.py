"""Leases on outbox rows: how a dispatcher takes due notifications and records their outcome.

- :func:`claim`: one conditional ``UPDATE ... RETURNING`` moves due rows to ``sending`` with a
  lease (``lease_until``, ``lease_token``); on PostgreSQL the candidate rows are picked with
  ``FOR UPDATE SKIP LOCKED``, on SQLite the write lock serialises claims. Two dispatchers never
  hold the same row; a row whose lease expired (its dispatcher died) is claimed again.
- :func:`finish`: records an outcome, only while the claim still holds the lease.
"""

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from monitoring_pipelines.alerting import types
from monitoring_pipelines.alerting.outbox import due
from monitoring_pipelines.alerting.types import PENDING, SENDING, Notification
from monitoring_pipelines.warehouse import Warehouse, notifications

n = notifications


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
        deadline; reset by :func:`outbox.requeue`). Retries give up ``give_up_after`` from here."""
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
    due_now = due(now, waiting_digests=True)
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
        .where(due_now, sa.or_(n.c.event != types.RESOLVE, ~blocked))
        .order_by(n.c.next_attempt_at, n.c.created_at, n.c.idempotency_key)
        .limit(limit)
    )
    if exclude:
        candidates = candidates.where(n.c.idempotency_key.not_in(sorted(exclude)))
    if dialect == "postgresql":
        candidates = candidates.with_for_update(of=n, skip_locked=True)
    stmt = (
        n.update()
        .where(n.c.idempotency_key.in_(candidates.scalar_subquery()), due_now)
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


def finish(warehouse: Warehouse, key: str, token: str, **values) -> bool:
    """Record an outcome (column values), only if the claim ``token`` still holds the lease."""
    stmt = (
        n.update()
        .where(n.c.idempotency_key == key, n.c.lease_token == token, n.c.status == SENDING)
        .values(lease_until=None, lease_token=None, **values)
    )
    with warehouse.engine.begin() as conn:
        return conn.execute(stmt).rowcount == 1
