"""The dispatcher: delivers the outbox's due notifications to their receivers.

- **claim**: due rows are leased from the outbox (:func:`leases.claim`), in rounds: a resolve
  waits for its trigger to the same receiver, so a batch holding both sends the trigger first.
- **send**: one thread per receiver, each sending its rows in order (a resolve never overtakes its
  trigger), so a slow or failing receiver does not hold up the others; each thread records its
  own outcomes as soon as they are known.
- **outcome**: ``sent``; or, on a retryable failure (a receiver missing from the policy, a secret
  missing from the environment, network errors, timeouts, 5xx, 408, 429), back to ``pending``
  with the reason, at an exponential backoff with full jitter (or the receiver's
  ``Retry-After``), for as long as ``give_up_after`` from when it became due (:mod:`retries`);
  ``dead`` only then or when the receiver refused it (other 4xx), with the (redacted) reason;
  ``cancelled`` for an escalation or repeat whose incident was acknowledged or resolved in the
  meantime, and for a resolve to a receiver that was never sent a trigger, repeat or escalation
  of the incident (its incident was history, silenced, or the trigger died).
- **history digests**: a ``digest`` row is sent with the figures of every incident of its tenant
  held back as history for its receiver and not summarised yet (:func:`history.fold_history`),
  which are then marked as summarised by it; with none left it is cancelled.

A dispatcher killed mid-send leaves its rows leased; once the lease expires they are sent again,
with the same idempotency key, which is what makes delivery at-least-once and, for receivers that
honour the key, exactly-once.
"""

import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from monitoring_pipelines.alerting import history, leases, templates, types
from monitoring_pipelines.alerting.leases import Claimed
from monitoring_pipelines.alerting.message import Message
from monitoring_pipelines.alerting.receivers import DeliveryError, Receiver
from monitoring_pipelines.alerting.redaction import redact
from monitoring_pipelines.alerting.retries import (
    DEFAULT_BACKOFF_BASE,
    DEFAULT_BACKOFF_CAP,
    DEFAULT_GIVE_UP_AFTER,
    retry_or_give_up,
)
from monitoring_pipelines.alerting.types import CANCELLED, DEAD, PENDING, SENT
from monitoring_pipelines.warehouse import Warehouse

DEFAULT_LEASE_SECONDS = 120.0

# Follow-ups that make no sense once a person has taken the incident or it has ended.
_CANCELLABLE = {types.ESCALATE: "escalation", types.REPEAT: "repeat"}
_ERROR_LIMIT = 500


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
    # The last (redacted) error of each receiver in this dispatch.
    receiver_errors: dict[str, str] = field(default_factory=dict)
    # Receivers whose failure incident this delivery raised, or resolved as they delivered again
    # (filled by ``service.deliver``, which judges receiver health).
    failing_receivers: list[str] = field(default_factory=list)
    recovered_receivers: list[str] = field(default_factory=list)
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


class _Clock:
    """``now`` as given (tests simulate time) advancing with the wall clock, or the wall clock."""

    def __init__(self, now: datetime | None):
        self.start = types.utc(now)
        self.t0 = time.monotonic()

    def __call__(self) -> datetime:
        if self.start is None:
            return datetime.now(UTC)
        return self.start + timedelta(seconds=time.monotonic() - self.t0)


def dispatch(
    warehouse: Warehouse,
    receivers: dict[str, Receiver],
    *,
    now: datetime | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    give_up_after: timedelta = DEFAULT_GIVE_UP_AFTER,
    max_attempts: int | None = None,
    limit: int = 200,
    backoff_base: float = DEFAULT_BACKOFF_BASE,
    backoff_cap: float = DEFAULT_BACKOFF_CAP,
    rng: random.Random | None = None,
    render: Callable[..., Message] = templates.render,
) -> DispatchReport:
    """Deliver the notifications due at ``now`` (default: the current time); see the module doc.

    Waits for receivers at most ``lease_seconds`` per round: a receiver still hanging then is
    left to its lease, and its rows are tried again by a later dispatch. Retryable failures give
    up ``give_up_after`` after the notification became due (or after ``max_attempts``, if given).
    """
    for receiver in receivers.values():
        receiver.remember_secrets()
    clock = _Clock(now)
    report = DispatchReport()
    lock = threading.Lock()
    attempted: set[str] = set()
    # Rounds: a resolve waits for its trigger to the same receiver, so a batch holding both sends
    # the trigger in the first round and the resolve in the next.
    while report.claimed < limit:
        token = uuid.uuid4().hex
        rows = leases.claim(
            warehouse, clock(), lease_seconds, limit - report.claimed, token, attempted
        )
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
                    "give_up": (give_up_after, max_attempts),
                    "backoff": (backoff_base, backoff_cap, rng),
                    "render": render,
                },
                daemon=True,
            )
            worker.start()
            threads.append((worker, group))
        if _stuck(threads, lease_seconds, lock, report):
            break
    return report


def _stuck(threads: list, lease_seconds: float, lock: threading.Lock, report) -> bool:
    """Wait for the round's threads at most ``lease_seconds``; True if one is still hanging
    (its rows left in flight are counted as ``unfinished``)."""
    deadline = time.monotonic() + lease_seconds
    stuck = False
    for worker, group in threads:
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            stuck = True
            with lock:
                report.unfinished += sum(1 for row, _ in group if row.key not in report.finished)
    return stuck


