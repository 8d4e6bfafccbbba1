"""The words and figures of a notification, whatever its format: the locale's catalog and
translator, numbers and times as the locale writes them, colours by severity, and the suggested
next step chosen by event, kind and metric (:mod:`.templates` lays them out)."""

import math
from datetime import UTC, datetime
from pathlib import Path

from monitoring_pipelines import i18n
from monitoring_pipelines.alerting import types
from monitoring_pipelines.i18n import DEFAULT_LOCALE, load_catalog

LOCALE_DIR = Path(__file__).parent / "locales"

# (thousands separator, decimal separator) by locale; fr uses a narrow no-break space.
_SEPARATORS = {
    "en": (",", "."),
    "fr": ("\u202f", ","),
    "de": (".", ","),
    "es": (".", ","),
    "it": (".", ","),
}

# Colour of a report message (hex, no #): informational, not a severity.
REPORT_COLOR = "1565C0"
# The severity a report message carries for receivers that map one (it is not an incident).
REPORT_SEVERITY = "info"

# Colours by severity (hex, no #), and the one for a resolved incident.
SEVERITY_COLORS = {
    "critical": "B71C1C",
    "high": "E65100",
    "medium": "F9A825",
    "low": "1565C0",
}
RESOLVED_COLOR = "2E7D32"


def catalog(locale: str) -> dict[str, str]:
    """The flat catalog of one locale of the notifications."""
    return load_catalog(LOCALE_DIR, locale)


class Translator(i18n.Translator):
    """The notifications' messages in one locale."""

    folder = LOCALE_DIR

    def number(self, value: float | int | None) -> str:
        return format_number(value, self.locale)


def format_number(value: float | int | None, locale: str = DEFAULT_LOCALE) -> str:
    """A number the way the locale writes it: three significant-ish digits, grouped thousands."""
    if value is None:
        return "—"
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 100 or value == int(value):
        text = f"{value:,.0f}"
    elif magnitude >= 1:
        text = f"{value:,.2f}"
    else:
        text = f"{value:.3g}"
    group, decimal = _SEPARATORS.get(locale, _SEPARATORS[DEFAULT_LOCALE])
    return text.replace(",", "\x00").replace(".", decimal).replace("\x00", group)


def format_time(value: str | datetime | None) -> str:
    """UTC, minutes, the same in every locale (on-call rotations span countries)."""
    if value is None:
        return "—"
    ts = datetime.fromisoformat(value) if isinstance(value, str) else value
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


# Metric name -> which runbook step fits. Order matters: "auth_failures" is auth, not errors.
_CATEGORY_RULES = (
    ("latency", ("latency", "_ms", "duration")),
    ("auth", ("auth",)),
    ("errors", ("error", "fail")),
    ("saturation", ("cpu", "memory", "disk", "saturation")),
    ("cache", ("cache",)),
    ("playback", ("buffer", "bitrate", "cdn", "egress", "stream")),
    ("engagement", ("skip", "click", "engagement")),
    ("traffic", ("requests", "per_second", "rate_limited", "traffic")),
)


def metric_category(metric: str | None) -> str:
    """The family of a metric for the suggested next step (``generic`` when nothing matches)."""
    name = (metric or "").lower()
    for category, needles in _CATEGORY_RULES:
        if any(n in name for n in needles):
            return category
    return "generic"


def strongest_metric(incident: dict) -> str | None:
    """The metric the incident is mostly about: the label if set, else the largest excess."""
    labelled = (incident.get("labels") or {}).get("metric")
    if labelled:
        return labelled
    metrics = incident.get("metrics") or []
    if not metrics:
        return None

    def excess(m: dict) -> float:
        threshold = float(m.get("threshold") or 0.0)
        score = float(m.get("peak_score") or 0.0)
        return score / threshold if threshold > 0 else score

    return max(metrics, key=excess)["metric"]


def next_step_key(incident: dict, event: str) -> str:
    """The catalog key of the suggested next step, chosen by event, kind and metric."""
    if event == types.RESOLVE:
        return "next_step.resolve"
    kind = incident.get("kind")
    if kind == types.DATA_QUALITY:
        return "next_step.data_quality"
    if kind == types.PIPELINE_FAILURE:
        return "next_step.pipeline_failure"
    return f"next_step.{metric_category(strongest_metric(incident))}"
