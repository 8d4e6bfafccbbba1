"""The alerting policy: who is told what, when, and what is kept quiet.

The policy is a YAML file, ``MONITORING_HOME/alerting.yaml`` (the embedded ``default_policy.yaml``
when it is absent), shaped like an Alertmanager configuration so on-call people can read it::

    defaults:                      # every tenant, unless overridden under tenants.<name>
      sensitivity: 1.0             # > 1 opens incidents at lower scores (threshold / sensitivity)
      min_duration: 10m            # a metric must stay over its threshold this long to open one
      resolve_after: 30m           # ... and every metric below resolve_ratio x threshold this long
      resolve_ratio: 0.8           #     to resolve it
      repeat_interval: 4h          # re-notify while firing and unacknowledged (data time)
      rate_limit: {max: 20, per: 1h}
      locale: en                   # en, fr, de, es, it
      impact: {error_rate: 1.5}    # business-impact weight per metric, over the built-in ones
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

Every mistake is reported as one line naming the file, the key path and what is wrong
(:class:`PolicyError`).

:func:`plan_notifications` turns incidents into notifications under a policy; it is pure (no I/O,
no clock: ``now`` is passed in), so the same inputs always plan the same notifications with the same
idempotency keys.
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from monitoring_pipelines.alerting import types
from monitoring_pipelines.alerting.types import Incident, Notification, Severity

POLICY_FILE = "alerting.yaml"
LOCALES = ("en", "fr", "de", "es", "it")
LABELS = ("tenant", "service", "metric", "severity", "kind")

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

# Keys that would hold a secret in clear text; the spec must name an environment variable instead.
_SECRET_KEYS = {
    "password",
    "token",
    "secret",
    "api_key",
    "routing_key",
    "integration_key",
    "webhook_url",
}
# For these receivers the URL itself is the credential (incoming webhooks).
_URL_IS_SECRET = {"slack", "teams", "msteams"}

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class PolicyError(ValueError):
    """A policy mistake, as one line: ``file: key.path: what is wrong``."""

    def __init__(self, source: str, path: str, message: str):
        self.source, self.path, self.message = source, path, message
        super().__init__(f"{source}: {path}: {message}" if path else f"{source}: {message}")


# -- typed policy ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateLimit:
    max: int = 20
    per: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class TenantSettings:
    """Detection and notification settings of one tenant (defaults merged with its overrides)."""

    sensitivity: float = 1.0
    min_duration: timedelta = timedelta(minutes=10)
    resolve_after: timedelta = timedelta(minutes=30)
    resolve_ratio: float = 0.8
    repeat_interval: timedelta = timedelta(hours=4)
    rate_limit: RateLimit = RateLimit()
    locale: str = "en"
    impact: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_IMPACT))

    def weight(self, metric: str) -> float:
        return float(self.impact.get(metric, 1.0))


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
        metrics = tuple(metrics)
        return all(m.matches(labels, metrics) for m in self.matchers)


@dataclass(frozen=True)
class WeeklyWindow:
    days: frozenset[int]
    start: time
    end: time
    timezone: ZoneInfo

    def active(self, at: datetime) -> bool:
        local = at.astimezone(self.timezone)
        clock, day = local.time(), local.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= clock < self.end
        # Wraps past midnight: the window belongs to the day it starts on.
        return (day in self.days and clock >= self.start) or (
            (day - 1) % 7 in self.days and clock < self.end
        )


@dataclass(frozen=True)
class Silence:
    name: str
    matchers: tuple[Matcher, ...]
    starts: datetime | None = None
    ends: datetime | None = None
    weekly: WeeklyWindow | None = None
    comment: str = ""

    def active(self, at: datetime) -> bool:
        if self.weekly is not None:
            return self.weekly.active(at)
        return self.starts <= at < self.ends


@dataclass(frozen=True)
class InhibitRule:
    name: str
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...] = ()


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

    def settings(self, tenant: str) -> TenantSettings:
        return self.tenants.get(tenant, self.defaults)

    def receivers_for(self, incident: Incident) -> list[tuple[str, Escalation | None]]:
        """The receivers an incident goes to, in route order, each once, with its escalation."""
        if incident.kind == types.DATA_QUALITY and self.data_owner:
            return [(self.data_owner, None)]
        if incident.kind == types.PIPELINE_FAILURE and self.operations:
            return [(self.operations, None)]
        root = replace(
            self.route, routes=self.tenant_routes.get(incident.tenant, ()) + self.route.routes
        )
        found: list[tuple[str, Route]] = []
        _walk(root, incident_labels(incident), _metrics(incident), root.receiver, found)
        out: dict[str, Escalation | None] = {}
        for receiver, route in found:
            if receiver not in out or out[receiver] is None:
                out[receiver] = route.escalation
        return list(out.items())


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


def _metrics(incident: Incident) -> tuple[str, ...]:
    return tuple(m.metric for m in incident.metrics)


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


# -- loading and validation -----------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML without the 1.1 surprises: ``02:00`` stays a string (not 120 minutes in base 60) and
    timestamps stay strings, so times and dates are parsed (and reported) by this module."""


