"""A seeded, fully deterministic demo of the streaming platform's operational metrics.

The demo has to exercise everything downstream: the quality gate (bad rows and one broken
partition), the warehouse (gaps, duplicates), the detectors and their backtest (labelled incidents
of every kind on top of realistic seasonal, correlated, noisy series). Everything is derived from
``DemoConfig.seed``, so the same config always gives byte-identical files.

Label windows are closed intervals: ``[first, last]`` are the timestamps of the first and the
last sample an incident modified, as UTC ISO-8601 strings. The labels hold every generated series,
with an empty list for the ones no incident touched, so a backtest can tell "labelled normal" from
"unknown".
"""

import itertools
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from monitoring_pipelines.settings import DEFAULT_TENANTS
from monitoring_pipelines.sources.records import (
    RECORD_COLUMNS,
    is_valid_name,
    metric_kind,
    series_name,
)

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


@dataclass(frozen=True, eq=False)
class DemoData:
    records: pd.DataFrame
    labels: dict[str, list[list[str]]]
    incidents: list[dict]
    bad_rows: list[dict]
    broken_partition: tuple[str, str] | None


@dataclass(frozen=True)
class _Timeline:
    start_ns: int
    step: int
    n: int
    ts_ns: np.ndarray = field(repr=False)
    seconds: np.ndarray = field(repr=False)

    @classmethod
    def from_config(cls, config: DemoConfig) -> "_Timeline":
        start = pd.Timestamp(config.start)
        start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
        start_ns = int(start.as_unit("ns").value)
        step = config.resolution_seconds
        n = config.days * 86400 // step
        offsets = np.arange(n, dtype=np.int64) * step
        return cls(
            start_ns=start_ns,
            step=step,
            n=n,
            ts_ns=start_ns + offsets * 1_000_000_000,
            seconds=start_ns // 1_000_000_000 + offsets,
        )

    def points(self, seconds: float) -> int:
        return max(1, round(seconds / self.step))

    def iso(self, index: int) -> str:
        return pd.Timestamp(int(self.ts_ns[index]), tz="UTC").strftime(TS_FORMAT)


def _rng(seed: int, *parts: str) -> np.random.Generator:
    # crc32 rather than hash(): Python salts str hashes per process.
    return np.random.default_rng([seed, *(zlib.crc32(p.encode()) for p in parts)])


def _smooth_noise(rng: np.random.Generator, tl: _Timeline, knot_seconds: int, sd: float):
    every = tl.points(knot_seconds)
    knots = np.arange(0, tl.n + every, every)
    return np.interp(np.arange(tl.n), knots, rng.normal(0.0, sd, knots.size))