def _prepare(
    warehouse: Warehouse,
    rows: list[Claimed],
    token: str,
    clock: _Clock,
    report: DispatchReport,
) -> dict[str, list[tuple[Claimed, str | None]]]:
    """Cancel follow-ups of handled incidents and resolves of incidents whose receiver was never
    sent a trigger; fill in history digests' figures; group the rest by receiver with thread
    keys."""
    statuses, thread_keys, opened = history.follow_up_context(
        warehouse, {r.notification.fingerprint for r in rows}
    )
    groups: dict[str, list[tuple[Claimed, str | None]]] = {}
    for row in rows:
        stored = row.notification
        status = statuses.get(stored.fingerprint)
        reason = None
        if stored.event in _CANCELLABLE and status in (types.ACKNOWLEDGED, types.RESOLVED):
            reason = f"{_CANCELLABLE[stored.event]} cancelled: incident {status} before it was due"
        elif stored.event == types.RESOLVE and (stored.fingerprint, stored.receiver) not in opened:
            # Nobody there heard of it: held back as history, silenced, or never delivered.
            reason = f"resolve cancelled: {stored.receiver} was never sent this incident"
        elif stored.event == types.DIGEST:
            figures = history.fold_history(warehouse, stored.tenant, stored.receiver)
            if figures["count"]:
                payload = {**stored.payload, "digest": {**stored.digest, **figures}}
                row = replace(row, notification=replace(stored, payload=payload))
            else:
                reason = "digest cancelled: no history left to summarise (summarised or paged)"
        if reason is not None:
            if leases.finish(warehouse, row.key, token, status=CANCELLED, reason=reason):
                report.count(stored.receiver, "cancelled")
            continue
        thread_key = thread_keys.get((stored.fingerprint, stored.receiver))
        groups.setdefault(stored.receiver, []).append((row, thread_key))
    return groups


def _deliver_group(
    warehouse: Warehouse,
    receiver: Receiver | None,
    receiver_name: str,
    group: list[tuple[Claimed, str | None]],
    token: str,
    *,
    clock: _Clock,
    report: DispatchReport,
    lock: threading.Lock,
    give_up: tuple[timedelta, int | None],
    backoff: tuple[float, float, random.Random | None],
    render: Callable[..., Message],
) -> None:
    done = report.finished
    retry_at: datetime | None = None
    waiting = None
    for row, thread_key in group:
        if retry_at is not None:
            # An earlier row of this receiver failed and will be retried: keep the order, and
            # do not spend this round's time on a receiver that is down.
            if _defer(warehouse, row, token, retry_at, waiting):
                with lock:
                    report.count(receiver_name, "deferred")
                    done.add(row.key)
            continue
        outcome, values, error = _deliver_one(receiver, receiver_name, row, thread_key, render)
        if outcome == "retry":
            outcome, values, retry_at = retry_or_give_up(row, error, give_up, clock, backoff)
            waiting = f"waiting behind a failed delivery to {receiver_name}: {error.message}"
        if outcome == "sent":
            sent_at = clock()
            values = {"status": SENT, "sent_at": sent_at, "last_error": None, "reason": None}
            if row.notification.event == types.DIGEST:
                # Kept as sent: ``alerts`` and the outbox show what the summary said.
                values["payload"] = json.dumps(row.notification.payload, sort_keys=True)
        recorded = leases.finish(warehouse, row.key, token, **values)
        if recorded and outcome == "sent" and row.notification.event == types.DIGEST:
            digest = row.notification.digest
            history.mark_summarised(warehouse, receiver_name, digest["fingerprints"], row.key)
        with lock:
            done.add(row.key)
            if error is not None:
                report.errors[row.key] = error.message
                report.receiver_errors[receiver_name] = error.message
            if not recorded:
                continue
            if outcome == "sent":
                report.latencies[row.key] = (sent_at - row.notification.created_at).total_seconds()
                report.count(receiver_name, "sent")
            elif outcome == "retry":
                report.count(receiver_name, "retried")
            else:
                report.count(receiver_name, "dead")


def _defer(
    warehouse: Warehouse, row: Claimed, token: str, retry_at: datetime, reason: str | None
) -> bool:
    """Put a claimed row back as pending until ``retry_at`` without counting this round as an
    attempt; False when the claim was lost."""
    return leases.finish(
        warehouse,
        row.key,
        token,
        status=PENDING,
        attempts=row.attempts - 1,
        next_attempt_at=retry_at,
        reason=reason,
    )


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
    row: Claimed,
    thread_key: str | None,
    render: Callable[..., Message],
) -> tuple[str, dict, DeliveryError | None]:
    if receiver is None:
        # The policy or the environment may be fixed before the notification gives up.
        error = DeliveryError(
            f"receiver {receiver_name!r} is not configured (not in the policy)", retryable=True
        )
        return "retry", {}, error
    stored = row.notification
    problem = row.unreadable
    if problem is None:
        try:
            message = render(stored.payload, stored.locale or receiver.locale, event=stored.event)
        except Exception as exc:  # a payload this code cannot render will not render next time
            problem = redact(f"{type(exc).__name__}: {str(exc)[:200]}")
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
    # Redacted before it is cut: a secret cut in half would no longer match.
    return redact(text, secrets)[:_ERROR_LIMIT]
