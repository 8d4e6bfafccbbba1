"""What the reports read from the warehouse: its contract tables, for one tenant or all of them.

Every query is bounded by a tenant (when the report is a tenant's) and a time window, so a tenant's
report cannot see another tenant's rows. Times are bound as UTC; SQLite hands timestamps back as
text, parsed here in one vectorised call.
"""

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from monitoring_pipelines.warehouse import (
    Warehouse,
    alerts,
    anomaly_scores,
    clean_metrics,
    metrics,
    notifications,
    quarantine,
)

MEMBERS = ("isolation_forest", "lstm", "prophet", "zscore")
# Incidents that began this long before a period can still be open in it.
OPEN_LOOKBACK = timedelta(days=92)


def utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def as_utc(value) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_convert(UTC) if ts.tzinfo else ts.tz_localize(UTC)


def _ts(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    for col in columns:
        if col in frame.columns:
            frame[col] = pd.to_datetime(frame[col], utc=True, format="ISO8601")
    return frame


def _read(wh: Warehouse, query) -> pd.DataFrame:
    with wh.engine.connect() as conn:
        return pd.read_sql(query, conn)


def _scoped(query, table: sa.Table, tenant: str | None):
    return query if tenant is None else query.where(table.c.tenant == tenant)


def _chunks(items: list, size: int = 500):
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass(frozen=True)
class Scope:
    """Which rows a report may read: one tenant's, or every tenant's (``tenant`` None)."""

    tenant: str | None

    @property
    def all_tenants(self) -> bool:
        return self.tenant is None


def read_incidents(wh: Warehouse, scope: Scope, start: datetime, end: datetime) -> pd.DataFrame:
    """Incidents that started in ``[start - OPEN_LOOKBACK, end)``; the caller picks the ones it
    counts (started in the period, or still open at its end)."""
    query = _scoped(
        sa.select(
            alerts.c.fingerprint,
            alerts.c.tenant,
            alerts.c.service,
            alerts.c.kind,
            alerts.c.severity,
            alerts.c.status,
            alerts.c.started_at,
            alerts.c.last_seen_at,
            alerts.c.resolved_at,
            alerts.c.acknowledged_at,
            alerts.c.score,
            alerts.c.metrics,
            alerts.c.partition_key,
            alerts.c.feedback,
        ).where(alerts.c.started_at >= utc(start) - OPEN_LOOKBACK, alerts.c.started_at < utc(end)),
        alerts,
        scope.tenant,
    ).order_by(alerts.c.started_at, alerts.c.fingerprint)
    frame = _ts(_read(wh, query), "started_at", "last_seen_at", "resolved_at", "acknowledged_at")
    frame["metrics"] = [json.loads(m or "[]") for m in frame["metrics"]]
    return frame


def read_notifications(wh: Warehouse, fingerprints: Iterable[str]) -> pd.DataFrame:
    columns = [
        notifications.c.fingerprint,
        notifications.c.tenant,
        notifications.c.receiver,
        notifications.c.event,
        notifications.c.status,
    ]
    frames = [
        _read(wh, sa.select(*columns).where(notifications.c.fingerprint.in_(chunk)))
        for chunk in _chunks(sorted(set(fingerprints)))
    ]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=[c.name for c in columns])
    return pd.concat(frames, ignore_index=True)


def read_flagged_scores(
    wh: Warehouse, scope: Scope, start: datetime, end: datetime
) -> pd.DataFrame:
    """The points the ensemble flagged, with each member's calibrated score."""
    t = anomaly_scores
    query = _scoped(
        sa.select(
            t.c.tenant,
            t.c.service,
            t.c.metric,
            t.c.ts,
            *(t.c[f"{m}_score"] for m in MEMBERS),
            t.c.ensemble_score,
            t.c.threshold,
        ).where(t.c.is_anomaly.is_(True), t.c.ts >= utc(start), t.c.ts < utc(end)),
        t,
        scope.tenant,
    )
    return _ts(_read(wh, query), "ts")


def read_score_series(
    wh: Warehouse, tenant: str, service: str, metric: str, start: datetime, end: datetime
) -> pd.DataFrame:
    t = anomaly_scores
    query = (
        sa.select(t.c.ts, t.c.value, t.c.ensemble_score, t.c.threshold, t.c.is_anomaly)
        .where(
            t.c.tenant == tenant,
            t.c.service == service,
            t.c.metric == metric,
            t.c.ts >= utc(start),
            t.c.ts < utc(end),
        )
        .order_by(t.c.ts)
    )
    return _ts(_read(wh, query), "ts")


def read_metric_values(
    wh: Warehouse, scope: Scope, names: Iterable[str], start: datetime, end: datetime
) -> pd.DataFrame:
    """Accepted metric values of the given metric names (every service) in the window."""
    t = metrics
    query = _scoped(
        sa.select(t.c.tenant, t.c.service, t.c.metric, t.c.ts, t.c.value).where(
            t.c.metric.in_(sorted(set(names))), t.c.ts >= utc(start), t.c.ts < utc(end)
        ),
        t,
        scope.tenant,
    )
    frame = _ts(_read(wh, query), "ts")
    frame["value"] = frame["value"].astype("float64")
    return frame


