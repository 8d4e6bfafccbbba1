"""The Prometheus pull source against a real Prometheus server started for this session.

The server scrapes itself every second under three jobs whose static labels give three tenants:
``acme`` and ``globex`` (valid) and ``bad tenant!`` (not a valid name), so every mapping rule is
exercised on real query_range answers.
"""

import http.server
import itertools
import json
import math
import threading
import time
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import requests

from monitoring_pipelines.sources.config import REJECTED_COLUMNS, SourceError
from monitoring_pipelines.sources.prometheus import (
    MAX_POINTS_PER_SERIES,
    PrometheusSource,
    PromQuery,
)
from monitoring_pipelines.sources.records import FRAME_COLUMNS
from tests.prometheus_server import config, free_port, prometheus_server, scrape_job

JOBS = {
    "acme-self": ("acme", "prometheus"),
    "globex-self": ("globex", "prometheus"),
    "bad-self": ("bad tenant!", "prometheus"),
}
SECOND = pd.Timedelta(seconds=1)


def _first_scrape(url: str) -> float | None:
    """When every job had been scraped once (epoch seconds), or None while one has not."""
    answer = requests.get(f"{url}/api/v1/query", params={"query": "up[1h]"}, timeout=2).json()
    firsts = [float(r["values"][0][0]) for r in answer["data"]["result"] if r["values"]]
    return max(firsts) if len(firsts) == len(JOBS) else None


def _every_job_scraped(url: str) -> bool:
    return _first_scrape(url) is not None


_covered_since: list[float] = []


@pytest.fixture(scope="session")
def prometheus_url(tmp_path_factory):
    """The server scrapes itself under the three jobs of JOBS."""
    port = free_port()
    jobs = [
        scrape_job(job, f"127.0.0.1:{port}", {"tenant": tenant, "service": service})
        for job, (tenant, service) in JOBS.items()
    ]
    workdir = tmp_path_factory.mktemp("prometheus")
    with prometheus_server(
        workdir, port, config(jobs), lambda url: _first_scrape(url) is not None
    ) as url:
        _covered_since[:] = [_first_scrape(url)]
        yield url


def _recent_window(seconds: int) -> tuple[datetime, datetime]:
    """A window of whole seconds ending a second ago, every point of which has scraped data:
    the server's data starts at its first scrape, so wait for enough history if need be."""
    # Prometheus looks back from each evaluation time, so a point 1 s after the first scrape
    # of every job is the first that sees all of them.
    wait = _covered_since[0] + 1 + seconds + 1 - time.time()
    if wait > 0:
        time.sleep(wait)
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    return end - timedelta(seconds=seconds), end


def _assert_contract(result) -> None:
    assert list(result.records.columns) == list(FRAME_COLUMNS)
    assert list(result.rejected.columns) == list(REJECTED_COLUMNS)
    assert str(result.records["ts"].dtype) == "datetime64[ns, UTC]"
    assert result.records["value"].dtype == "float64"


def test_fetch_maps_labels_to_records(prometheus_url):
    start, end = _recent_window(12)
    source = PrometheusSource(
        prometheus_url, [PromQuery("up", "up", "up_ratio")], name="local", step_seconds=1
    )
    result = source.fetch(start, end)
    _assert_contract(result)
    records = result.records
    assert set(records["tenant"]) == {"acme", "globex"}
    assert set(records["service"]) == {"prometheus"}
    assert set(records["metric"]) == {"up_ratio"}
    assert set(records["source"]) == {"prometheus:up"}
    assert (records["value"] == 1.0).all()
    port = prometheus_url.rsplit(":", 1)[1]
    assert set(records["tags"]) == {
        f'{{"instance":"127.0.0.1:{port}","job":"acme-self"}}',
        f'{{"instance":"127.0.0.1:{port}","job":"globex-self"}}',
    }
    first, last = pd.Timestamp(start), pd.Timestamp(end)
    assert records["ts"].min() == first
    assert records["ts"].max() == last - SECOND
    assert ((records["ts"] - first) % SECOND == pd.Timedelta(0)).all()
    assert records.groupby("tenant").size().to_dict() == {"acme": 12, "globex": 12}

    # The bad tenant's series is not dropped silently: each point is rejected with the reason.
    rejected = result.rejected
    assert len(rejected) == 12
    assert set(rejected["tenant"]) == {"bad tenant!"}
    assert set(rejected["field"]) == {"tenant"}
    assert set(rejected["reason"]) == {
        "tenant: 'bad tenant!' (label 'tenant') is not a valid name "
        "(letters, digits, '_', '.', '-', up to 64, starting with a letter or digit)"
    }
    raw = json.loads(rejected["raw"].iloc[0])
    assert raw["labels"]["job"] == "bad-self" and raw["value"] == "1"
    # One numbering for both frames: every point of the fetch has its own row number.
    rows = sorted([*records["source_row"], *rejected["source_row"]])
    assert rows == list(range(1, 37))