def _box_smooth(x: np.ndarray, width: int) -> np.ndarray:
    padded = np.pad(x, (width // 2, width - 1 - width // 2), mode="edge")
    return np.convolve(padded, np.ones(width) / width, mode="valid")


def _bump(hours: np.ndarray, centre: float, width: float) -> np.ndarray:
    distance = (hours - centre + 12.0) % 24.0 - 12.0
    return np.exp(-0.5 * (distance / width) ** 2)


def _tenant_scales(config: DemoConfig) -> dict[str, float]:
    """Traffic multipliers spread log-evenly over 1x..10x, shuffled by seed."""
    count = len(config.tenants)
    scales = 10.0 ** np.linspace(0.0, 1.0, count) if count > 1 else np.ones(1)
    order = _rng(config.seed, "tenant-scales").permutation(count)
    return {t: float(scales[order[i]]) for i, t in enumerate(config.tenants)}


@dataclass(frozen=True)
class _TenantClock:
    load: np.ndarray
    local_hours: np.ndarray


def _tenant_clock(config: DemoConfig, tl: _Timeline, tenant: str) -> _TenantClock:
    rng = _rng(config.seed, tenant, "profile")
    # Tenants serve slightly different time zones, so their evening peaks do not coincide.
    local = tl.seconds + int(rng.integers(-1, 3)) * 3600
    hours = (local % 86400) / 3600.0
    weekday = (local // 86400 + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    weekend = _box_smooth((weekday >= 5).astype(float), tl.points(3 * 3600))
    workday_shape = (
        0.22
        + 0.30 * _bump(hours, 8.0, 1.2)
        + 0.38 * _bump(hours, 13.0, 2.5)
        + 0.80 * _bump(hours, 20.5, 2.2)
    )
    weekend_shape = 0.24 + 0.45 * _bump(hours, 12.5, 3.0) + 0.85 * _bump(hours, 20.8, 2.5)
    shape = (1.0 - weekend) * workday_shape + weekend * 1.08 * weekend_shape
    weeks = (tl.seconds - tl.seconds[0]) / (7 * 86400)
    trend = 1.0 + rng.uniform(0.005, 0.03) * weeks
    wander = np.exp(_smooth_noise(rng, tl, 6 * 3600, 0.04))
    return _TenantClock(load=shape * trend * wander, local_hours=hours)


def _lognormal(rng: np.random.Generator, sd: float, n: int) -> np.ndarray:
    return np.exp(rng.normal(0.0, sd, n))


def _latency_pair(rng, base_ms, util, slope, spread, p50_jitter, p95_jitter, n):
    p50 = base_ms * (1.0 + slope * util**3) * _lognormal(rng, 0.05, n)
    p50 = p50 + rng.exponential(p50_jitter, n)
    p95 = p50 * (spread + 1.3 * util**2) * _lognormal(rng, 0.08, n) + rng.exponential(p95_jitter, n)
    return p50, np.maximum(p95, p50 * 1.05)


def _binomial_ratio(rng, trials: np.ndarray, p: np.ndarray) -> np.ndarray:
    trials = np.maximum(trials, 1).astype(np.int64)
    return rng.binomial(trials, np.clip(p, 0.0, 1.0)) / trials


def _memory(rng, base, hours, util, n):
    # Slow growth between the nightly 04:00 restarts, like a JVM heap.
    since_restart = ((hours - 4.0) % 24.0) / 24.0
    return base + 6.0 * since_restart + 4.0 * util + rng.normal(0.0, 0.3, n)


def _api(config, tl, tenant, scale, load, util, hours) -> dict[str, np.ndarray]:
    def r(metric):
        return _rng(config.seed, tenant, "api", metric)

    n = tl.n
    expected = 120.0 * scale * load * tl.step * _lognormal(r("requests_per_second"), 0.02, n)
    requests = r("requests_per_second").poisson(expected)
    p50, p95 = _latency_pair(r("latency"), 38.0, util, 0.7, 2.4, 0.8, 4.0, n)
    error_p = 0.0015 * (1.0 + 5.0 * util**4) * _lognormal(r("error_rate"), 0.1, n)
    return {
        "requests_per_second": requests / tl.step,
        "latency_p50_ms": p50,
        "latency_p95_ms": p95,
        "error_rate": _binomial_ratio(r("error_rate"), requests, error_p),
        "cpu_percent": np.clip(8.0 + 70.0 * util + r("cpu").normal(0.0, 1.5, n), 0.0, 100.0),
        "memory_percent": _memory(r("memory_percent"), 42.0, hours, util, n),
        "auth_failures": r("auth_failures").poisson(2.0 + 0.0006 * requests).astype(float),
        "rate_limited_ratio": _binomial_ratio(
            r("rate_limited_ratio"), requests, 0.0004 + 0.003 * util**3
        ),
    }


def _playback(config, tl, tenant, scale, load, util, hours) -> dict[str, np.ndarray]:
    def r(metric):
        return _rng(config.seed, tenant, "playback", metric)

    n = tl.n
    expected = 900.0 * scale * load * (tl.step / 300.0) * _lognormal(r("streams"), 0.03, n)
    streams = r("streams_started").poisson(expected)
    p50, p95 = _latency_pair(r("startup_latency"), 310.0, util, 0.5, 2.1, 6.0, 25.0, n)
    buffering_p = 0.006 * (1.0 + 3.0 * util**2) * _lognormal(r("buffering_ratio"), 0.08, n)
    bitrate = 236.0 - 18.0 * util**2 + r("audio_bitrate_kbps").normal(0.0, 1.8, n)
    # Each stream start is followed by ~5 intervals of listening at the delivered bitrate.
    egress = streams * 5.0 * bitrate * 1000.0 / 8.0 * tl.step
    return {
        "streams_started": streams.astype(float),
        "startup_latency_p50_ms": p50,
        "startup_latency_p95_ms": p95,
        "buffering_ratio": _binomial_ratio(r("buffering_ratio"), streams * 30, buffering_p),
        "audio_bitrate_kbps": bitrate,
        "playback_error_rate": _binomial_ratio(
            r("playback_error_rate"), streams, 0.003 * (1.0 + 2.0 * util**3)
        ),
        "cdn_egress_bytes": egress * _lognormal(r("cdn_egress_bytes"), 0.02, n),
        "cpu_percent": np.clip(6.0 + 65.0 * util + r("cpu").normal(0.0, 1.5, n), 0.0, 100.0),
    }


def _recommendations(config, tl, tenant, scale, load, util, hours) -> dict[str, np.ndarray]:
    def r(metric):
        return _rng(config.seed, tenant, "recommendations", metric)

    n = tl.n
    expected = 45.0 * scale * load * tl.step * _lognormal(r("requests_per_second"), 0.03, n)
    requests = r("requests_per_second").poisson(expected)
    p50, p95 = _latency_pair(r("latency"), 85.0, util, 0.9, 2.6, 1.5, 8.0, n)
    # Listeners skip more in the small hours and on the commute than in the evening.
    skip_p = 0.20 + 0.05 * np.clip(1.0 - load, 0.0, 1.0)
    return {
        "requests_per_second": requests / tl.step,
        "latency_p50_ms": p50,
        "latency_p95_ms": p95,
        "error_rate": _binomial_ratio(r("error_rate"), requests, 0.0008 * (1.0 + 4.0 * util**4)),
        "skip_rate": _binomial_ratio(r("skip_rate"), requests // 4, skip_p),
        "cache_hit_ratio": _binomial_ratio(r("cache_hit_ratio"), requests, 0.94 - 0.06 * util**2),
        "cpu_percent": np.clip(10.0 + 62.0 * util + r("cpu").normal(0.0, 1.8, n), 0.0, 100.0),
        "memory_percent": _memory(r("memory_percent"), 55.0, hours, util, n),
    }


_SERVICE_BUILDERS = {"api": _api, "playback": _playback, "recommendations": _recommendations}


def _clean_tenant(config, tl, tenant, scale) -> dict[tuple[str, str], np.ndarray]:
    clock = _tenant_clock(config, tl, tenant)
    series = {}
    for service in config.services:
        rng = _rng(config.seed, tenant, service, "load")
        load = clock.load * np.exp(_smooth_noise(rng, tl, 3 * 3600, 0.02))
        util = rng.uniform(0.55, 0.8) * load
        built = _SERVICE_BUILDERS[service](config, tl, tenant, scale, load, util, clock.local_hours)
        for metric in SERVICE_METRICS[service]:
            series[(service, metric)] = np.asarray(built[metric], dtype=np.float64)
    return series


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0 or not mask.any():
        return mask.copy()
    return np.convolve(mask.astype(np.int64), np.ones(2 * radius + 1, np.int64), "same") > 0


def _broken(config: DemoConfig, tl: _Timeline) -> tuple[str, str, int, int] | None:
    """The broken tenant-day as (tenant, date, first index, end index)."""
    if not config.broken_partition:
        return None
    tenant = config.tenants[min(config.broken_tenant_index, len(config.tenants) - 1)]
    first_day = tl.start_ns // 86_400_000_000_000
    last_day = int(tl.ts_ns[-1]) // 86_400_000_000_000
    day = min(first_day + config.broken_day, last_day)
    day_of = tl.ts_ns // 86_400_000_000_000
    inside = np.flatnonzero(day_of == day)
    date = pd.Timestamp(day * 86_400_000_000_000, tz="UTC").strftime("%Y-%m-%d")
    return tenant, date, int(inside[0]), int(inside[-1]) + 1


def _place_gaps(config, tl, tenant, keys) -> dict[tuple[str, str], np.ndarray]:
    present = {key: np.ones(tl.n, dtype=bool) for key in keys}
    if not config.gaps:
        return present
    rng = _rng(config.seed, tenant, "gaps")
    weeks = config.days / 7.0
    # Whole-service outages (an exporter down) and single series that stop reporting.
    outages = [
        (config.services[i], None)
        for i in rng.integers(len(config.services), size=max(1, round(1.2 * weeks)))
    ]
    singles = [keys[i] for i in rng.choice(len(keys), max(1, round(3.0 * weeks)))]
    for service, metric in [*outages, *singles]:
        length = tl.points(rng.uniform(_GAP_MIN_SECONDS, _GAP_MAX_SECONDS))
        if length >= tl.n:
            continue
        begin = int(rng.integers(0, tl.n - length))
        for key in keys:
            if key[0] == service and (metric is None or key[1] == metric):
                present[key][begin : begin + length] = False
    return present


def _place_bad_rows(config, tl, tenant, keys, present, broken) -> list[tuple]:
    """Bad rows as (service, metric, index, problem); values are written after the incidents."""
    if not config.bad_rows:
        return []
    rng = _rng(config.seed, tenant, "bad-rows")
    usable = np.ones(tl.n, dtype=bool)
    if broken is not None and broken[0] == tenant:
        usable[broken[2] : broken[3]] = False
    taken: set[tuple[str, str, int]] = set()
    placed = []
    for problem, count in BAD_ROW_PROBLEMS:
        kind = {"negative_latency": "latency", "ratio_above_one": "ratio"}.get(problem)
        candidates = [k for k in keys if kind is None or metric_kind(k[1]).name == kind]
        for _ in range(count):
            service, metric = candidates[int(rng.integers(len(candidates)))]
            where = np.flatnonzero(present[(service, metric)] & usable)
            where = [i for i in rng.permutation(where)[:8] if (service, metric, i) not in taken]
            if not where:
                continue
            index = int(where[0])
            taken.add((service, metric, index))
            placed.append((service, metric, index, problem))
    return placed


def _incident_metrics(kind: str, service: str, rng: np.random.Generator) -> list[str]:
    candidates = _CANDIDATES[kind][service]
    if kind == "multi_metric":
        return sorted(candidates)
    metric = candidates[int(rng.integers(len(candidates)))]
    return sorted({metric, _LATENCY_PAIRS.get(metric, metric)})


def _schedule(config, tl, tenant, tenant_index, present, bad, broken) -> list[dict]:
    """Non-overlapping incident windows for one tenant, 2-4 a week, kinds in a fixed cycle."""
    if not config.incidents:
        return []
    rng = _rng(config.seed, tenant, "incidents")
    margin = tl.points(_INCIDENT_MARGIN_SECONDS)
    missing = np.zeros(tl.n, dtype=bool)
    for mask in present.values():
        missing |= ~mask
    blocked = _dilate(missing, margin)
    for _, _, index, _ in bad:
        blocked[max(0, index - margin) : index + margin + 1] = True
    if broken is not None and broken[0] == tenant:
        blocked[max(0, broken[2] - margin) : broken[3] + margin] = True
    warmup = min(tl.n, config.warmup_days * tl.points(86400))
    blocked[:warmup] = True
    separation = tl.points(_INCIDENT_SEPARATION_SECONDS)
    week = tl.points(7 * 86400)
    low, high = config.incidents_per_week
    cycle = (tenant_index * 3) % len(INCIDENT_KINDS)
    scheduled = []
    for week_start in range(0, tl.n, week):
        week_end = min(tl.n, week_start + week)
        # Segments start after the warmup so a short first week still gets its share.
        span_start = max(week_start, warmup)
        wanted = int(rng.integers(low, high + 1))
        if week_end - span_start < week:
            wanted = round(wanted * max(0, week_end - span_start) / week)
        edges = np.linspace(span_start, week_end, wanted + 1).astype(int) if wanted else []
        for seg_start, seg_end in itertools.pairwise(edges):
            kind = INCIDENT_KINDS[cycle % len(INCIDENT_KINDS)]
            shape = _KIND_SHAPES[kind]
            length = tl.points(rng.uniform(shape.min_seconds, shape.max_seconds))
            free = np.concatenate([[0], np.cumsum(blocked)])
            starts = np.arange(seg_start, max(seg_start, seg_end - length))
            starts = starts[free[starts + length] == free[starts]]
            if starts.size == 0:
                continue
            begin = int(rng.choice(starts))
            service = config.services[int(rng.integers(len(config.services)))]
            scheduled.append(
                {
                    "kind": kind,
                    "tenant": tenant,
                    "service": service,
                    "metrics": _incident_metrics(kind, service, rng),
                    "begin": begin,
                    "end": begin + length,
                    "sigmas": float(rng.uniform(shape.min_sigmas, shape.max_sigmas)),
                    "z": rng.standard_normal(length),
                }
            )
            blocked[max(0, begin - separation) : begin + length + separation] = True
            cycle += 1
    return scheduled


def _noise_sigma(values: np.ndarray, begin: int, reference: int) -> float:
    """Robust sigma of the local noise before ``begin`` (MAD of first differences)."""
    window = values[max(0, begin - reference) : begin]
    if window.size < 8:
        window = values[begin : begin + reference]
    diffs = np.diff(window)
    sigma = 1.4826 * np.median(np.abs(diffs - np.median(diffs))) / np.sqrt(2.0)
    if not sigma > 0:
        sigma = np.std(diffs) / np.sqrt(2.0)
    return float(sigma) if sigma > 0 else max(1e-6, 0.01 * float(np.median(np.abs(window))))


def _apply_incident(series, incident, tl) -> None:
    kind, begin, end = incident["kind"], incident["begin"], incident["end"]
    shape = _KIND_SHAPES[kind]
    z = incident["z"]
    reference = tl.points(12 * 3600)
    length = end - begin
    for metric in incident["metrics"]:
        values = series[(incident["service"], metric)]
        segment = values[begin:end]
        if kind == "flatline":
            values[begin:end] = values[begin - 1] if begin > 0 else segment[0]
            continue
        sigma = _noise_sigma(values, begin, reference)
        size = max(incident["sigmas"] * sigma, shape.rel_floor * float(np.median(np.abs(segment))))
        direction = -1.0 if (metric in _DOWN_IS_BAD or kind == "dip") else 1.0
        if kind == "spike":
            direction = 1.0
        if kind in ("spike", "dip"):
            change = direction * size * np.clip(1.0 + 0.12 * z, 0.7, 1.3)
        elif kind == "level_shift":
            change = direction * size * np.ones(length)
        elif kind == "slow_drift":
            change = direction * size * np.arange(1, length + 1) / length
        elif kind == "variance_burst":
            change = size * z
        else:
            ramp = np.minimum(
                1.0, np.minimum(np.arange(1, length + 1), np.arange(length, 0, -1)) / 2
            )
            change = direction * size * ramp
        changed = segment + change
        if metric_kind(metric).name == "latency":
            changed = np.maximum(changed, 0.3 * segment)
        kind_bounds = metric_kind(metric)
        values[begin:end] = np.clip(changed, kind_bounds.lower, kind_bounds.upper)
    for p95, p50 in _LATENCY_PAIRS.items():
        key95, key50 = (incident["service"], p95), (incident["service"], p50)
        if p95 in incident["metrics"] and key50 in series:
            series[key95][begin:end] = np.maximum(
                series[key95][begin:end], 1.05 * series[key50][begin:end]
            )


def _round(series) -> None:
    for (_, metric), values in series.items():
        np.round(values, _DECIMALS[metric_kind(metric).name], out=values)


def _conflicting_value(value: float, metric: str) -> float:
    decimals = _DECIMALS[metric_kind(metric).name]
    upper = metric_kind(metric).upper
    for candidate in (value * 0.8, value * 1.2, value + 1.0, 1.0, 0.5):
        candidate = round(candidate, decimals)
        if candidate != value and candidate >= 0 and (upper is None or candidate <= upper):
            return candidate
    return value + 1.0


def _apply_bad_rows(series, bad, rng) -> list[tuple[str, str, int, float]]:
    """Write bad values in place; return the extra (duplicate) rows to append."""
    extra = []
    for service, metric, index, problem in bad:
        values = series[(service, metric)]
        if problem == "negative_latency":
            values[index] = -abs(values[index]) - 1.0
        elif problem == "ratio_above_one":
            values[index] = round(1.0 + float(rng.uniform(0.01, 1.5)), 6)
        elif problem == "nan":
            values[index] = np.nan
        elif problem == "inf":
            values[index] = np.inf
        elif problem == "duplicate":
            extra.append((service, metric, index, float(values[index])))
        else:
            extra.append((service, metric, index, _conflicting_value(float(values[index]), metric)))
    return extra


def _break_partition(series, present, broken, rng) -> None:
    _, _, first, last = broken
    for key, values in series.items():
        rows = np.flatnonzero(present[key][first:last]) + first
        hit = rows[rng.random(rows.size) < _BROKEN_FRACTION]
        kind = metric_kind(key[1])
        above = rng.random(hit.size) < 0.5 if kind.upper is not None else np.zeros(hit.size, bool)
        too_high = (kind.upper or 0.0) * rng.uniform(1.5, 100.0, hit.size)
        too_low = -(np.abs(values[hit]) + 1.0) * rng.uniform(1.0, 10.0, hit.size)
        values[hit] = np.round(np.where(above, too_high, too_low), 2)


def _assemble(tl, series, present, extra, series_codes) -> tuple[np.ndarray, ...]:
    codes, ts, values = [], [], []
    for key in sorted(series):
        rows = np.flatnonzero(present[key])
        codes.append(np.full(rows.size, series_codes[key], dtype=np.int64))
        ts.append(tl.ts_ns[rows])
        values.append(series[key][rows])
    for service, metric, index, value in extra:
        codes.append(np.array([series_codes[(service, metric)]], dtype=np.int64))
        ts.append(tl.ts_ns[index : index + 1])
        values.append(np.array([value]))
    return np.concatenate(codes), np.concatenate(ts), np.concatenate(values)


def generate(config: DemoConfig = DEFAULT_CONFIG) -> DemoData:
    """Generate the demo records, their label windows, incidents and the bad rows to expect."""
    tl = _Timeline.from_config(config)
    scales = _tenant_scales(config)
    broken = _broken(config, tl)
    all_keys = sorted(
        (tenant, service, metric)
        for tenant in config.tenants
        for service in config.services
        for metric in SERVICE_METRICS[service]
    )
    codes_of = {key: code for code, key in enumerate(all_keys)}
    parts = []
    scheduled: list[dict] = []
    bad_rows: list[dict] = []
    for tenant_index, tenant in enumerate(config.tenants):
        series = _clean_tenant(config, tl, tenant, scales[tenant])
        keys = sorted(series)
        present = _place_gaps(config, tl, tenant, keys)
        bad = _place_bad_rows(config, tl, tenant, keys, present, broken)
        incidents = _schedule(config, tl, tenant, tenant_index, present, bad, broken)
        for incident in incidents:
            _apply_incident(series, incident, tl)
        _round(series)
        extra = _apply_bad_rows(series, bad, _rng(config.seed, tenant, "bad-values"))
        if broken is not None and broken[0] == tenant:
            _break_partition(series, present, broken, _rng(config.seed, tenant, "broken"))
        tenant_codes = {(s, m): codes_of[(tenant, s, m)] for s, m in keys}
        parts.append(_assemble(tl, series, present, extra, tenant_codes))
        scheduled.extend(incidents)
        bad_rows.extend(
            {"tenant": tenant, "service": s, "metric": m, "ts": tl.iso(i), "problem": p}
            for s, m, i, p in bad
        )
    return DemoData(
        records=_frame(parts, all_keys),
        labels=_labels(scheduled, all_keys, tl),
        incidents=_incident_list(scheduled, tl),
        bad_rows=sorted(bad_rows, key=lambda r: (r["tenant"], r["ts"], r["service"], r["metric"])),
        broken_partition=None if broken is None else (broken[0], broken[1]),
    )


def _frame(parts, all_keys) -> pd.DataFrame:
    codes = np.concatenate([p[0] for p in parts])
    ts = np.concatenate([p[1] for p in parts])
    values = np.concatenate([p[2] for p in parts])
    # Stable, so a duplicate row lands right after the row it duplicates.
    order = np.lexsort((ts, codes))
    codes, ts, values = codes[order], ts[order], values[order]
    columns = {}
    for position, column in enumerate(("tenant", "service", "metric")):
        names = np.array([key[position] for key in all_keys], dtype=object)
        columns[column] = pd.Series(names[codes]).astype(str)
    columns["ts"] = pd.Series(pd.to_datetime(ts, unit="ns", utc=True)).astype("datetime64[ns, UTC]")
    columns["value"] = pd.Series(values, dtype="float64")
    columns["tags"] = pd.Series([""] * codes.size, dtype=object).astype(str)
    return pd.DataFrame(columns)[list(RECORD_COLUMNS)]


def _labels(scheduled, all_keys, tl) -> dict[str, list[list[str]]]:
    labels: dict[str, list[list[str]]] = {series_name(*key): [] for key in all_keys}
    for incident in sorted(scheduled, key=lambda i: i["begin"]):
        window = [tl.iso(incident["begin"]), tl.iso(incident["end"] - 1)]
        for metric in incident["metrics"]:
            labels[series_name(incident["tenant"], incident["service"], metric)].append(window)
    return labels


def _incident_list(scheduled, tl) -> list[dict]:
    ordered = sorted(scheduled, key=lambda i: (i["begin"], i["tenant"]))
    return [
        {
            "id": f"inc-{number:03d}",
            "kind": incident["kind"],
            "tenant": incident["tenant"],
            "service": incident["service"],
            "metrics": list(incident["metrics"]),
            "start": tl.iso(incident["begin"]),
            "end": tl.iso(incident["end"] - 1),
        }
        for number, incident in enumerate(ordered, start=1)
    ]


def write_demo(data: DemoData, out_dir: Path, *, fmt: str = "parquet") -> dict:
    """Write one records file per tenant plus the label, incident and bad-row JSON files."""
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = {}
    for tenant, frame in data.records.groupby("tenant", sort=True):
        path = out_dir / f"{tenant}.{fmt}"
        frame = frame.reset_index(drop=True)
        if fmt == "parquet":
            frame.to_parquet(path, index=False)
        else:
            frame = frame.assign(ts=frame["ts"].dt.strftime(TS_FORMAT))
            frame.to_csv(path, index=False, lineterminator="\n")
        records[str(tenant)] = {"path": str(path), "rows": len(frame)}
    documents = {
        "labels": data.labels,
        "incidents": data.incidents,
        "bad_rows": data.bad_rows,
    }
    paths = {}
    for name, document in documents.items():
        path = out_dir / f"{name}.json"
        path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        paths[name] = str(path)
    return {
        "format": fmt,
        "records": records,
        **paths,
        "rows": len(data.records),
        "series": len(data.labels),
        "label_windows": sum(len(w) for w in data.labels.values()),
        "incident_count": len(data.incidents),
        "bad_row_count": len(data.bad_rows),
        "broken_partition": list(data.broken_partition) if data.broken_partition else None,
    }
