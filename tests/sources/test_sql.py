"""The SQL pull source against real databases: SQLite and the PostgreSQL server."""

import json
import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa

from monitoring_pipelines.sources.config import REJECTED_COLUMNS, SourceError
from monitoring_pipelines.sources.records import FRAME_COLUMNS
from monitoring_pipelines.sources.sql import SqlSource

START = datetime(2026, 9, 1, tzinfo=UTC)
END = START + timedelta(days=1)
HOSTILE = "acme'; DROP TABLE legacy_metrics; --"

metadata = sa.MetaData()
typed_metrics = sa.Table(
    "typed_metrics",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("tenant", sa.Text),
    sa.Column("service", sa.Text),
    sa.Column("metric", sa.Text),
    sa.Column("ts", sa.DateTime(timezone=True)),
    sa.Column("value", sa.Float),
    sa.Column("host", sa.Text),
)
# A legacy export: everything is text, so anything can be wrong, and rows are windowed by the
# time they were loaded rather than by their (unreliable) measurement time.
legacy_metrics = sa.Table(
    "legacy_metrics",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("loaded_at", sa.DateTime(timezone=True)),
    sa.Column("tenant", sa.Text),
    sa.Column("service", sa.Text),
    sa.Column("metric", sa.Text),
    sa.Column("ts", sa.Text),
    sa.Column("value", sa.Text),
    sa.Column("tags", sa.Text),
    sa.Column("region", sa.Text),
)

TYPED_QUERY = (
    "SELECT tenant, service, metric, ts, value, host FROM typed_metrics "
    "WHERE ts >= :start AND ts < :end AND (:tenant IS NULL OR tenant = :tenant) ORDER BY id"
)
LEGACY_QUERY = (
    "SELECT tenant, service, metric, ts, value, tags, region FROM legacy_metrics "
    "WHERE loaded_at >= :start AND loaded_at < :end ORDER BY id"
)


def _at(hours: float) -> datetime:
    return START + timedelta(hours=hours)


TYPED_ROWS = [
    ("acme", "api", "latency_p95_ms", _at(-1 / 12), 99.0, "h1"),  # before the window
    ("acme", "api", "latency_p95_ms", _at(0), 120.5, "h1"),  # first instant: included
    ("acme", "api", "latency_p95_ms", _at(23 + 11 / 12), 130.0, None),  # last slot
    ("globex", "web", "error_rate", _at(12), 0.02, "h2"),
    ("acme", "api", "latency_p95_ms", _at(24), 1.0, "h1"),  # end is exclusive
]

