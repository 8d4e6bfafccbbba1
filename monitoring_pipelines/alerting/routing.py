"""Routing: which receivers an incident goes to, walking the policy's route tree.

As in Alertmanager, the first matching child route wins unless it says ``continue: true``, a route
without a receiver inherits its parent's, and a matching child replaces its parent's receiver. A
tenant's own routes are tried before the global ones. Data-quality incidents go to the policy's
``data_owner`` and pipeline failures to its ``operations`` receiver, when those are set.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta

from monitoring_pipelines.alerting import types
from monitoring_pipelines.alerting.matchers import (
    Matcher,
    incident_labels,
    incident_metrics,
    matches_all,
    read_matchers,
)
from monitoring_pipelines.alerting.policy_reader import PolicyReader, join
from monitoring_pipelines.alerting.types import Incident


@dataclass(frozen=True)
class Escalation:
    after: timedelta
    to: str


@dataclass(frozen=True)
class Route:
    path: str
    matchers: tuple[Matcher, ...] = ()
    receiver: str | None = None
    continue_: bool = False
    escalation: Escalation | None = None
    routes: tuple["Route", ...] = ()

    def matches(self, labels: Mapping[str, str], metrics: Iterable[str]) -> bool:
        return matches_all(self.matchers, labels, metrics)


def route_incident(
    incident: Incident,
    route: Route,
    tenant_routes: Mapping[str, tuple[Route, ...]],
    *,
    data_owner: str | None = None,
    operations: str | None = None,
) -> list[tuple[str, Escalation | None]]:
    """The receivers an incident goes to, in route order, each once, with its escalation."""
    if incident.kind == types.DATA_QUALITY and data_owner:
        return [(data_owner, None)]
    if incident.kind == types.PIPELINE_FAILURE and operations:
        return [(operations, None)]
    root = replace(route, routes=tenant_routes.get(incident.tenant, ()) + route.routes)
    found: list[tuple[str, Route]] = []
    _walk(root, incident_labels(incident), incident_metrics(incident), root.receiver, found)
    out: dict[str, Escalation | None] = {}
    for receiver, node in found:
        if receiver not in out or out[receiver] is None:
            out[receiver] = node.escalation
    return list(out.items())


def _walk(node: Route, labels, metrics, inherited: str | None, out: list) -> None:
    receiver = node.receiver or inherited
    matched = False
    for child in node.routes:
        if child.matches(labels, metrics):
            matched = True
            _walk(child, labels, metrics, receiver, out)
            if not child.continue_:
                break
    if not matched and receiver:
        out.append((receiver, node))


_ROUTE_KEYS = ("matchers", "receiver", "continue", "escalation", "routes")


def read_route(
    reader: PolicyReader, data, path: str, receivers: Mapping, *, root: bool = False
) -> Route:
    """The route at ``path`` of the policy file, with its children; receivers must be known."""
    data = reader.mapping(data, path, _ROUTE_KEYS)
    receiver = None
    if "receiver" in data:
        receiver = reader.text(data["receiver"], join(path, "receiver"))
        reader.known_receiver(receiver, join(path, "receiver"), receivers)
    elif root:
        raise reader.fail(join(path, "receiver"), "the root route needs a default receiver")
    if root and data.get("matchers"):
        raise reader.fail(join(path, "matchers"), "the root route matches everything; drop them")
    cont = data.get("continue", False)
    if not isinstance(cont, bool):
        raise reader.fail(join(path, "continue"), f"expected true or false, got {cont!r}")
    escalation = None
    if data.get("escalation") is not None:
        escalation = _read_escalation(
            reader, data["escalation"], join(path, "escalation"), receivers
        )
    children = tuple(
        read_route(reader, child, f"{join(path, 'routes')}[{i}]", receivers)
        for i, child in enumerate(reader.sequence(data.get("routes"), join(path, "routes")))
    )
    return Route(
        path=path,
        matchers=read_matchers(reader, data.get("matchers"), join(path, "matchers")),
        receiver=receiver,
        continue_=cont,
        escalation=escalation,
        routes=children,
    )


def _read_escalation(reader: PolicyReader, data, path: str, receivers: Mapping) -> Escalation:
    raw = reader.mapping(data, path, ("after", "to"))
    for key in ("after", "to"):
        if key not in raw:
            raise reader.fail(join(path, key), "missing")
    to = reader.text(raw["to"], join(path, "to"))
    reader.known_receiver(to, join(path, "to"), receivers)
    return Escalation(reader.duration(raw["after"], join(path, "after")), to)
