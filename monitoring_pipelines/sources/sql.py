"""Metric records pulled from any database SQLAlchemy can reach, by one configured query.

The query selects ``tenant, service, metric, ts, value`` and optionally ``tags`` (a JSON object);
any further column becomes a tag of that name. It must use the bind parameters ``:start`` and
``:end`` (the window ``[start, end)``) and may use ``:tenant`` (``NULL`` for all tenants), for
example ``... WHERE ts >= :start AND ts < :end AND (:tenant IS NULL OR tenant = :tenant)``.

``:start`` and ``:end`` are bound as timezone-aware UTC datetimes, except on SQLite, which has no
datetime type: there they are ISO 8601 text such as ``2026-09-01 00:00:00+00:00`` (what the
sqlite3 module itself made of an aware datetime). As text, that compares correctly with UTC
times stored the way SQLAlchemy's ``DateTime`` stores them (``2026-09-01 00:00:00.000000``);
compare with ``julianday()`` when a table stores another format.
"""

import importlib.util
import math
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from monitoring_pipelines.settings import redact_url
from monitoring_pipelines.sources.config import (
    FetchResult,
    SourceError,
    as_utc,
    empty_rejected,
    quote,
)
from monitoring_pipelines.sources.records import (
    empty_frame,
    is_valid_name,
)
from monitoring_pipelines.sources.sql_rows import REQUIRED_COLUMNS, parse_chunk

REQUIRED_PARAMETERS = ("start", "end")


def missing_parameters(query: str) -> list[str]:
    """The required bind parameters (``start``, ``end``) that ``query`` does not use."""
    used = set(sa.text(query).compile().params)
    return [p for p in REQUIRED_PARAMETERS if p not in used]


