"""How bad an incident is: its severity from how far, how long, how many metrics and which.

With ``e`` the largest relative excess of a peak score over its level (``peak / level - 1``,
clipped to [0, 1]), ``h`` the duration in hours (clipped to 2), ``n`` the number of metrics
involved and ``w`` the largest business-impact weight among them (``TenantSettings.impact``: 1.5
for error rates, tail latency, failed logins; 0.5 for CPU/memory)::

    points = w * (4 e + h + 0.5 * min(n - 1, 3))

critical when points >= 6, high >= 3.5, medium >= 1.5, low below. A 30-minute error-rate spike at
twice its threshold is critical (1.5 x 4.5); the same spike in memory use is medium (0.5 x 4.5).
"""

from datetime import timedelta

from monitoring_pipelines.alerting.types import Severity

# Where the severity points become a level (see the module docstring).
SEVERITY_LEVELS = ((6.0, Severity.CRITICAL), (3.5, Severity.HIGH), (1.5, Severity.MEDIUM))


def severity_points(excess: float, duration: timedelta, n_metrics: int, weight: float) -> float:
    """The points of the module docstring's formula."""
    e = min(max(excess, 0.0), 1.0)
    hours = min(duration / timedelta(hours=1), 2.0)
    return weight * (4.0 * e + hours + 0.5 * min(max(n_metrics - 1, 0), 3))


def severity_for(points: float) -> Severity:
    """The level the points reach (:data:`SEVERITY_LEVELS`)."""
    for bound, level in SEVERITY_LEVELS:
        if points >= bound:
            return level
    return Severity.LOW
