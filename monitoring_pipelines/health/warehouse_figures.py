"""The pipeline's health as the warehouse holds it, read in one connection at scrape time.

Every figure is a small aggregate (grouped by tenant, severity, receiver, stage or field, never by
series), so a scrape stays cheap and the label sets stay few. Quarantine reasons are one line of
text per row (they quote the bad value), so rows are counted by ``stage`` and ``field`` instead.
"""

from collections import defaultdict
from dataclasses import dataclass, field

import pandas as pd
import sqlalchemy as sa

from monitoring_pipelines.alerting import types
from monitoring_pipelines.warehouse import (
    alerts,
    anomaly_scores,
    clean_metrics,
    metrics,
    notifications,
    partition_states,
    quarantine,
)

# Quarantined rows whose tenant is empty or not one the pipeline knows (garbage in a file can name
# any number of them) are counted under this tenant, so bad input cannot grow the label sets.
UNKNOWN_TENANT = "unknown"
# Notifications still to deliver (the outbox's depth): waiting for their time or being sent.
UNDELIVERED = (types.PENDING, types.SENDING)


@dataclass
class WarehouseFigures:
    """What one scrape read from the warehouse; times are UTC epoch seconds."""

    ingested_rows: dict[str, int] = field(default_factory=dict)
    accepted_rows: dict[str, int] = field(default_factory=dict)
    # (tenant, stage, field) -> rows
    quarantined_rows: dict[tuple[str, str, str], int] = field(default_factory=dict)
    blocked_partitions: dict[str, int] = field(default_factory=dict)
    newest_accepted: dict[str, float] = field(default_factory=dict)
    newest_gridded: dict[str, float] = field(default_factory=dict)
    newest_scored: dict[str, float] = field(default_factory=dict)
    oldest_gridded: dict[str, float] = field(default_factory=dict)
    # (tenant, severity, kind) -> incidents not resolved
    open_incidents: dict[tuple[str, str, str], int] = field(default_factory=dict)
    # (receiver, status) -> notifications
    notifications: dict[tuple[str, str], int] = field(default_factory=dict)
    # receiver -> when the oldest notification due and not delivered yet was due
    oldest_due_undelivered: dict[str, float] = field(default_factory=dict)
    # receiver -> seconds from due to sent, one per notification sent
    delivery_seconds: dict[str, list[float]] = field(default_factory=dict)

    @property
    def tenants(self) -> list[str]:
        return sorted(set(self.accepted_rows) | set(self.blocked_partitions))

    def scoring_lag(self, tenant: str) -> float | None:
        """Seconds the newest scored point is behind the newest gridded one (the whole grid when
        nothing is scored yet); None for a tenant with nothing gridded."""
        gridded = self.newest_gridded.get(tenant)
        if gridded is None:
            return None
        scored = self.newest_scored.get(tenant, self.oldest_gridded[tenant])
        return max(gridded - scored, 0.0)


def epoch(value: object) -> float | None:
    """A stored time (naive means UTC, as SQLite returns it) as epoch seconds."""
    if value is None:
        return None
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.timestamp()


def read_warehouse_figures(
    engine: sa.Engine, now: float, known_tenants: tuple[str, ...] = ()
) -> WarehouseFigures:
    """Every warehouse figure of one scrape, in one connection. ``known_tenants`` (the configured
    ones) keep their name on quarantined rows even before any of their rows was accepted.

    Only the accepted rows are counted by a scan (of the ``(tenant, ts)`` index); newest and
    oldest times are one index lookup per tenant and table, and rows in are accepted plus
    quarantined, as ``monitoring-pipelines ingest`` counts them.
    """
    figures = WarehouseFigures()
    with engine.connect() as conn:
        figures.accepted_rows = _count_by_tenant(conn, metrics)
        figures.blocked_partitions = _blocked(conn)
        for tenant in figures.accepted_rows:
            for table, how, into in (
                (metrics, sa.func.max, figures.newest_accepted),
                (clean_metrics, sa.func.max, figures.newest_gridded),
                (clean_metrics, sa.func.min, figures.oldest_gridded),
                (anomaly_scores, sa.func.max, figures.newest_scored),
            ):
                ts = conn.execute(sa.select(how(table.c.ts)).where(table.c.tenant == tenant))
                if (value := epoch(ts.scalar())) is not None:
                    into[tenant] = value
        figures.quarantined_rows = _quarantined(conn, {*figures.tenants, *known_tenants})
        figures.open_incidents = _open_incidents(conn)
        _read_notifications(conn, figures, now)
    ingested = defaultdict(int, figures.accepted_rows)
    for (tenant, _, _), n in figures.quarantined_rows.items():
        ingested[tenant] += n
    figures.ingested_rows = dict(ingested)
    return figures


