"""A small warehouse with known rows for two tenants with distinctive names.

The week under test is Monday 2026-10-19 to Sunday 2026-10-25 (UTC); the week before is the
previous period. Tests compute the figures they check from the rows defined here, not from the
report code.
"""

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from monitoring_pipelines.reports.periods import WEEK, period_containing
from monitoring_pipelines.warehouse import Warehouse, alerts, anomaly_scores, notifications

TENANTS = ("zephyrcorp", "quillbank")
SERVICES = ("api", "search")
METRICS = ("requests_per_second", "error_rate", "latency_p95_ms", "cpu_percent")
START = datetime(2026, 10, 5, tzinfo=UTC)  # three weeks of history before the period ends
WEEK_START = datetime(2026, 10, 19, tzinfo=UTC)
WEEK_END = datetime(2026, 10, 26, tzinfo=UTC)
STEP = timedelta(minutes=5)
BLOCKED_DAY = "2026-10-21"  # zephyrcorp: accepted rows, never gridded, a data-quality incident


def t(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 10, day, hour, minute, tzinfo=UTC)


@dataclass
class Seed:
    warehouse: Warehouse
    metrics: pd.DataFrame
    incidents: list[dict]
    notifications: list[dict]
    quarantine: list[dict]
    labels: dict
    labels_path: object
    flagged: pd.DataFrame
    extra: dict = field(default_factory=dict)