def test_constant_service_keeps_the_label_as_a_tag(prometheus_url):
    start, end = _recent_window(5)
    query = PromQuery(
        "head", "prometheus_tsdb_head_series", "head_series", service="tsdb", tenant_label="tenant"
    )
    result = PrometheusSource(prometheus_url, [query], step_seconds=1).fetch(start, end)
    assert set(result.records["service"]) == {"tsdb"}
    assert (result.records["value"] > 0).all()
    tags = json.loads(result.records["tags"].iloc[0])
    assert tags["service"] == "prometheus"
    assert "tenant" not in tags and "__name__" not in tags


def test_tenant_filter(prometheus_url):
    start, end = _recent_window(10)
    source = PrometheusSource(prometheus_url, [PromQuery("up", "up", "up")], step_seconds=1)
    result = source.fetch(start, end, tenant="globex")
    assert set(result.records["tenant"]) == {"globex"}
    assert len(result.records) == 10
    assert result.rejected.empty
    bad = source.fetch(start, end, tenant="bad tenant!")
    assert bad.records.empty and len(bad.rejected) == 10


def test_end_is_exclusive_and_adjacent_windows_tile(prometheus_url):
    start, end = _recent_window(12)
    middle = start + timedelta(seconds=5)
    source = PrometheusSource(prometheus_url, [PromQuery("up", "up", "up")], step_seconds=1)
    whole = source.fetch(start, end, tenant="acme").records
    left = source.fetch(start, middle, tenant="acme").records
    right = source.fetch(middle, end, tenant="acme").records
    assert left["ts"].max() == pd.Timestamp(middle) - SECOND
    assert right["ts"].min() == pd.Timestamp(middle)
    assert list(pd.concat([left["ts"], right["ts"]])) == list(whole["ts"])


def test_paginated_requests_give_the_same_records(prometheus_url):
    start, end = _recent_window(12)
    queries = [PromQuery("up", "up", "up")]
    one = PrometheusSource(prometheus_url, queries, step_seconds=1).fetch(start, end)
    paged = PrometheusSource(
        prometheus_url, queries, step_seconds=1, max_points_per_request=3
    ).fetch(start, end)
    columns = ["tenant", "service", "metric", "ts", "value", "tags"]

    def ordered(frame):
        return frame[columns].sort_values(columns).reset_index(drop=True)

    pd.testing.assert_frame_equal(ordered(paged.records), ordered(one.records))
    assert len(paged.rejected) == len(one.rejected)