LEGACY_ROWS = [
    # tenant, service, metric, ts, value, tags, region
    ("acme", "api", "latency_p95_ms", "2026-09-01 00:05:00", "120.5", '{"env":"prod"}', "eu"),
    ("acme", "api", "latency_p95_ms", "2026-09-01T02:10:00+02:00", "NaN", None, None),
    (HOSTILE, "api", "latency_p95_ms", "2026-09-01 00:15:00", "1", None, None),
    ("globex", "", "error_rate", "2026-09-01 00:20:00", "0.1", None, None),
    ("globex", "api", "bad metric!", "2026-09-01 00:25:00", "0.1", None, None),
    ("globex", "api", "error_rate", "yesterday", "0.1", None, None),
    ("globex", "api", "error_rate", "2026-09-01 25:00:00", "0.1", None, None),
    ("globex", "api", "error_rate", "2026-09-02 00:00:00+00:00", "0.1", None, None),
    ("globex", "api", "error_rate", "2026-09-01 00:30:00", "fast", None, None),
    ("globex", "api", "error_rate", "2026-09-01 00:35:00", None, None, None),
    ("globex", "api", "error_rate", "2026-09-01 00:40:00", "0.1", "[1, 2]", None),
    ("initech", "api", "error_rate", "2026-09-01 00:45:00Z", " 0.25 ", None, "us"),
    (None, "api", "error_rate", "2026-09-01 00:50:00", "0.1", None, None),
]
WINDOW_TEXT = "[2026-09-01T00:00:00+00:00, 2026-09-02T00:00:00+00:00)"
NAME_RULE = "letters, digits, '_', '.', '-', up to 64, starting with a letter or digit"
LEGACY_REJECTED = [
    # source_row, tenant, ts, field, reason
    (
        3,
        HOSTILE,
        "2026-09-01 00:15:00",
        "tenant",
        f"tenant: {HOSTILE!r} is not a valid name ({NAME_RULE})",
    ),
    (4, "globex", "2026-09-01 00:20:00", "service", "service: missing"),
    (
        5,
        "globex",
        "2026-09-01 00:25:00",
        "metric",
        f"metric: 'bad metric!' is not a valid name ({NAME_RULE})",
    ),
    (6, "globex", "yesterday", "ts", "ts: cannot parse 'yesterday' as a timestamp"),
    (
        7,
        "globex",
        "2026-09-01 25:00:00",
        "ts",
        "ts: cannot parse '2026-09-01 25:00:00' as a timestamp",
    ),
    (
        8,
        "globex",
        "2026-09-02 00:00:00+00:00",
        "ts",
        f"ts: '2026-09-02 00:00:00+00:00' is outside the window {WINDOW_TEXT}",
    ),
    (9, "globex", "2026-09-01 00:30:00", "value", "value: 'fast' is not a number"),
    (11, "globex", "2026-09-01 00:40:00", "tags", "tags: '[1, 2]' is not a JSON object"),
    (13, None, "2026-09-01 00:50:00", "tenant", "tenant: missing"),
]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'legacy.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    engine = sa.create_engine(url)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            typed_metrics.insert(),
            [
                dict(zip(("tenant", "service", "metric", "ts", "value", "host"), r, strict=True))
                for r in TYPED_ROWS
            ],
        )
        keys = ("tenant", "service", "metric", "ts", "value", "tags", "region")
        conn.execute(
            legacy_metrics.insert(),
            [{"loaded_at": _at(1), **dict(zip(keys, r, strict=True))} for r in LEGACY_ROWS]
            # Loaded the day before: the query must never return it.
            + [{"loaded_at": _at(-2), **dict(zip(keys, LEGACY_ROWS[0], strict=True))}],
        )
    engine.dispose()
    return url


def _records(frame: pd.DataFrame) -> list[tuple]:
    return [
        (r.tenant, r.service, r.metric, r.ts.isoformat(), r.value, r.tags, r.source, r.source_row)
        for r in frame.itertuples()
    ]


def _rejected(frame: pd.DataFrame) -> list[tuple]:
    return [(r.source_row, r.tenant, r.ts, r.field, r.reason) for r in frame.itertuples()]


def _assert_contract(result) -> None:
    assert list(result.records.columns) == list(FRAME_COLUMNS)
    assert list(result.rejected.columns) == list(REJECTED_COLUMNS)
    assert str(result.records["ts"].dtype) == "datetime64[ns, UTC]"
    assert result.records["value"].dtype == "float64"
    assert result.records["source_row"].dtype == "int64"
    assert result.rejected["source_row"].dtype == "int64"


def test_typed_table_window_tags_and_tenant_parameter(db_url):
    source = SqlSource("typed", db_url, TYPED_QUERY)
    result = source.fetch(START, END)
    _assert_contract(result)
    assert _records(result.records) == [
        (
            "acme",
            "api",
            "latency_p95_ms",
            "2026-09-01T00:00:00+00:00",
            120.5,
            '{"host":"h1"}',
            "sql:typed",
            1,
        ),
        ("acme", "api", "latency_p95_ms", "2026-09-01T23:55:00+00:00", 130.0, "", "sql:typed", 2),
        (
            "globex",
            "web",
            "error_rate",
            "2026-09-01T12:00:00+00:00",
            0.02,
            '{"host":"h2"}',
            "sql:typed",
            3,
        ),
    ]
    assert result.rejected.empty

    globex = source.fetch(START, END, tenant="globex")
    assert [r[:3] for r in _records(globex.records)] == [("globex", "web", "error_rate")]


