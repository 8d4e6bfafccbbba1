"""The notification outbox: stored once, delivered at least once, never lost without a trace.

:func:`enqueue` writes notifications in the caller's transaction (the same one that updates the
incident), keyed by idempotency key, so re-planning a partition never duplicates one.
:func:`dispatch` then delivers what is due:

- **claim**: one conditional ``UPDATE ... RETURNING`` moves due rows to ``sending`` with a lease
  (``lease_until``, ``lease_token``); on PostgreSQL the candidate rows are picked with
  ``FOR UPDATE SKIP LOCKED``, on SQLite the write lock serialises claims. Two dispatchers never
  hold the same row; a row whose lease expired (its dispatcher died) is claimed again.
- **send**: one thread per receiver, each sending its rows in order (a resolve never overtakes its
  trigger), so a slow or failing receiver does not hold up the others; each thread records its
  own outcomes as soon as they are known.
- **outcome**: ``sent``; or, on a retryable failure, back to ``pending`` at an exponential backoff
  with full jitter (or the receiver's ``Retry-After``); ``dead`` after ``max_attempts`` or on a
  permanent failure, with the (redacted) reason; ``cancelled`` for an escalation or repeat whose
  incident was acknowledged or resolved in the meantime.

A dispatcher killed mid-send leaves its rows leased; once the lease expires they are sent again,
with the same idempotency key, which is what makes delivery at-least-once and, for receivers that
honour the key, exactly-once.
"""

import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from monitoring_pipelines.alerting import templates, types
from monitoring_pipelines.alerting.receivers import DeliveryError, Receiver, redact
from monitoring_pipelines.alerting.types import Notification
from monitoring_pipelines.warehouse import Warehouse, alerts, notifications

PENDING = "pending"
SENDING = "sending"
SENT = "sent"
DEAD = "dead"
CANCELLED = "cancelled"
SUPPRESSED = "suppressed"
STATUSES = (PENDING, SENDING, SENT, DEAD, CANCELLED, SUPPRESSED)

DEFAULT_LEASE_SECONDS = 120.0
DEFAULT_MAX_ATTEMPTS = 8
DEFAULT_BACKOFF_BASE = 30.0
DEFAULT_BACKOFF_CAP = 3600.0
# A Retry-After beyond this is treated as this (a broken header must not park a row for a year).
MAX_RETRY_AFTER = 24 * 3600.0

# Follow-ups that make no sense once a person has taken the incident or it has ended.
_CANCELLABLE = {types.ESCALATE: "escalation", types.REPEAT: "repeat"}
_ERROR_LIMIT = 500

n = notifications


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
    now = types.utc(now) or _now()
    unique: dict[str, dict] = {}
    for item in items:
        unique.setdefault(item.idempotency_key, _row(item, now))
    if not unique:
        return 0
    if conn is None:
        if warehouse is None:
            raise ValueError("enqueue needs a warehouse or a connection")
        with warehouse.engine.begin() as own:
            return _insert_absent(own, list(unique.values()))
    return _insert_absent(conn, list(unique.values()))


def _insert_absent(conn: sa.Connection, rows: list[dict]) -> int:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - the warehouse runs on SQLite or PostgreSQL
        insert = None
    inserted = 0
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
            inserted += len(fresh)
            continue
        stmt = (
            insert(n)
            .values(chunk)
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(n.c.idempotency_key)
        )
        inserted += len(conn.execute(stmt).all())
    return inserted


# -- reads ----------------------------------------------------------------------------------------


def _due(now: datetime):
    return sa.or_(
        sa.and_(
            n.c.status == PENDING,
            n.c.next_attempt_at <= now,
            sa.or_(n.c.not_before.is_(None), n.c.not_before <= now),
        ),
        sa.and_(n.c.status == SENDING, n.c.lease_until < now),
    )


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
    """Give dead or cancelled notifications a fresh start (after fixing a receiver's config)."""
    keys = list(keys)
    if not keys:
        return 0
    now = types.utc(now) or _now()
    stmt = (
        n.update()
        .where(n.c.idempotency_key.in_(keys), n.c.status.in_([DEAD, CANCELLED]))
        .values(status=PENDING, attempts=0, next_attempt_at=now, lease_until=None, reason=None)
    )
    with warehouse.engine.begin() as conn:
        return conn.execute(stmt).rowcount


