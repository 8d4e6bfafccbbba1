"""The warehouse on SQLite and on the real PostgreSQL: idempotent writes, exact round trips."""

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from monitoring_pipelines.sources.records import normalise
from monitoring_pipelines.warehouse import IngestRecord, Warehouse

DAY1 = datetime(2026, 10, 1, tzinfo=UTC)
DAY2 = datetime(2026, 10, 2, tzinfo=UTC)
DAY3 = datetime(2026, 10, 3, tzinfo=UTC)


def _records(tenant="acme", start="2026-10-01", periods=288 * 2, source="drop/a.csv"):
    ts = pd.date_range(start, periods=periods, freq="5min", tz="UTC")
    return normalise(
        pd.DataFrame(
            {
                "tenant": tenant,
                "service": "api",
                "metric": "latency_p95_ms",
                "ts": ts,
                "value": np.linspace(100.0, 200.0, periods),
                "tags": '{"region":"eu"}',
                "source": source,
                "source_row": np.arange(1, periods + 1),
            }
        )
    )


def test_landing_round_trip_is_exact_and_restaging_a_source_replaces_it(warehouse):
    frame = _records()
    warehouse.replace_source("landing", "drop/a.csv", frame)
    warehouse.replace_source("landing", "drop/a.csv", frame)
    back = warehouse.read_records("landing", source="drop/a.csv").sort_values("source_row")
    assert len(back) == len(frame)
    assert back["ts"].tolist() == frame["ts"].tolist()
    assert np.allclose(back["value"], frame["value"])
    assert set(back["tags"]) == {'{"region":"eu"}'}


def test_records_read_back_exactly_whichever_way_they_are_read(warehouse, monkeypatch):
    """PostgreSQL reads through COPY and Arrow's CSV reader: odd text and non-finite values come
    back exactly as the row-by-row read returns them, and as they were written."""
    import monitoring_pipelines.warehouse as module

    frame = _records(periods=6).assign(
        value=[np.nan, np.inf, -np.inf, 1e-300, 0.1 + 0.2, -0.0],
        tags=["", '{"a":"x,\\"y\\""}', "é\nline", "NULL", '""', "\\N"],
    )
    warehouse.replace_source("landing", "drop/a.csv", frame)
    bulk = []
    copy_out = module.copy_out
    monkeypatch.setattr(
        module, "copy_out", lambda *a, **k: bulk.append(copy_out(*a, **k)) or bulk[-1]
    )
    fast = warehouse.read_records("landing", tenant="acme").sort_values("source_row")
    monkeypatch.setattr(module.Warehouse, "_copy_frame", lambda self, query: None)
    rows = warehouse.read_records("landing", tenant="acme").sort_values("source_row")
    assert [b is not None for b in bulk] == ([True] if warehouse.dialect == "postgresql" else [])
    pd.testing.assert_frame_equal(fast, rows, check_exact=True)
    back = fast.reset_index(drop=True)[list(frame.columns)]
    written = frame.reset_index(drop=True).assign(ts=frame["ts"].dt.as_unit("us"))
    pd.testing.assert_frame_equal(back, written, check_exact=True)


def test_streamed_replace_is_one_slice(warehouse):
    frame = _records()
    chunks = [frame.iloc[:100], frame.iloc[100:]]
    assert warehouse.replace_source_stream("landing", "drop/a.csv", iter(chunks)) == len(frame)
    assert warehouse.replace_source_stream("landing", "drop/a.csv", iter(chunks)) == len(frame)
    assert warehouse.count("landing") == len(frame)


