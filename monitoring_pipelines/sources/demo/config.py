"""The demo's shape: services and their metrics, incident kinds, bad-row problems, the
per-kind value shapes, and :class:`DemoConfig` / :class:`DemoData`."""

from dataclasses import dataclass
from datetime import date, timedelta

import pandas as pd

from monitoring_pipelines.settings import DEFAULT_TENANTS
from monitoring_pipelines.sources.records import is_valid_name

SERVICE_METRICS: dict[str, tuple[str, ...]] = {
    "api": (
        "requests_per_second",
        "latency_p50_ms",
        "latency_p95_ms",
        "error_rate",
        "cpu_percent",
        "memory_percent",
        "auth_failures",
        "rate_limited_ratio",
    ),
    "playback": (
        "streams_started",
        "startup_latency_p50_ms",
        "startup_latency_p95_ms",
        "buffering_ratio",
        "audio_bitrate_kbps",
        "playback_error_rate",
        "cdn_egress_bytes",
        "cpu_percent",
    ),
    "recommendations": (
        "requests_per_second",
        "latency_p50_ms",
        "latency_p95_ms",
        "error_rate",
        "skip_rate",
        "cache_hit_ratio",
        "cpu_percent",
        "memory_percent",
    ),
}

INCIDENT_KINDS = (
    "spike",
    "dip",
    "level_shift",
    "slow_drift",
    "variance_burst",
    "flatline",
    "multi_metric",
)

# Per tenant over the whole period; the quality gate's tests count on every problem being present.
BAD_ROW_PROBLEMS = (
    ("negative_latency", 4),
    ("ratio_above_one", 4),
    ("nan", 4),
    ("inf", 3),
    ("duplicate", 3),
    ("conflicting_duplicate", 2),
)

TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

# p95 must stay above p50, so a latency incident always moves the pair together.
_LATENCY_PAIRS = {
    "latency_p95_ms": "latency_p50_ms",
    "startup_latency_p95_ms": "startup_latency_p50_ms",
}

# Metrics whose bad direction is down: an incident lowers them.
_DOWN_IS_BAD = frozenset(
    {
        "requests_per_second",
        "streams_started",
        "cdn_egress_bytes",
        "audio_bitrate_kbps",
        "cache_hit_ratio",
    }
)

# Which metric each kind of incident plausibly hits in each service.
_CANDIDATES: dict[str, dict[str, tuple[str, ...]]] = {
    "spike": {
        "api": ("latency_p95_ms", "error_rate", "auth_failures", "rate_limited_ratio"),
        "playback": ("startup_latency_p95_ms", "buffering_ratio", "playback_error_rate"),
        "recommendations": ("latency_p95_ms", "error_rate", "skip_rate"),
    },
    "dip": {
        "api": ("requests_per_second",),
        "playback": ("streams_started", "audio_bitrate_kbps", "cdn_egress_bytes"),
        "recommendations": ("requests_per_second", "cache_hit_ratio"),
    },
    "level_shift": {
        "api": ("latency_p95_ms", "error_rate", "memory_percent", "auth_failures"),
        "playback": ("audio_bitrate_kbps", "buffering_ratio", "startup_latency_p95_ms"),
        "recommendations": ("skip_rate", "cache_hit_ratio", "latency_p95_ms"),
    },
    "slow_drift": {
        "api": ("memory_percent", "latency_p95_ms"),
        "playback": ("buffering_ratio", "audio_bitrate_kbps", "startup_latency_p95_ms"),
        "recommendations": ("memory_percent", "cache_hit_ratio", "skip_rate"),
    },
    "variance_burst": {
        "api": ("latency_p95_ms", "requests_per_second", "cpu_percent"),
        "playback": ("buffering_ratio", "audio_bitrate_kbps", "streams_started"),
        "recommendations": ("latency_p95_ms", "cpu_percent", "skip_rate"),
    },
    "flatline": {
        "api": ("requests_per_second", "cpu_percent", "memory_percent"),
        "playback": ("streams_started", "audio_bitrate_kbps", "cdn_egress_bytes", "cpu_percent"),
        "recommendations": ("requests_per_second", "cache_hit_ratio", "cpu_percent"),
    },
    "multi_metric": {
        "api": ("latency_p50_ms", "latency_p95_ms", "error_rate", "cpu_percent"),
        "playback": (
            "startup_latency_p50_ms",
            "startup_latency_p95_ms",
            "buffering_ratio",
            "playback_error_rate",
            "audio_bitrate_kbps",
        ),
        "recommendations": (
            "latency_p50_ms",
            "latency_p95_ms",
            "error_rate",
            "cache_hit_ratio",
            "cpu_percent",
        ),
    },
}


