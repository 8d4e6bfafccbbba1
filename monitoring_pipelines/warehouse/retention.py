"""Retention: how long each kind of row and report is kept, and deleting what is older.

Per store, in days, from ``MONITORING_RETENTION`` (``landing=30d,metrics=400d,...``; ``d`` days,
``w`` weeks, a bare number is days) over :data:`DEFAULT_DAYS`. A setting below
:data:`MIN_DAYS` is refused: training fits on 5 weeks of clean metrics and scoring reads 37 days
of look-back, so those tables keep at least 42 days.

:func:`apply_retention` deletes in batches of ``batch_size`` rows, each its own short transaction
(``DELETE ... WHERE rowid IN (SELECT rowid ... LIMIT n)`` on SQLite, ``ctid = ANY(ARRAY(...))``
on PostgreSQL), so the warehouse is never locked for long and writers slip in between batches.
Notifications go only once they are done with (sent, dead, suppressed, cancelled), never while
pending or being sent. Reports are folders ``reports/<kind>/<period start>/``.
"""

import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from monitoring_pipelines.warehouse import audit
from monitoring_pipelines.warehouse.schema import (
    anomaly_scores,
    clean_metrics,
    landing,
    metrics,
    notifications,
    quarantine,
    shadow_scores,
)

DEFAULT_DAYS: Mapping[str, int] = {
    "landing": 45,
    "metrics": 400,
    "clean_metrics": 400,
    "anomaly_scores": 400,
    "shadow_scores": 90,
    "quarantine": 90,
    "notifications": 90,
    "reports": 400,
}
# Training's rolling window (3 weeks fit, 1 calibration, 1 validation) and scoring's 37 days of
# look-back read these; a day of landing is what the gate of today's partitions reads.
MIN_DAYS: Mapping[str, int] = {
    "landing": 2,
    "metrics": 42,
    "clean_metrics": 42,
    "anomaly_scores": 42,
}
# Notification statuses that are finished with; pending and sending rows are never deleted.
DONE_NOTIFICATIONS = ("sent", "dead", "suppressed", "cancelled")
DEFAULT_BATCH = 5000
DEFAULT_RETENTION_CRON = "30 3 * * *"

# store -> (table, time column); reports are files.
_TABLES = {
    "landing": (landing, "ts"),
    "metrics": (metrics, "ts"),
    "clean_metrics": (clean_metrics, "ts"),
    "anomaly_scores": (anomaly_scores, "ts"),
    "shadow_scores": (shadow_scores, "ts"),
    "quarantine": (quarantine, "quarantined_at"),
    "notifications": (notifications, "created_at"),
}
_VALUE = re.compile(r"^(\d+)\s*([dw]?)$")


def parse_retention(text: str) -> tuple[tuple[str, int], ...]:
    """``landing=30d,metrics=400d`` over the defaults, as sorted ``(store, days)`` pairs;
    ValueError (one line naming the entry) for an unknown store, a bad value or too short."""
    days = dict(DEFAULT_DAYS)
    for entry in (e.strip() for e in (text or "").split(",")):
        if not entry:
            continue
        name, _, value = (part.strip() for part in entry.partition("="))
        if name not in DEFAULT_DAYS:
            raise ValueError(
                f"MONITORING_RETENTION: {entry!r}: unknown store {name!r} "
                f"(known: {', '.join(DEFAULT_DAYS)})"
            )
        match = _VALUE.match(value)
        if not match or int(match[1]) < 1:
            raise ValueError(
                f"MONITORING_RETENTION: {entry!r}: expected a number of days like 30d or 8w"
            )
        days[name] = int(match[1]) * (7 if match[2] == "w" else 1)
        if days[name] < MIN_DAYS.get(name, 1):
            raise ValueError(
                f"MONITORING_RETENTION: {entry!r}: {name} must keep at least "
                f"{MIN_DAYS[name]} days (training and scoring read that far back)"
            )
    return tuple(sorted(days.items()))


@dataclass
class RetentionOutcome:
    cutoffs: dict[str, datetime] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)
    batches: dict[str, int] = field(default_factory=dict)


def _row_id(dialect: str) -> sa.ColumnElement:
    return sa.literal_column("ctid" if dialect == "postgresql" else "rowid")


def delete_in_batches(
    engine: sa.Engine, table: sa.Table, where: list, batch_size: int = DEFAULT_BATCH
) -> tuple[int, int]:
    """Delete the rows of ``table`` matching ``where``, ``batch_size`` per transaction;
    returns ``(rows, batches)``."""
    dialect = engine.dialect.name
    rid = _row_id(dialect)
    inner = sa.select(rid).select_from(table).where(*where).limit(batch_size)
    if dialect == "postgresql":
        condition = rid == sa.func.any(sa.func.array(inner.scalar_subquery()))
    else:
        condition = rid.in_(inner)
    total = batches = 0
    while True:
        with engine.begin() as conn:
            deleted = conn.execute(table.delete().where(condition)).rowcount
        total += deleted
        batches += 1
        if deleted < batch_size:
            return total, batches


def _expired_reports(reports_dir: Path, before: date) -> list[Path]:
    """Report folders ``<kind>/<period start>/`` whose period started before ``before``."""
    found = []
    for kind in sorted(p for p in Path(reports_dir).glob("*") if p.is_dir()):
        for period in sorted(p for p in kind.iterdir() if p.is_dir()):
            try:
                start = date.fromisoformat(period.name)
            except ValueError:
                continue
            if start < before:
                found.append(period)
    return found


def apply_retention(
    engine: sa.Engine,
    reports_dir: Path,
    days: Mapping[str, int] | tuple[tuple[str, int], ...],
    *,
    now: datetime | None = None,
    batch_size: int = DEFAULT_BATCH,
    log: Callable[[str], None] = lambda line: None,
) -> RetentionOutcome:
    """Delete every row and report older than its store's retention; one ``log`` line per store."""
    days = dict(days)
    now = now or datetime.now(UTC)
    outcome = RetentionOutcome()
    for name, (table, column) in _TABLES.items():
        cutoff = now - timedelta(days=days[name])
        where = [table.c[column] < cutoff]
        if name == "notifications":
            where.append(table.c.status.in_(DONE_NOTIFICATIONS))
        rows, batches = delete_in_batches(engine, table, where, batch_size)
        outcome.cutoffs[name], outcome.deleted[name], outcome.batches[name] = cutoff, rows, batches
        log(f"retention: {name}: {rows} rows older than {cutoff:%Y-%m-%d %H:%M} UTC deleted")
    cutoff = now - timedelta(days=days["reports"])
    expired = _expired_reports(reports_dir, cutoff.date())
    for folder in expired:
        shutil.rmtree(folder)
    outcome.cutoffs["reports"], outcome.deleted["reports"] = cutoff, len(expired)
    outcome.batches["reports"] = 1
    log(f"retention: reports: {len(expired)} report periods before {cutoff:%Y-%m-%d} deleted")
    audit.record(
        engine,
        actor=audit.PIPELINE,
        action=audit.RETENTION,
        after={"deleted": outcome.deleted, "days": days},
        reason="daily retention",
    )
    return outcome