def test_legacy_rows_are_parsed_or_rejected_with_reasons(db_url):
    result = SqlSource("legacy", db_url, LEGACY_QUERY).fetch(START, END)
    _assert_contract(result)
    records = _records(result.records)
    assert records[0] == (
        "acme",
        "api",
        "latency_p95_ms",
        "2026-09-01T00:05:00+00:00",
        120.5,
        '{"env":"prod","region":"eu"}',
        "sql:legacy",
        1,
    )
    # "NaN" is a value the quality gate judges, not a parse error; +02:00 is converted to UTC.
    assert records[1][:4] == ("acme", "api", "latency_p95_ms", "2026-09-01T00:10:00+00:00")
    assert math.isnan(records[1][4]) and records[1][5:] == ("", "sql:legacy", 2)
    # A missing value is kept as NaN, like a blank value in a file: the quality gate judges it.
    assert records[2][:3] == ("globex", "api", "error_rate") and math.isnan(records[2][4])
    assert records[2][6:] == ("sql:legacy", 10)
    assert records[3] == (
        "initech",
        "api",
        "error_rate",
        "2026-09-01T00:45:00+00:00",
        0.25,
        '{"region":"us"}',
        "sql:legacy",
        12,
    )
    assert len(records) == 4

    assert _rejected(result.rejected) == LEGACY_REJECTED
    assert set(result.rejected["source"]) == {"sql:legacy"}
    assert all("\n" not in reason for reason in result.rejected["reason"])
    first = json.loads(result.rejected["raw"].iloc[0])
    assert first == {
        "tenant": HOSTILE,
        "service": "api",
        "metric": "latency_p95_ms",
        "ts": "2026-09-01 00:15:00",
        "value": "1",
        "tags": None,
        "region": None,
    }


def test_streaming_in_small_chunks_gives_the_same_result(db_url):
    whole = SqlSource("legacy", db_url, LEGACY_QUERY).fetch(START, END)
    chunked = SqlSource("legacy", db_url, LEGACY_QUERY, chunk_size=2).fetch(START, END)
    pd.testing.assert_frame_equal(chunked.records, whole.records)
    pd.testing.assert_frame_equal(chunked.rejected, whole.rejected)


def test_tenant_filter_keeps_only_that_tenants_rows(db_url):
    result = SqlSource("legacy", db_url, LEGACY_QUERY).fetch(START, END, tenant="globex")
    assert list(result.records["source_row"]) == [10]
    assert [r[0] for r in _rejected(result.rejected)] == [4, 5, 6, 7, 8, 9, 11]
    assert set(result.rejected["tenant"]) == {"globex"}


def test_hostile_tenant_is_bound_not_interpolated(db_url):
    source = SqlSource("typed", db_url, TYPED_QUERY)
    result = source.fetch(START, END, tenant="x' OR '1'='1")
    assert result.records.empty and result.rejected.empty
    assert len(source.fetch(START, END).records) == 3
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM legacy_metrics")).scalar() == 14
    engine.dispose()


def test_missing_columns_name_the_source_and_the_columns(db_url):
    query = "SELECT tenant, ts FROM typed_metrics WHERE ts >= :start AND ts < :end"
    with pytest.raises(SourceError) as caught:
        SqlSource("narrow", db_url, query).fetch(START, END)
    message = str(caught.value)
    assert "sql source narrow" in message
    assert "lacks the column(s) service, metric, value" in message
    assert "\n" not in message


def test_a_query_that_writes_is_refused(db_url):
    # SQLite refuses it as read-only; PostgreSQL's streaming cursor cannot even hold a DELETE.
    query = (
        "DELETE FROM typed_metrics WHERE ts >= :start AND ts < :end "
        "RETURNING tenant, service, metric, ts, value"
    )
    with pytest.raises(SourceError, match=r"sql source sneaky .*query failed: "):
        SqlSource("sneaky", db_url, query).fetch(START, END)
    assert len(SqlSource("typed", db_url, TYPED_QUERY).fetch(START, END).records) == 3


@pytest.mark.postgres
def test_postgresql_session_is_read_only(pg_url):
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE SEQUENCE IF NOT EXISTS sneaky_seq"))
    engine.dispose()
    query = (
        "SELECT 'acme' AS tenant, 'api' AS service, 'm' AS metric, CAST(:start AS timestamptz)"
        " AS ts, nextval('sneaky_seq') AS value WHERE CAST(:end AS timestamptz) IS NOT NULL"
    )
    with pytest.raises(SourceError, match="read-only transaction"):
        SqlSource("sneaky", pg_url, query).fetch(START, END)


