"""The warehouse: the single source of truth for data, through SQLAlchemy 2.

SQLite by default, PostgreSQL by URL; the same code and the same tests run on both. Every write
replaces a well-defined slice (a source's rows, a partition's rows) inside one transaction, so
re-running anything never duplicates rows.
"""

import contextlib
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa

from monitoring_pipelines.ml.catalogue import CATALOGUE

metadata = sa.MetaData()

_TS = sa.DateTime(timezone=True)


def _series_point() -> list[sa.Column]:
    """The key columns of a point of a series; fresh Column objects for each table."""
    return [
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("ts", _TS, nullable=False),
    ]


# Rows exactly as parsed from a source, before the quality gate: raw_metrics reads its partition
# from here, so a dropped file, a query and the demo all pass through the same gate.
landing = sa.Table(
    "landing",
    metadata,
    sa.Column("source", sa.String(512), nullable=False),
    sa.Column("source_row", sa.BigInteger, nullable=False),
    *_series_point(),
    sa.Column("value", sa.Float, nullable=True),
    sa.Column("tags", sa.Text, nullable=False, default=""),
    sa.PrimaryKeyConstraint("source", "source_row"),
    sa.Index("ix_landing_tenant_ts", "tenant", "ts"),
)

metrics = sa.Table(
    "metrics",
    metadata,
    *_series_point(),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("tags", sa.Text, nullable=False, default=""),
    sa.Column("source", sa.String(512), nullable=False),
    sa.PrimaryKeyConstraint("tenant", "service", "metric", "ts"),
    sa.Index("ix_metrics_tenant_ts", "tenant", "ts"),
)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    # parse: refused while reading the source; quality: refused by the quality gate.
    sa.Column("stage", sa.String(16), nullable=False),
    sa.Column("partition_key", sa.String(128), nullable=True),
    sa.Column("source", sa.String(512), nullable=False),
    sa.Column("source_row", sa.BigInteger, nullable=False),
    sa.Column("tenant", sa.String(256), nullable=True),
    sa.Column("ts", sa.String(64), nullable=True),
    sa.Column("field", sa.String(64), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("raw", sa.Text, nullable=False),
    sa.Column("quarantined_at", _TS, nullable=False),
    sa.Index("ix_quarantine_source", "source"),
    sa.Index("ix_quarantine_partition", "stage", "partition_key"),
)

# One regular grid per series: gaps are rows with value NULL and is_gap true, never invented values.
clean_metrics = sa.Table(
    "clean_metrics",
    metadata,
    *_series_point(),
    sa.Column("value", sa.Float, nullable=True),
    sa.Column("is_gap", sa.Boolean, nullable=False),
    sa.Column("n_raw", sa.Integer, nullable=False),
    sa.PrimaryKeyConstraint("tenant", "service", "metric", "ts"),
    sa.Index("ix_clean_tenant_ts", "tenant", "ts"),
)

# Per point: each detector's calibrated score, the ensemble score, the decision and the model
# versions that produced them. Keyed like the metrics, so re-scoring a partition replaces it.
anomaly_scores = sa.Table(
    "anomaly_scores",
    metadata,
    *_series_point(),
    sa.Column("value", sa.Float, nullable=True),
    *(sa.Column(row.score_column, sa.Float, nullable=True) for row in CATALOGUE.values()),
    sa.Column("ensemble_score", sa.Float, nullable=True),
    sa.Column("threshold", sa.Float, nullable=True),
    sa.Column("is_anomaly", sa.Boolean, nullable=False),
    sa.Column("model_versions", sa.Text, nullable=False),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.PrimaryKeyConstraint("tenant", "service", "metric", "ts"),
    sa.Index("ix_scores_tenant_ts", "tenant", "ts"),
)