def metric_names(wh: Warehouse, scope: Scope, start: datetime, end: datetime) -> pd.DataFrame:
    """Distinct (tenant, service, metric) with accepted rows in the window."""
    t = metrics
    query = _scoped(
        sa.select(t.c.tenant, t.c.service, t.c.metric)
        .where(t.c.ts >= utc(start), t.c.ts < utc(end))
        .distinct(),
        t,
        scope.tenant,
    )
    return _read(wh, query).sort_values(["tenant", "service", "metric"], ignore_index=True)


def daily_counts(
    wh: Warehouse,
    table: sa.Table,
    tenants: Iterable[str],
    days: list[datetime],
    *,
    where=None,
) -> pd.DataFrame:
    """Rows per tenant and day (``days`` are day starts; each day ends at the next start).

    One count per tenant and day, so each uses the (tenant, ts) index: a range on ts alone
    would scan the whole table once per day."""
    rows = []
    with wh.engine.connect() as conn:
        for tenant in sorted(set(tenants)):
            for day_start, day_end in itertools.pairwise(days):
                query = sa.select(sa.func.count()).where(
                    table.c.tenant == tenant,
                    table.c.ts >= utc(day_start),
                    table.c.ts < utc(day_end),
                )
                if where is not None:
                    query = query.where(where)
                count = conn.execute(query).scalar_one()
                if count:
                    rows.append(
                        {"tenant": tenant, "day": day_start.date().isoformat(), "rows": count}
                    )
    return pd.DataFrame(rows, columns=["tenant", "day", "rows"])


def accepted_per_day(wh: Warehouse, tenants, days: list[datetime]) -> pd.DataFrame:
    return daily_counts(wh, metrics, tenants, days)


def gridded_per_day(wh: Warehouse, tenants, days: list[datetime]) -> pd.DataFrame:
    """Grid steps with a value (not gaps) per tenant and day."""
    return daily_counts(wh, clean_metrics, tenants, days, where=clean_metrics.c.is_gap.is_(False))


def grid_steps_per_day(wh: Warehouse, tenants, days: list[datetime]) -> pd.DataFrame:
    """Grid steps, gaps included, per tenant and day: zero on a day that was never gridded."""
    return daily_counts(wh, clean_metrics, tenants, days)


def known_tenants(wh: Warehouse, scope: Scope) -> list[str]:
    """Every tenant with accepted rows at any time (read from the tenant index)."""
    if scope.tenant is not None:
        return [scope.tenant]
    with wh.engine.connect() as conn:
        return sorted(conn.execute(sa.select(metrics.c.tenant).distinct()).scalars())


def newest_metric(wh: Warehouse, scope: Scope, end: datetime) -> dict[str, datetime]:
    """Per tenant, the newest accepted timestamp before ``end``."""
    t = metrics
    query = _scoped(
        sa.select(t.c.tenant, sa.func.max(t.c.ts)).where(t.c.ts < utc(end)), t, scope.tenant
    ).group_by(t.c.tenant)
    with wh.engine.connect() as conn:
        rows = conn.execute(query).all()
    return {tenant: as_utc(ts) for tenant, ts in rows if ts}


def read_quarantine(wh: Warehouse, scope: Scope, day_keys: list[str]) -> pd.DataFrame:
    """Quarantined rows of the period: quality-stage rows by their ``day|tenant`` partition, and
    parse-stage rows by their own (text) timestamp's day."""
    q = quarantine
    columns = (q.c.stage, q.c.partition_key, q.c.tenant, q.c.ts, q.c.field, q.c.reason)
    frames = []
    quality = sa.select(*columns).where(q.c.stage == "quality")
    day_set = set(day_keys)
    for frame in [_read(wh, _scoped(quality, q, scope.tenant))]:
        day = frame["partition_key"].fillna("").str.split("|").str[0]
        frames.append(frame[day.isin(day_set)])
    parse = sa.select(*columns).where(q.c.stage != "quality")
    frame = _read(wh, _scoped(parse, q, scope.tenant))
    frames.append(frame[frame["ts"].fillna("").str[:10].isin(day_set)])
    out = pd.concat(frames, ignore_index=True)
    out["day"] = [
        (pk or "").split("|")[0] if stage == "quality" else (ts or "")[:10]
        for stage, pk, ts in zip(out["stage"], out["partition_key"], out["ts"], strict=True)
    ]
    return out


def read_labels(path: Path, scope: Scope) -> list[dict]:
    """Label windows ``{tenant/service/metric: [[start, end], ...]}`` of the scope's series."""
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    out = []
    for series, windows in sorted(data.items()):
        parts = str(series).split("/")
        if len(parts) != 3 or (scope.tenant is not None and parts[0] != scope.tenant):
            continue
        for start, end in windows:
            out.append(
                {
                    "tenant": parts[0],
                    "service": parts[1],
                    "metric": parts[2],
                    "start": as_utc(start),
                    "end": as_utc(end),
                }
            )
    return out
