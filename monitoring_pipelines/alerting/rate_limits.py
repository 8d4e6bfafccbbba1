"""Rate limits: at most ``max`` notifications per tenant within ``per``, so a bad day does not
bury the on-call channel.

The window slides over data time (the time each event is about), so re-running a partition limits
the same notifications. Only triggers and repeats count and are limited; escalations, resolves and
every notification about a critical incident always go out. Limited notifications are kept with
their reason, never dropped.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from monitoring_pipelines.alerting import types
from monitoring_pipelines.alerting.policy_reader import PolicyReader, format_duration, join
from monitoring_pipelines.alerting.types import Incident, Severity


@dataclass(frozen=True)
class RateLimit:
    max: int = 20
    per: timedelta = timedelta(hours=1)


def rate_limited(incident: Incident, event: str) -> bool:
    """Whether a notification of ``event`` about ``incident`` is subject to the rate limit."""
    return event in (types.TRIGGER, types.REPEAT) and incident.severity < Severity.CRITICAL


class RateLimiter:
    """Admits notifications in the order asked, per tenant, over a sliding window of data time."""

    def __init__(self, limit_for: Callable[[str], RateLimit]):
        self.limit_for = limit_for
        self.admitted: dict[str, list[datetime]] = {}

    def reason(self, tenant: str, at: datetime) -> str | None:
        """Why the tenant's next notification at ``at`` is limited (None: it is admitted)."""
        limit = self.limit_for(tenant)
        times = self.admitted.setdefault(tenant, [])
        recent = [t for t in times if t > at - limit.per]
        if len(recent) >= limit.max:
            return (
                f"rate limited: tenant {tenant} already has {limit.max} "
                f"notifications within {format_duration(limit.per)}"
            )
        times.append(at)
        return None


def read_rate_limit(reader: PolicyReader, data, path: str, base: RateLimit) -> RateLimit:
    """The ``rate_limit`` mapping at ``path``; keys it leaves out keep ``base``'s values."""
    raw = reader.mapping(data, path, ("max", "per"))
    limit = base
    if "max" in raw:
        if isinstance(raw["max"], bool) or not isinstance(raw["max"], int) or raw["max"] < 1:
            raise reader.fail(
                join(path, "max"), f"expected a whole number >= 1, got {raw['max']!r}"
            )
        limit = replace(limit, max=raw["max"])
    if "per" in raw:
        limit = replace(limit, per=reader.duration(raw["per"], join(path, "per")))
    return limit