# Challengers scored in shadow beside the champions on live days: per point, the challenger's
# own calibrated score and the ensemble score with it in its champion's place, against the same
# threshold. Read by the promotion gate (what the challenger would have flagged); never by
# alerting, so nothing here ever pages.
shadow_scores = sa.Table(
    "shadow_scores",
    metadata,
    *_series_point(),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("score", sa.Float, nullable=True),
    sa.Column("ensemble_score", sa.Float, nullable=True),
    sa.Column("threshold", sa.Float, nullable=True),
    sa.Column("is_anomaly", sa.Boolean, nullable=False),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.PrimaryKeyConstraint("tenant", "service", "metric", "ts", "kind", "version"),
    sa.Index("ix_shadow_tenant_kind_version", "tenant", "kind", "version", "ts"),
)

# The alert threshold of each series on the ensemble score, calibrated on held-out data to a target
# false-alarm rate. Kept apart from the models: changing the policy never retrains anything.
thresholds = sa.Table(
    "thresholds",
    metadata,
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("series", sa.String(200), nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("policy", sa.Text, nullable=False),
    sa.Column("computed_at", _TS, nullable=False),
    sa.PrimaryKeyConstraint("tenant", "series"),
)

# What each champion detector's calibrators had seen when a tenant's scoring stopped at ``as_of``
# (UTC ns): the next day is scored from it instead of from the first point. Keyed by position,
# so re-scoring an older day adds an older row and never overwrites a newer one.
score_states = sa.Table(
    "score_states",
    metadata,
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("as_of", sa.BigInteger, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("created_at", _TS, nullable=False),
    sa.PrimaryKeyConstraint("tenant", "kind", "version", "as_of"),
)

# One row per incident, keyed by its fingerprint (computed from the data), so re-running a
# partition updates the incident instead of raising a second one.
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("fingerprint", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("service", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("started_at", _TS, nullable=False),
    sa.Column("last_seen_at", _TS, nullable=False),
    sa.Column("resolved_at", _TS, nullable=True),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("metrics", sa.Text, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("labels", sa.Text, nullable=False),
    sa.Column("model_versions", sa.Text, nullable=False),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("partition_key", sa.String(128), nullable=True),
    sa.Column("acknowledged_by", sa.String(128), nullable=True),
    sa.Column("acknowledged_at", _TS, nullable=True),
    # Set when a person resolved the incident by hand; re-runs keep it resolved.
    sa.Column("resolved_by", sa.String(128), nullable=True),
    # Reviewer feedback (e.g. "false_positive"), kept for the reports and the promotion gate.
    sa.Column("feedback", sa.String(32), nullable=True),
    sa.Column("feedback_note", sa.Text, nullable=True),
    sa.Column("updated_at", _TS, nullable=False),
    sa.Index("ix_alerts_tenant_started", "tenant", "started_at"),
    sa.Index("ix_alerts_status", "status"),
)

# The outbox: one row per notification, keyed by its idempotency key, written in the same
# transaction as the incident it is about; the dispatcher delivers it at least once.
notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("idempotency_key", sa.String(64), primary_key=True),
    sa.Column("fingerprint", sa.String(32), nullable=False),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("receiver", sa.String(128), nullable=False),
    sa.Column("event", sa.String(16), nullable=False),
    sa.Column("locale", sa.String(8), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    # pending -> sending (leased) -> sent | dead | cancelled (an escalation whose incident was
    # acknowledged or resolved first); suppressed rows (silenced, rate limited) are kept with
    # their reason so nothing disappears without a trace.
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("not_before", _TS, nullable=True),
    sa.Column("next_attempt_at", _TS, nullable=False),
    sa.Column("lease_until", _TS, nullable=True),
    # Which claim holds the lease: a dispatcher whose lease expired and was taken over by another
    # cannot overwrite the newer claim's outcome.
    sa.Column("lease_token", sa.String(32), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("sent_at", _TS, nullable=True),
    sa.Index("ix_notifications_due", "status", "next_attempt_at"),
    sa.Index("ix_notifications_fingerprint", "fingerprint"),
)

# One row per ingested source (file or query) with its fingerprint and counts.
ingests = sa.Table(
    "ingests",
    metadata,
    sa.Column("source", sa.String(512), primary_key=True),
    sa.Column("fingerprint", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("rows_in", sa.BigInteger, nullable=False),
    sa.Column("staged", sa.BigInteger, nullable=False),
    sa.Column("quarantined", sa.BigInteger, nullable=False),
    sa.Column("partitions", sa.Text, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    # The Dagster run that staged this content, so the sensor knows which partitions to request.
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("ingested_at", _TS, nullable=False),
    # Partitions this content must see gated before the ingest is done (JSON list): those it
    # touches now and those its previous content touched, whose rows it no longer provides.
    sa.Column("pending", sa.Text, nullable=True),
)

# Ingest status: "staged" once the file's rows are in landing (atomically with its parse
# quarantine, its ingest row and the bumped partition versions), "ingested" once every partition
# in ``pending`` is gated at that version and gridded or recorded as blocked. A re-run skips only
# "ingested" content, so a crash anywhere before that is redone, never lost.
STAGED, INGESTED, FAILED = "staged", "ingested", "failed"

# Where each day x tenant partition stands. Staging bumps ``version``; a gate run records the
# version it judged (with the verdict), a grid run the version it gridded. A partition is settled
# when the gate caught up with the version and the grid did too, unless the gate blocked it.
partition_states = sa.Table(
    "partition_states",
    metadata,
    sa.Column("partition_key", sa.String(320), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("gated_version", sa.BigInteger, nullable=False),
    sa.Column("gridded_version", sa.BigInteger, nullable=False),
    sa.Column("blocked", sa.Boolean, nullable=False),
    sa.Column("updated_at", _TS, nullable=False),
)

RECORD_TABLES = {
    "landing": landing,
    "metrics": metrics,
    "clean_metrics": clean_metrics,
    "anomaly_scores": anomaly_scores,
    "shadow_scores": shadow_scores,
}


@dataclass(frozen=True)
class IngestRecord:
    source: str
    fingerprint: str
    status: str
    rows_in: int
    staged: int
    quarantined: int
    partitions: tuple[str, ...]
    error: str | None = None
    run_id: str | None = None
    # Partitions to see gated before the ingest is done (defaults to ``partitions``).
    pending: tuple[str, ...] | None = None


@dataclass(frozen=True)
class PartitionState:
    version: int
    gated_version: int
    gridded_version: int
    blocked: bool

    @property
    def gated(self) -> bool:
        return self.gated_version >= self.version

    @property
    def settled(self) -> bool:
        return self.gated and (self.blocked or self.gridded_version >= self.version)


def _now() -> datetime:
    return datetime.now(UTC)


def _py_datetimes(values: pd.Series) -> list[datetime]:
    return list(pd.to_datetime(values, utc=True).dt.to_pydatetime())


def _records(frame: pd.DataFrame, columns: Iterable[str]) -> list[dict]:
    cols = list(columns)
    data = {}
    for col in cols:
        series = frame[col]
        if col == "ts" and pd.api.types.is_datetime64_any_dtype(series):
            data[col] = _py_datetimes(series)
        elif pd.api.types.is_float_dtype(series):
            arr = series.to_numpy(dtype="float64")
            data[col] = [None if np.isnan(v) else float(v) for v in arr]
        elif pd.api.types.is_bool_dtype(series):
            data[col] = [bool(v) for v in series.to_numpy()]
        elif pd.api.types.is_integer_dtype(series):
            data[col] = [int(v) for v in series.to_numpy()]
        else:
            data[col] = series.tolist()
    return [dict(zip(cols, row, strict=True)) for row in zip(*(data[c] for c in cols), strict=True)]


# How SQLAlchemy stores a DateTime on SQLite: text that sorts and compares as time.
_SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"


def _datetime_text(series: pd.Series, separator: str = " ", suffix: str = "") -> np.ndarray:
    """UTC instants as ``YYYY-MM-DD HH:MM:SS.ffffff`` text (None for NaT), as SQLAlchemy binds
    them on SQLite. Metric timestamps repeat across series, so each distinct instant is formatted
    once: ~20x faster than ``strftime`` per row. Nanoseconds are cut to microseconds, the
    precision of both warehouses (staging counts such rows, see ``ingest.stage_file``)."""
    values = pd.to_datetime(series, utc=True).dt.tz_localize(None).to_numpy("datetime64[us]")
    codes, uniques = pd.factorize(values.view(np.int64))
    text = np.datetime_as_string(uniques.view("datetime64[us]"), unit="us").astype(object)
    if separator != "T":
        text = np.array([t.replace("T", separator, 1) + suffix for t in text], dtype=object)
    elif suffix:
        text = text + suffix
    out = np.append(text, None)[codes]
    out[np.isnat(values)] = None
    return out


def _sqlite_rows(table: sa.Table, frame: pd.DataFrame, columns: list[str]) -> list[tuple] | None:
    """``frame`` as DBAPI rows in exactly the form SQLAlchemy would bind them on SQLite (UTC
    timestamps as its DateTime text, booleans as 0/1, NaN as NULL), built column by column:
    binding a dict per row through SQLAlchemy cost ~5 us per row, most of a backfill's write.
    None when a column needs SQLAlchemy's own handling (a Python-side default, or timestamps
    that are not a datetime column)."""
    if any(c.default is not None and c.name not in columns for c in table.columns):
        return None
    data = []
    for name in columns:
        series = frame[name]
        if isinstance(table.c[name].type, sa.DateTime):
            if not pd.api.types.is_datetime64_any_dtype(series):
                return None
            # SQLAlchemy binds ``ts`` as UTC (see _records) and other columns as they are.
            if name != "ts" and str(getattr(series.dt, "tz", None) or "UTC") != "UTC":
                return None
            data.append(_datetime_text(series, " ").tolist())
        elif pd.api.types.is_float_dtype(series):
            arr = series.to_numpy(dtype="float64")
            data.append([None if v != v else v for v in arr.tolist()])
        elif pd.api.types.is_bool_dtype(series):
            data.append(series.to_numpy(dtype=bool).astype(int).tolist())
        elif pd.api.types.is_integer_dtype(series):
            data.append(series.to_numpy(dtype="int64").tolist())
        else:
            data.append(series.astype(object).where(series.notna(), None).tolist())
    return list(zip(*data, strict=True))


class Warehouse:
    """Typed reads and idempotent writes over the warehouse tables."""

    def __init__(self, url: str, *, create: bool = True):
        self.url = url
        self.engine = sa.create_engine(url, future=True, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        if create:
            metadata.create_all(self.engine)
            self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Columns added since a home was created (``create_all`` adds tables, not columns): every
        nullable column a table lacks, such as a new detector kind's ``<kind>_score``."""
        inspector = sa.inspect(self.engine)
        preparer = self.engine.dialect.identifier_preparer
        for table in metadata.sorted_tables:
            present = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in present or not column.nullable:
                    continue
                kind = column.type.compile(dialect=self.engine.dialect)
                with self.engine.begin() as conn:
                    conn.exec_driver_sql(
                        f"ALTER TABLE {preparer.quote(table.name)} "
                        f"ADD COLUMN {preparer.quote(column.name)} {kind}"
                    )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """One transaction for several writes: pass the connection as ``conn=`` to each."""
        with self.engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def _begin(self, conn: sa.Connection | None) -> Iterator[sa.Connection]:
        if conn is not None:
            yield conn
        else:
            with self.engine.begin() as own:
                yield own

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def dispose(self) -> None:
        self.engine.dispose()

    # -- writes ----------------------------------------------------------------------------------

    def _insert(self, conn: sa.Connection, table: sa.Table, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        columns = [c.name for c in table.columns if c.name in frame.columns]
        if self.dialect == "postgresql":
            _copy_into(conn, table, frame, columns)
            return
        rows = _sqlite_rows(table, frame, columns) if self.dialect == "sqlite" else None
        if rows is None:
            conn.execute(table.insert(), _records(frame, columns))
            return
        names, marks = ", ".join(columns), ", ".join("?" * len(columns))
        conn.exec_driver_sql(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", rows)

    def replace_source(
        self,
        table_name: str,
        source: str,
        frame: pd.DataFrame,
        *,
        conn: sa.Connection | None = None,
    ) -> int:
        """Replace every row of ``source`` in ``landing`` (or another source-keyed table)."""
        table = RECORD_TABLES[table_name]
        with self._begin(conn) as conn:
            conn.execute(table.delete().where(table.c.source == source))
            self._insert(conn, table, frame)
        return len(frame)

    def replace_source_stream(
        self,
        table_name: str,
        source: str,
        frames: Iterable[pd.DataFrame],
        *,
        conn: sa.Connection | None = None,
    ) -> int:
        """Like :meth:`replace_source` for a stream of chunks, still in one transaction."""
        table = RECORD_TABLES[table_name]
        written = 0
        with self._begin(conn) as conn:
            conn.execute(table.delete().where(table.c.source == source))
            for frame in frames:
                self._insert(conn, table, frame)
                written += len(frame)
        return written

    def replace_partition(
        self,
        table_name: str,
        tenant: str,
        start: datetime,
        end: datetime,
        frame: pd.DataFrame,
        *,
        conn: sa.Connection | None = None,
    ) -> int:
        """Replace the rows of one tenant in ``[start, end)`` with ``frame``, atomically."""
        table = RECORD_TABLES[table_name]
        with self._begin(conn) as conn:
            conn.execute(
                table.delete().where(
                    table.c.tenant == tenant, table.c.ts >= start, table.c.ts < end
                )
            )
            self._insert(conn, table, frame)
        return len(frame)

    def replace_quarantine(
        self,
        frame: pd.DataFrame,
        *,
        stage: str,
        source: str | None = None,
        partition_key: str | None = None,
        conn: sa.Connection | None = None,
    ) -> int:
        """Replace the quarantined rows of one source (parse stage) or one partition (quality)."""
        if (source is None) == (partition_key is None):
            raise ValueError("replace_quarantine needs exactly one of source or partition_key")
        out = frame.copy()
        out["stage"] = stage
        out["partition_key"] = partition_key
        out["quarantined_at"] = _now()
        if "ts" in out.columns:
            out["ts"] = out["ts"].map(_ts_text)
        with self._begin(conn) as conn:
            where = [quarantine.c.stage == stage]
            if source is not None:
                where.append(quarantine.c.source == source)
            else:
                where.append(quarantine.c.partition_key == partition_key)
            conn.execute(quarantine.delete().where(*where))
            if not out.empty:
                self._insert(conn, quarantine, out)
        return len(out)

    def replace_thresholds(self, tenant: str, values: dict[str, float], policy: dict) -> None:
        """Replace a tenant's per-series thresholds (``series`` = ``service/metric``)."""
        now = _now()
        rows = [
            {
                "tenant": tenant,
                "series": series,
                "threshold": float(value),
                "policy": json.dumps(policy, sort_keys=True),
                "computed_at": now,
            }
            for series, value in sorted(values.items())
        ]
        with self.engine.begin() as conn:
            conn.execute(thresholds.delete().where(thresholds.c.tenant == tenant))
            if rows:
                conn.execute(thresholds.insert(), rows)

    def read_thresholds(self, tenant: str) -> tuple[dict[str, float], dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(thresholds).where(thresholds.c.tenant == tenant)).all()
        if not rows:
            return {}, {}
        return {r.series: float(r.threshold) for r in rows}, json.loads(rows[0].policy)

    def record_ingest(self, record: IngestRecord, *, conn: sa.Connection | None = None) -> None:
        values = {
            "source": record.source,
            "fingerprint": record.fingerprint,
            "status": record.status,
            "rows_in": record.rows_in,
            "staged": record.staged,
            "quarantined": record.quarantined,
            "partitions": json.dumps(sorted(record.partitions)),
            "error": record.error,
            "run_id": record.run_id,
            "ingested_at": _now(),
            "pending": json.dumps(
                sorted(record.partitions if record.pending is None else record.pending)
            ),
        }
        with self._begin(conn) as conn:
            conn.execute(ingests.delete().where(ingests.c.source == record.source))
            conn.execute(ingests.insert(), [values])

    def mark_ingested(self, source: str, *, conn: sa.Connection | None = None) -> None:
        with self._begin(conn) as conn:
            conn.execute(
                ingests.update()
                .where(ingests.c.source == source, ingests.c.status == STAGED)
                .values(status=INGESTED)
            )

    # -- partition states --------------------------------------------------------------------

    def bump_partitions(self, keys: Iterable[str], *, conn: sa.Connection | None = None) -> None:
        """New rows landed for (or left) these partitions: they need gating and gridding again."""
        keys = sorted(set(keys))
        if not keys:
            return
        with self._begin(conn) as conn:
            known = {
                row[0]
                for row in conn.execute(
                    sa.select(partition_states.c.partition_key).where(
                        partition_states.c.partition_key.in_(keys)
                    )
                )
            }
            if known:
                conn.execute(
                    partition_states.update()
                    .where(partition_states.c.partition_key.in_(sorted(known)))
                    .values(version=partition_states.c.version + 1, updated_at=_now())
                )
            new = [k for k in keys if k not in known]
            if new:
                conn.execute(
                    partition_states.insert(),
                    [
                        {
                            "partition_key": k,
                            "version": 1,
                            "gated_version": 0,
                            "gridded_version": 0,
                            "blocked": False,
                            "updated_at": _now(),
                        }
                        for k in new
                    ],
                )

    def partition_states(
        self, keys: Iterable[str], *, conn: sa.Connection | None = None
    ) -> dict[str, PartitionState]:
        keys = sorted(set(keys))
        out: dict[str, PartitionState] = {}
        with self._begin(conn) as conn:
            for i in range(0, len(keys), 500):
                query = sa.select(partition_states).where(
                    partition_states.c.partition_key.in_(keys[i : i + 500])
                )
                for row in conn.execute(query):
                    out[row.partition_key] = PartitionState(
                        int(row.version),
                        int(row.gated_version),
                        int(row.gridded_version),
                        bool(row.blocked),
                    )
        return out

    def record_gated(
        self, key: str, version: int, blocked: bool, *, conn: sa.Connection | None = None
    ) -> None:
        """The gate judged ``key`` at ``version``; a version staged since stays pending."""
        self._record_state(key, gated_version=version, blocked=blocked, conn=conn)

    def record_gridded(self, key: str, version: int, *, conn: sa.Connection | None = None) -> None:
        self._record_state(key, gridded_version=version, conn=conn)

    def _record_state(self, key: str, *, conn: sa.Connection | None, **values: object) -> None:
        with self._begin(conn) as conn:
            updated = conn.execute(
                partition_states.update()
                .where(partition_states.c.partition_key == key)
                .values(**values, updated_at=_now())
            )
            if updated.rowcount == 0:
                # A partition gated without staging (a configured source's pull, a test).
                row = {"version": 0, "gated_version": 0, "gridded_version": 0, "blocked": False}
                conn.execute(
                    partition_states.insert(),
                    [{**row, **values, "partition_key": key, "updated_at": _now()}],
                )

    def settle_ingests(self, sources: Iterable[str] | None = None) -> list[str]:
        """Mark "ingested" every staged ingest whose pending partitions are all settled; return
        their sources. Safe to call from any process at any time."""
        query = sa.select(ingests.c.source, ingests.c.pending, ingests.c.partitions).where(
            ingests.c.status == STAGED
        )
        if sources is not None:
            query = query.where(ingests.c.source.in_(sorted(set(sources))))
        with self.engine.connect() as conn:
            staged = [
                (r.source, json.loads(r.pending or r.partitions)) for r in conn.execute(query)
            ]
        settled = []
        for source, pending in staged:
            states = self.partition_states(pending)
            if all(k in states and states[k].settled for k in pending):
                self.mark_ingested(source)
                settled.append(source)
        return settled

    # -- reads -----------------------------------------------------------------------------------

    def read_records(
        self,
        table_name: str,
        *,
        tenant: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        source: str | None = None,
        columns: Iterable[str] | None = None,
    ) -> pd.DataFrame:
        table = RECORD_TABLES[table_name]
        selected = [table.c[c] for c in columns] if columns else list(table.c)
        if self.engine.dialect.name == "sqlite":
            # SQLite keeps timestamps as text: parsing them in one vectorised call below is
            # several times faster than SQLAlchemy building a datetime per row.
            selected = [
                sa.type_coerce(c, sa.String).label("ts") if c.name == "ts" else c for c in selected
            ]
        query = sa.select(*selected)
        if tenant is not None:
            query = query.where(table.c.tenant == tenant)
        if start is not None:
            query = query.where(table.c.ts >= start)
        if end is not None:
            query = query.where(table.c.ts < end)
        if source is not None:
            query = query.where(table.c.source == source)
        with self.engine.connect() as conn:
            frame = pd.read_sql(query, conn)
        if not frame.empty or "ts" in frame.columns:
            frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
        if "value" in frame.columns:
            frame["value"] = frame["value"].astype("float64")
        return frame

    def read_quarantine(
        self, *, source: str | None = None, partition_key: str | None = None
    ) -> pd.DataFrame:
        query = sa.select(quarantine).order_by(quarantine.c.id)
        if source is not None:
            query = query.where(quarantine.c.source == source)
        if partition_key is not None:
            query = query.where(quarantine.c.partition_key == partition_key)
        with self.engine.connect() as conn:
            return pd.read_sql(query, conn)

    def read_ingest(self, source: str) -> IngestRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(ingests).where(ingests.c.source == source)).first()
        if row is None:
            return None
        return IngestRecord(
            source=row.source,
            fingerprint=row.fingerprint,
            status=row.status,
            rows_in=row.rows_in,
            staged=row.staged,
            quarantined=row.quarantined,
            partitions=tuple(json.loads(row.partitions)),
            error=row.error,
            run_id=row.run_id,
            pending=tuple(json.loads(row.pending)) if row.pending else None,
        )

    def newest_ts(self, table_name: str, tenant: str) -> datetime | None:
        table = RECORD_TABLES[table_name]
        query = sa.select(sa.func.max(table.c.ts)).where(table.c.tenant == tenant)
        with self.engine.connect() as conn:
            value = conn.execute(query).scalar_one()
        if value is None:
            return None
        return (
            pd.Timestamp(value).tz_localize("UTC")
            if pd.Timestamp(value).tzinfo is None
            else (pd.Timestamp(value).tz_convert("UTC"))
        )

    def count(self, table_name: str, **filters: object) -> int:
        table = metadata.tables[table_name]
        query = sa.select(sa.func.count()).select_from(table)
        for col, value in filters.items():
            query = query.where(table.c[col] == value)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def series(
        self, table_name: str, tenant: str, start: datetime, end: datetime
    ) -> list[tuple[str, str, str]]:
        """Distinct (tenant, service, metric) of a tenant in a record table in ``[start, end)``."""
        table = RECORD_TABLES[table_name]
        query = (
            sa.select(table.c.tenant, table.c.service, table.c.metric)
            .where(table.c.tenant == tenant, table.c.ts >= start, table.c.ts < end)
            .distinct()
        )
        with self.engine.connect() as conn:
            return sorted(tuple(row) for row in conn.execute(query))

    # -- shadow scores ---------------------------------------------------------------------------

    def replace_shadow_scores(
        self,
        tenant: str,
        kind: str,
        version: int,
        start: datetime,
        end: datetime,
        frame: pd.DataFrame,
    ) -> int:
        """Replace one challenger's shadow scores of a tenant in ``[start, end)``, atomically."""
        with self.engine.begin() as conn:
            conn.execute(
                shadow_scores.delete().where(
                    shadow_scores.c.tenant == tenant,
                    shadow_scores.c.kind == kind,
                    shadow_scores.c.version == int(version),
                    shadow_scores.c.ts >= start,
                    shadow_scores.c.ts < end,
                )
            )
            self._insert(conn, shadow_scores, frame)
        return len(frame)

    def shadow_days(self, tenant: str, kind: str, version: int) -> list[pd.Timestamp]:
        """The UTC days on which a challenger version has shadow scores, oldest first."""
        query = sa.select(sa.func.min(shadow_scores.c.ts), sa.func.max(shadow_scores.c.ts)).where(
            shadow_scores.c.tenant == tenant,
            shadow_scores.c.kind == kind,
            shadow_scores.c.version == int(version),
        )
        with self.engine.connect() as conn:
            first, last = conn.execute(query).one()
        if first is None:
            return []
        span = pd.date_range(_utc_day(first), _utc_day(last), freq="D")
        counted = []
        with self.engine.connect() as conn:
            for day in span:
                found = conn.execute(
                    sa.select(shadow_scores.c.ts)
                    .where(
                        shadow_scores.c.tenant == tenant,
                        shadow_scores.c.kind == kind,
                        shadow_scores.c.version == int(version),
                        shadow_scores.c.ts >= day.to_pydatetime(),
                        shadow_scores.c.ts < (day + pd.Timedelta(days=1)).to_pydatetime(),
                    )
                    .limit(1)
                ).first()
                if found is not None:
                    counted.append(day)
        return counted

    # -- scoring state -------------------------------------------------------------------------

    def write_score_state(
        self, tenant: str, kind: str, version: int, as_of: int, payload: bytes, *, keep: int = 3
    ) -> None:
        """Store (or replace) a detector set's scoring state at ``as_of``; keep the newest
        ``keep`` positions of that tenant, kind and version."""
        key = (
            (score_states.c.tenant == tenant)
            & (score_states.c.kind == kind)
            & (score_states.c.version == int(version))
        )
        with self.engine.begin() as conn:
            conn.execute(score_states.delete().where(key, score_states.c.as_of == int(as_of)))
            conn.execute(
                score_states.insert(),
                [
                    {
                        "tenant": tenant,
                        "kind": kind,
                        "version": int(version),
                        "as_of": int(as_of),
                        "payload": payload,
                        "created_at": _now(),
                    }
                ],
            )
            kept = (
                sa.select(score_states.c.as_of)
                .where(key)
                .order_by(score_states.c.as_of.desc())
                .limit(keep)
            )
            newest = [row[0] for row in conn.execute(kept)]
            conn.execute(score_states.delete().where(key, score_states.c.as_of.not_in(newest)))

    def read_score_state(
        self, tenant: str, kind: str, version: int, not_after: int
    ) -> tuple[int, bytes] | None:
        """The newest stored state at or before ``not_after`` (UTC ns): ``(as_of, payload)``."""
        query = (
            sa.select(score_states.c.as_of, score_states.c.payload)
            .where(
                score_states.c.tenant == tenant,
                score_states.c.kind == kind,
                score_states.c.version == int(version),
                score_states.c.as_of <= int(not_after),
            )
            .order_by(score_states.c.as_of.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else (int(row.as_of), bytes(row.payload))


def _utc_day(value: object) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).floor("D")


def _ts_text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp | datetime):
        return pd.Timestamp(value).isoformat()
    return str(value)[:64]


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets the Dagster UI and reports read while a run writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _copy_into(conn: sa.Connection, table: sa.Table, frame: pd.DataFrame, columns: list[str]):
    """Bulk load through PostgreSQL COPY: an order of magnitude faster than INSERT batches."""
    buffer = io.StringIO()
    out = frame[columns].copy()
    for col in columns:
        if col == "ts" and pd.api.types.is_datetime64_any_dtype(out[col]):
            out[col] = _datetime_text(out[col], " ", "+00")
    out.to_csv(buffer, index=False, header=False, na_rep="\\N")
    buffer.seek(0)
    sql = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')"
    raw = conn.connection.dbapi_connection
    with raw.cursor() as cursor:
        if hasattr(cursor, "copy_expert"):  # psycopg2
            cursor.copy_expert(sql, buffer)
        else:  # psycopg 3, SQLAlchemy 2.1's default for a bare postgresql:// URL
            with cursor.copy(sql) as copy:
                copy.write(buffer.getvalue())