def test_replacing_a_partition_touches_only_that_tenant_and_day(warehouse):
    acme, globex = _records(), _records(tenant="globex")
    warehouse.replace_partition("metrics", "acme", DAY1, DAY3, acme.drop(columns="source_row"))
    warehouse.replace_partition("metrics", "globex", DAY1, DAY3, globex.drop(columns="source_row"))
    day1 = acme[acme["ts"] < DAY2].drop(columns="source_row")
    warehouse.replace_partition("metrics", "acme", DAY1, DAY2, day1.assign(value=1.0))
    warehouse.replace_partition("metrics", "acme", DAY1, DAY2, day1.assign(value=1.0))
    back = warehouse.read_records("metrics", tenant="acme")
    assert len(back) == 576
    assert (back.loc[back["ts"] < DAY2, "value"] == 1.0).all()
    assert (back.loc[back["ts"] >= DAY2, "value"] > 1.0).all()
    assert warehouse.count("metrics", tenant="globex") == 576
    assert warehouse.series("metrics", "acme", DAY1, DAY2) == [("acme", "api", "latency_p95_ms")]


def test_quarantine_is_replaced_per_source_and_per_partition(warehouse):
    rows = pd.DataFrame(
        {
            "source": ["drop/a.csv", "drop/a.csv"],
            "source_row": [3, 9],
            "tenant": ["acme", None],
            "ts": ["yesterday", "2026-10-01T00:00:00+00:00"],
            "field": ["ts", "tenant"],
            "reason": ["ts: cannot parse 'yesterday'", "tenant: missing"],
            "raw": ['{"ts": "yesterday"}', "{}"],
        }
    )
    for _ in range(2):
        warehouse.replace_quarantine(rows, stage="parse", source="drop/a.csv")
        warehouse.replace_quarantine(
            rows.iloc[:1], stage="quality", partition_key="2026-10-01|acme"
        )
    assert warehouse.count("quarantine", stage="parse") == 2
    assert warehouse.count("quarantine", stage="quality") == 1
    back = warehouse.read_quarantine(source="drop/a.csv")
    assert list(back.loc[back["stage"] == "parse", "source_row"]) == [3, 9]


def test_ingest_record_round_trip(warehouse):
    from dataclasses import replace

    record = IngestRecord(
        "drop/a.csv", "abc", "staged", 10, 9, 1, ("2026-10-01|acme",), run_id="r1"
    )
    warehouse.record_ingest(record)
    warehouse.record_ingest(record)
    # Without its own list, what must be gated is what the content touches.
    assert warehouse.read_ingest("drop/a.csv") == replace(record, pending=record.partitions)
    assert warehouse.count("ingests") == 1


def test_scores_round_trip_with_gaps_flags_and_time_filters_as_sqlalchemy_binds_them(
    warehouse, monkeypatch
):
    import monitoring_pipelines.warehouse.rows as module

    ts = pd.date_range("2026-10-01T23:00:00.000250Z", periods=30, freq="5min")
    scores = pd.DataFrame(
        {
            "tenant": "acme",
            "service": "api",
            "metric": "latency_p95_ms",
            "ts": ts,
            "value": np.linspace(1.0, 2.0, 30),
            "lstm_score": np.where(np.arange(30) % 3 == 0, np.nan, 0.25),
            "ensemble_score": np.linspace(0.0, 1.0, 30),
            "is_anomaly": np.arange(30) % 2 == 0,
            "model_versions": '{"zscore": 1}',
            "run_id": None,
        }
    )
    keys = ["ts"]
    found = {}
    for path in ("fast", "sqlalchemy"):
        if path == "sqlalchemy":
            monkeypatch.setattr(module, "sqlite_rows", lambda *args: None)
        warehouse.replace_partition("anomaly_scores", "acme", DAY1, DAY3, scores)
        # A filter on time must cut where the timestamps are, whatever wrote them.
        found[path] = warehouse.read_records("anomaly_scores", tenant="acme", start=DAY2)
        with warehouse.engine.connect() as conn:
            stored = "SELECT CAST(ts AS TEXT) FROM anomaly_scores ORDER BY ts"
            found[f"{path} text"] = [row[0] for row in conn.exec_driver_sql(stored)]
    # Stored exactly as SQLAlchemy stores them, so every reader and filter agrees.
    assert found.pop("fast text") == found.pop("sqlalchemy text")
    fast, reference = (found[p].sort_values(keys).reset_index(drop=True) for p in found)
    pd.testing.assert_frame_equal(fast, reference)
    assert len(fast) == int((ts >= DAY2).sum()) == 18
    assert fast["ts"].tolist() == ts[ts >= DAY2].tolist()
    assert fast["lstm_score"].isna().sum() == 6 and fast["run_id"].isna().all()
    assert fast["is_anomaly"].tolist() == scores["is_anomaly"][ts >= DAY2].tolist()


