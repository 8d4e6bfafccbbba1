"""The exporter's warehouse figures read straight from the reader, on SQLite and PostgreSQL
(the Prometheus round trip is in test_exporter.py)."""

import time
from datetime import UTC, datetime, timedelta

import pandas as pd

from monitoring_pipelines.health.warehouse_figures import read_warehouse_figures
from tests.alerting.servers import sample_notification


def _points(tenant: str, start: str, n: int) -> pd.DataFrame:
    ts = pd.date_range(start, periods=n, freq="5min", tz="UTC")
    return pd.DataFrame(
        {"tenant": tenant, "service": "api", "metric": "cpu_percent", "ts": ts, "value": 1.0}
    )


def test_warehouse_figures_on_every_backend(warehouse):
    """The warehouse's figures straight from the reader, on SQLite and PostgreSQL: counts,
    newest and oldest points by tenant, scoring lag, blocked days, quarantine labels kept few."""
    start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC)
    for tenant, n in (("acme", 20), ("acme-eu", 5)):
        rows = _points(tenant, "2026-11-01", n)
        warehouse.replace_partition("metrics", tenant, start, end, rows.assign(tags="", source="f"))
        grid = rows.assign(is_gap=False, n_raw=1)
        warehouse.replace_partition("clean_metrics", tenant, start, end, grid)
    scored = _points("acme", "2026-11-01", 8).assign(is_anomaly=False, model_versions="{}")
    warehouse.replace_partition("anomaly_scores", "acme", start, end, scored)
    warehouse.bump_partitions(["2026-11-02|acme-eu"])
    warehouse.record_gated("2026-11-02|acme-eu", 1, blocked=True)
    bad = pd.DataFrame(
        {
            "source": "f",
            "source_row": [1, 2, 3],
            "tenant": ["acme", "no such tenant", None],
            "ts": ["x", "y", "z"],
            "field": ["ts", "tenant", "tenant"],
            "reason": ["ts: 'x' is not a time", "tenant: bad", "tenant: missing"],
            "raw": "{}",
        }
    )
    warehouse.replace_quarantine(bad, stage="parse", source="f")

    figures = read_warehouse_figures(warehouse.engine, time.time(), known_tenants=("globex",))
    assert figures.accepted_rows == {"acme": 20, "acme-eu": 5}
    assert figures.ingested_rows == {"acme": 21, "acme-eu": 5, "unknown": 2}
    assert figures.quarantined_rows == {
        ("acme", "parse", "ts"): 1,
        ("unknown", "parse", "tenant"): 2,
    }
    assert figures.blocked_partitions == {"acme-eu": 1}
    first = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    assert figures.newest_accepted == {"acme": first + 19 * 300, "acme-eu": first + 4 * 300}
    assert figures.scoring_lag("acme") == (19 - 7) * 300
    assert figures.scoring_lag("acme-eu") == 4 * 300  # nothing scored: the whole grid
    assert figures.scoring_lag("globex") is None


def test_the_outbox_age_counts_only_what_is_due(warehouse):
    """An escalation waiting for its deadline is in the outbox but not late; a notification due
    an hour ago and not sent is."""
    from monitoring_pipelines.alerting import outbox

    now = datetime.now(UTC)
    later = now + timedelta(minutes=15)
    outbox.enqueue(warehouse, [sample_notification("pager", "escalate", not_before=later)], now=now)
    figures = read_warehouse_figures(warehouse.engine, now.timestamp())
    assert figures.notifications == {("pager", "pending"): 1}
    assert figures.oldest_due_undelivered == {}
    due = now - timedelta(hours=1)
    outbox.enqueue(warehouse, [sample_notification("pager", key="late")], now=due)
    figures = read_warehouse_figures(warehouse.engine, now.timestamp())
    assert figures.oldest_due_undelivered == {"pager": due.timestamp()}
