"""Metric records pulled from a Prometheus server's HTTP API (``/api/v1/query_range``).

Each :class:`PromQuery` is a PromQL expression whose series become records of one metric: tenant
and service come from two of the series' labels (or are fixed by the query), every other label
except ``__name__`` becomes a tag. A series that cannot be attributed to a valid tenant and
service is rejected point by point, so it shows up in quarantine instead of vanishing.
"""

import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import requests

from monitoring_pipelines.sources.config import (
    FetchResult,
    SourceError,
    as_utc,
    empty_rejected,
    quote,
    raw_json,
    received_text,
    rejected_frame,
    tags_json,
)
from monitoring_pipelines.sources.records import (
    broken_name_rule,
    empty_frame,
    is_valid_name,
    normalise,
)

# Prometheus refuses a range query that would return more points than this for one series.
MAX_POINTS_PER_SERIES = 11_000

LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RETRY_AFTER_CAP_SECONDS = 30.0


@dataclass(frozen=True)
class PromQuery:
    """One PromQL expression and how its series map onto records."""

    name: str
    query: str
    metric: str
    tenant_label: str = "tenant"
    service_label: str = "service"
    tenant: str | None = None
    service: str | None = None

    def __post_init__(self) -> None:
        for field in ("name", "metric"):
            if not is_valid_name(getattr(self, field)):
                raise ValueError(f"PromQuery {field}: invalid name {quote(getattr(self, field))}")
        for field in ("tenant", "service"):
            value = getattr(self, field)
            if value is not None and not is_valid_name(value):
                raise ValueError(f"PromQuery {self.name} {field}: invalid name {quote(value)}")
        for field in ("tenant_label", "service_label"):
            if not LABEL_NAME.match(getattr(self, field)):
                raise ValueError(
                    f"PromQuery {self.name} {field}: not a label name {quote(getattr(self, field))}"
                )
        if not self.query.strip():
            raise ValueError(f"PromQuery {self.name}: empty query")