def test_windows_respect_the_points_limit():
    source = PrometheusSource("http://127.0.0.1:9", [], step_seconds=1)
    start = datetime(2026, 9, 1, tzinfo=UTC)
    windows = source.windows(start, start + timedelta(days=1))
    assert len(windows) == 8
    points = [(last - first) // 1000 + 1 for first, last in windows]
    assert max(points) <= MAX_POINTS_PER_SERIES and sum(points) == 86_400
    for (_, last), (first, _) in itertools.pairwise(windows):
        assert first - last == 1000
    assert windows[-1][1] == int((start + timedelta(days=1)).timestamp() * 1000) - 1000
    daily = PrometheusSource("http://127.0.0.1:9", [], step_seconds=300)
    assert daily.windows(start, start + timedelta(days=1)) == [
        (int(start.timestamp() * 1000), int(start.timestamp() * 1000) + 287 * 300_000)
    ]
    assert daily.windows(start, start) == []


def test_nan_and_infinity_pass_through(prometheus_url):
    start, end = _recent_window(3)
    queries = [
        PromQuery("inf", "up / 0", "inf_value"),
        PromQuery("neginf", "-up / 0", "neginf_value"),
        PromQuery("nan", "(up - 1) / 0", "nan_value"),
    ]
    result = PrometheusSource(prometheus_url, queries, step_seconds=1).fetch(
        start, end, tenant="acme"
    )
    by_metric = result.records.groupby("metric")["value"]
    assert (by_metric.get_group("inf_value") == math.inf).all()
    assert (by_metric.get_group("neginf_value") == -math.inf).all()
    assert by_metric.get_group("nan_value").isna().all()


def test_series_without_tenant_label_are_rejected(prometheus_url):
    start, end = _recent_window(5)
    query = PromQuery("by_job", "sum by (job, service) (up)", "up_sum")
    result = PrometheusSource(prometheus_url, [query], step_seconds=1).fetch(start, end)
    assert result.records.empty
    assert len(result.rejected) == 15
    assert set(result.rejected["field"]) == {"tenant"}
    assert set(result.rejected["reason"]) == {"tenant: missing (the series has no label 'tenant')"}
    assert result.rejected["tenant"].isna().all()
    assert set(result.rejected["source"]) == {"prometheus:by_job"}
    assert pd.to_datetime(result.rejected["ts"]).min() == pd.Timestamp(start)
    # Unattributable points belong to no tenant, so a tenant's fetch does not report them.
    assert (
        PrometheusSource(prometheus_url, [query], step_seconds=1)
        .fetch(start, end, tenant="acme")
        .rejected.empty
    )


def test_bad_promql_is_a_one_line_error_naming_the_query(prometheus_url):
    start, end = _recent_window(5)
    queries = [PromQuery("up", "up", "up"), PromQuery("broken", "sum(up", "x")]
    with pytest.raises(SourceError) as caught:
        PrometheusSource(prometheus_url, queries, name="local", step_seconds=1).fetch(start, end)
    message = str(caught.value)
    assert message.startswith(f"prometheus source local ({prometheus_url}), query broken: ")
    assert "HTTP 400 bad_data: " in message and "parse error" in message
    assert "\n" not in message


def test_dead_port_is_a_one_line_connection_error():
    port = free_port()
    source = PrometheusSource(
        f"http://127.0.0.1:{port}",
        [PromQuery("up", "up", "up")],
        step_seconds=60,
        retries=2,
        backoff_seconds=0.01,
    )
    start = datetime(2026, 9, 1, tzinfo=UTC)
    with pytest.raises(SourceError) as caught:
        source.fetch(start, start + timedelta(hours=1))
    assert str(caught.value) == (
        f"prometheus source prometheus (http://127.0.0.1:{port}), query up: "
        f"connection refused to http://127.0.0.1:{port} (after 3 attempts)"
    )


class _Proxy:
    """A front for the real server that can fail the first requests and records headers."""

    def __init__(self, upstream: str, failures: list[int]):
        self.failures = list(failures)
        self.seen: list[dict[str, str]] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                proxy.seen.append(dict(self.headers))
                if proxy.failures:
                    status = proxy.failures.pop(0)
                    body = json.dumps(
                        {"status": "error", "errorType": "unavailable", "error": "busy"}
                    ).encode()
                    self.send_response(status)
                    if status == 429:
                        self.send_header("Retry-After", "0")
                else:
                    answer = requests.get(upstream + self.path, timeout=10)
                    status, body = answer.status_code, answer.content
                    self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_transient_errors_are_retried(prometheus_url):
    start, end = _recent_window(5)
    with _Proxy(prometheus_url, [503, 429]) as proxy:
        source = PrometheusSource(
            proxy.url, [PromQuery("up", "up", "up")], step_seconds=1, backoff_seconds=0.01
        )
        result = source.fetch(start, end, tenant="acme")
    assert len(result.records) == 5
    assert len(proxy.seen) == 3


def test_persistent_server_errors_give_up(prometheus_url):
    start, end = _recent_window(5)
    with _Proxy(prometheus_url, [503] * 10) as proxy:
        source = PrometheusSource(
            proxy.url,
            [PromQuery("up", "up", "up")],
            step_seconds=1,
            retries=2,
            backoff_seconds=0.01,
        )
        with pytest.raises(SourceError, match=r"query up: HTTP 503 unavailable: busy \(after 3"):
            source.fetch(start, end)
    assert len(proxy.seen) == 3


def test_bearer_token_comes_from_the_environment(prometheus_url):
    start, end = _recent_window(3)
    with _Proxy(prometheus_url, [401]) as proxy:
        source = PrometheusSource(
            proxy.url,
            [PromQuery("up", "up", "up")],
            step_seconds=1,
            bearer_token_env="PROM_TOKEN",
            environ={"PROM_TOKEN": "t0ken-secret"},
        )
        assert "t0ken" not in repr(source)
        with pytest.raises(SourceError) as caught:
            source.fetch(start, end)
        assert "HTTP 401" in str(caught.value) and "t0ken" not in str(caught.value)
        assert len(source.fetch(start, end, tenant="acme").records) == 3
    assert {seen["Authorization"] for seen in proxy.seen} == {"Bearer t0ken-secret"}

    unset = PrometheusSource(
        prometheus_url, [PromQuery("up", "up", "up")], bearer_token_env="PROM_TOKEN", environ={}
    )
    with pytest.raises(SourceError, match="environment variable PROM_TOKEN"):
        unset.fetch(start, end)


def test_invalid_queries_are_refused_up_front():
    with pytest.raises(ValueError, match="metric"):
        PromQuery("q", "up", "not a metric")
    with pytest.raises(ValueError, match="tenant_label"):
        PromQuery("q", "up", "up", tenant_label="bad-label")
    with pytest.raises(ValueError, match="tenant"):
        PromQuery("q", "up", "up", tenant="../etc")