class SqlSource:
    """Fetches the records of a time window by running one query against one database.

    Rows are streamed in chunks of ``chunk_size`` (a server-side cursor where the driver has
    one), each turned into a frame at once, so the raw result never sits in memory beside the
    records. The session is read-only where the backend allows it. ``timeout`` bounds the
    connection and, on PostgreSQL, each statement.

    A tenant filter is applied after the query too, so a query without ``:tenant`` is still
    correct, only slower. Under a tenant filter, rejected rows are kept only when their tenant
    column equals the tenant; rows with no usable tenant are reported by unfiltered fetches.
    """

    def __init__(
        self,
        name: str,
        url: str,
        query: str,
        *,
        timeout: float = 300.0,
        chunk_size: int = 10_000,
    ):
        if not is_valid_name(name):
            raise ValueError(f"sql source: invalid name {quote(name)}")
        missing = missing_parameters(query)
        if missing:
            names = ", ".join(f":{p}" for p in missing)
            raise SourceError(f"sql source {name}: the query must use the bind parameters {names}")
        self.name = name
        self._url = url
        self.query = query
        self.timeout = float(timeout)
        self.chunk_size = int(chunk_size)
        self._uses_tenant = "tenant" in sa.text(query).compile().params

    @property
    def safe_url(self) -> str:
        return redact_url(self._url)

    def __repr__(self) -> str:
        return f"SqlSource({self.name!r}, {self.safe_url!r})"

    def _fail(self, problem: str) -> SourceError:
        text = " ".join(str(problem).split())
        password = self._password()
        if password:
            text = text.replace(password, "***")
        if len(text) > 300:
            text = text[:299] + "…"
        return SourceError(f"sql source {self.name} ({self.safe_url}): {text}")

    def _password(self) -> str | None:
        try:
            return make_url(self._url).password
        except Exception:
            return None

    def _engine(self) -> sa.Engine:
        try:
            url = make_url(self._url)
        except Exception:
            raise self._fail("not a valid SQLAlchemy URL") from None
        if (
            url.drivername == "postgresql"
            and not _importable("psycopg")
            and _importable("psycopg2")
        ):
            # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the project ships psycopg2.
            url = url.set(drivername="postgresql+psycopg2")
        connect_args: dict[str, Any] = {}
        backend = url.get_backend_name()
        if backend == "postgresql":
            connect_args["connect_timeout"] = max(1, math.ceil(min(self.timeout, 30.0)))
        elif backend == "sqlite":
            connect_args["timeout"] = self.timeout
        try:
            # One fetch per partition run: pooled connections would only linger between runs.
            return sa.create_engine(url, poolclass=NullPool, connect_args=connect_args)
        except Exception as exc:
            raise self._fail(f"cannot use the URL: {type(exc).__name__}: {exc}") from None

    def _parameters(
        self, dialect: str, start: pd.Timestamp, end: pd.Timestamp, tenant: str | None
    ) -> dict[str, Any]:
        if dialect == "sqlite":
            bounds = {"start": start.isoformat(sep=" "), "end": end.isoformat(sep=" ")}
        else:
            bounds = {"start": start.to_pydatetime(), "end": end.to_pydatetime()}
        if self._uses_tenant:
            bounds["tenant"] = tenant
        return bounds

    def fetch(self, start: datetime, end: datetime, tenant: str | None = None) -> FetchResult:
        """Records of the query's rows in ``[start, end)``, optionally of one tenant only.

        Raises :class:`SourceError` when the database cannot be reached, the query fails or it
        lacks one of :data:`REQUIRED_COLUMNS`; a row that is wrong on its own is rejected.
        """
        window = (as_utc(start), as_utc(end))
        engine = self._engine()
        chunks: list[pd.DataFrame] = []
        rejected: list[pd.DataFrame] = []
        try:
            try:
                connection = engine.connect()
            except sa.exc.DBAPIError as exc:
                raise self._fail(f"cannot connect: {_first_line(exc.orig)}") from None
            with connection as conn:
                self._read_only(conn)
                params = self._parameters(engine.dialect.name, *window, tenant)
                result = conn.execution_options(
                    stream_results=True, yield_per=self.chunk_size
                ).execute(sa.text(self.query), params)
                columns = self._check_columns(list(result.keys()))
                offset = 0
                for rows in result.partitions():
                    good, bad = parse_chunk(
                        rows, columns, offset, f"sql:{self.name}", window, tenant
                    )
                    offset += len(rows)
                    if len(good):
                        chunks.append(good)
                    if len(bad):
                        rejected.append(bad)
                result.close()
        except SourceError:
            raise
        except sa.exc.DBAPIError as exc:
            raise self._fail(f"query failed: {_first_line(exc.orig)}") from None
        except sa.exc.SQLAlchemyError as exc:
            raise self._fail(f"query failed: {type(exc).__name__}: {_first_line(exc)}") from None
        finally:
            engine.dispose()
        records = pd.concat(chunks, ignore_index=True) if chunks else empty_frame()
        bad_rows = pd.concat(rejected, ignore_index=True) if rejected else empty_rejected()
        return FetchResult(records=records, rejected=bad_rows)

    def _read_only(self, conn: sa.Connection) -> None:
        # A source only reads; a query that writes by mistake should fail, not change data.
        dialect = conn.dialect.name
        if dialect == "postgresql":
            conn.execute(sa.text("SELECT set_config('transaction_read_only', 'on', true)"))
            conn.execute(
                sa.text("SELECT set_config('statement_timeout', :ms, true)"),
                {"ms": str(max(1, int(self.timeout * 1000)))},
            )
        elif dialect == "sqlite":
            conn.exec_driver_sql("PRAGMA query_only = ON")

    def _check_columns(self, columns: list[str]) -> list[str]:
        keys = [c.strip().lower() for c in columns]
        duplicates = sorted({c for c in keys if keys.count(c) > 1})
        if duplicates:
            raise self._fail(f"the query returns the column(s) {', '.join(duplicates)} twice")
        missing = [c for c in REQUIRED_COLUMNS if c not in keys]
        if missing:
            raise self._fail(
                f"the query lacks the column(s) {', '.join(missing)} "
                f"(it returns {', '.join(columns) or 'none'})"
            )
        return columns


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _first_line(error: object) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
