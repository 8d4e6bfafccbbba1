"""Report settings: SLO targets, capacity limits, business hours; ``MONITORING_HOME/reports.yaml``.

The alerting policy validates its top-level keys strictly and belongs to alerting, so the report
targets live in a file of their own. Every key is optional; without the file the defaults below
apply. Example::

    slo:
      default: {availability: 0.995, latency_p95_ms: 400}   # the defaults
      services:
        playback: {latency_p95_ms: 1500}
      tenants:
        acme: {api: {availability: 0.9995}}
    capacity:               # the level a metric must stay under; the forecast dates the crossing
      cpu_percent: 85
      memory_percent: 90
      tenants: {acme: {api/requests_per_second: 1500}}
    business_hours: {days: [mon, tue, wed, thu, fri], start: 8, end: 18}
"""

from dataclasses import dataclass, field
from pathlib import Path

import yaml

DEFAULT_SLO = {"availability": 0.995, "latency_p95_ms": 400.0}
DEFAULT_SERVICE_SLO = {"playback": {"latency_p95_ms": 1500.0}}
DEFAULT_CAPACITY = {"cpu_percent": 85.0, "memory_percent": 90.0}
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SLO_KEYS = ("availability", "latency_p95_ms")


class ReportConfigError(ValueError):
    """A mistake in reports.yaml; one line naming the key."""


@dataclass(frozen=True)
class ReportConfig:
    slo_default: dict = field(default_factory=lambda: dict(DEFAULT_SLO))
    slo_services: dict = field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_SERVICE_SLO.items()}
    )
    slo_tenants: dict = field(default_factory=dict)
    capacity: dict = field(default_factory=lambda: dict(DEFAULT_CAPACITY))
    capacity_tenants: dict = field(default_factory=dict)
    business_days: tuple[int, ...] = (0, 1, 2, 3, 4)
    business_start: int = 8
    business_end: int = 18
    # An incident of a series that starts this soon after the previous one ended is a flap.
    flap_minutes: int = 60
    top_series: int = 10
    top_incidents: int = 3

    def slo(self, tenant: str, service: str) -> dict:
        """The SLO targets of one tenant's service: default, then service, then tenant."""
        return {
            **self.slo_default,
            **self.slo_services.get(service, {}),
            **self.slo_tenants.get(tenant, {}).get(service, {}),
        }

    def capacity_limit(self, tenant: str, service: str, metric: str) -> float | None:
        own = self.capacity_tenants.get(tenant, {})
        for key in (f"{service}/{metric}", metric):
            if key in own:
                return float(own[key])
        for key in (f"{service}/{metric}", metric):
            if key in self.capacity:
                return float(self.capacity[key])
        return None

    def off_hours(self, weekday: int, hour: int) -> bool:
        return weekday not in self.business_days or not (
            self.business_start <= hour < self.business_end
        )

    def to_dict(self) -> dict:
        return {
            "slo_default": self.slo_default,
            "slo_services": self.slo_services,
            "capacity": self.capacity,
            "business_hours": {
                "days": [_DAYS[d] for d in self.business_days],
                "start": self.business_start,
                "end": self.business_end,
            },
            "flap_minutes": self.flap_minutes,
        }


def _number(value, where: str, low: float, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ReportConfigError(f"reports.yaml: {where}: expected a number, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ReportConfigError(f"reports.yaml: {where}: {value} must be {bound}")
    return float(value)


def _targets(data, where: str) -> dict:
    if not isinstance(data, dict):
        raise ReportConfigError(f"reports.yaml: {where}: expected a mapping")
    out = {}
    for key, value in data.items():
        if key not in _SLO_KEYS:
            raise ReportConfigError(
                f"reports.yaml: {where}.{key}: unknown SLO key (expected {', '.join(_SLO_KEYS)})"
            )
        out[key] = (
            _number(value, f"{where}.{key}", 0.0, 1.0)
            if key == "availability"
            else _number(value, f"{where}.{key}", 0.0)
        )
    return out


def parse_config(data: dict | None) -> ReportConfig:
    data = data or {}
    if not isinstance(data, dict):
        raise ReportConfigError("reports.yaml: expected a mapping at the top")
    unknown = set(data) - {"slo", "capacity", "business_hours", "flap_minutes", "top_series"}
    if unknown:
        raise ReportConfigError(f"reports.yaml: unknown key {sorted(unknown)[0]!r}")
    base = ReportConfig()
    slo = data.get("slo") or {}
    services = {k: dict(v) for k, v in base.slo_services.items()}
    for name, targets in (slo.get("services") or {}).items():
        services[str(name)] = {
            **services.get(str(name), {}),
            **_targets(targets, f"slo.services.{name}"),
        }
    tenants = {
        str(tenant): {
            str(svc): _targets(t, f"slo.tenants.{tenant}.{svc}") for svc, t in (per or {}).items()
        }
        for tenant, per in (slo.get("tenants") or {}).items()
    }
    capacity = dict(base.capacity)
    cap_tenants = {}
    for key, value in (data.get("capacity") or {}).items():
        if key == "tenants":
            cap_tenants = {
                str(t): {str(m): _number(v, f"capacity.tenants.{t}.{m}", 0.0) for m, v in c.items()}
                for t, c in (value or {}).items()
            }
        else:
            capacity[str(key)] = _number(value, f"capacity.{key}", 0.0)
    hours = data.get("business_hours") or {}
    days = hours.get("days", [_DAYS[d] for d in base.business_days])
    bad = [d for d in days if d not in _DAYS]
    if bad:
        raise ReportConfigError(f"reports.yaml: business_hours.days: unknown day {bad[0]!r}")
    return ReportConfig(
        slo_default={**base.slo_default, **_targets(slo.get("default") or {}, "slo.default")},
        slo_services=services,
        slo_tenants=tenants,
        capacity=capacity,
        capacity_tenants=cap_tenants,
        business_days=tuple(sorted(_DAYS.index(d) for d in days)),
        business_start=int(
            _number(hours.get("start", base.business_start), "business_hours.start", 0, 24)
        ),
        business_end=int(_number(hours.get("end", base.business_end), "business_hours.end", 0, 24)),
        flap_minutes=int(_number(data.get("flap_minutes", base.flap_minutes), "flap_minutes", 0)),
        top_series=int(_number(data.get("top_series", base.top_series), "top_series", 1)),
    )


def load_config(path: Path | None) -> ReportConfig:
    if path is None or not Path(path).exists():
        return ReportConfig()
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ReportConfigError(
            f"reports.yaml: not valid YAML ({str(exc).splitlines()[0]})"
        ) from None
    return parse_config(data)
