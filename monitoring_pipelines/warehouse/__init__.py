"""The warehouse: the single source of truth for data, through SQLAlchemy 2.

SQLite by default, PostgreSQL by URL; the same code and the same tests run on both. Every write
replaces a well-defined slice (a source's rows, a partition's rows) inside one transaction, so
re-running anything never duplicates rows.
"""

import contextlib
from collections.abc import Iterable, Iterator
from datetime import datetime

import pandas as pd
import sqlalchemy as sa

from monitoring_pipelines.warehouse import rows as _rows
from monitoring_pipelines.warehouse.ingest_states import IngestRecord, IngestStates, PartitionState
from monitoring_pipelines.warehouse.rows import (
    copy_into,
    copy_out,
    records,
    sqlite_pragmas,
    ts_text,
    utc_now,
)
from monitoring_pipelines.warehouse.schema import (
    FAILED,
    INGESTED,
    RECORD_TABLES,
    STAGED,
    alerts,
    anomaly_scores,
    clean_metrics,
    ingests,
    landing,
    metadata,
    metrics,
    notifications,
    partition_states,
    quarantine,
    score_states,
    shadow_scores,
    thresholds,
)
from monitoring_pipelines.warehouse.score_store import ScoreStore

__all__ = [
    "FAILED",
    "INGESTED",
    "RECORD_TABLES",
    "STAGED",
    "IngestRecord",
    "PartitionState",
    "Warehouse",
    "alerts",
    "anomaly_scores",
    "clean_metrics",
    "ingests",
    "landing",
    "metadata",
    "metrics",
    "notifications",
    "partition_states",
    "quarantine",
    "score_states",
    "shadow_scores",
    "thresholds",
]


class Warehouse(IngestStates, ScoreStore):
    """Typed reads and idempotent writes over the warehouse tables."""

    def __init__(self, url: str, *, create: bool = True):
        self.url = url
        self.engine = sa.create_engine(url, future=True, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", sqlite_pragmas)
        if create:
            metadata.create_all(self.engine)
            self._add_missing_columns()
            from monitoring_pipelines.warehouse.audit import forbid_changes

            forbid_changes(self.engine)

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
            copy_into(conn, table, frame, columns)
            return
        rows = _rows.sqlite_rows(table, frame, columns) if self.dialect == "sqlite" else None
        if rows is None:
            conn.execute(table.insert(), records(frame, columns))
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
        out["quarantined_at"] = utc_now()
        if "ts" in out.columns:
            out["ts"] = out["ts"].map(ts_text)
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
        frame = self._copy_frame(query) if self.dialect == "postgresql" else None
        if frame is None:
            frame = self._frame(query)
        if not frame.empty or "ts" in frame.columns:
            frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
        if "value" in frame.columns:
            frame["value"] = frame["value"].astype("float64")
        return frame

    def _copy_frame(self, query: sa.Select) -> pd.DataFrame | None:
        """The rows of ``query`` through PostgreSQL's bulk path (:func:`copy_out`), or None."""
        with self.engine.connect() as conn:
            return copy_out(conn, query, typed={"ts", "value"})

    def _frame(self, query: sa.Select) -> pd.DataFrame:
        """The rows of ``query`` as pandas would read them (``pd.read_sql``), fetched from the
        DBAPI cursor: SQLAlchemy's per-row result processing cost ~4 us a row, most of a read.
        Its one conversion that matters here, SQLite's 0/1 to booleans, is done per column."""
        with self.engine.connect() as conn:
            result = conn.execute(query)
            names = list(result.keys())
            rows = result.cursor.fetchall()
            result.close()
        if not rows:
            return pd.DataFrame(columns=names)
        frame = pd.DataFrame.from_records(rows, columns=names, coerce_float=True)
        for column in query.selected_columns:
            if isinstance(column.type, sa.Boolean) and frame[column.name].dtype != bool:
                frame[column.name] = frame[column.name].astype(bool)
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
