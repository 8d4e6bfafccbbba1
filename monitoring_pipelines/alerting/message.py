"""A rendered notification as every receiver reads it (:mod:`.templates` renders it): the title
and bodies, and the structured pieces that Slack, Teams and PagerDuty lay out in their own
formats. A digest or a report leaves the incident's pieces (metrics, models, kind) empty."""

from dataclasses import dataclass

# The metrics table's header of a message without metrics.
NO_METRIC_HEADER = ("", "", "", "", "")


@dataclass(frozen=True)
class MetricRow:
    metric: str
    value: str
    score: str
    threshold: str
    window: str
    points: int


@dataclass(frozen=True)
class Message:
    """A rendered notification. Text fields are in ``locale``; ``severity`` and ``event`` stay the
    machine values (``critical``, ``trigger``) for receivers that map them (PagerDuty)."""

    locale: str
    event: str
    severity: str
    title: str
    text: str
    html: str
    intro: str
    next_step: str
    # (localized label, value) pairs: tenant, service, severity, status, started, score, ...
    facts: tuple[tuple[str, str], ...]
    # (localized label, url)
    links: tuple[tuple[str, str], ...]
    color: str
    footer: str
    labels: dict
    event_text: str = ""
    severity_text: str = ""
    kind_text: str = ""
    metric_header: tuple[str, str, str, str, str] = NO_METRIC_HEADER
    metrics: tuple[MetricRow, ...] = ()
    models: str = ""

    def fact(self, label: str) -> str | None:
        return next((v for k, v in self.facts if k == label), None)
