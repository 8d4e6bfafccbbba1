"""When a failed delivery is tried again, and when it is given up as dead.

A retryable failure goes back to ``pending`` at an exponential backoff with full jitter (or the
receiver's ``Retry-After``), for as long as ``give_up_after`` from when the row became due
(the policy's ``defaults.give_up_after``); then it is ``dead``. :mod:`dispatcher` applies it.
"""

import random
from collections.abc import Callable
from datetime import datetime, timedelta

from monitoring_pipelines.alerting.leases import Claimed
from monitoring_pipelines.alerting.receivers import DeliveryError
from monitoring_pipelines.alerting.types import DEAD, PENDING

# How long a notification is retried, from when it became due, before it is dead (the policy's
# ``defaults.give_up_after``).
DEFAULT_GIVE_UP_AFTER = timedelta(hours=24)
DEFAULT_BACKOFF_BASE = 30.0
DEFAULT_BACKOFF_CAP = 3600.0
# A Retry-After beyond this is treated as this (a broken header must not park a row for a year).
MAX_RETRY_AFTER = 24 * 3600.0


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


def retry_or_give_up(
    row: Claimed,
    error: DeliveryError,
    give_up: tuple[timedelta, int | None],
    clock: Callable[[], datetime],
    backoff: tuple[float, float, random.Random | None],
) -> tuple[str, dict, datetime | None]:
    """After a retryable failure: ``dead`` once ``give_up_after`` has passed since the row became
    due (or ``max_attempts`` are spent), else ``retry`` at the backoff's time, never later than
    the deadline (returned, so the receiver's later rows wait behind it)."""
    give_up_after, max_attempts = give_up
    now = clock()
    deadline = (row.due_at or now) + give_up_after
    if now >= deadline or (max_attempts is not None and row.attempts >= max_attempts):
        values = {
            "status": DEAD,
            "reason": f"gave up after {row.attempts} attempts: {error.message}",
            "last_error": error.message,
        }
        return "dead", values, None
    base, cap, rng = backoff
    delay = backoff_delay(row.attempts, base=base, cap=cap, retry_after=error.retry_after, rng=rng)
    retry_at = min(now + timedelta(seconds=delay), deadline)
    values = {
        "status": PENDING,
        "next_attempt_at": retry_at,
        "last_error": error.message,
        "reason": f"retrying until {deadline:%Y-%m-%d %H:%M} UTC: {error.message}",
    }
    return "retry", values, retry_at