def test_a_broken_query_is_one_line(db_url):
    query = "SELEC tenant FROM nowhere WHERE :start < :end"
    with pytest.raises(SourceError) as caught:
        SqlSource("broken", db_url, query).fetch(START, END)
    assert "sql source broken" in str(caught.value) and "query failed" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_query_must_use_the_window_parameters():
    with pytest.raises(SourceError, match=r"sql source lazy: .* :start, :end"):
        SqlSource("lazy", "sqlite://", "SELECT tenant, service, metric, ts, value FROM m")


def test_naive_window_bounds_are_utc(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    engine = sa.create_engine(url)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            typed_metrics.insert(),
            {"tenant": "acme", "service": "api", "metric": "m", "ts": _at(0), "value": 1.0},
        )
    engine.dispose()
    result = SqlSource("typed", url, TYPED_QUERY).fetch(
        START.replace(tzinfo=None), END.replace(tzinfo=None)
    )
    assert len(result.records) == 1


def test_password_never_appears_in_a_connection_error():
    source = SqlSource(
        "legacy", "postgresql+psycopg2://u:s3cret@127.0.0.1:1/x", LEGACY_QUERY, timeout=5
    )
    assert "s3cret" not in repr(source)
    with pytest.raises(SourceError) as caught:
        source.fetch(START, END)
    message = str(caught.value)
    assert "s3cret" not in message
    assert (
        "sql source legacy (postgresql+psycopg2://u:***@127.0.0.1:1/x): cannot connect" in message
    )
    assert "refused" in message.lower()
    assert "\n" not in message


@pytest.mark.postgres
def test_postgresql_native_types(pg_url):
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS native_metrics"))
        conn.execute(
            sa.text(
                "CREATE TABLE native_metrics (tenant text, service text, metric text,"
                " ts_local timestamp, ts_zoned timestamptz, value numeric, tags jsonb, host text)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO native_metrics VALUES"
                " ('acme', 'api', 'cpu_percent', '2026-09-01 00:05:00',"
                "  '2026-09-01 02:05:00+02', 12.50, '{\"env\": \"prod\", \"n\": 3}', 'h1')"
            )
        )
    engine.dispose()
    for column in ("ts_local", "ts_zoned"):
        query = (
            f"SELECT tenant, service, metric, {column} AS ts, value, tags, host"
            f" FROM native_metrics WHERE {column} >= :start AND {column} < :end"
        )
        result = SqlSource("native", pg_url, query).fetch(START, END)
        assert _records(result.records) == [
            (
                "acme",
                "api",
                "cpu_percent",
                "2026-09-01T00:05:00+00:00",
                12.5,
                '{"env":"prod","host":"h1","n":3}',
                "sql:native",
                1,
            ),
        ], column


def test_an_empty_result_has_the_contract_columns(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    engine = sa.create_engine(url)
    metadata.create_all(engine)
    engine.dispose()
    result = SqlSource("typed", url, TYPED_QUERY).fetch(START, END)
    assert result.records.empty and result.rejected.empty
    assert list(result.records.columns) == list(FRAME_COLUMNS)
    assert list(result.rejected.columns) == list(REJECTED_COLUMNS)


def test_epoch_numbers_column_case_and_blank_extras(tmp_path):
    seconds = int(START.timestamp())
    milliseconds = seconds * 1000 + 60_500
    query = (
        f"SELECT 'acme' AS TENANT, ' api ' AS Service, 'm' AS metric, {seconds} AS ts,"
        " 1 AS value, '' AS host WHERE :start < :end"
        f" UNION ALL SELECT 'acme', 'api', 'm', {milliseconds}, 2.5, 'h1'"
    )
    result = SqlSource("epochs", f"sqlite:///{tmp_path / 'm.db'}", query).fetch(START, END)
    assert _records(result.records) == [
        ("acme", "api", "m", "2026-09-01T00:00:00+00:00", 1.0, "", "sql:epochs", 1),
        (
            "acme",
            "api",
            "m",
            "2026-09-01T00:01:00.500000+00:00",
            2.5,
            '{"host":"h1"}',
            "sql:epochs",
            2,
        ),
    ]


def test_a_column_given_twice_is_an_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    query = (
        "SELECT 'a' AS tenant, 'b' AS TENANT, 's' AS service, 'm' AS metric, :start AS ts,"
        " 1 AS value WHERE :start < :end"
    )
    with pytest.raises(SourceError, match=r"returns the column\(s\) tenant twice"):
        SqlSource("twice", url, query).fetch(START, END)
