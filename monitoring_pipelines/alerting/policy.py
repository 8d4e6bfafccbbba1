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

This module reads the file as a whole (:func:`load_policy`) into an :class:`AlertingPolicy`; each
part is read and applied by its own module: :mod:`routing`, :mod:`silences`, :mod:`inhibition`,
:mod:`rate_limits`, :mod:`report_routes` (who gets the reports), and the receivers' specs by
:mod:`receivers`. :mod:`planning` turns incidents and reports into notifications under a policy.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from importlib import resources
from pathlib import Path
from types import MappingProxyType

import yaml

from monitoring_pipelines.alerting import receivers as receiver_types
from monitoring_pipelines.alerting.inhibition import InhibitRule, read_inhibit_rule
from monitoring_pipelines.alerting.policy_reader import (
    PolicyError,
    PolicyReader,
    join,
    load_yaml,
)
from monitoring_pipelines.alerting.rate_limits import RateLimit, read_rate_limit
from monitoring_pipelines.alerting.report_routes import (
    ReportRoute,
    read_report_routes,
    report_receivers,
)
from monitoring_pipelines.alerting.routing import Escalation, Route, read_route, route_incident
from monitoring_pipelines.alerting.silences import Silence, read_silence
from monitoring_pipelines.alerting.templates import LOCALES
from monitoring_pipelines.alerting.types import Incident

__all__ = ["AlertingPolicy", "PolicyError", "TenantSettings", "load_policy", "loads_policy"]

POLICY_FILE = "alerting.yaml"

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
    receivers_raw = reader.mapping(data.get("receivers"), "receivers")
    if not receivers_raw:
        raise reader.fail("receivers", "define at least one receiver")
    receivers = {
        str(name): _receiver(reader, str(name), spec, f"receivers.{name}", home)
        for name, spec in receivers_raw.items()
    }
    if "route" not in data:
        raise reader.fail("route", "missing (the root route with a default receiver)")
    route = read_route(reader, data["route"], "route", receivers, root=True)
    tenants, tenant_routes = {}, {}
    for tenant, raw in reader.mapping(data.get("tenants"), "tenants").items():
        path = f"tenants.{tenant}"
        raw = reader.mapping(raw, path, (*_SETTING_KEYS, "routes"))
        tenants[str(tenant)] = _settings(reader, raw, path, defaults)
        tenant_routes[str(tenant)] = tuple(
            read_route(reader, child, f"{path}.routes[{i}]", receivers)
            for i, child in enumerate(reader.sequence(raw.get("routes"), f"{path}.routes"))
        )
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


def default_policy_text() -> str:
    return (
        resources.files("monitoring_pipelines.alerting")
        .joinpath("default_policy.yaml")
        .read_text(encoding="utf-8")
    )


# Receivers the embedded default adds when their environment variables are set, so a demo or a
# first deployment can page a real channel without writing a policy. Each gets every incident
# (PagerDuty only critical and high ones) besides the file receiver.
ENVIRONMENT_RECEIVERS = {
    "slack": ("MONITORING_SLACK_WEBHOOK_URL", {"type": "slack", "url_env": "{var}"}),
    "teams": ("MONITORING_TEAMS_WEBHOOK_URL", {"type": "teams", "url_env": "{var}"}),
    "pagerduty": (
        "MONITORING_PAGERDUTY_ROUTING_KEY",
        {"type": "pagerduty", "routing_key_env": "{var}"},
    ),
    "webhook": (
        "MONITORING_WEBHOOK_URL",
        {"type": "webhook", "url_env": "{var}", "secret_env": "MONITORING_WEBHOOK_SECRET"},
    ),
    "email": ("MONITORING_SMTP_HOST", {"type": "email"}),
}