def test_a_home_created_before_a_column_existed_gets_it_on_open(tmp_path):
    """A new detector kind adds a `<kind>_score` column; an older warehouse must not break."""
    import sqlite3

    url = f"sqlite:///{tmp_path}/wh.db"
    Warehouse(url).dispose()
    with sqlite3.connect(tmp_path / "wh.db") as con:
        con.execute("ALTER TABLE anomaly_scores DROP COLUMN pca_score")
        con.execute("ALTER TABLE ingests DROP COLUMN pending")
    Warehouse(url).dispose()
    with sqlite3.connect(tmp_path / "wh.db") as con:
        scores = {row[1] for row in con.execute("PRAGMA table_info(anomaly_scores)")}
        ingests = {row[1] for row in con.execute("PRAGMA table_info(ingests)")}
    assert "pca_score" in scores and "pending" in ingests


def test_sqlite_connections_write_ahead_with_a_page_cache_the_indexes_fit(tmp_path):
    wh = Warehouse(f"sqlite:///{tmp_path}/wh.db")
    with wh.engine.connect() as conn:
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar_one()
        cache = conn.exec_driver_sql("PRAGMA cache_size").scalar_one()
    wh.dispose()
    assert (mode, cache) == ("wal", -65536)


def test_shadow_scores_are_kept_per_challenger_version_and_counted_per_day(warehouse):
    def shadow(version, start, periods):
        ts = pd.date_range(start, periods=periods, freq="5min", tz="UTC")
        return pd.DataFrame(
            {
                "tenant": "acme",
                "service": "api",
                "metric": "latency_p95_ms",
                "ts": ts,
                "kind": "zscore",
                "version": version,
                "score": 0.5,
                "ensemble_score": np.linspace(0.0, 1.0, periods),
                "threshold": 0.9,
                "is_anomaly": np.linspace(0.0, 1.0, periods) >= 0.9,
                "run_id": "r1",
            }
        )

    assert warehouse.shadow_days("acme", "zscore", 2) == []
    # Two days of version 2 and one of version 3 over the same points: neither replaces the other.
    warehouse.replace_shadow_scores("acme", "zscore", 2, DAY1, DAY3, shadow(2, DAY1, 288 * 2))
    warehouse.replace_shadow_scores("acme", "zscore", 3, DAY2, DAY3, shadow(3, DAY2, 288))
    assert warehouse.shadow_days("acme", "zscore", 2) == [pd.Timestamp(DAY1), pd.Timestamp(DAY2)]
    assert warehouse.shadow_days("acme", "zscore", 3) == [pd.Timestamp(DAY2)]
    # Re-scoring a day replaces that version's rows of the day only.
    warehouse.replace_shadow_scores("acme", "zscore", 2, DAY2, DAY3, shadow(2, DAY2, 288))
    rows = warehouse.read_records("shadow_scores", tenant="acme")
    assert rows.groupby("version").size().to_dict() == {2: 288 * 2, 3: 288}
    # Flagged: the re-scored day of version 2 and the day of version 3 (the first day of the
    # two-day write stayed under the threshold).
    assert int(rows["is_anomaly"].sum()) == 2 * int((np.linspace(0, 1, 288) >= 0.9).sum())
