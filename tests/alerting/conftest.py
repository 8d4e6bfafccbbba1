"""Score frames shaped like ``anomaly_scores`` rows, with anomalies placed by hand."""

import json

import numpy as np
import pandas as pd
import pytest

STEP = pd.Timedelta(minutes=5)
DAY0 = pd.Timestamp("2026-10-05T00:00:00Z")


def score_frame(
    series: dict[tuple[str, str], list[tuple[str, str, float]]] | None = None,
    *,
    tenant: str = "acme",
    start: pd.Timestamp = DAY0,
    periods: int = 288,
    base: float = 0.1,
    threshold: float = 0.5,
    metrics: dict[str, tuple[str, ...]] | None = None,
) -> pd.DataFrame:
    """One tenant's scores on a 5-minute grid; ``series[(service, metric)]`` lists
    ``(first_ts, last_ts, score)`` stretches (inclusive) painted over a quiet base score."""
    metrics = metrics or {"api": ("error_rate", "latency_p95_ms", "memory_percent")}
    ts = pd.date_range(start, periods=periods, freq=STEP)
    parts = []
    for service, names in metrics.items():
        for metric in names:
            score = np.full(periods, base)
            for first, last, value in (series or {}).get((service, metric), []):
                mask = (ts >= _utc(first)) & (ts <= _utc(last))
                score[mask] = value
            parts.append(
                pd.DataFrame(
                    {
                        "tenant": tenant,
                        "service": service,
                        "metric": metric,
                        "ts": ts,
                        "value": 100 * score,
                        "ensemble_score": score,
                        "threshold": threshold,
                        "is_anomaly": score >= threshold,
                        "model_versions": json.dumps({"isolation_forest": 3, "zscore": 1}),
                        "run_id": "score-run",
                    }
                )
            )
    return pd.concat(parts, ignore_index=True)


def _utc(text: str) -> pd.Timestamp:
    value = pd.Timestamp(text)
    return value.tz_localize("UTC") if value.tzinfo is None else value


@pytest.fixture
def server():
    """Start local HTTP endpoints (``server(check, **options)``); all closed after the test."""
    from tests.alerting.servers import RecordingServer

    servers = []

    def start(check=None, **kwargs):
        srv = RecordingServer(check, **kwargs)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.close()
