"""Report routing: which receivers get which weekly and monthly reports (the policy's ``reports:``).

::

    reports:
      - {receivers: [mail], tenants: [acme, all], kinds: [weekly, monthly]}
      - {receivers: [oncall], kinds: [weekly]}

Each rule sends the reports of its ``kinds`` (default both) for its ``tenants`` to every one of
its ``receivers``. ``tenants`` omitted means every tenant's own report; the tenant name ``all``
means the all-tenants report. A receiver named by several rules gets a report once. Without the
section no report is sent. PagerDuty receivers are refused: a report is not something to page
anyone about.
"""

from collections.abc import Mapping
from dataclasses import dataclass

from monitoring_pipelines.alerting import types
from monitoring_pipelines.alerting.policy_reader import PolicyReader, join

_RULE_KEYS = ("receivers", "tenants", "kinds")
# Receiver types that cannot take a report.
NO_REPORTS = {"pagerduty": "PagerDuty pages people about incidents"}


@dataclass(frozen=True)
class ReportRoute:
    path: str
    receivers: tuple[str, ...]
    # None: every tenant's own report (not the all-tenants one, which is named ``all``).
    tenants: tuple[str, ...] | None = None
    kinds: tuple[str, ...] = types.REPORT_KINDS

    def matches(self, kind: str, tenant: str | None) -> bool:
        if kind not in self.kinds:
            return False
        if tenant is None:
            return self.tenants is not None and types.ALL_TENANTS in self.tenants
        return self.tenants is None or tenant in self.tenants


def report_receivers(routes: tuple[ReportRoute, ...], kind: str, tenant: str | None) -> list[str]:
    """The receivers of one report (``tenant`` None: the all-tenants one), each once, in the
    order the rules name them."""
    out: dict[str, None] = {}
    for route in routes:
        if route.matches(kind, tenant):
            out.update(dict.fromkeys(route.receivers))
    return list(out)


def read_report_routes(
    reader: PolicyReader, data, path: str, receivers: Mapping[str, dict]
) -> tuple[ReportRoute, ...]:
    """The ``reports:`` section: a list of rules, every receiver known and able to take one."""
    return tuple(
        _read_rule(reader, item, f"{path}[{i}]", receivers)
        for i, item in enumerate(reader.sequence(data, path))
    )


def _read_rule(reader: PolicyReader, data, path: str, receivers: Mapping[str, dict]) -> ReportRoute:
    if data is None:
        raise reader.fail(path, "empty rule (expected receivers, and optionally tenants, kinds)")
    data = reader.mapping(data, path, _RULE_KEYS)
    if "receivers" not in data:
        raise reader.fail(join(path, "receivers"), "missing (the receivers that get the reports)")
    names = _names(reader, data["receivers"], join(path, "receivers"))
    for i, name in enumerate(names):
        where = f"{join(path, 'receivers')}[{i}]"
        reader.known_receiver(name, where, receivers)
        kind = receivers[name].get("type")
        if kind in NO_REPORTS:
            raise reader.fail(
                where,
                f"receiver {name!r} is {kind}, which takes no reports ({NO_REPORTS[kind]}); "
                "route reports to email, slack, teams, webhook or file receivers",
            )
    tenants = None
    if "tenants" in data:
        tenants = _names(reader, data["tenants"], join(path, "tenants"))
    kinds = types.REPORT_KINDS
    if "kinds" in data:
        kinds = _names(reader, data["kinds"], join(path, "kinds"))
        for i, kind in enumerate(kinds):
            if kind not in types.REPORT_KINDS:
                raise reader.fail(
                    f"{join(path, 'kinds')}[{i}]",
                    f"unknown report kind {kind!r} (expected {' or '.join(types.REPORT_KINDS)})",
                )
    return ReportRoute(path=path, receivers=names, tenants=tenants, kinds=kinds)


def _names(reader: PolicyReader, value, path: str) -> tuple[str, ...]:
    """A non-empty list of non-empty strings (duplicates dropped, order kept)."""
    if value is None or isinstance(value, str):
        raise reader.fail(path, f"expected a list of names, got {value!r}")
    items = reader.sequence(value, path)
    if not items:
        raise reader.fail(path, "empty list (leave the key out instead)")
    names = [reader.text(item, f"{path}[{i}]") for i, item in enumerate(items)]
    return tuple(dict.fromkeys(names))
