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
import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np
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
    jsonable,
    quote,
    raw_json,
    received_text,
    rejected_frame,
    tags_json,
)
from monitoring_pipelines.sources.records import (
    KEY_COLUMNS,
    broken_name_rule,
    empty_frame,
    is_valid_name,
    normalise,
)
from monitoring_pipelines.sources.timestamps import parse_timestamps

REQUIRED_COLUMNS = (*KEY_COLUMNS, "value")
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
                    good, bad = _parse_chunk(
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


_VALUE_MISSING = frozenset(("", "nan", "na", "n/a", "null", "none"))


def _is_blank(value: object) -> bool:
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and not value.strip())
    )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | Decimal | np.integer | np.floating) and not isinstance(
        value, bool
    )


def _name_text(value: object) -> str | None:
    if _is_blank(value):
        return None
    return value.strip() if isinstance(value, str) else str(value)


def _number(value: object) -> float | None:
    """The value as a float: NaN when blank, ``None`` when it is not a number."""
    if _is_blank(value):
        return math.nan
    if _is_number(value):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _VALUE_MISSING:
            return math.nan
        try:
            # float() takes "inf" and "-Infinity" too: they pass, and the quality gate judges.
            return float(text)
        except ValueError:
            return None
    return None


def _tags(value: object) -> dict[str, Any] | None:
    """The ``tags`` column as a dict (``None`` when it is not a JSON object)."""
    if _is_blank(value):
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None
    return None


def _roles(columns: list[str]) -> dict[str, int]:
    """Positions of the record columns, matched without regard to case or blanks."""
    found: dict[str, int] = {}
    for position, column in enumerate(columns):
        role = column.strip().lower()
        if role in (*REQUIRED_COLUMNS, "tags"):
            found.setdefault(role, position)
    return found


def _parse_chunk(
    rows: Sequence[Any],
    columns: list[str],
    offset: int,
    source: str,
    window: tuple[pd.Timestamp, pd.Timestamp],
    tenant: str | None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Valid records and rejected rows of one chunk of the result, numbered from ``offset + 1``."""
    received = pd.DataFrame([tuple(r) for r in rows], columns=range(len(columns)), dtype=object)
    received.index = pd.RangeIndex(offset + 1, offset + 1 + len(received))
    roles = _roles(columns)
    field = pd.Series(None, index=received.index, dtype=object)
    reason = pd.Series(None, index=received.index, dtype=object)

    def reject(mask: pd.Series, role: str, why) -> None:
        todo = mask & field.isna()
        if todo.any():
            field[todo] = role
            column = received.loc[todo, roles[role]]
            reason[todo] = column.map(lambda v: f"{role}: {why(v)}") if callable(why) else why

    names = {}
    for role in ("tenant", "service", "metric"):
        names[role] = received[roles[role]].map(_name_text)
        missing = names[role].isna()
        reject(missing, role, f"{role}: missing")
        valid = names[role].map(is_valid_name).astype(bool)
        reject(
            ~missing & ~valid,
            role,
            lambda v: f"{quote(v)} is not a valid name ({broken_name_rule(_name_text(v))})",
        )

    stamps = parse_timestamps(received[roles["ts"]])
    ts = stamps.ts
    reject(pd.Series(stamps.blank, index=ts.index), "ts", "ts: missing")
    reject(
        pd.Series(stamps.bad, index=ts.index),
        "ts",
        lambda v: f"cannot parse {quote(v)} as a timestamp",
    )
    start, end = window
    # An instant past what nanoseconds hold (a year-9999 typo) is outside any window too.
    outside = (ts.notna() & ((ts < start) | (ts >= end))) | stamps.out_of_range
    window_text = f"[{start.isoformat()}, {end.isoformat()})"
    reject(outside, "ts", lambda v: f"{quote(v)} is outside the window {window_text}")

    # A list, not Series.map: map would turn the None that marks "not a number" into NaN.
    numbers = [_number(v) for v in received[roles["value"]]]
    not_number = pd.Series([n is None for n in numbers], index=received.index)
    values = pd.Series([math.nan if n is None else n for n in numbers], index=received.index)
    reject(not_number, "value", lambda v: f"{quote(v)} is not a number")

    base_tags = received[roles["tags"]].map(_tags) if "tags" in roles else None
    if base_tags is not None:
        reject(base_tags.isna(), "tags", lambda v: f"{quote(v)} is not a JSON object")

    if tenant is not None:
        keep = names["tenant"] == tenant
        received, field, reason, ts, values = (
            x[keep] for x in (received, field, reason, ts, values)
        )
        names = {role: column[keep] for role, column in names.items()}
        if base_tags is not None:
            base_tags = base_tags[keep]

    # An extra column wins over a key of the same name in tags; blank extra values are left out.
    extras = [i for i, c in enumerate(columns) if i not in roles.values()]
    ok = field.isna()
    good = received[ok]
    if len(good):
        tags = []
        for i in good.index:
            merged = dict(base_tags[i]) if base_tags is not None else {}
            for position in extras:
                value = good.at[i, position]
                if not _is_blank(value):
                    merged[columns[position]] = value
            tags.append(tags_json(jsonable(merged)))
        records = normalise(
            pd.DataFrame(
                {
                    "tenant": names["tenant"][ok],
                    "service": names["service"][ok],
                    "metric": names["metric"][ok],
                    "ts": ts[ok],
                    "value": values[ok].astype("float64"),
                    "tags": tags,
                    "source": source,
                    "source_row": good.index,
                },
                index=good.index,
            )
        )
    else:
        records = empty_frame()

    bad = received[~ok]
    if len(bad):
        rejected = rejected_frame(
            {
                "source": source,
                "source_row": int(i),
                "tenant": received_text(bad.at[i, roles["tenant"]], "tenant"),
                "ts": received_text(bad.at[i, roles["ts"]]),
                "field": field[i],
                "reason": reason[i],
                "raw": raw_json(dict(zip(columns, bad.loc[i].tolist(), strict=True))),
            }
            for i in bad.index
        )
    else:
        rejected = empty_rejected()
    return records, rejected
