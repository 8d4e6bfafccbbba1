"""Inhibition: an incident keeps quiet the lesser ones it explains.

An inhibit rule says: while an incident matching ``source_matchers`` is active, notifications about
another incident matching ``target_matchers`` that shares the ``equal`` labels are suppressed (a
critical outage of a service makes its high and medium incidents noise). Only incidents of the same
planning batch are sources, judged at the data time of each event. Resolves are never inhibited:
whoever was told about an incident is told it ended.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from monitoring_pipelines.alerting import types
from monitoring_pipelines.alerting.matchers import (
    Matcher,
    incident_labels,
    incident_metrics,
    matches_all,
    read_labels,
    read_matchers,
)
from monitoring_pipelines.alerting.policy_reader import PolicyReader, join
from monitoring_pipelines.alerting.types import Incident


@dataclass(frozen=True)
class InhibitRule:
    name: str
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...] = ()


def _active_at(incident: Incident, at: datetime) -> bool:
    if at < incident.started_at:
        return False
    return incident.status != types.RESOLVED or at <= (incident.resolved_at or at)


class Inhibitor:
    """The policy's inhibit rules over one batch of incidents (the possible sources)."""

    def __init__(self, rules: tuple[InhibitRule, ...], incidents: Iterable[Incident]):
        self.rules = rules
        self.sources = (
            [(i, incident_labels(i), incident_metrics(i)) for i in incidents] if rules else []
        )

    def reason(self, target: Incident, event: str, at: datetime) -> str | None:
        """Why a notification of ``event`` about ``target`` at data time ``at`` is inhibited
        (None if it is not)."""
        if not self.rules or event == types.RESOLVE:
            return None
        t_labels, t_metrics = incident_labels(target), incident_metrics(target)
        for rule in self.rules:
            if not matches_all(rule.target, t_labels, t_metrics):
                continue
            for source, s_labels, s_metrics in self.sources:
                if (
                    source.fingerprint != target.fingerprint
                    and matches_all(rule.source, s_labels, s_metrics)
                    and all(s_labels.get(k) == t_labels.get(k) for k in rule.equal)
                    and _active_at(source, at)
                ):
                    return (
                        f"inhibited by {source.severity.label} incident {source.fingerprint} "
                        f"({source.tenant}/{source.service}, {rule.name})"
                    )
        return None


def read_inhibit_rule(reader: PolicyReader, data, path: str) -> InhibitRule:
    """The inhibit rule at ``path`` of the policy file."""
    data = reader.mapping(data, path, ("source_matchers", "target_matchers", "equal"))
    source = read_matchers(reader, data.get("source_matchers"), join(path, "source_matchers"))
    target = read_matchers(reader, data.get("target_matchers"), join(path, "target_matchers"))
    for key, value in (("source_matchers", source), ("target_matchers", target)):
        if not value:
            raise reader.fail(join(path, key), "needs at least one matcher")
    equal = read_labels(reader, data.get("equal"), join(path, "equal"))
    return InhibitRule(path, source, target, equal)
