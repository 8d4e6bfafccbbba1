"""What goes wrong on top of the clean signals: gaps, bad rows, the broken partition, and the
scheduled incidents of every kind applied to the series."""

import itertools

import numpy as np
import pandas as pd

from monitoring_pipelines.sources.demo.config import (
    _BROKEN_FRACTION,
    _CANDIDATES,
    _DECIMALS,
    _DOWN_IS_BAD,
    _GAP_MAX_SECONDS,
    _GAP_MIN_SECONDS,
    _INCIDENT_MARGIN_SECONDS,
    _INCIDENT_SEPARATION_SECONDS,
    _KIND_SHAPES,
    _LATENCY_PAIRS,
    BAD_ROW_PROBLEMS,
    INCIDENT_KINDS,
    DemoConfig,
)
from monitoring_pipelines.sources.demo.signals import _rng, _Timeline
from monitoring_pipelines.sources.records import metric_kind


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