def _count_by_tenant(conn: sa.Connection, table: sa.Table) -> dict[str, int]:
    query = sa.select(table.c.tenant, sa.func.count()).group_by(table.c.tenant)
    return {tenant: int(n) for tenant, n in conn.execute(query)}


def _blocked(conn: sa.Connection) -> dict[str, int]:
    """Blocked day x tenant partitions per tenant (keys are ``<day>|<tenant>``)."""
    query = sa.select(partition_states.c.partition_key).where(partition_states.c.blocked)
    out: dict[str, int] = defaultdict(int)
    for (key,) in conn.execute(query):
        out[key.split("|", 1)[-1]] += 1
    return dict(out)


def _quarantined(conn: sa.Connection, tenants: set[str]) -> dict[tuple[str, str, str], int]:
    q = quarantine
    query = sa.select(q.c.tenant, q.c.stage, q.c.field, sa.func.count()).group_by(
        q.c.tenant, q.c.stage, q.c.field
    )
    out: dict[tuple[str, str, str], int] = defaultdict(int)
    for tenant, stage, field_name, n in conn.execute(query):
        out[(tenant if tenant in tenants else UNKNOWN_TENANT, stage, field_name)] += int(n)
    return dict(out)


def _open_incidents(conn: sa.Connection) -> dict[tuple[str, str, str], int]:
    a = alerts
    query = (
        sa.select(a.c.tenant, a.c.severity, a.c.kind, sa.func.count())
        .where(a.c.status != types.RESOLVED)
        .group_by(a.c.tenant, a.c.severity, a.c.kind)
    )
    return {(tenant, sev, kind): int(n) for tenant, sev, kind, n in conn.execute(query)}


def _read_notifications(conn: sa.Connection, figures: WarehouseFigures, now: float) -> None:
    n = notifications
    by_status = sa.select(n.c.receiver, n.c.status, sa.func.count()).group_by(
        n.c.receiver, n.c.status
    )
    figures.notifications = {(r, s): int(c) for r, s, c in conn.execute(by_status)}
    # The outbox is short (what is not delivered yet), so its rows are read as they are.
    waiting = sa.select(n.c.receiver, n.c.created_at, n.c.not_before).where(
        n.c.status.in_(UNDELIVERED)
    )
    for receiver, created, not_before in conn.execute(waiting):
        due = _due(created, not_before)
        if due <= now and due < figures.oldest_due_undelivered.get(receiver, now):
            figures.oldest_due_undelivered[receiver] = due
    sent = sa.select(n.c.receiver, n.c.created_at, n.c.not_before, n.c.sent_at).where(
        n.c.status == types.SENT, n.c.sent_at.is_not(None)
    )
    latencies: dict[str, list[float]] = defaultdict(list)
    for receiver, created, not_before, sent_at in conn.execute(sent):
        latencies[receiver].append(max(epoch(sent_at) - _due(created, not_before), 0.0))
    figures.delivery_seconds = dict(latencies)


def _due(created: object, not_before: object) -> float:
    """When a notification was due: when it was written, or at its deadline for one that waits
    on purpose (an escalation)."""
    return max(epoch(created), epoch(not_before) or 0.0)
