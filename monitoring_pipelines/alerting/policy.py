"""The alerting policy: who is told what, when, and what is kept quiet.

The policy is a YAML file, ``MONITORING_HOME/alerting.yaml`` (the embedded ``default_policy.yaml``
when it is absent), shaped like an Alertmanager configuration so on-call people can read it::

    defaults:                      # every tenant, unless overridden under tenants.<name>
      sensitivity: 1.0             # > 1 opens incidents at lower scores (threshold / sensitivity)
      min_duration: 10m            # a metric must stay over its threshold this long to open one
      resolve_after: 30m           # ... and every metric below resolve_ratio x threshold this long
      resolve_ratio: 0.8           #     to resolve it
      repeat_interval: 4h          # re-notify while firing and unacknowledged (data time)
      page_lookback: 2h            # page only incidents still firing this close to now; older
                                   #   ones (backfills, the demo) are history: one summary
      rate_limit: {max: 20, per: 1h}
      locale: en                   # en, fr, de, es, it
      impact: {error_rate: 1.5}    # business-impact weight per metric, over the built-in ones
      give_up_after: 24h           # (defaults only) retry a failing delivery this long, then dead
      receiver_failing_after: 1h   # (defaults only) tell operations of a receiver failing so long
    tenants:
      acme: {sensitivity: 1.5, locale: fr, routes: [...]}   # routes tried before the global ones
    receivers:                     # name -> spec; secrets only by env var name (url_env, ...)
      oncall: {type: slack, url_env: ACME_SLACK_WEBHOOK}
    route:                         # the tree: first matching child wins unless continue: true
      receiver: files
      routes:
        - matchers: ['severity=~critical|high', 'service!=recommendations']
          receiver: oncall
          continue: true
          escalation: {after: 15m, to: pager}
    silences:
      - {matchers: [tenant=acme], starts: 2026-10-01T00:00:00Z, ends: 2026-10-01T06:00:00Z}
      - matchers: [service=playback]
        weekly: {days: [sat], start: '02:00', end: '04:00', timezone: Europe/Paris}
    inhibit_rules:
      - {source_matchers: [severity=critical], target_matchers: [severity!=critical],
         equal: [tenant, service]}
    data_owner: data-team          # data-quality incidents go here
    operations: platform-ops       # pipeline failures go here
    reports:                       # weekly/monthly reports (none sent without this section)
      - {receivers: [mail], tenants: [acme, all], kinds: [weekly, monthly]}   # all: every tenant
      - {receivers: [oncall], kinds: [weekly]}   # tenants omitted: each tenant's own report

Every mistake is reported as one line naming the file, the key path and what is wrong
(:class:`PolicyError`).

This module turns the document as a whole (:func:`load_policy`) into an :class:`AlertingPolicy`
(:mod:`policy_file` reads the file or the embedded default into that document); each
part is read and applied by its own module: :mod:`routing`, :mod:`silences`, :mod:`inhibition`,
:mod:`rate_limits`, :mod:`report_routes` (who gets the reports), and the receivers' specs by
:mod:`receivers`. :mod:`planning` turns incidents and reports into notifications under a policy.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType

from monitoring_pipelines.alerting import receivers as receiver_types
from monitoring_pipelines.alerting.inhibition import InhibitRule, read_inhibit_rule
from monitoring_pipelines.alerting.policy_file import (
    POLICY_FILE,
    default_policy_document,
    parse_policy_text,
    policy_path,
    read_policy_text,
)
from monitoring_pipelines.alerting.policy_reader import (
    PolicyError,
    PolicyReader,
    join,
)
from monitoring_pipelines.alerting.rate_limits import RateLimit, read_rate_limit
from monitoring_pipelines.alerting.report_routes import (
    ReportRoute,
    read_report_routes,
    report_receivers,
)
from monitoring_pipelines.alerting.routing import Escalation, Route, read_route, route_incident
from monitoring_pipelines.alerting.silences import Silence, read_silence
from monitoring_pipelines.alerting.types import Incident
from monitoring_pipelines.i18n import LOCALES

__all__ = ["AlertingPolicy", "PolicyError", "TenantSettings", "load_policy", "loads_policy"]

# How much an anomaly in each demo metric matters to the business (1.0 when not listed): errors,
# failed logins and tail latency hurt viewers directly; resource gauges are usually only causes.
DEFAULT_IMPACT: Mapping[str, float] = MappingProxyType(
    {
        "error_rate": 1.5,
        "playback_error_rate": 1.5,
        "latency_p95_ms": 1.5,
        "auth_failures": 1.5,
        "startup_latency_p95_ms": 1.5,
        "buffering_ratio": 1.5,
        "streams_started": 1.25,
        "requests_per_second": 1.0,
        "latency_p50_ms": 1.0,
        "startup_latency_p50_ms": 1.0,
        "rate_limited_ratio": 1.0,
        "audio_bitrate_kbps": 1.0,
        "skip_rate": 1.0,
        "cache_hit_ratio": 0.75,
        "cdn_egress_bytes": 0.75,
        "cpu_percent": 0.5,
        "memory_percent": 0.5,
    }
)


@dataclass(frozen=True)
class TenantSettings:
    """Detection and notification settings of one tenant (defaults merged with its overrides)."""

    sensitivity: float = 1.0
    min_duration: timedelta = timedelta(minutes=10)
    resolve_after: timedelta = timedelta(minutes=30)
    resolve_ratio: float = 0.8
    repeat_interval: timedelta = timedelta(hours=4)
    rate_limit: RateLimit = field(default_factory=RateLimit)
    locale: str = "en"
    impact: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_IMPACT))
    # An incident whose last anomalous point is older than ``now - page_lookback`` was found
    # while scoring the past (a backfill, a new tenant, the demo): recorded, not paged.
    page_lookback: timedelta = timedelta(hours=2)

    def weight(self, metric: str) -> float:
        return float(self.impact.get(metric, 1.0))


@dataclass(frozen=True)
class AlertingPolicy:
    source: str
    defaults: TenantSettings
    tenants: Mapping[str, TenantSettings]
    receivers: Mapping[str, dict]
    route: Route
    tenant_routes: Mapping[str, tuple[Route, ...]] = field(default_factory=dict)
    silences: tuple[Silence, ...] = ()
    inhibit_rules: tuple[InhibitRule, ...] = ()
    data_owner: str | None = None
    operations: str | None = None
    # Delivery (``defaults`` only): how long a retryable failure is retried before the
    # notification is dead, and how long a receiver may fail before operations are told.
    give_up_after: timedelta = timedelta(hours=24)
    receiver_failing_after: timedelta = timedelta(hours=1)
    # MONITORING_HOME as the policy was loaded: file receivers write under it.
    home: Path | None = None
    # Who gets the weekly and monthly reports (empty: nobody).
    report_routes: tuple[ReportRoute, ...] = ()

    def settings(self, tenant: str) -> TenantSettings:
        return self.tenants.get(tenant, self.defaults)

    def receivers_for(self, incident: Incident) -> list[tuple[str, Escalation | None]]:
        """The receivers an incident goes to, in route order, each once, with its escalation."""
        return route_incident(
            incident,
            self.route,
            self.tenant_routes,
            data_owner=self.data_owner,
            operations=self.operations,
        )

    def receivers_for_report(self, kind: str, tenant: str | None) -> list[str]:
        """The receivers of a ``weekly`` or ``monthly`` report of ``tenant`` (None: the
        all-tenants report), each once."""
        return report_receivers(self.report_routes, kind, tenant)

    def report_locale(self, tenant: str | None) -> str:
        """The language of a tenant's report (the all-tenants one: the default's)."""
        return self.defaults.locale if tenant is None else self.settings(tenant).locale


_SETTING_KEYS = (
    "sensitivity",
    "min_duration",
    "resolve_after",
    "resolve_ratio",
    "repeat_interval",
    "rate_limit",
    "locale",
    "impact",
    "page_lookback",
)
_DELIVERY_KEYS = ("give_up_after", "receiver_failing_after")


def _settings(reader: PolicyReader, data: dict, path: str, base: TenantSettings) -> TenantSettings:
    values: dict = {}
    if "sensitivity" in data:
        values["sensitivity"] = reader.number(data["sensitivity"], join(path, "sensitivity"), low=0)
    for key in ("min_duration", "resolve_after", "repeat_interval", "page_lookback"):
        if key in data:
            values[key] = reader.duration(
                data[key], join(path, key), allow_zero=key == "min_duration"
            )
    if "resolve_ratio" in data:
        values["resolve_ratio"] = reader.number(
            data["resolve_ratio"], join(path, "resolve_ratio"), low=0, high=1
        )
    if "rate_limit" in data:
        values["rate_limit"] = read_rate_limit(
            reader, data["rate_limit"], join(path, "rate_limit"), base.rate_limit
        )
    if "locale" in data:
        locale = data["locale"]
        if locale not in LOCALES:
            raise reader.fail(
                join(path, "locale"),
                f"unsupported locale {locale!r} (expected one of {', '.join(LOCALES)})",
            )
        values["locale"] = locale
    if "impact" in data:
        ipath = join(path, "impact")
        raw = reader.mapping(data["impact"], ipath)
        impact = dict(base.impact)
        for metric, weight in raw.items():
            impact[str(metric)] = reader.number(weight, join(ipath, str(metric)), low=0)
        values["impact"] = impact
    return replace(base, **values)


def _receiver(reader: PolicyReader, name: str, spec, path: str, home: Path) -> dict:
    """A receiver's spec, checked by its receiver type without touching the network."""
    spec = reader.mapping(spec, path)
    kind = spec.get("type")
    if not isinstance(kind, str) or not kind:
        raise reader.fail(join(path, "type"), "missing receiver type (e.g. file, slack, webhook)")
    try:
        receiver_types.receiver_from_spec(name, dict(spec), home=home)
    except receiver_types.ReceiverConfigError as exc:
        raise reader.fail(join(path, exc.key) if exc.key else path, exc.message) from None
    return dict(spec)