def _environment_receivers(environ: Mapping[str, str]) -> dict[str, dict]:
    out = {}
    for name, (variable, template) in ENVIRONMENT_RECEIVERS.items():
        if not environ.get(variable):
            continue
        spec = {k: v.format(var=variable) for k, v in template.items()}
        if name == "email":
            spec.update(
                host=environ[variable],
                port=int(environ.get("MONITORING_SMTP_PORT") or 25),
                starttls=environ.get("MONITORING_SMTP_STARTTLS", "").lower() in ("1", "true"),
                to=[a.strip() for a in environ.get("MONITORING_ALERT_EMAIL_TO", "").split(",")],
            )
            spec["from"] = environ.get("MONITORING_ALERT_EMAIL_FROM") or "alerts@localhost"
            if environ.get("MONITORING_SMTP_USERNAME"):
                spec.update(
                    username_env="MONITORING_SMTP_USERNAME",
                    password_env="MONITORING_SMTP_PASSWORD",
                )
        out[name] = spec
    return out


def default_policy(
    environ: Mapping[str, str] | None = None, home: Path | None = None
) -> AlertingPolicy:
    """The embedded default policy, plus a receiver for each channel configured in the
    environment (see :data:`ENVIRONMENT_RECEIVERS`)."""
    import os

    data = load_yaml(default_policy_text())
    extra = _environment_receivers(os.environ if environ is None else environ)
    source = "default_policy.yaml"
    if extra:
        data["receivers"].update(extra)
        routes = [
            {
                "matchers": ["severity=~critical|high"] if name == "pagerduty" else [],
                "receiver": name,
                "continue": True,
            }
            for name in extra
        ]
        # Matching children replace the parent's receiver (as in Alertmanager): keep the files.
        routes.append({"receiver": data["route"]["receiver"], "continue": True})
        data["route"]["routes"] = routes + list(data["route"].get("routes") or [])
        source += f" + {', '.join(extra)} from the environment"
    return parse_policy(data, source, home)


def policy_path(home: Path | None = None) -> Path:
    if home is None:
        from monitoring_pipelines.settings import load_settings

        home = load_settings().home
    return Path(home) / POLICY_FILE


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
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError(str(path), "", f"cannot read the policy ({exc.strerror})") from None
    return loads_policy(decode_policy(raw, path.name), path.name, home=home)


def decode_policy(raw: bytes, source: str = POLICY_FILE) -> str:
    """The policy file's text; a file that is not UTF-8 (a binary file, another encoding) is a
    :class:`PolicyError` naming the key where the bad byte sits (else its line) and the byte."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start].decode("utf-8", errors="replace")
        line, column = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        key = key_at(raw.decode("utf-8", errors="replace"), line, column)
        raise PolicyError(
            source,
            key or f"line {line}",
            f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at line {line}, column {column}); "
            "save the policy as UTF-8 YAML",
        ) from None


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def key_at(text: str, line: int, column: int = 1) -> str | None:
    """The key path (``receivers.hook.url``) of the deepest entry holding ``line`` and ``column``
    (1-based) of a YAML document, or None when the document cannot be parsed that far."""
    try:
        node = yaml.compose(_CONTROL.sub("?", text), Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    target, path = (line - 1, column - 1), ""
    while isinstance(node, yaml.MappingNode | yaml.SequenceNode) and node.value:
        if isinstance(node, yaml.MappingNode):
            starts = [(_at(k), join(path, str(k.value)), v) for k, v in node.value]
        else:
            starts = [(_at(v), f"{path}[{i}]", v) for i, v in enumerate(node.value)]
        inside = [s for s in starts if s[0] <= target]
        if not inside:
            break
        _, path, node = inside[-1]
    return path or None


def _at(node) -> tuple[int, int]:
    return node.start_mark.line, node.start_mark.column


def loads_policy(
    text: str, source: str = POLICY_FILE, *, home: Path | None = None
) -> AlertingPolicy:
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, 1)
        if isinstance(exc, yaml.reader.ReaderError):  # a control character, e.g. a NUL byte
            before = text[: exc.position]
            line, column = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        key = key_at(text, line, column) if line else None
        where = key or (f"line {line}" if line else "")
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PolicyError(source, where, f"not valid YAML: {problem}") from None
    if data is None:
        raise PolicyError(source, "", "the policy is empty")
    return parse_policy(data, source, home)
