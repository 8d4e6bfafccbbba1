"""``make bench``, reports part: seconds to build and write the weekly and the monthly reports of
five tenants (one across all tenants plus one per tenant, HTML + JSON + Markdown each), as the
``weekly_report`` and ``monthly_report`` assets do.

Data: the demo generator's five tenants x 24 series at 5-minute steps (no bad rows) over 35 days
in ``metrics`` and on the grid, with synthetic incidents (a few per tenant-day, some acknowledged,
some marked false positive), their notifications and flagged scores, and the demo's label
windows. The MLflow registry is not read (no models): the forecast is the fitted one.
"""

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

TENANTS = ("acme", "globex", "initech", "umbrella", "wayne")
START = datetime(2026, 9, 28, tzinfo=UTC)
DAYS = 35


def _incidents(tenant: str, records: pd.DataFrame, rng: np.random.Generator):
    series = records[["service", "metric"]].drop_duplicates().to_numpy()
    alerts, notes, scores = [], [], {}
    for day in range(DAYS):
        for n in range(int(rng.integers(1, 4))):
            service, metric = series[int(rng.integers(0, len(series)))]
            start = START + timedelta(days=day, minutes=5 * int(rng.integers(0, 280)))
            end = start + timedelta(minutes=5 * int(rng.integers(2, 24)))
            fp = f"{tenant[:4]}{day:04d}{n:08d}"
            alerts.append(
                {
                    "fingerprint": fp,
                    "tenant": tenant,
                    "service": service,
                    "kind": "anomaly",
                    "severity": ("critical", "high", "medium", "low")[int(rng.integers(0, 4))],
                    "status": "resolved",
                    "started_at": start,
                    "last_seen_at": end,
                    "resolved_at": end,
                    "score": float(rng.uniform(0.6, 1.0)),
                    "metrics": json.dumps(
                        [
                            {
                                "metric": metric,
                                "peak_score": 0.9,
                                "peak_value": 1.0,
                                "threshold": 0.6,
                                "first_ts": start.isoformat(),
                                "last_ts": end.isoformat(),
                                "points": 3,
                            }
                        ]
                    ),
                    "summary": "",
                    "labels": "{}",
                    "model_versions": "{}",
                    "partition_key": f"{start:%Y-%m-%d}|{tenant}",
                    "acknowledged_at": start + timedelta(minutes=7) if rng.random() < 0.5 else None,
                    "feedback": "false_positive" if rng.random() < 0.1 else None,
                    "updated_at": end,
                }
            )
            notes.append(
                {
                    "idempotency_key": f"{fp}-t",
                    "fingerprint": fp,
                    "tenant": tenant,
                    "receiver": "files",
                    "event": "trigger",
                    "locale": "en",
                    "payload": "{}",
                    "status": "sent",
                    "attempts": 1,
                    "next_attempt_at": start,
                    "created_at": start,
                }
            )
            for ts in pd.date_range(start, end, freq="5min"):
                scores[(service, metric, ts)] = {
                    "tenant": tenant,
                    "service": service,
                    "metric": metric,
                    "ts": ts.to_pydatetime(),
                    "value": 1.0,
                    "isolation_forest_score": float(rng.uniform(0.3, 1.0)),
                    "zscore_score": float(rng.uniform(0.4, 1.0)),
                    "ensemble_score": 0.8,
                    "threshold": 0.6,
                    "is_anomaly": True,
                    "model_versions": "{}",
                }
    # Incidents of a series may overlap: one score row per point.
    return alerts, notes, list(scores.values())


def seed(home: Path) -> str:
    from monitoring_pipelines.sources.demo import DemoConfig, generate
    from monitoring_pipelines.warehouse import Warehouse, alerts, anomaly_scores, notifications

    data = generate(DemoConfig(tenants=TENANTS, days=DAYS, bad_rows=False, broken_partition=False))
    (home / "labels.json").write_text(json.dumps(data.labels))
    url = f"sqlite:///{home / 'warehouse.db'}"
    wh = Warehouse(url)
    rng = np.random.default_rng(7)
    end = START + timedelta(days=DAYS)
    for tenant, records in data.records.groupby("tenant"):
        rows = records.dropna(subset=["value"]).drop_duplicates(["service", "metric", "ts"])
        rows = rows.assign(tags="", source=f"bench/{tenant}")
        wh.replace_partition("metrics", tenant, START, end, rows)
        grid = rows[["tenant", "service", "metric", "ts", "value"]].assign(is_gap=False, n_raw=1)
        wh.replace_partition("clean_metrics", tenant, START, end, grid)
        incs, notes, scores = _incidents(tenant, records, rng)
        with wh.engine.begin() as conn:
            conn.execute(alerts.insert(), incs)
            conn.execute(notifications.insert(), notes)
            conn.execute(anomaly_scores.insert(), scores)
    wh.dispose()
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import os

    from monitoring_pipelines.reports.periods import MONTH, WEEK, period_as_of
    from monitoring_pipelines.reports.service import write_reports
    from monitoring_pipelines.settings import load_settings

    with tempfile.TemporaryDirectory(prefix="bench-reports-") as tmp:
        home = Path(tmp)
        os.environ["MONITORING_HOME"] = str(home)
        os.environ["MONITORING_TENANTS"] = ",".join(TENANTS)
        os.environ["MONITORING_WAREHOUSE_URL"] = seed(home)
        settings = load_settings()
        as_of = (START + timedelta(days=DAYS)).date()
        for kind, label in ((WEEK, "weekly"), (MONTH, "monthly")):
            period = period_as_of(kind, as_of)
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                written = write_reports(settings, period)
                times.append(time.perf_counter() - t0)
            size = sum(p.stat().st_size for w in written for p in w.paths.values())
            print(
                f"reports: {label} ({period.key}, {len(written)} reports: all tenants + "
                f"{len(TENANTS)} tenants) {statistics.median(times):.2f} s "
                f"(median of {args.repeat}), {size / 1e6:.1f} MB written"
            )


if __name__ == "__main__":
    main()
