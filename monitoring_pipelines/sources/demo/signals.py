"""The clean signals: a seeded timeline, tenant load and utilisation, and each service's metrics
derived from them (seasonal, correlated, noisy)."""

import functools
import zlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from monitoring_pipelines.sources.demo.config import SERVICE_METRICS, TS_FORMAT, DemoConfig


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


def _requests_and_latency(r, tl, rate, noise, util, latency):
    """A request service's requests per interval (Poisson around ``rate`` a second with lognormal
    ``noise``) and its p50 and p95 latencies (``latency``: the arguments of :func:`_latency_pair`
    after the generator, util excepted)."""
    expected = rate * tl.step * _lognormal(r("requests_per_second"), noise, tl.n)
    requests = r("requests_per_second").poisson(expected)
    base_ms, *shape = latency
    return (requests, *_latency_pair(r("latency"), base_ms, util, *shape, tl.n))


def _api(config, tl, tenant, scale, load, util, hours) -> dict[str, np.ndarray]:
    r = functools.partial(_rng, config.seed, tenant, "api")

    n = tl.n
    requests, p50, p95 = _requests_and_latency(
        r, tl, 120.0 * scale * load, 0.02, util, (38.0, 0.7, 2.4, 0.8, 4.0)
    )
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
    r = functools.partial(_rng, config.seed, tenant, "playback")

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
    r = functools.partial(_rng, config.seed, tenant, "recommendations")

    n = tl.n
    requests, p50, p95 = _requests_and_latency(
        r, tl, 45.0 * scale * load, 0.03, util, (85.0, 0.9, 2.6, 1.5, 8.0)
    )
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
