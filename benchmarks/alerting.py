"""``make bench``, alerting part: how fast scores become incidents and notifications arrive.

- alerting throughput: scored points per second through the alerts step (read a tenant-day of
  ``anomaly_scores`` with its lookback, group into incidents, plan routing, write the incidents
  and queue the notifications), on SQLite, per tenant-day as the alerting job runs it;
- delivery latency: seconds from a notification being queued to its receiver answering, for a
  signed webhook served by a local HTTP server and for the file receiver, with the throughput of
  one dispatch in notifications per second.

Scores are synthetic (5 tenants x 24 series x 7 days at 5-minute steps, with a few incidents
per tenant-day), so the figure is about alerting, not the detectors.
"""

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd

TENANTS = ("acme", "globex", "initech", "umbrella", "wayne")
SERVICES = {
    "api": ("requests_per_second", "latency_p50_ms", "latency_p95_ms", "error_rate"),
    "playback": ("streams_started", "startup_latency_p95_ms", "buffering_ratio", "cpu_percent"),
    "recommendations": ("latency_p95_ms", "error_rate", "skip_rate", "cache_hit_ratio"),
}
START = datetime(2026, 10, 5, tzinfo=UTC)
STEP = timedelta(minutes=5)


def _scores(tenant: str, day: datetime, rng: np.random.Generator) -> pd.DataFrame:
    ts = pd.date_range(day, periods=288, freq="5min", tz="UTC")
    parts = []
    for service, metrics in SERVICES.items():
        # Two windows a day per service where a few of its metrics move together.
        windows = [(int(s), int(s) + int(rng.integers(3, 24))) for s in rng.integers(0, 260, 2)]
        for metric in metrics:
            score = rng.beta(2, 9, len(ts))
            for lo, hi in windows:
                if rng.random() < 0.6:
                    score[lo:hi] = rng.uniform(0.7, 1.0, hi - lo)
            parts.append(
                pd.DataFrame(
                    {
                        "tenant": tenant,
                        "service": service,
                        "metric": metric,
                        "ts": ts,
                        "value": score * 100,
                        "ensemble_score": score,
                        "threshold": 0.6,
                        "is_anomaly": score >= 0.6,
                        "model_versions": json.dumps({"isolation_forest": 1, "zscore": 1}),
                        "run_id": "bench",
                    }
                )
            )
    return pd.concat(parts, ignore_index=True)


class _Webhook(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def _policy(port: int) -> str:
    return (
        "receivers:\n"
        "  hook:\n"
        "    type: webhook\n"
        f"    url: http://127.0.0.1:{port}/hook\n"
        "    secret_env: BENCH_SECRET\n"
        "  files: {type: file, path: notifications}\n"
        "route:\n"
        "  receiver: files\n"
        "  routes:\n"
        "    - {matchers: ['severity=~critical|high|medium|low'], receiver: hook, continue: true}\n"
    )


def run_once(days: int, seed: int) -> dict:
    from monitoring_pipelines.alerting.policy import loads_policy
    from monitoring_pipelines.alerting.service import deliver, raise_incidents
    from monitoring_pipelines.warehouse import Warehouse

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        os.environ["MONITORING_HOME"] = str(home)
        os.environ["BENCH_SECRET"] = "bench-signing-secret"
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        policy = loads_policy(_policy(server.server_address[1]), "bench-alerting.yaml")
        wh = Warehouse(f"sqlite:///{home / 'warehouse.db'}")
        spans = [(t, START + i * timedelta(days=1)) for t in TENANTS for i in range(days)]
        for tenant, day in spans:
            wh.replace_partition(
                "anomaly_scores", tenant, day, day + timedelta(days=1), _scores(tenant, day, rng)
            )
        points = wh.count("anomaly_scores")
        t0 = time.perf_counter()
        incidents = 0
        for tenant in TENANTS:
            for i in range(days):
                day = START + i * timedelta(days=1)
                outcome = raise_incidents(
                    wh,
                    policy,
                    tenant,
                    day,
                    day + timedelta(days=1),
                    run_id="bench",
                    partition_key=f"{day:%Y-%m-%d}|{tenant}",
                    dagster_url="http://127.0.0.1:3000",
                )
                incidents += len(outcome.incidents)
        raise_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        report = deliver(wh, policy, limit=100_000)
        deliver_seconds = time.perf_counter() - t1
        server.shutdown()
        wh.dispose()
    latencies = sorted(report.latencies.values())
    return {
        "points": points,
        "incidents": incidents,
        "points_per_s": points / raise_seconds,
        "notifications": report.sent,
        "notifications_per_s": report.sent / deliver_seconds if deliver_seconds else 0.0,
        "latency_median_s": statistics.median(latencies) if latencies else float("nan"),
        "latency_p95_s": latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan"),
        "failed": report.dead + report.retried,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--days", type=int, default=7)
    args = parser.parse_args()
    runs = [run_once(args.days, seed) for seed in range(args.runs)]

    def med(key):
        return statistics.median(r[key] for r in runs)

    print(
        f"alerting: {med('points_per_s'):,.0f} scored points/s into incidents "
        f"({runs[0]['points']:,} points, {med('incidents'):.0f} incidents; "
        f"median of {args.runs})"
    )
    print(
        f"delivery: {med('notifications'):.0f} notifications to a signed webhook and a file, "
        f"{med('notifications_per_s'):,.0f}/s; latency queued->delivered median "
        f"{med('latency_median_s') * 1000:.0f} ms, p95 {med('latency_p95_s') * 1000:.0f} ms; "
        f"{med('failed'):.0f} failed (median of {args.runs})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