def _origin(url: str) -> str:
    """``scheme://host:port`` of a URL: no credentials, path or query, so safe for messages."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def _one_line(text: object, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _format_seconds(ms: int) -> str:
    # Exact decimal seconds: float division could move a bound by a millisecond.
    return f"{ms // 1000}.{ms % 1000:03d}"


class _Transient(Exception):
    """A failure worth retrying; its message is the one-line problem."""

    def __init__(self, problem: str, retry_after: float | None = None):
        super().__init__(problem)
        self.retry_after = retry_after


class PrometheusSource:
    """Fetches the records of a time window from one Prometheus server.

    The window is ``[start, end)``: points are evaluated at ``start + k * step_seconds`` for every
    ``k`` that keeps them before ``end``, and the range is split into requests of at most
    :data:`MAX_POINTS_PER_SERIES` points so that long windows at fine steps still work.

    A tenant filter is applied to the series after they are fetched: PromQL expressions are
    arbitrary (aggregations, functions, binary operators), so a label matcher cannot be injected
    into them safely. Rejected points are kept under a tenant filter only when their tenant label
    equals the tenant; points with no usable tenant label are reported by unfiltered fetches.

    The bearer token is read from ``environ[bearer_token_env]`` at each fetch and never stored.
    """

    def __init__(
        self,
        base_url: str,
        queries: list[PromQuery],
        *,
        name: str = "prometheus",
        step_seconds: int = 300,
        timeout: float = 30.0,
        bearer_token_env: str | None = None,
        retries: int = 3,
        backoff_seconds: float = 0.5,
        max_points_per_request: int = MAX_POINTS_PER_SERIES,
        environ: Mapping[str, str] | None = None,
    ):
        if not re.match(r"^https?://[^/\s]+", base_url):
            raise ValueError(f"prometheus source {name}: expected an http(s) URL")
        if step_seconds <= 0 or not 1 <= max_points_per_request <= MAX_POINTS_PER_SERIES:
            raise ValueError(f"prometheus source {name}: invalid step or points per request")
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.queries = list(queries)
        self.step_seconds = int(step_seconds)
        self.timeout = float(timeout)
        self.bearer_token_env = bearer_token_env
        self.retries = int(retries)
        self.backoff_seconds = float(backoff_seconds)
        self.max_points_per_request = int(max_points_per_request)
        self._environ = environ

    def __repr__(self) -> str:
        names = ", ".join(q.name for q in self.queries)
        return f"PrometheusSource({self.name!r}, {_origin(self.base_url)!r}, queries=[{names}])"

    @property
    def origin(self) -> str:
        return _origin(self.base_url)

    def _fail(self, query: PromQuery | None, problem: str) -> SourceError:
        where = f"prometheus source {self.name} ({self.origin})"
        if query is not None:
            where += f", query {query.name}"
        return SourceError(f"{where}: {_one_line(problem)}")

    def _headers(self) -> dict[str, str]:
        if not self.bearer_token_env:
            return {}
        environ = os.environ if self._environ is None else self._environ
        token = environ.get(self.bearer_token_env)
        if not token:
            raise self._fail(
                None, f"environment variable {self.bearer_token_env} (bearer token) is not set"
            )
        return {"Authorization": f"Bearer {token}"}

    def windows(self, start: datetime, end: datetime) -> list[tuple[int, int]]:
        """The ``(first, last)`` evaluation times in epoch ms of each request, both inclusive."""
        start_ms = as_utc(start).value // 1_000_000
        end_ms = as_utc(end).value // 1_000_000
        step_ms = self.step_seconds * 1000
        points = max(0, math.ceil((end_ms - start_ms) / step_ms))
        chunk = self.max_points_per_request
        return [
            (start_ms + k * step_ms, start_ms + (min(k + chunk, points) - 1) * step_ms)
            for k in range(0, points, chunk)
        ]

    def fetch(self, start: datetime, end: datetime, tenant: str | None = None) -> FetchResult:
        """Records of every query in ``[start, end)``, optionally of one tenant only.

        Raises :class:`SourceError` when the server cannot be reached after the retries, or
        refuses a query.
        """
        headers = self._headers()
        end_ms = as_utc(end).value // 1_000_000
        out = _Collector(tenant)
        with requests.Session() as session:
            session.headers.update(headers)
            for query in self.queries:
                for first_ms, last_ms in self.windows(start, end):
                    data = self._query_range(session, query, first_ms, last_ms)
                    for series in data:
                        out.add_series(query, series, end_ms)
        return out.result()

    def _query_range(
        self, session: requests.Session, query: PromQuery, first_ms: int, last_ms: int
    ) -> list[dict[str, Any]]:
        params = {
            "query": query.query,
            "start": _format_seconds(first_ms),
            "end": _format_seconds(last_ms),
            "step": str(self.step_seconds),
        }
        attempt = 0
        while True:
            try:
                return self._request(session, query, params)
            except _Transient as exc:
                if attempt >= self.retries:
                    suffix = f" (after {attempt + 1} attempts)" if attempt else ""
                    raise self._fail(query, f"{exc}{suffix}") from None
                delay = self.backoff_seconds * 2**attempt
                if exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, _RETRY_AFTER_CAP_SECONDS))
                time.sleep(delay)
                attempt += 1

    def _request(
        self, session: requests.Session, query: PromQuery, params: dict[str, str]
    ) -> list[dict[str, Any]]:
        url = f"{self.base_url}/api/v1/query_range"
        try:
            response = session.get(url, params=params, timeout=self.timeout)
        except requests.Timeout:
            raise _Transient(f"no answer from {self.origin} within {self.timeout:g}s") from None
        except requests.ConnectionError as exc:
            raise _Transient(self._connection_problem(exc)) from None
        except requests.RequestException as exc:
            # The exception text repeats the full URL; its class says enough.
            raise self._fail(query, f"request failed: {type(exc).__name__}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        status = response.status_code
        if status == 429 or status >= 500:
            raise _Transient(self._http_problem(response, body), _retry_after(response))
        if status != 200 or not isinstance(body, dict) or body.get("status") != "success":
            raise self._fail(query, self._http_problem(response, body))
        data = body.get("data") or {}
        if data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
            raise self._fail(query, f"unexpected result type {data.get('resultType')!r}")
        return data["result"]

    def _connection_problem(self, exc: requests.ConnectionError) -> str:
        chain = []
        cause: BaseException | None = exc
        while cause is not None and len(chain) < 10:
            chain.append(cause)
            cause = cause.__cause__ or cause.__context__
        text = " ".join(str(c) for c in chain) + " ".join(str(a) for a in exc.args)
        if any(isinstance(c, ConnectionRefusedError) for c in chain) or "refused" in text.lower():
            return f"connection refused to {self.origin}"
        if "resolve" in text.lower() or "name or service not known" in text.lower():
            return f"cannot resolve the host of {self.origin}"
        if isinstance(exc, requests.exceptions.SSLError):
            return f"TLS handshake with {self.origin} failed"
        return f"cannot connect to {self.origin}"

    @staticmethod
    def _http_problem(response: requests.Response, body: object) -> str:
        problem = f"HTTP {response.status_code}"
        if isinstance(body, dict) and body.get("error"):
            kind = body.get("errorType")
            return f"{problem} {kind}: {body['error']}" if kind else f"{problem}: {body['error']}"
        if body is None:
            text = _one_line(response.text, 200)
            return f"{problem}: {text}" if text else f"{problem} {response.reason or ''}".strip()
        return f"{problem}: unexpected response {quote(body)}"


def _retry_after(response: requests.Response) -> float | None:
    try:
        return float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None


class _Collector:
    """Accumulates the points of one fetch as columns, numbering them as they arrive."""

    def __init__(self, tenant: str | None):
        self.tenant = tenant
        self.row = 0
        self.columns: dict[str, list[Any]] = {
            k: []
            for k in ("tenant", "service", "metric", "ts", "value", "tags", "source", "source_row")
        }
        self.rejected: list[dict[str, Any]] = []

    def add_series(self, query: PromQuery, series: dict[str, Any], end_ms: int) -> None:
        labels: dict[str, str] = dict(series.get("metric") or {})
        points = [(round(float(ts) * 1000), raw) for ts, raw in series.get("values") or []]
        histograms = [(round(float(ts) * 1000), raw) for ts, raw in series.get("histograms") or []]
        points = [(ms, raw) for ms, raw in points if ms < end_ms]
        histograms = [(ms, raw) for ms, raw in histograms if ms < end_ms]
        source = f"prometheus:{query.name}"

        tags = {k: v for k, v in labels.items() if k != "__name__"}
        tenant, tenant_problem = _attribute("tenant", query.tenant, query.tenant_label, tags)
        service, service_problem = _attribute("service", query.service, query.service_label, tags)
        problem = tenant_problem or service_problem
        field = "tenant" if tenant_problem else "service"

        if self.tenant is not None and tenant != self.tenant:
            self.row += len(points) + len(histograms)
            return
        if problem is None and not histograms:
            first = self.row + 1
            self.row += len(points)
            n = len(points)
            c = self.columns
            c["tenant"].extend([tenant] * n)
            c["service"].extend([service] * n)
            c["metric"].extend([query.metric] * n)
            c["ts"].extend(ms for ms, _ in points)
            c["value"].extend(float(raw) for _, raw in points)
            c["tags"].extend([tags_json(tags)] * n)
            c["source"].extend([source] * n)
            c["source_row"].extend(range(first, first + n))
            return
        if problem is None:
            field, problem = "value", "value: native histogram samples are not supported"
        for ms, raw in sorted(points + histograms, key=lambda p: p[0]):
            self.row += 1
            stamp = pd.Timestamp(ms, unit="ms", tz="UTC")
            self.rejected.append(
                {
                    "source": source,
                    "source_row": self.row,
                    "tenant": received_text(tenant, "tenant"),
                    "ts": stamp.isoformat(),
                    "field": field,
                    "reason": problem,
                    "raw": raw_json({"labels": labels, "ts": ms / 1000, "value": raw}),
                }
            )

    def result(self) -> FetchResult:
        if self.columns["source_row"]:
            frame = pd.DataFrame(self.columns)
            frame["ts"] = pd.to_datetime(frame["ts"], unit="ms", utc=True)
            records = normalise(frame)
        else:
            records = empty_frame()
        rejected = rejected_frame(self.rejected) if self.rejected else empty_rejected()
        return FetchResult(records=records, rejected=rejected)


def _attribute(
    role: str, constant: str | None, label: str, tags: dict[str, str]
) -> tuple[str | None, str | None]:
    """The tenant or service of a series and, when unusable, why. A label that provides it is
    taken out of ``tags``; with a constant, the label (if any) stays an ordinary tag."""
    if constant is not None:
        return constant, None
    if label not in tags:
        return None, f"{role}: missing (the series has no label {label!r})"
    value = tags.pop(label)
    rule = broken_name_rule(value)
    if rule:
        return value, f"{role}: {quote(value)} (label {label!r}) is not a valid name ({rule})"
    return value, None