_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, rx)
        for tag, rx in resolvers
        if tag
        not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$"),
    list("-+.0123456789"),
)

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")
_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9_.:/@*\-]+$")
_MATCHER_HELP = "expected label=value, label!=value, label=~regex or label!~regex"


def parse_duration(text: object) -> timedelta:
    """``10m``, ``4h``, ``1d``, ``1h30m`` -> timedelta; ValueError otherwise."""
    if isinstance(text, str):
        compact = text.strip().replace(" ", "")
        parts = _DURATION.findall(compact)
        if compact and "".join(a + b for a, b in parts) == compact:
            return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))
    raise ValueError(f"bad duration {text!r} (expected a number and a unit: 90s, 10m, 4h, 1d, 1w)")


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


class _Ctx:
    """Where we are in the file, for one-line errors."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, message: str) -> PolicyError:
        return PolicyError(self.source, path, message)

    def mapping(self, value, path: str, allowed: Iterable[str] | None = None) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping, got {_kind(value)}")
        if allowed is not None:
            allowed = list(allowed)
            for key in value:
                if key not in allowed:
                    raise self.fail(
                        _join(path, str(key)),
                        f"unknown key {key!r} (expected one of {', '.join(allowed)})",
                    )
        return value

    def sequence(self, value, path: str) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(path, f"expected a list, got {_kind(value)}")
        return value

    def text(self, value, path: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, f"expected a non-empty string, got {value!r}")
        return value.strip()

    def duration(self, value, path: str, *, allow_zero: bool = False) -> timedelta:
        try:
            out = parse_duration(value)
        except ValueError as exc:
            raise self.fail(path, str(exc)) from None
        if out < timedelta(0) or (out == timedelta(0) and not allow_zero):
            raise self.fail(path, f"must be {'>= 0' if allow_zero else 'positive'}, got {value!r}")
        return out

    def number(self, value, path: str, *, low: float, high: float | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(path, f"expected a number, got {value!r}")
        if value <= low or (high is not None and value > high):
            bound = f"> {low}" + ("" if high is None else f" and <= {high}")
            raise self.fail(path, f"must be {bound}, got {value!r}")
        return float(value)


def _kind(value) -> str:
    return {dict: "a mapping", list: "a list", str: "a string"}.get(type(value), repr(value))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


_SETTING_KEYS = (
    "sensitivity",
    "min_duration",
    "resolve_after",
    "resolve_ratio",
    "repeat_interval",
    "rate_limit",
    "locale",
    "impact",
)


def _settings(ctx: _Ctx, data: dict, path: str, base: TenantSettings) -> TenantSettings:
    values: dict = {}
    if "sensitivity" in data:
        values["sensitivity"] = ctx.number(data["sensitivity"], _join(path, "sensitivity"), low=0)
    for key in ("min_duration", "resolve_after", "repeat_interval"):
        if key in data:
            values[key] = ctx.duration(
                data[key], _join(path, key), allow_zero=key == "min_duration"
            )
    if "resolve_ratio" in data:
        values["resolve_ratio"] = ctx.number(
            data["resolve_ratio"], _join(path, "resolve_ratio"), low=0, high=1
        )
    if "rate_limit" in data:
        rpath = _join(path, "rate_limit")
        raw = ctx.mapping(data["rate_limit"], rpath, ("max", "per"))
        limit = base.rate_limit
        if "max" in raw:
            if isinstance(raw["max"], bool) or not isinstance(raw["max"], int) or raw["max"] < 1:
                raise ctx.fail(
                    _join(rpath, "max"), f"expected a whole number >= 1, got {raw['max']!r}"
                )
            limit = replace(limit, max=raw["max"])
        if "per" in raw:
            limit = replace(limit, per=ctx.duration(raw["per"], _join(rpath, "per")))
        values["rate_limit"] = limit
    if "locale" in data:
        locale = data["locale"]
        if locale not in LOCALES:
            raise ctx.fail(
                _join(path, "locale"),
                f"unsupported locale {locale!r} (expected one of {', '.join(LOCALES)})",
            )
        values["locale"] = locale
    if "impact" in data:
        ipath = _join(path, "impact")
        raw = ctx.mapping(data["impact"], ipath)
        impact = dict(base.impact)
        for metric, weight in raw.items():
            impact[str(metric)] = ctx.number(weight, _join(ipath, str(metric)), low=0)
        values["impact"] = impact
    return replace(base, **values)


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


def _matchers(ctx: _Ctx, value, path: str) -> tuple[Matcher, ...]:
    out = []
    for i, item in enumerate(ctx.sequence(value, path)):
        try:
            out.append(parse_matcher(item))
        except ValueError as exc:
            raise ctx.fail(f"{path}[{i}]", str(exc)) from None
    return tuple(out)


_ROUTE_KEYS = ("matchers", "receiver", "continue", "escalation", "routes")


def _route(ctx: _Ctx, data, path: str, receivers: Mapping, *, root: bool = False) -> Route:
    data = ctx.mapping(data, path, _ROUTE_KEYS)
    receiver = None
    if "receiver" in data:
        receiver = ctx.text(data["receiver"], _join(path, "receiver"))
        _known(ctx, receiver, _join(path, "receiver"), receivers)
    elif root:
        raise ctx.fail(_join(path, "receiver"), "the root route needs a default receiver")
    if root and data.get("matchers"):
        raise ctx.fail(_join(path, "matchers"), "the root route matches everything; drop them")
    cont = data.get("continue", False)
    if not isinstance(cont, bool):
        raise ctx.fail(_join(path, "continue"), f"expected true or false, got {cont!r}")
    escalation = None
    if data.get("escalation") is not None:
        epath = _join(path, "escalation")
        raw = ctx.mapping(data["escalation"], epath, ("after", "to"))
        for key in ("after", "to"):
            if key not in raw:
                raise ctx.fail(_join(epath, key), "missing")
        to = ctx.text(raw["to"], _join(epath, "to"))
        _known(ctx, to, _join(epath, "to"), receivers)
        escalation = Escalation(ctx.duration(raw["after"], _join(epath, "after")), to)
    children = tuple(
        _route(ctx, child, f"{_join(path, 'routes')}[{i}]", receivers)
        for i, child in enumerate(ctx.sequence(data.get("routes"), _join(path, "routes")))
    )
    return Route(
        path=path,
        matchers=_matchers(ctx, data.get("matchers"), _join(path, "matchers")),
        receiver=receiver,
        continue_=cont,
        escalation=escalation,
        routes=children,
    )


def _known(ctx: _Ctx, name: str, path: str, receivers: Mapping) -> None:
    if name not in receivers:
        known = ", ".join(sorted(receivers)) or "none defined"
        raise ctx.fail(path, f"unknown receiver {name!r} (receivers: {known})")


def _receiver(ctx: _Ctx, name: str, spec, path: str) -> dict:
    spec = ctx.mapping(spec, path)
    kind = spec.get("type")
    if not isinstance(kind, str) or not kind:
        raise ctx.fail(_join(path, "type"), "missing receiver type (e.g. file, slack, webhook)")
    try:
        from monitoring_pipelines.alerting import receivers
    except ModuleNotFoundError as exc:  # built in parallel; validated here once it exists
        if exc.name != "monitoring_pipelines.alerting.receivers":
            raise
        _refuse_literal_secrets(ctx, kind, spec, path)
        return dict(spec)
    try:
        receivers.receiver_from_spec(name, dict(spec))
    except receivers.ReceiverConfigError as exc:
        key = getattr(exc, "key", None)
        message = getattr(exc, "message", None) or str(exc)
        raise ctx.fail(_join(path, key) if key else path, message) from None
    return dict(spec)


def _refuse_literal_secrets(ctx: _Ctx, kind: str, spec: dict, path: str) -> None:
    for key in spec:
        secret = key in _SECRET_KEYS or (key == "url" and kind in _URL_IS_SECRET)
        if secret:
            raise ctx.fail(
                _join(path, key),
                f"literal secrets are not allowed; put it in an environment variable and "
                f"reference it with {key}_env",
            )


def _timestamp(ctx: _Ctx, value, path: str) -> datetime:
    try:
        out = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        raise ctx.fail(
            path, f"bad timestamp {value!r} (expected ISO-8601 like 2026-10-01T02:00:00Z)"
        ) from None
    if out.tzinfo is None:
        raise ctx.fail(path, f"timestamp {value!r} needs a timezone (e.g. a trailing Z for UTC)")
    return out


def _clock(ctx: _Ctx, value, path: str) -> time:
    try:
        return time.fromisoformat(str(value).strip())
    except ValueError:
        raise ctx.fail(path, f"bad time of day {value!r} (expected HH:MM)") from None


def _silence(ctx: _Ctx, data, path: str) -> Silence:
    data = ctx.mapping(data, path, ("matchers", "starts", "ends", "weekly", "comment"))
    matchers = _matchers(ctx, data.get("matchers"), _join(path, "matchers"))
    if not matchers:
        raise ctx.fail(_join(path, "matchers"), "a silence needs at least one matcher")
    comment = str(data.get("comment") or "")
    has_window = "starts" in data or "ends" in data
    if has_window == ("weekly" in data):
        raise ctx.fail(path, "give either starts and ends, or a weekly window")
    if "weekly" in data:
        wpath = _join(path, "weekly")
        raw = ctx.mapping(data["weekly"], wpath, ("days", "start", "end", "timezone"))
        days = set()
        for i, day in enumerate(ctx.sequence(raw.get("days"), _join(wpath, "days"))):
            short = str(day).strip().lower()[:3]
            if short not in _DAYS or len(str(day).strip()) < 3:
                raise ctx.fail(
                    f"{_join(wpath, 'days')}[{i}]",
                    f"bad day {day!r} (expected one of {', '.join(_DAYS)})",
                )
            days.add(_DAYS.index(short))
        if not days:
            raise ctx.fail(_join(wpath, "days"), "name at least one day")
        for key in ("start", "end"):
            if key not in raw:
                raise ctx.fail(_join(wpath, key), "missing (HH:MM)")
        start = _clock(ctx, raw["start"], _join(wpath, "start"))
        end = _clock(ctx, raw["end"], _join(wpath, "end"))
        if start == end:
            raise ctx.fail(wpath, "start and end are the same time")
        tz_name = raw.get("timezone", "UTC")
        try:
            tz = ZoneInfo(str(tz_name))
        except (ZoneInfoNotFoundError, ValueError):
            raise ctx.fail(_join(wpath, "timezone"), f"unknown timezone {tz_name!r}") from None
        return Silence(
            path, matchers, weekly=WeeklyWindow(frozenset(days), start, end, tz), comment=comment
        )
    for key in ("starts", "ends"):
        if key not in data:
            raise ctx.fail(_join(path, key), "missing")
    starts = _timestamp(ctx, data["starts"], _join(path, "starts"))
    ends = _timestamp(ctx, data["ends"], _join(path, "ends"))
    if ends <= starts:
        raise ctx.fail(_join(path, "ends"), "must be after starts")
    return Silence(path, matchers, starts=starts, ends=ends, comment=comment)


def _inhibit(ctx: _Ctx, data, path: str) -> InhibitRule:
    data = ctx.mapping(data, path, ("source_matchers", "target_matchers", "equal"))
    source = _matchers(ctx, data.get("source_matchers"), _join(path, "source_matchers"))
    target = _matchers(ctx, data.get("target_matchers"), _join(path, "target_matchers"))
    for key, value in (("source_matchers", source), ("target_matchers", target)):
        if not value:
            raise ctx.fail(_join(path, key), "needs at least one matcher")
    equal = []
    for i, label in enumerate(ctx.sequence(data.get("equal"), _join(path, "equal"))):
        if label not in LABELS:
            raise ctx.fail(
                f"{_join(path, 'equal')}[{i}]",
                f"unknown label {label!r} (expected one of {', '.join(LABELS)})",
            )
        equal.append(label)
    return InhibitRule(path, source, target, tuple(equal))


_TOP_KEYS = (
    "defaults",
    "tenants",
    "receivers",
    "route",
    "silences",
    "inhibit_rules",
    "data_owner",
    "operations",
)


def parse_policy(data, source: str = POLICY_FILE) -> AlertingPolicy:
    """Validate an already-loaded policy document (a mapping) into an :class:`AlertingPolicy`."""
    ctx = _Ctx(source)
    data = ctx.mapping(data, "", _TOP_KEYS)
    defaults = _settings(
        ctx,
        ctx.mapping(data.get("defaults"), "defaults", _SETTING_KEYS),
        "defaults",
        TenantSettings(),
    )
    receivers_raw = ctx.mapping(data.get("receivers"), "receivers")
    if not receivers_raw:
        raise ctx.fail("receivers", "define at least one receiver")
    receivers = {
        str(name): _receiver(ctx, str(name), spec, f"receivers.{name}")
        for name, spec in receivers_raw.items()
    }
    if "route" not in data:
        raise ctx.fail("route", "missing (the root route with a default receiver)")
    route = _route(ctx, data["route"], "route", receivers, root=True)
    tenants, tenant_routes = {}, {}
    for tenant, raw in ctx.mapping(data.get("tenants"), "tenants").items():
        path = f"tenants.{tenant}"
        raw = ctx.mapping(raw, path, (*_SETTING_KEYS, "routes"))
        tenants[str(tenant)] = _settings(ctx, raw, path, defaults)
        tenant_routes[str(tenant)] = tuple(
            _route(ctx, child, f"{path}.routes[{i}]", receivers)
            for i, child in enumerate(ctx.sequence(raw.get("routes"), f"{path}.routes"))
        )
    silences = tuple(
        _silence(ctx, item, f"silences[{i}]")
        for i, item in enumerate(ctx.sequence(data.get("silences"), "silences"))
    )
    inhibit_rules = tuple(
        _inhibit(ctx, item, f"inhibit_rules[{i}]")
        for i, item in enumerate(ctx.sequence(data.get("inhibit_rules"), "inhibit_rules"))
    )
    special = {}
    for key in ("data_owner", "operations"):
        if data.get(key) is not None:
            special[key] = ctx.text(data[key], key)
            _known(ctx, special[key], key, receivers)
    return AlertingPolicy(
        source=source,
        defaults=defaults,
        tenants=tenants,
        receivers=receivers,
        route=route,
        tenant_routes=tenant_routes,
        silences=silences,
        inhibit_rules=inhibit_rules,
        **special,
    )


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


def default_policy(environ: Mapping[str, str] | None = None) -> AlertingPolicy:
    """The embedded default policy, plus a receiver for each channel configured in the
    environment (see :data:`ENVIRONMENT_RECEIVERS`)."""
    import os

    data = yaml.load(default_policy_text(), Loader=_Loader)
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
    return parse_policy(data, source)


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
            return default_policy()
        path = candidate
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(str(path), "", f"cannot read the policy ({exc.strerror})") from None
    return loads_policy(text, path.name)


def loads_policy(text: str, source: str = POLICY_FILE) -> AlertingPolicy:
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PolicyError(source, where, f"not valid YAML: {problem}") from None
    if data is None:
        raise PolicyError(source, "", "the policy is empty")
    return parse_policy(data, source)


# -- planning notifications -----------------------------------------------------------------------


@dataclass
class _Candidate:
    incident: Incident
    receiver: str
    event: str
    sequence: int
    at: datetime  # data time the event is about (what silences and rate limits look at)
    not_before: datetime | None = None
    extra: dict = field(default_factory=dict)
    status: str = "pending"
    reason: str | None = None


def _previous_view(state) -> tuple[Incident | None, bool]:
    """(previous incident, acknowledged) from a stored state, an Incident or None."""
    if state is None:
        return None, False
    incident = getattr(state, "incident", state)
    acked = incident.status == types.ACKNOWLEDGED or bool(getattr(state, "acknowledged_by", None))
    return incident, acked


def _repeats(incident: Incident, interval: timedelta) -> int:
    if interval <= timedelta(0):
        return 0
    return int((incident.last_seen_at - incident.started_at) / interval)


def plan_notifications(
    incidents: Iterable[Incident],
    previous: Mapping[str, object],
    policy: AlertingPolicy,
    now: datetime,
    dagster_url: str,
) -> list[Notification]:
    """Who is told what about these incidents, given what was known before.

    ``previous`` maps fingerprints to the stored state read *before* this run's incidents were
    written (``store.load_states``; an :class:`Incident` works too). Per incident and receiver:

    - TRIGGER when the incident is new, or to receivers it newly routes to (e.g. it became
      critical); a new incident that already ended also gets its RESOLVE.
    - REPEAT number *n* when ``n = (last_seen_at - started_at) // repeat_interval`` grew since the
      previous state, while firing and unacknowledged: data time, so re-runs plan the same repeats.
    - ESCALATE to the route's escalation receiver when a firing, unacknowledged incident becomes
      critical on a route with ``escalation``; ``not_before = now + after``, and the dispatcher
      must drop it if the incident was acknowledged or resolved by then.
    - RESOLVE when a firing incident became resolved, to every receiver that was triggered.

    Then, in this order, notifications become ``suppressed`` with a reason (never dropped):
    silences active at the event's data time (all events); inhibition by another incident of
    this batch that matches a rule's source, shares its ``equal`` labels and is active at that
    time (not for RESOLVE); the tenant's rate limit, a sliding window over the pending TRIGGER and
    REPEAT events of this batch in data time (critical incidents are never rate limited).
    """
    incidents = sorted(incidents, key=lambda i: (i.started_at, i.fingerprint))
    candidates: list[_Candidate] = []
    for incident in incidents:
        prev, acked = _previous_view(previous.get(incident.fingerprint))
        settings = policy.settings(incident.tenant)
        routed = policy.receivers_for(incident)
        firing = incident.status != types.RESOLVED
        critical = incident.severity >= Severity.CRITICAL
        resolved_at = incident.resolved_at or incident.last_seen_at
        if prev is None:
            for receiver, _ in routed:
                candidates.append(
                    _Candidate(incident, receiver, types.TRIGGER, 0, incident.started_at)
                )
            if not firing:
                for receiver, _ in routed:
                    candidates.append(_Candidate(incident, receiver, types.RESOLVE, 0, resolved_at))
            escalate = firing and critical
        elif prev.status == types.RESOLVED:
            # Over already (or resolved by hand): a re-run seeing less of it says nothing new.
            continue
        else:
            before = {r for r, _ in policy.receivers_for(prev)}
            escalate = firing and critical and not acked and prev.severity < Severity.CRITICAL
            if firing:
                for receiver, _ in routed:
                    if receiver not in before:
                        candidates.append(
                            _Candidate(incident, receiver, types.TRIGGER, 0, incident.last_seen_at)
                        )
                n = _repeats(incident, settings.repeat_interval)
                if not acked and n >= 1 and n > _repeats(prev, settings.repeat_interval):
                    at = incident.started_at + n * settings.repeat_interval
                    for receiver, _ in routed:
                        if receiver in before:
                            candidates.append(
                                _Candidate(
                                    incident, receiver, types.REPEAT, n, at, extra={"sequence": n}
                                )
                            )
            else:
                targets = list(dict.fromkeys([*sorted(before), *(r for r, _ in routed)]))
                for receiver in targets:
                    candidates.append(_Candidate(incident, receiver, types.RESOLVE, 0, resolved_at))
        if escalate:
            for receiver, esc in routed:
                if esc is not None:
                    candidates.append(
                        _Candidate(
                            incident,
                            esc.to,
                            types.ESCALATE,
                            0,
                            incident.last_seen_at,
                            not_before=now + esc.after,
                            extra={"escalated_from": receiver, "after": format_duration(esc.after)},
                        )
                    )
    _apply_silences(candidates, policy)
    _apply_inhibition(candidates, incidents, policy)
    _apply_rate_limits(candidates, policy)
    candidates.sort(
        key=lambda c: (c.at, c.incident.fingerprint, types.EVENT_ORDER[c.event], c.receiver)
    )
    out = []
    seen = set()
    for c in candidates:
        key = types.fingerprint(c.incident.fingerprint, c.receiver, c.event, c.sequence)
        if key in seen:
            continue
        seen.add(key)
        payload = types.notification_payload(c.incident, c.event, dagster_url)
        payload.update(receiver=c.receiver, **c.extra)
        out.append(
            Notification(
                idempotency_key=key,
                fingerprint=c.incident.fingerprint,
                tenant=c.incident.tenant,
                receiver=c.receiver,
                event=c.event,
                locale=policy.settings(c.incident.tenant).locale,
                payload=payload,
                not_before=c.not_before,
                status=c.status,
                reason=c.reason,
            )
        )
    return out


def _apply_silences(candidates: list[_Candidate], policy: AlertingPolicy) -> None:
    for c in candidates:
        labels, metrics = incident_labels(c.incident), _metrics(c.incident)
        for silence in policy.silences:
            if silence.active(c.at) and all(m.matches(labels, metrics) for m in silence.matchers):
                c.status = "suppressed"
                note = f" ({silence.comment})" if silence.comment else ""
                c.reason = f"silenced by {silence.name}{note}"
                break


def _active_at(incident: Incident, at: datetime) -> bool:
    if at < incident.started_at:
        return False
    return incident.status != types.RESOLVED or at <= (incident.resolved_at or at)


def _apply_inhibition(
    candidates: list[_Candidate], incidents: list[Incident], policy: AlertingPolicy
) -> None:
    if not policy.inhibit_rules:
        return
    labelled = [(i, incident_labels(i), _metrics(i)) for i in incidents]
    for c in candidates:
        if c.status != "pending" or c.event == types.RESOLVE:
            continue
        target, t_labels, t_metrics = c.incident, incident_labels(c.incident), _metrics(c.incident)
        for rule in policy.inhibit_rules:
            if not all(m.matches(t_labels, t_metrics) for m in rule.target):
                continue
            for source, s_labels, s_metrics in labelled:
                if (
                    source.fingerprint != target.fingerprint
                    and all(m.matches(s_labels, s_metrics) for m in rule.source)
                    and all(s_labels.get(k) == t_labels.get(k) for k in rule.equal)
                    and _active_at(source, c.at)
                ):
                    c.status = "suppressed"
                    c.reason = (
                        f"inhibited by {source.severity.label} incident {source.fingerprint} "
                        f"({source.tenant}/{source.service}, {rule.name})"
                    )
                    break
            if c.status != "pending":
                break


def _apply_rate_limits(candidates: list[_Candidate], policy: AlertingPolicy) -> None:
    admitted: dict[str, list[datetime]] = {}
    limited = [
        c
        for c in candidates
        if c.status == "pending"
        and c.event in (types.TRIGGER, types.REPEAT)
        and c.incident.severity < Severity.CRITICAL
    ]
    limited.sort(key=lambda c: (c.at, c.incident.fingerprint, c.receiver))
    for c in limited:
        limit = policy.settings(c.incident.tenant).rate_limit
        times = admitted.setdefault(c.incident.tenant, [])
        recent = [t for t in times if t > c.at - limit.per]
        if len(recent) >= limit.max:
            c.status = "suppressed"
            c.reason = (
                f"rate limited: tenant {c.incident.tenant} already has {limit.max} "
                f"notifications within {format_duration(limit.per)}"
            )
        else:
            times.append(c.at)
