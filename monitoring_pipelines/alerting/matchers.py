"""Labels and matchers: what routing, silences and inhibition select incidents by.

An incident's labels are its tenant, service, kind, severity and strongest metric (plus any stored
labels); a matcher is ``label=value``, ``label!=value``, ``label=~regex`` or ``label!~regex``, as in
Alertmanager.
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from monitoring_pipelines.alerting.policy_reader import PolicyReader
from monitoring_pipelines.alerting.types import Incident, Severity

LABELS = ("tenant", "service", "metric", "severity", "kind")

_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")
_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9_.:/@*\-]+$")
_MATCHER_HELP = "expected label=value, label!=value, label=~regex or label!~regex"


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str
    text: str
    pattern: re.Pattern | None = None

    def matches(self, labels: Mapping[str, str], metrics: Iterable[str] = ()) -> bool:
        # ``metric`` matches any metric of the incident: a route for error_rate catches an
        # incident whose strongest metric is latency but which also involves error_rate.
        values = list(metrics) if self.label == "metric" else []
        if not values:
            values = [labels.get(self.label, "")]
        if self.op == "=":
            return any(v == self.value for v in values)
        if self.op == "!=":
            return all(v != self.value for v in values)
        hit = any(self.pattern.fullmatch(v) for v in values)
        return hit if self.op == "=~" else not hit


def matches_all(
    matchers: Iterable[Matcher], labels: Mapping[str, str], metrics: Iterable[str]
) -> bool:
    metrics = tuple(metrics)
    return all(m.matches(labels, metrics) for m in matchers)


def incident_labels(incident: Incident) -> dict[str, str]:
    """The labels routing, silences and inhibition match on; the fields win over stored labels."""
    labels = dict(incident.labels)
    labels.update(
        tenant=incident.tenant,
        service=incident.service,
        kind=incident.kind,
        severity=incident.severity.label,
    )
    if incident.metrics and "metric" not in labels:
        labels["metric"] = max(incident.metrics, key=lambda m: m.peak_score).metric
    return labels


def incident_metrics(incident: Incident) -> tuple[str, ...]:
    return tuple(m.metric for m in incident.metrics)


def parse_matcher(text: object) -> Matcher:
    """``label=value``, ``label!=value``, ``label=~regex``, ``label!~regex``; ValueError if bad."""
    if not isinstance(text, str):
        raise ValueError(f"bad matcher {text!r} ({_MATCHER_HELP})")
    found = _MATCHER.match(text)
    if not found:
        raise ValueError(f"bad matcher {text!r} ({_MATCHER_HELP})")
    label, op, value = found.groups()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    elif op in ("=", "!=") and not _PLAIN_VALUE.match(value):
        raise ValueError(f"bad matcher {text!r} ({_MATCHER_HELP})")
    if label not in LABELS:
        raise ValueError(
            f"bad matcher {text!r}: unknown label {label!r} (expected one of {', '.join(LABELS)})"
        )
    pattern = None
    if op in ("=~", "!~"):
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise ValueError(f"bad matcher {text!r}: invalid regex ({exc})") from None
    elif label == "severity":
        Severity.parse(value)
    return Matcher(label, op, value, text, pattern)


def read_matchers(reader: PolicyReader, value, path: str) -> tuple[Matcher, ...]:
    """The list of matchers at ``path`` of the policy file."""
    out = []
    for i, item in enumerate(reader.sequence(value, path)):
        try:
            out.append(parse_matcher(item))
        except ValueError as exc:
            raise reader.fail(f"{path}[{i}]", str(exc)) from None
    return tuple(out)


def read_labels(reader: PolicyReader, value, path: str) -> tuple[str, ...]:
    """A list of label names at ``path`` (e.g. an inhibit rule's ``equal``)."""
    out = []
    for i, label in enumerate(reader.sequence(value, path)):
        if label not in LABELS:
            raise reader.fail(
                f"{path}[{i}]", f"unknown label {label!r} (expected one of {', '.join(LABELS)})"
            )
        out.append(label)
    return tuple(out)