@dataclass(frozen=True)
class _KindShape:
    min_seconds: int
    max_seconds: int
    # Size in multiples of the local noise sigma, with a floor relative to the level, so that
    # incidents stand out both on noisy and on very smooth series.
    min_sigmas: float
    max_sigmas: float
    rel_floor: float


_KIND_SHAPES = {
    "spike": _KindShape(600, 1800, 6.0, 10.0, 0.35),
    "dip": _KindShape(900, 3600, 6.0, 10.0, 0.3),
    "level_shift": _KindShape(2 * 3600, 6 * 3600, 5.0, 8.0, 0.2),
    "slow_drift": _KindShape(3 * 3600, 6 * 3600, 8.0, 12.0, 0.25),
    "variance_burst": _KindShape(3600, 3 * 3600, 4.0, 6.0, 0.12),
    "flatline": _KindShape(3600, 3 * 3600, 0.0, 0.0, 0.0),
    "multi_metric": _KindShape(1800, 2 * 3600, 6.0, 9.0, 0.3),
}

# Decimal places a real exporter would report, by metric kind.
_DECIMALS = {
    "latency": 2,
    "ratio": 6,
    "percent": 2,
    "rate": 3,
    "count": 0,
    "bytes": 0,
    "bitrate": 1,
    "gauge": 4,
}

_GAP_MIN_SECONDS = 15 * 60
_GAP_MAX_SECONDS = 3 * 3600
# Quiet time around gaps, bad rows and other incidents, so an incident is never truncated by
# missing data and a bad row never sits inside a labelled window.
_INCIDENT_MARGIN_SECONDS = 3600
_INCIDENT_SEPARATION_SECONDS = 2 * 3600
_BROKEN_FRACTION = 0.3


@dataclass(frozen=True)
class DemoConfig:
    seed: int = 42
    tenants: tuple[str, ...] = DEFAULT_TENANTS
    services: tuple[str, ...] = tuple(SERVICE_METRICS)
    start: str = "2026-09-28T00:00:00Z"
    days: int = 35
    resolution_seconds: int = 300
    incidents: bool = True
    incidents_per_week: tuple[int, int] = (2, 4)
    # Detectors need a clean training prefix before the first incident.
    warmup_days: int = 2
    gaps: bool = True
    bad_rows: bool = True
    broken_partition: bool = True
    # Clamped to the configured tenants and days, so small test configs still get one.
    broken_tenant_index: int = 2
    broken_day: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "tenants", tuple(self.tenants))
        object.__setattr__(self, "services", tuple(self.services))
        object.__setattr__(self, "incidents_per_week", tuple(self.incidents_per_week))
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not self.tenants or len(set(self.tenants)) != len(self.tenants):
            raise ValueError("tenants must be a non-empty tuple of distinct names")
        bad = [t for t in self.tenants if not is_valid_name(t)]
        if bad:
            raise ValueError(f"invalid tenant names: {bad}")
        unknown = [s for s in self.services if s not in SERVICE_METRICS]
        if not self.services or unknown or len(set(self.services)) != len(self.services):
            raise ValueError(
                f"services must be distinct names from {sorted(SERVICE_METRICS)}, got "
                f"{self.services}"
            )
        if self.days < 1:
            raise ValueError("days must be at least 1")
        if self.resolution_seconds < 1 or 86400 % self.resolution_seconds:
            raise ValueError("resolution_seconds must divide a day")
        low, high = self.incidents_per_week
        if not 0 <= low <= high:
            raise ValueError("incidents_per_week must be (low, high) with 0 <= low <= high")


DEFAULT_CONFIG = DemoConfig()


def demo_period(
    today: date, *, start: date | None = None, end: date | None = None, days: int | None = None
) -> tuple[date, date]:
    """The demo's first and last day (inclusive, UTC).

    By default the ``days`` (35) days that end yesterday, so after the demo every day up to
    today has data and the UI shows no run of empty days; ``start`` and/or ``end`` pin a period
    (the seeded output of a pinned period is always the same). ``days`` counts from ``start``
    when only it is given, back from ``end`` otherwise; it cannot go with both."""
    if start is not None and end is not None:
        if days is not None:
            raise ValueError("give at most two of start, end and days")
    elif start is not None:
        end = start + timedelta(days=(days or DEFAULT_CONFIG.days) - 1)
    else:
        end = end or today - timedelta(days=1)
        start = end - timedelta(days=(days or DEFAULT_CONFIG.days) - 1)
    if end < start:
        raise ValueError(f"the period ends ({end}) before it starts ({start})")
    return start, end


@dataclass(frozen=True, eq=False)
class DemoData:
    records: pd.DataFrame
    labels: dict[str, list[list[str]]]
    incidents: list[dict]
    bad_rows: list[dict]
    broken_partition: tuple[str, str] | None