def _receivers(reader: PolicyReader, raw, home: Path) -> dict[str, dict]:
    """The ``receivers`` section: name -> spec, each checked by its receiver type."""
    raw = reader.mapping(raw, "receivers")
    if not raw:
        raise reader.fail("receivers", "define at least one receiver")
    return {
        str(name): _receiver(reader, str(name), spec, f"receivers.{name}", home)
        for name, spec in raw.items()
    }


def _tenants(
    reader: PolicyReader, raw, defaults: TenantSettings, receivers: Mapping[str, dict]
) -> tuple[dict[str, TenantSettings], dict[str, tuple[Route, ...]]]:
    """The ``tenants`` section: each tenant's settings (over ``defaults``) and its own routes."""
    tenants, tenant_routes = {}, {}
    for tenant, value in reader.mapping(raw, "tenants").items():
        path = f"tenants.{tenant}"
        value = reader.mapping(value, path, (*_SETTING_KEYS, "routes"))
        tenants[str(tenant)] = _settings(reader, value, path, defaults)
        tenant_routes[str(tenant)] = tuple(
            read_route(reader, child, f"{path}.routes[{i}]", receivers)
            for i, child in enumerate(reader.sequence(value.get("routes"), f"{path}.routes"))
        )
    return tenants, tenant_routes