def metric_frame(tenant: str, index: int, services=SERVICES) -> pd.DataFrame:
    ts = pd.date_range(START, WEEK_END, freq=STEP, inclusive="left", tz="UTC")
    hours = np.arange(len(ts)) * STEP.total_seconds() / 3600
    frames = []
    for s, service in enumerate(services):
        # Busy first half of each day (errors 0.4 %), quiet second half (no errors): the
        # request-weighted error rate differs from the plain mean.
        busy = ts.hour < 12
        requests = np.where(busy, 300.0, 100.0) * (1 + index + s)
        errors = np.where(busy, 0.004 * (1 + s), 0.0)
        latency = 200.0 + 50 * s + 10 * index + 20 * np.sin(2 * np.pi * ts.hour / 24)
        # A rising CPU that the forecast must see cross 85 % within the week after.
        cpu = 50.0 + 0.06 * hours + 5 * index
        for metric, values in zip(METRICS, (requests, errors, latency, cpu), strict=True):
            frames.append(
                pd.DataFrame(
                    {
                        "tenant": tenant,
                        "service": service,
                        "metric": metric,
                        "ts": ts,
                        "value": values,
                        "tags": "",
                        "source": f"test/{tenant}",
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def _incident(tenant, service, n, severity, start, minutes, **kw) -> dict:
    end = start + timedelta(minutes=minutes)
    metric = kw.pop("metric", "error_rate")
    resolved = kw.pop("resolved", True)
    return {
        "fingerprint": f"{tenant[:4]}{n:012d}",
        "tenant": tenant,
        "service": service,
        "kind": kw.pop("kind", "anomaly"),
        "severity": severity,
        "status": "resolved" if resolved else "firing",
        "started_at": start,
        "last_seen_at": end,
        "resolved_at": end if resolved else None,
        "score": kw.pop("score", 0.9),
        "metrics": json.dumps(
            [
                {
                    "metric": metric,
                    "peak_score": 0.95,
                    "peak_value": 0.05,
                    "threshold": 0.6,
                    "first_ts": start.isoformat(),
                    "last_ts": end.isoformat(),
                    "points": minutes // 5,
                }
            ]
        ),
        "summary": "",
        "labels": "{}",
        "model_versions": "{}",
        "partition_key": kw.pop("partition_key", f"{start:%Y-%m-%d}|{tenant}"),
        "acknowledged_at": kw.pop("acknowledged_at", None),
        "acknowledged_by": "alice" if kw.get("ack") else None,
        "feedback": kw.pop("feedback", None),
        "updated_at": end,
    }


def incidents_for(tenant: str, services=SERVICES, metric="latency_p95_ms") -> list[dict]:
    api, search = services
    i = [
        # In the period: 2 critical, 1 high, 2 medium, one off-hours (Saturday 03:00).
        _incident(tenant, api, 1, "critical", t(19, 10), 40, acknowledged_at=t(19, 10, 6)),
        _incident(tenant, api, 2, "critical", t(20, 14), 90, acknowledged_at=t(20, 14, 20)),
        _incident(tenant, search, 3, "high", t(24, 3), 30, metric=metric),
        # Flaps with incident 1: the same series starts again 20 minutes after it resolved.
        _incident(tenant, api, 4, "medium", t(19, 11), 10, feedback="false_positive"),
        _incident(tenant, search, 5, "medium", t(25, 23, 30), 60, resolved=False),
        # The week before: 1 low.
        _incident(tenant, api, 6, "low", t(13, 9), 20),
    ]
    if tenant == "zephyrcorp":
        i.append(
            _incident(
                tenant,
                "ingest",
                7,
                "high",
                t(21, 0),
                5,
                kind="data_quality",
                metric="values_in_range",
                partition_key=f"{BLOCKED_DAY}|{tenant}",
            )
        )
    return i


def seed_tenant(
    wh: Warehouse,
    tenant: str,
    index: int,
    *,
    blocked: bool,
    services=SERVICES,
    incident_metric="latency_p95_ms",
) -> dict:
    frame = metric_frame(tenant, index, services)
    wh.replace_partition("metrics", tenant, START, WEEK_END, frame)
    grid = frame[["tenant", "service", "metric", "ts", "value"]].copy()
    grid["is_gap"] = False
    grid["n_raw"] = 1
    if blocked:
        grid = grid[grid["ts"].dt.strftime("%Y-%m-%d") != BLOCKED_DAY]
    else:
        # Ten gaps in the period.
        gaps = grid.index[(grid["ts"] >= WEEK_START) & (grid["metric"] == "cpu_percent")][:10]
        grid.loc[gaps, "is_gap"] = True
        grid.loc[gaps, "value"] = np.nan
    wh.replace_partition("clean_metrics", tenant, START, WEEK_END, grid)

    incs = incidents_for(tenant, services, incident_metric)
    with wh.engine.begin() as conn:
        conn.execute(alerts.insert(), incs)
    notes = []
    for inc in incs:
        for event, status in (("trigger", "sent"), ("escalate", "sent"), ("resolve", "sent")):
            if event == "escalate" and inc["severity"] != "critical":
                continue
            notes.append(
                {
                    "idempotency_key": f"{inc['fingerprint']}-{event}",
                    "fingerprint": inc["fingerprint"],
                    "tenant": tenant,
                    "receiver": "files",
                    "event": event,
                    "locale": "en",
                    "payload": "{}",
                    "status": status,
                    "attempts": 1,
                    "next_attempt_at": inc["started_at"],
                    "created_at": inc["started_at"],
                }
            )
    # One suppressed trigger (silenced): not a page.
    notes.append({**notes[0], "idempotency_key": f"{tenant}-silenced", "status": "suppressed"})
    with wh.engine.begin() as conn:
        conn.execute(notifications.insert(), notes)

    quarantined = []
    if blocked:
        q = pd.DataFrame(
            {
                "source": f"test/{tenant}",
                "source_row": range(7),
                "tenant": tenant,
                "ts": [f"{BLOCKED_DAY}T01:00:00+00:00"] * 7,
                "field": ["value"] * 5 + ["key"] * 2,
                "reason": ["value: -3.5 outside [0, 1] for ratio metric error_rate"] * 5
                + ["duplicate of (tenant, service, metric, ts); superseded by row 9 of x"] * 2,
                "raw": "{}",
            }
        )
        wh.replace_quarantine(q, stage="quality", partition_key=f"{BLOCKED_DAY}|{tenant}")
        quarantined = q.to_dict("records")
    else:
        q = pd.DataFrame(
            {
                "source": f"test/{tenant}.csv",
                "source_row": range(3),
                "tenant": tenant,
                "ts": ["2026-10-20T05:00:00Z"] * 3,
                "field": ["ts"] * 3,
                "reason": ["ts: cannot parse 'yesterday'"] * 3,
                "raw": "{}",
            }
        )
        wh.replace_quarantine(q, stage="parse", source=f"test/{tenant}.csv")
        quarantined = q.to_dict("records")

    # Flagged points of incident 1 and 2 with member scores.
    rows = []
    for inc in incs[:2]:
        ts = pd.date_range(inc["started_at"], inc["last_seen_at"], freq=STEP, tz="UTC")
        for k, stamp in enumerate(ts):
            rows.append(
                {
                    "tenant": tenant,
                    "service": inc["service"],
                    "metric": "error_rate",
                    "ts": stamp,
                    "value": 0.05,
                    "isolation_forest_score": 0.7 if k % 2 == 0 else 0.3,
                    "lstm_score": None,
                    "prophet_score": 0.2,
                    "zscore_score": 0.9,
                    "ensemble_score": 0.8,
                    "threshold": 0.6,
                    "is_anomaly": True,
                    "model_versions": "{}",
                    "run_id": "r",
                }
            )
    flagged = pd.DataFrame(rows)
    with wh.engine.begin() as conn:
        conn.execute(
            anomaly_scores.insert(),
            flagged.assign(ts=lambda f: list(f["ts"].dt.to_pydatetime())).to_dict("records"),
        )
    return {
        "metrics": frame,
        "incidents": incs,
        "notifications": notes,
        "quarantine": quarantined,
        "flagged": flagged,
    }


@pytest.fixture(scope="session")
def seeded(tmp_path_factory) -> Seed:
    """Built once per session: the tests only read it."""
    tmp_path = tmp_path_factory.mktemp("reports")
    wh = Warehouse(f"sqlite:///{tmp_path / 'warehouse.db'}")
    parts = [seed_tenant(wh, tenant, i, blocked=(i == 0)) for i, tenant in enumerate(TENANTS)]
    labels = {
        # Overlaps incident 1 of each tenant; the second window is missed.
        f"{tenant}/api/error_rate": [
            [t(19, 10, 10).isoformat(), t(19, 10, 30).isoformat()],
            [t(22, 4).isoformat(), t(22, 5).isoformat()],
        ]
        for tenant in TENANTS
    }
    labels_path = tmp_path / "labels.json"
    labels_path.write_text(json.dumps(labels))
    seed = Seed(
        warehouse=wh,
        metrics=pd.concat([p["metrics"] for p in parts], ignore_index=True),
        incidents=[i for p in parts for i in p["incidents"]],
        notifications=[n for p in parts for n in p["notifications"]],
        quarantine=[q for p in parts for q in p["quarantine"]],
        labels=labels,
        labels_path=labels_path,
        flagged=pd.concat([p["flagged"] for p in parts], ignore_index=True),
    )
    yield seed
    wh.dispose()


@pytest.fixture
def week():
    return period_containing(WEEK, WEEK_START.date(), "UTC")


def count_rows(wh: Warehouse, table: str) -> int:
    with wh.engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
