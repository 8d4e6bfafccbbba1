"""From anomaly scores to incidents: hysteresis, grouping, severity and a data-only identity.

One incident is one episode of one service of one tenant, however many of its metrics misbehave
together. The rules, per tenant (:class:`~monitoring_pipelines.alerting.policy.TenantSettings`):

- **Open.** A metric is *hot* at a point when its ensemble score reaches its threshold divided by
  the tenant's ``sensitivity``. An incident opens at the first point of a run of consecutive hot
  points lasting at least ``min_duration`` (a run of *k* points lasts *k* x the data's step).
- **Stay open.** A metric is *quiet* when its score is below ``resolve_ratio`` x that level. The
  incident resolves only once *every* metric of the service has been quiet for ``resolve_after``;
  a dip shorter than that, or a score hovering between the two levels, keeps it open, so it does
  not flap. Metrics whose hot points fall inside the open episode join it (they move together).
  Missing points (gaps) count as quiet; points without a score (NaN) are neither hot nor quiet.
- **End.** ``last_seen_at`` is the last point over the resolve level, ``resolved_at`` one step
  after it. An incident still open when the data ends is ``firing`` (``resolved_at`` None).
- **Identity.** The fingerprint is ``types.fingerprint(tenant, service, "anomaly", started_at)``:
  data only, so re-running a partition, or scoring a span that also covers the previous day, gives
  an incident that continues across midnight the same fingerprint. Feed the same lookback to every
  run (e.g. the previous day and the partition day, with ``since`` = the partition start). An
  incident that began before the data does is continued from ``previous`` when its last stored
  point is closer than ``resolve_after`` to the episode's first point.

Severity is scored by :mod:`severity` from the excess, duration, metrics and impact weight.
Incidents from pipeline events (a blocked partition, a failed run) are built in
:mod:`~monitoring_pipelines.alerting.pipeline_incidents`.
"""

import json
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from itertools import groupby

import numpy as np
import pandas as pd

from monitoring_pipelines.alerting import types
from monitoring_pipelines.alerting.policy import AlertingPolicy, TenantSettings
from monitoring_pipelines.alerting.severity import severity_for, severity_points
from monitoring_pipelines.alerting.types import Incident, MetricEvidence

DEFAULT_STEP = timedelta(minutes=5)

Config = TenantSettings | AlertingPolicy | Mapping[str, TenantSettings]


def _settings_lookup(config: Config) -> Callable[[str], TenantSettings]:
    if isinstance(config, TenantSettings):
        return lambda _tenant: config
    if isinstance(config, AlertingPolicy):
        return config.settings
    default = TenantSettings()
    return lambda tenant: config.get(tenant, default)


def _to_utc(value) -> datetime:
    return pd.Timestamp(value).tz_convert(UTC).to_pydatetime()


