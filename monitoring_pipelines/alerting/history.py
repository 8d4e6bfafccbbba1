"""What was paged and what was held back as history, read from the outbox; the history digests.

History (incidents found in past data, see ``planning.plan_notifications``) is stored suppressed
with the reason ``history`` and summarised instead: :func:`hold_digests` keeps one ``digest``
notification waiting per tenant and receiver, due :data:`DIGEST_SETTLE` after the last history
found (a backfill run day by day keeps pushing it back, so it yields one summary), and any
delivery before that takes it along; when it is sent, :func:`fold_history` counts every held
incident of its tenant and receiver not summarised yet, and :func:`mark_summarised` records which
digest summarised them (reason ``history, summarised in <key>``). :func:`paged_receivers`,
:func:`history_only` and :func:`follow_up_context` tell the planner, ``alerts list`` and the
dispatcher who was paged about what.
"""

import json
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta

import sqlalchemy as sa

from monitoring_pipelines.alerting import types
from monitoring_pipelines.alerting.outbox import insert_absent, row_of
from monitoring_pipelines.alerting.types import PENDING, SENT, SUPPRESSED, Notification
from monitoring_pipelines.warehouse import Warehouse, alerts, notifications

n = notifications

# How long a history digest waits for more history of its tenant and receiver before it is due
# (as Alertmanager's group_interval): the alerting runs of a backfill follow each other closer.
DIGEST_SETTLE = timedelta(minutes=5)


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
        row = row_of(replace(digest, not_before=None), now)
        row["next_attempt_at"] = due
        stored += len(insert_absent(conn, [row]))
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