# -- backoff --------------------------------------------------------------------------------------


def backoff_delay(
    attempt: int,
    *,
    base: float = DEFAULT_BACKOFF_BASE,
    cap: float = DEFAULT_BACKOFF_CAP,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds before the next try after ``attempt`` failed tries: "full jitter", uniform in
    ``[0, min(cap, base * 2**(attempt-1))]``, so retries of many rows spread out instead of
    hammering a recovering receiver together. A ``Retry-After`` from the receiver is a floor."""
    rng = rng or random
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    delay = rng.uniform(0.0, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay


# -- dispatch -------------------------------------------------------------------------------------


@dataclass
class DispatchReport:
    """What one :func:`dispatch` did. ``latencies`` maps each sent notification's key to its
    delivery latency in seconds (``sent_at - created_at``)."""

    claimed: int = 0
    sent: int = 0
    retried: int = 0
    dead: int = 0
    cancelled: int = 0
    # Rows put back untouched because an earlier row of the same receiver failed this round.
    deferred: int = 0
    # Rows still in flight when dispatch stopped waiting (a hung receiver); their lease expires.
    unfinished: int = 0
    latencies: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    by_receiver: dict[str, dict[str, int]] = field(default_factory=dict)
    # Keys whose outcome is known (recorded or lost to another claim), for ``unfinished``.
    finished: set[str] = field(default_factory=set, repr=False)

    def count(self, receiver: str, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)
        per = self.by_receiver.setdefault(receiver, {})
        per[outcome] = per.get(outcome, 0) + 1

    def as_metadata(self) -> dict:
        values = sorted(self.latencies.values())
        p95 = values[min(len(values) - 1, int(0.95 * len(values)))] if values else None
        return {
            "claimed": self.claimed,
            "sent": self.sent,
            "retried": self.retried,
            "dead": self.dead,
            "cancelled": self.cancelled,
            "deferred": self.deferred,
            "unfinished": self.unfinished,
            "latency_p95_seconds": p95,
        }


@dataclass(frozen=True)
class _Claimed:
    """A row this dispatch holds the lease on: its notification, how many attempts it has had
    (this one included), and why its stored payload cannot be read, if it cannot."""

    notification: Notification
    attempts: int
    unreadable: str | None = None

    @property
    def key(self) -> str:
        return self.notification.idempotency_key


def _claimed(row) -> _Claimed:
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
    )
    return _Claimed(notification, int(row.attempts), unreadable)


class _Clock:
    """``now`` as given (tests simulate time) advancing with the wall clock, or the wall clock."""

    def __init__(self, now: datetime | None):
        self.start = types.utc(now)
        self.t0 = time.monotonic()

    def __call__(self) -> datetime:
        if self.start is None:
            return _now()
        return self.start + timedelta(seconds=time.monotonic() - self.t0)


def dispatch(
    warehouse: Warehouse,
    receivers: dict[str, Receiver],
    *,
    now: datetime | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    limit: int = 200,
    backoff_base: float = DEFAULT_BACKOFF_BASE,
    backoff_cap: float = DEFAULT_BACKOFF_CAP,
    rng: random.Random | None = None,
    render: Callable[..., templates.Message] = templates.render,
) -> DispatchReport:
    """Deliver the notifications due at ``now`` (default: the current time); see the module doc.

    Waits for receivers at most ``lease_seconds`` per round: a receiver still hanging then is
    left to its lease, and its rows are tried again by a later dispatch.
    """
    clock = _Clock(now)
    report = DispatchReport()
    lock = threading.Lock()
    attempted: set[str] = set()
    # Rounds: a resolve waits for its trigger to the same receiver, so a batch holding both sends
    # the trigger in the first round and the resolve in the next.
    while report.claimed < limit:
        token = uuid.uuid4().hex
        rows = _claim(warehouse, clock(), lease_seconds, limit - report.claimed, token, attempted)
        if not rows:
            break
        report.claimed += len(rows)
        attempted.update(r.key for r in rows)
        groups = _prepare(warehouse, rows, token, clock, report)
        threads = []
        for receiver_name, group in groups.items():
            worker = threading.Thread(
                target=_guarded,
                name=f"dispatch-{receiver_name}",
                args=(warehouse, receivers.get(receiver_name), receiver_name, group, token),
                kwargs={
                    "clock": clock,
                    "report": report,
                    "lock": lock,
                    "max_attempts": max_attempts,
                    "backoff": (backoff_base, backoff_cap, rng),
                    "render": render,
                },
                daemon=True,
            )
            worker.start()
            threads.append((worker, group))
        deadline = time.monotonic() + lease_seconds
        stuck = False
        for worker, group in threads:
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                stuck = True
                with lock:
                    report.unfinished += sum(
                        1 for row, _ in group if row.key not in report.finished
                    )
        if stuck:
            break
    return report


def _claim(
    warehouse: Warehouse,
    now: datetime,
    lease_seconds: float,
    limit: int,
    token: str,
    exclude: set[str],
) -> list[_Claimed]:
    due = _due(now)
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
    if warehouse.dialect == "postgresql":
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
        )
    )
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


def _prepare(
    warehouse: Warehouse,
    rows: list[_Claimed],
    token: str,
    clock: _Clock,
    report: DispatchReport,
) -> dict[str, list[tuple[_Claimed, str | None]]]:
    """Cancel follow-ups of handled incidents; group the rest by receiver with thread keys."""
    fingerprints = {r.notification.fingerprint for r in rows}
    with warehouse.engine.connect() as conn:
        statuses = dict(
            conn.execute(
                sa.select(alerts.c.fingerprint, alerts.c.status).where(
                    alerts.c.fingerprint.in_(sorted(fingerprints))
                )
            ).all()
        )
        firsts = conn.execute(
            sa.select(n.c.fingerprint, n.c.receiver, n.c.idempotency_key, n.c.created_at)
            .where(n.c.fingerprint.in_(sorted(fingerprints)), n.c.event == types.TRIGGER)
            .order_by(n.c.created_at, n.c.idempotency_key)
        ).all()
    thread_keys: dict[tuple[str, str], str] = {}
    for fp, receiver, key, _ in firsts:
        thread_keys.setdefault((fp, receiver), key)
    groups: dict[str, list[tuple[_Claimed, str | None]]] = {}
    for row in rows:
        stored = row.notification
        status = statuses.get(stored.fingerprint)
        if stored.event in _CANCELLABLE and status in (types.ACKNOWLEDGED, types.RESOLVED):
            reason = f"{_CANCELLABLE[stored.event]} cancelled: incident {status} before it was due"
            if _finish(warehouse, row.key, token, status=CANCELLED, reason=reason):
                report.count(stored.receiver, "cancelled")
            continue
        thread_key = thread_keys.get((stored.fingerprint, stored.receiver))
        groups.setdefault(stored.receiver, []).append((row, thread_key))
    return groups


def _finish(warehouse: Warehouse, key: str, token: str, **values) -> bool:
    """Record an outcome, only if this claim still holds the lease."""
    stmt = (
        n.update()
        .where(n.c.idempotency_key == key, n.c.lease_token == token, n.c.status == SENDING)
        .values(lease_until=None, lease_token=None, **values)
    )
    with warehouse.engine.begin() as conn:
        return conn.execute(stmt).rowcount == 1


def _deliver_group(
    warehouse: Warehouse,
    receiver: Receiver | None,
    receiver_name: str,
    group: list[tuple[_Claimed, str | None]],
    token: str,
    *,
    clock: _Clock,
    report: DispatchReport,
    lock: threading.Lock,
    max_attempts: int,
    backoff: tuple[float, float, random.Random | None],
    render: Callable[..., templates.Message],
) -> None:
    base, cap, rng = backoff
    done = report.finished
    retry_at: datetime | None = None
    for row, thread_key in group:
        if retry_at is not None:
            # An earlier row of this receiver failed and will be retried: keep the order, and
            # do not spend this round's time on a receiver that is down.
            if _finish(
                warehouse,
                row.key,
                token,
                status=PENDING,
                attempts=row.attempts - 1,
                next_attempt_at=retry_at,
            ):
                with lock:
                    report.count(receiver_name, "deferred")
                    done.add(row.key)
            continue
        outcome, values, error = _deliver_one(receiver, receiver_name, row, thread_key, render)
        if outcome == "retry":
            if row.attempts >= max_attempts:
                outcome = "dead"
                values = {
                    "status": DEAD,
                    "reason": f"gave up after {row.attempts} attempts: {error.message}",
                    "last_error": error.message,
                }
            else:
                delay = backoff_delay(
                    row.attempts, base=base, cap=cap, retry_after=error.retry_after, rng=rng
                )
                retry_at = clock() + timedelta(seconds=delay)
                values = {
                    "status": PENDING,
                    "next_attempt_at": retry_at,
                    "last_error": error.message,
                }
        if outcome == "sent":
            sent_at = clock()
            values = {"status": SENT, "sent_at": sent_at, "last_error": None, "reason": None}
        recorded = _finish(warehouse, row.key, token, **values)
        with lock:
            done.add(row.key)
            if error is not None:
                report.errors[row.key] = error.message
            if not recorded:
                continue
            if outcome == "sent":
                report.latencies[row.key] = (sent_at - row.notification.created_at).total_seconds()
                report.count(receiver_name, "sent")
            elif outcome == "retry":
                report.count(receiver_name, "retried")
            else:
                report.count(receiver_name, "dead")


def _guarded(warehouse, receiver, receiver_name, group, token, **kwargs) -> None:
    """Run a receiver's deliveries; if the warehouse itself fails, the rows stay leased and are
    tried again once the lease expires, and the report says why."""
    try:
        _deliver_group(warehouse, receiver, receiver_name, group, token, **kwargs)
    except Exception as exc:
        with kwargs["lock"]:
            kwargs["report"].errors[f"receiver:{receiver_name}"] = (
                f"dispatch failed ({type(exc).__name__})"
            )


def _deliver_one(
    receiver: Receiver | None,
    receiver_name: str,
    row: _Claimed,
    thread_key: str | None,
    render: Callable[..., templates.Message],
) -> tuple[str, dict, DeliveryError | None]:
    if receiver is None:
        error = DeliveryError(f"receiver {receiver_name!r} is not configured", retryable=False)
        return "dead", {"status": DEAD, "reason": error.message, "last_error": error.message}, error
    stored = row.notification
    problem = row.unreadable
    if problem is None:
        try:
            message = render(stored.payload, stored.locale or receiver.locale, event=stored.event)
        except Exception as exc:  # a payload this code cannot render will not render next time
            problem = f"{type(exc).__name__}: {str(exc)[:200]}"
    if problem is not None:
        error = DeliveryError(f"cannot render the notification ({problem})", retryable=False)
        return "dead", {"status": DEAD, "reason": error.message, "last_error": error.message}, error
    notification = replace(stored, locale=message.locale, thread_key=thread_key)
    try:
        receiver.send(notification, message)
    except DeliveryError as exc:
        error = DeliveryError(
            _safe(exc.message, receiver), retryable=exc.retryable, retry_after=exc.retry_after
        )
    except Exception as exc:  # a receiver bug: keep the row, say what happened, try again later
        error = DeliveryError(
            _safe(f"{type(exc).__name__}: {exc}", receiver), retryable=True, retry_after=None
        )
    else:
        return "sent", {}, None
    if error.retryable:
        return "retry", {}, error
    return "dead", {"status": DEAD, "reason": error.message, "last_error": error.message}, error


def _safe(text: str, receiver: Receiver) -> str:
    try:
        secrets = receiver.secrets()
    except Exception:
        secrets = []
    return redact(text, secrets)[:_ERROR_LIMIT]