_TOP_KEYS = (
    "defaults",
    "tenants",
    "receivers",
    "route",
    "silences",
    "inhibit_rules",
    "data_owner",
    "operations",
    "reports",
)


def parse_policy(data, source: str = POLICY_FILE, home: Path | None = None) -> AlertingPolicy:
    """Validate an already-loaded policy document (a mapping) into an :class:`AlertingPolicy`.

    ``home`` (default: ``MONITORING_HOME``) is where file receivers may write."""
    home = _home(home)
    reader = PolicyReader(source)
    data = reader.mapping(data, "", _TOP_KEYS)
    raw_defaults = reader.mapping(data.get("defaults"), "defaults", _SETTING_KEYS + _DELIVERY_KEYS)
    defaults = _settings(reader, raw_defaults, "defaults", TenantSettings())
    delivery = {
        key: reader.duration(raw_defaults[key], join("defaults", key))
        for key in _DELIVERY_KEYS
        if key in raw_defaults
    }
    receivers = _receivers(reader, data.get("receivers"), home)
    if "route" not in data:
        raise reader.fail("route", "missing (the root route with a default receiver)")
    route = read_route(reader, data["route"], "route", receivers, root=True)
    tenants, tenant_routes = _tenants(reader, data.get("tenants"), defaults, receivers)
    silences = tuple(
        read_silence(reader, item, f"silences[{i}]")
        for i, item in enumerate(reader.sequence(data.get("silences"), "silences"))
    )
    inhibit_rules = tuple(
        read_inhibit_rule(reader, item, f"inhibit_rules[{i}]")
        for i, item in enumerate(reader.sequence(data.get("inhibit_rules"), "inhibit_rules"))
    )
    special = {}
    for key in ("data_owner", "operations"):
        if data.get(key) is not None:
            special[key] = reader.text(data[key], key)
            reader.known_receiver(special[key], key, receivers)
    report_routes = read_report_routes(reader, data.get("reports"), "reports", receivers)
    return AlertingPolicy(
        source=source,
        defaults=defaults,
        tenants=tenants,
        receivers=receivers,
        route=route,
        tenant_routes=tenant_routes,
        silences=silences,
        inhibit_rules=inhibit_rules,
        home=home,
        report_routes=report_routes,
        **special,
        **delivery,
    )


def _home(home: Path | None) -> Path:
    if home is None:
        from monitoring_pipelines.settings import load_settings

        home = load_settings().home
    return Path(home).expanduser().resolve()


def default_policy(
    environ: Mapping[str, str] | None = None, home: Path | None = None
) -> AlertingPolicy:
    """The embedded default policy, plus a receiver for each channel configured in the
    environment (see :data:`~.policy_file.ENVIRONMENT_RECEIVERS`)."""
    return parse_policy(*default_policy_document(environ), home)


def load_policy(path: Path | str | None = None, *, home: Path | None = None) -> AlertingPolicy:
    """The policy in ``path``, else ``MONITORING_HOME/alerting.yaml``, else the embedded default.

    Raises :class:`PolicyError` (one line: file, key path, what is wrong) for any mistake,
    including a ``path`` given explicitly that does not exist."""
    if path is None:
        candidate = policy_path(home)
        if not candidate.exists():
            return default_policy(home=home)
        path = candidate
    path = Path(path)
    return loads_policy(read_policy_text(path), path.name, home=home)


def loads_policy(
    text: str, source: str = POLICY_FILE, *, home: Path | None = None
) -> AlertingPolicy:
    """The policy in the YAML ``text`` (``source`` names it in errors)."""
    return parse_policy(parse_policy_text(text, source), source, home)