def _fmt(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"


def detect_incidents(
    scores: pd.DataFrame,
    config: Config,
    *,
    run_id: str | None,
    partition_key: str | None,
    since: datetime | None = None,
    previous: Iterable[Incident] = (),
) -> list[Incident]:
    """Incidents in ``scores`` (rows of ``anomaly_scores``: tenant, service, metric, ts, value,
    ensemble_score, threshold and optionally model_versions), sorted by start.

    ``config`` is one tenant's settings, the whole policy, or a mapping tenant -> settings.
    ``since`` drops incidents whose last point is before it (they belong to an earlier partition
    fed as lookback). ``previous`` are stored incidents that may continue into this data.

    Longer than most functions here on purpose: it is one vectorised pass over all the scores
    (hot runs, then episodes per service, then the evidence of each), and each stage reads the
    arrays the earlier ones computed; cut apart, they would pass a dozen arrays around.
    """
    if scores is None or scores.empty:
        return []
    lookup = _settings_lookup(config)
    cols = ["tenant", "service", "metric", "ts", "value", "ensemble_score", "threshold"]
    has_versions = "model_versions" in scores.columns
    df = scores[cols + (["model_versions"] if has_versions else [])].copy()
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    df = df.sort_values(["tenant", "service", "metric", "ts"], kind="stable").reset_index(drop=True)

    settings = {t: lookup(t) for t in df["tenant"].unique()}
    sensitivity = df["tenant"].map({t: s.sensitivity for t, s in settings.items()}).to_numpy(float)
    ratio = df["tenant"].map({t: s.resolve_ratio for t, s in settings.items()}).to_numpy(float)

    origin = df["ts"].min()
    t = ((df["ts"] - origin) // pd.Timedelta(seconds=1)).to_numpy(np.int64)
    series = df.groupby(["tenant", "service", "metric"], sort=False).ngroup().to_numpy(np.int64)
    service = df.groupby(["tenant", "service"], sort=False).ngroup().to_numpy(np.int64)

    same = np.zeros(len(df), dtype=bool)
    same[1:] = series[1:] == series[:-1]
    gaps = np.diff(t, prepend=t[0])
    positive = gaps[same & (gaps > 0)]
    step = int(np.median(positive)) if len(positive) else int(DEFAULT_STEP.total_seconds())

    score = df["ensemble_score"].to_numpy(float)
    level = df["threshold"].to_numpy(float) / sensitivity
    with np.errstate(invalid="ignore"):
        hot = score >= level
        active = score >= level * ratio

    # Runs of consecutive hot points per series; a missing point breaks a run.
    prev_hot = np.zeros(len(df), dtype=bool)
    prev_hot[1:] = hot[:-1]
    starts_run = hot & ~(prev_hot & same & (gaps <= 1.5 * step))
    hot_idx = np.flatnonzero(hot)
    if not len(hot_idx):
        return []
    run_label = np.cumsum(starts_run)[hot_idx]
    first_pos = np.flatnonzero(np.r_[True, run_label[1:] != run_label[:-1]])
    last_pos = np.r_[first_pos[1:] - 1, len(hot_idx) - 1]
    run_first, run_last = t[hot_idx[first_pos]], t[hot_idx[last_pos]]
    run_tenant = df["tenant"].to_numpy()[hot_idx[first_pos]]
    min_duration = np.array(
        [settings[x].min_duration.total_seconds() for x in run_tenant], dtype=float
    )
    qualifying = (run_last - run_first + step) >= min_duration
    if not qualifying.any():
        return []

    # Episodes per service: active points (any metric) closer than resolve_after of quiet.
    span = int(t.max()) + 1
    key = service * span + t
    ukeys = np.unique(key[active])
    u_service, u_t = ukeys // span, ukeys % span
    service_tenant = df.groupby(service)["tenant"].first()
    resolve_after = service_tenant.map(
        {x: s.resolve_after.total_seconds() for x, s in settings.items()}
    ).to_numpy(float)
    quiet = np.diff(u_t, prepend=u_t[0]) - step
    new_episode = np.r_[
        True, (u_service[1:] != u_service[:-1]) | (quiet[1:] >= resolve_after[u_service[1:]])
    ]
    episode = np.cumsum(new_episode) - 1
    ep_first = np.flatnonzero(new_episode)
    ep_last = np.r_[ep_first[1:] - 1, len(ukeys) - 1]

    run_rows = hot_idx[first_pos[qualifying]]
    run_episode = episode[np.searchsorted(ukeys, key[run_rows])]
    opened: dict[int, int] = {}
    for ep, start in zip(run_episode.tolist(), t[run_rows].tolist(), strict=True):
        opened[ep] = min(start, opened.get(ep, start))

    # Evidence: hot points of the opened episodes, from the opening point on.
    hot_episode = episode[np.searchsorted(ukeys, key[hot_idx])]
    in_incident = np.isin(hot_episode, list(opened))
    ev = df.iloc[hot_idx[in_incident]].copy()
    ev["episode"] = hot_episode[in_incident]
    ev["t"] = t[hot_idx[in_incident]]
    ev["level"] = level[hot_idx[in_incident]]
    ev = ev[ev["t"].to_numpy() >= ev["episode"].map(opened).to_numpy()]
    ev["excess"] = ev["ensemble_score"] / ev["level"] - 1.0
    service_end = pd.Series(t).groupby(service).max().to_numpy()
    step_delta = timedelta(seconds=step)

    # One row per (episode, metric): its peak, first and last hot points, and how many.
    ev = ev.reset_index(drop=True)
    grouped = ev.groupby(["episode", "metric"], sort=True)
    peak = grouped["ensemble_score"].idxmax().to_numpy()
    agg = pd.DataFrame(
        {
            "episode": ev["episode"].to_numpy()[peak],
            "tenant": ev["tenant"].to_numpy()[peak],
            "service": ev["service"].to_numpy()[peak],
            "metric": ev["metric"].to_numpy()[peak],
            "peak": ev["ensemble_score"].to_numpy()[peak],
            "value": ev["value"].to_numpy()[peak],
            "level": ev["level"].to_numpy()[peak],
            "versions": ev["model_versions"].to_numpy()[peak] if has_versions else "{}",
            "first": grouped["ts"].min().to_numpy(),
            "last": grouped["ts"].max().to_numpy(),
            "points": grouped.size().to_numpy(),
        }
    )

    incidents = []
    for ep, rows in groupby(agg.itertuples(index=False), key=lambda r: r.episode):
        rows = list(rows)
        svc = int(u_service[ep_first[ep]])
        cfg = settings[rows[0].tenant]
        started = _to_utc(origin + pd.Timedelta(seconds=opened[ep]))
        last_active = int(u_t[ep_last[ep]])
        last_seen = _to_utc(origin + pd.Timedelta(seconds=last_active))
        ended = (service_end[svc] - last_active) >= cfg.resolve_after.total_seconds()
        # A later episode of the same service means this one went quiet long enough.
        ended = ended or (ep_last[ep] + 1 < len(ukeys) and u_service[ep_last[ep] + 1] == svc)
        incidents.append(
            _anomaly_incident(
                rows,
                cfg,
                started,
                last_seen,
                ended,
                step_delta,
                run_id=run_id,
                partition_key=partition_key,
            )
        )
    incidents = _continue_previous(incidents, previous, settings, step_delta)
    if since is not None:
        incidents = [i for i in incidents if i.last_seen_at >= since]
    return sorted(incidents, key=lambda i: (i.started_at, i.tenant, i.service))


def _anomaly_incident(
    rows: list,
    cfg: TenantSettings,
    started: datetime,
    last_seen: datetime,
    ended: bool,
    step_delta: timedelta,
    *,
    run_id: str | None,
    partition_key: str | None,
) -> Incident:
    """One episode's incident from its per-metric rows: evidence, severity, summary, labels."""
    tenant, service_name = rows[0].tenant, rows[0].service
    evidence = _evidence(rows)
    duration = last_seen - started + step_delta
    excess = max(m.peak_score / m.threshold - 1.0 for m in evidence)
    weight = max(cfg.weight(m.metric) for m in evidence)
    severity = severity_for(severity_points(excess, duration, len(evidence), weight))
    versions = _versions(max(rows, key=lambda r: r.peak).versions)
    names = [m.metric for m in evidence]
    strongest = evidence[0]
    return Incident(
        fingerprint=types.fingerprint(tenant, service_name, types.ANOMALY, started),
        tenant=tenant,
        service=service_name,
        kind=types.ANOMALY,
        severity=severity,
        status=types.RESOLVED if ended else types.FIRING,
        started_at=started,
        last_seen_at=last_seen,
        resolved_at=last_seen + step_delta if ended else None,
        score=max(m.peak_score for m in evidence),
        metrics=tuple(evidence),
        model_versions=versions,
        run_id=run_id,
        partition_key=partition_key,
        summary=(
            f"{tenant}/{service_name}: {', '.join(names)} anomalous for "
            f"{_fmt(duration)} (peak score {strongest.peak_score:.2f} on "
            f"{strongest.metric}, threshold {strongest.threshold:.2f})"
        ),
        labels={
            "tenant": tenant,
            "service": service_name,
            "kind": types.ANOMALY,
            "severity": severity.label,
            "metric": strongest.metric,
            "metrics": ",".join(sorted(names)),
        },
    )


def _evidence(rows: list) -> list[MetricEvidence]:
    """Each metric's evidence of an episode, the strongest (score over threshold) first."""
    evidence = [
        MetricEvidence(
            metric=str(r.metric),
            peak_score=float(r.peak),
            peak_value=None if pd.isna(r.value) else float(r.value),
            threshold=float(r.level),
            first_ts=_to_utc(r.first),
            last_ts=_to_utc(r.last),
            points=int(r.points),
        )
        for r in rows
    ]
    evidence.sort(key=lambda m: (-(m.peak_score / m.threshold), m.metric))
    return evidence


def _versions(raw) -> dict[str, int]:
    if isinstance(raw, dict):
        return {str(k): int(v) for k, v in raw.items()}
    try:
        data = json.loads(raw) if isinstance(raw, str) and raw else {}
    except ValueError:
        return {}
    return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _continue_previous(
    incidents: list[Incident],
    previous: Iterable[Incident],
    settings: Mapping[str, TenantSettings],
    step: timedelta,
) -> list[Incident]:
    """Give an episode that began before the data the identity of the stored incident it
    continues (same tenant and service, gap shorter than resolve_after)."""
    by_service: dict[tuple[str, str], list[Incident]] = {}
    for p in previous:
        p = getattr(p, "incident", p)
        if p.kind == types.ANOMALY:
            by_service.setdefault((p.tenant, p.service), []).append(p)
    if not by_service:
        return incidents
    out = []
    for inc in incidents:
        window = settings[inc.tenant].resolve_after + step
        earlier = [
            p
            for p in by_service.get((inc.tenant, inc.service), [])
            if p.started_at < inc.started_at and inc.started_at - p.last_seen_at <= window
        ]
        if earlier:
            first = min(earlier, key=lambda p: p.started_at)
            inc.fingerprint, inc.started_at = first.fingerprint, first.started_at
        out.append(inc)
    return out
