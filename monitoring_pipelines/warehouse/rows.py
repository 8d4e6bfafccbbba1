"""Frames to database rows and back: the fast bulk paths (SQLite rows bound as SQLAlchemy would
bind them, PostgreSQL COPY) and the small conversions every table shares."""

import io
from collections.abc import Iterable
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa


def utc_now() -> datetime:
    return datetime.now(UTC)


def py_datetimes(values: pd.Series) -> list[datetime]:
    return list(pd.to_datetime(values, utc=True).dt.to_pydatetime())


def records(frame: pd.DataFrame, columns: Iterable[str]) -> list[dict]:
    cols = list(columns)
    data = {}
    for col in cols:
        series = frame[col]
        if col == "ts" and pd.api.types.is_datetime64_any_dtype(series):
            data[col] = py_datetimes(series)
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


def datetime_text(series: pd.Series, separator: str = " ", suffix: str = "") -> np.ndarray:
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


def sqlite_rows(table: sa.Table, frame: pd.DataFrame, columns: list[str]) -> list[tuple] | None:
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
            # SQLAlchemy binds ``ts`` as UTC (see records) and other columns as they are.
            if name != "ts" and str(getattr(series.dt, "tz", None) or "UTC") != "UTC":
                return None
            data.append(datetime_text(series, " ").tolist())
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


def utc_day(value: object) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).floor("D")


def ts_text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp | datetime):
        return pd.Timestamp(value).isoformat()
    return str(value)[:64]


def sqlite_pragmas(dbapi_conn, _record) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets the Dagster UI and reports read while a run writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    # 64 MiB of page cache instead of 2: the indexes of landing and the metric tables outgrow
    # 2 MiB at a few hundred thousand rows, and each insert then reads its index pages back
    # from the OS (staging 963k rows: +5% rows per CPU second, +8% wall, measured Dec 2026).
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.close()


def copy_into(conn: sa.Connection, table: sa.Table, frame: pd.DataFrame, columns: list[str]):
    """Bulk load through PostgreSQL COPY: an order of magnitude faster than INSERT batches."""
    out = frame[columns].copy()
    for col in columns:
        if col == "ts" and pd.api.types.is_datetime64_any_dtype(out[col]):
            out[col] = datetime_text(out[col], " ", "+00")
    data = _arrow_csv(out)
    if data is not None:
        # Arrow quotes every string, so an unquoted empty field can only be a NULL.
        sql = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv, NULL '')"
    else:
        data = out.to_csv(index=False, header=False, na_rep="\\N").encode()
        sql = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')"
    raw = conn.connection.dbapi_connection
    with raw.cursor() as cursor:
        if hasattr(cursor, "copy_expert"):  # psycopg2
            cursor.copy_expert(sql, io.BytesIO(data))
        else:  # psycopg 3, SQLAlchemy 2.1's default for a bare postgresql:// URL
            with cursor.copy(sql) as copy:
                copy.write(data)


def _arrow_csv(frame: pd.DataFrame) -> bytes | None:
    """``frame`` as CSV written by Arrow (~6x faster than ``DataFrame.to_csv``, which was most of
    a PostgreSQL load): NaN and None as unquoted empty fields, every string quoted. None when a
    column has no CSV form in Arrow (nested values): the caller falls back to pandas."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        buffer = io.BytesIO()
        pa_csv.write_csv(table, buffer, pa_csv.WriteOptions(include_header=False))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    return buffer.getvalue()


# How each column type is read back from PostgreSQL's COPY text: Arrow's type, or None for a
# column read as text (a timestamp, parsed by the caller in one vectorised call).
def _arrow_type(column_type: sa.types.TypeEngine):
    import pyarrow as pa

    if isinstance(column_type, sa.Boolean):
        return pa.bool_()
    if isinstance(column_type, sa.Float):
        return pa.float64()
    if isinstance(column_type, sa.Integer):
        return pa.int64()
    if isinstance(column_type, sa.String | sa.DateTime):
        return pa.string()
    raise TypeError(column_type)


def copy_out(conn: sa.Connection, query: sa.Select, typed: set[str]) -> pd.DataFrame | None:
    """The rows of ``query`` read through PostgreSQL ``COPY ... TO STDOUT`` and parsed by Arrow's
    CSV reader, as :meth:`Warehouse._frame` would return them but with timestamps as UTC ISO
    text: a row of Python objects per row (psycopg's datetimes, then ``from_records``) was most
    of a read. None (the caller reads the usual way) when a column has a type this path does not
    read, or can be NULL and is not in ``typed`` (columns the caller casts itself): pandas types
    such a column by the values it holds."""
    import pyarrow.csv as pa_csv

    columns = list(query.selected_columns)
    types = {}
    for column in columns:
        if getattr(column, "nullable", True) and column.name not in typed:
            return None
        try:
            types[column.name] = _arrow_type(column.type)
        except TypeError:
            return None
    # Timestamps as UTC text with every microsecond digit, whatever the session's time zone.
    selected = [
        sa.func.to_char(sa.func.timezone("UTC", c), 'YYYY-MM-DD"T"HH24:MI:SS.US').label(c.name)
        if isinstance(c.type, sa.DateTime)
        else c
        for c in columns
    ]
    compiled = query.with_only_columns(*selected).compile(dialect=conn.dialect)
    sql = f"COPY ({compiled}) TO STDOUT WITH (FORMAT csv)"
    buffer = io.BytesIO()
    raw = conn.connection.dbapi_connection
    with raw.cursor() as cursor:
        if hasattr(cursor, "copy_expert"):  # psycopg2
            cursor.copy_expert(cursor.mogrify(sql, compiled.params).decode(), buffer)
        else:  # psycopg 3
            with cursor.copy(sql, compiled.params) as copy:
                for block in copy:
                    buffer.write(block)
    names = [c.name for c in columns]
    if not buffer.tell():
        return pd.DataFrame(columns=names)
    buffer.seek(0)
    table = pa_csv.read_csv(
        buffer,
        read_options=pa_csv.ReadOptions(column_names=names),
        convert_options=pa_csv.ConvertOptions(
            column_types=types,
            # PostgreSQL writes NULL as an unquoted empty field and an empty text as "".
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        ),
    )
    return table.to_pandas()
