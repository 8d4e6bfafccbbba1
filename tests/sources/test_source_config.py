"""sources.yaml: what a valid file builds, and a one-line message for every kind of mistake."""

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from monitoring_pipelines.sources.config import SourceConfigError, load_sources
from monitoring_pipelines.sources.prometheus import PrometheusSource, PromQuery
from monitoring_pipelines.sources.sql import SqlSource

VALID = """
prometheus:
  - name: prod
    url: http://prometheus:9090
    step_seconds: 60
    timeout: 12.5
    bearer_token_env: PROM_TOKEN
    queries:
      - name: api_latency_p95
        query: >-
          histogram_quantile(0.95,
          sum by (le, tenant, service) (rate(http_seconds_bucket[5m])))
        metric: latency_p95_ms
      - name: errors
        query: sum by (customer, app) (rate(errors_total[5m]))
        metric: error_rate
        tenant_label: customer
        service_label: app
      - {name: pinned, query: up, metric: up, tenant: acme, service: gateway}
sql:
  - name: legacy
    url_env: LEGACY_DB_URL
    query: "SELECT tenant, service, metric, ts, value FROM m WHERE ts >= :start AND ts < :end"
    timeout: 30
  - name: local
    url: sqlite:///metrics.db
    query: "SELECT tenant, service, metric, ts, value FROM m WHERE ts >= :start AND ts < :end"
"""
ENVIRON = {
    "PROM_TOKEN": "prom-s3cret",
    "LEGACY_DB_URL": "postgresql+psycopg2://reader:db-s3cret@db.internal:5432/legacy",
}


def _write(tmp_path, text):
    path = tmp_path / "sources.yaml"
    path.write_text(text)
    return path


def test_valid_file_builds_the_sources(tmp_path):
    prod, legacy, local = load_sources(_write(tmp_path, VALID), environ=ENVIRON)

    assert isinstance(prod, PrometheusSource)
    assert (prod.name, prod.base_url, prod.step_seconds, prod.timeout) == (
        "prod",
        "http://prometheus:9090",
        60,
        12.5,
    )
    assert prod.bearer_token_env == "PROM_TOKEN"
    assert prod.queries[0].name == "api_latency_p95"
    assert prod.queries[0].metric == "latency_p95_ms"
    assert (prod.queries[0].tenant_label, prod.queries[0].service_label) == ("tenant", "service")
    assert prod.queries[1] == PromQuery(
        "errors",
        "sum by (customer, app) (rate(errors_total[5m]))",
        "error_rate",
        tenant_label="customer",
        service_label="app",
    )
    assert (prod.queries[2].tenant, prod.queries[2].service) == ("acme", "gateway")

    assert isinstance(legacy, SqlSource) and isinstance(local, SqlSource)
    assert (legacy.name, legacy.timeout) == ("legacy", 30.0)
    assert legacy.safe_url == "postgresql+psycopg2://reader:***@db.internal:5432/legacy"
    assert local.safe_url == "sqlite:///metrics.db"
    for source in (prod, legacy, local):
        assert "s3cret" not in repr(source)


def test_missing_or_empty_file_means_no_sources(tmp_path):
    assert load_sources(tmp_path / "absent.yaml", environ={}) == []
    assert load_sources(_write(tmp_path, ""), environ={}) == []
    assert load_sources(_write(tmp_path, "prometheus: []\nsql:\n"), environ={}) == []


QUERY = "SELECT tenant, service, metric, ts, value FROM m WHERE ts >= :start AND ts < :end"


def _prom(query_1: str = "{name: b, query: up, metric: up_ratio}", **extra: str) -> str:
    fields = "".join(f"\n    {k}: {v}" for k, v in extra.items())
    return f"""prometheus:
  - name: prod
    url: http://prometheus:9090{fields}
    queries:
      - {{name: a, query: up, metric: up}}
      - {query_1}
"""


def _sql(**fields: str | None) -> str:
    body = {"name": "legacy", "url_env": "LEGACY_DB_URL", "query": f'"{QUERY}"', **fields}
    lines = [f"{k}: {v}" for k, v in body.items() if v is not None]
    return "sql:\n  - " + "\n    ".join(lines) + "\n"


ERRORS = {
    "unknown top-level key": (
        "grafana: []\n",
        "grafana: unknown key (allowed: prometheus, sql)",
    ),
    "unknown nested key": (
        _prom("{name: b, query: up, metric: up, metrc: x}"),
        "prometheus[0].queries[1].metrc: unknown key",
    ),
    "missing key": (
        _prom("{name: b, query: up}"),
        "prometheus[0].queries[1].metric: missing key",
    ),
    "invalid metric name": (
        _prom("{name: b, query: up, metric: 'p95 latency'}"),
        "prometheus[0].queries[1].metric: 'p95 latency' is not a valid name",
    ),
    "invalid label name": (
        _prom("{name: b, query: up, metric: up, tenant_label: 'cust-omer'}"),
        "prometheus[0].queries[1].tenant_label: not a label name 'cust-omer'",
    ),
    "wrong type: string for integer": (
        _prom(step_seconds="'300'"),
        "prometheus[0].step_seconds: expected an integer, got a string",
    ),
    "wrong type: boolean for integer": (
        _prom(step_seconds="true"),
        "prometheus[0].step_seconds: expected an integer, got a boolean",
    ),
    "not positive": (
        _prom(step_seconds="0"),
        "prometheus[0].step_seconds: must be positive, got 0",
    ),
    "wrong type: mapping for list": (
        "prometheus:\n  name: prod\n",
        "prometheus: expected a list, got a mapping",
    ),
    "wrong type: entry": (
        "sql:\n  - legacy\n",
        "sql[0]: expected a mapping, got a string",
    ),
    "not an http url": (
        _prom().replace("http://prometheus:9090", "prometheus:9090"),
        "prometheus[0].url: expected an http:// or https:// URL",
    ),
    "no queries": (
        "prometheus:\n  - {name: prod, url: 'http://p:9090', queries: []}\n",
        "prometheus[0].queries: must list at least one query",
    ),
    "duplicate query name": (
        _prom("{name: a, query: up, metric: up}"),
        "prometheus[0].queries[1].name: duplicate name 'a'",
    ),
    "bearer token env not set": (
        _prom(bearer_token_env="MISSING_TOKEN"),
        "prometheus[0].bearer_token_env: environment variable MISSING_TOKEN is not set",
    ),
    "url env not set": (
        _sql(url_env="MISSING_URL"),
        "sql[0].url_env: environment variable MISSING_URL is not set",
    ),
    "url and url_env": (
        _sql(url="sqlite:///x.db"),
        "sql[0]: needs exactly one of url_env (preferred) and url",
    ),
    "password in a literal url": (
        _sql(url_env=None, url="'postgresql://u:hunter2@db/x'"),
        "sql[0].url: holds a password; put the URL in an environment variable",
    ),
    "query without the window": (
        _sql(query='"SELECT tenant, service, metric, ts, value FROM m"'),
        "sql[0].query: must use the bind parameters :start, :end",
    ),
    "empty query": (
        _sql(query="''"),
        "sql[0].query: must not be empty",
    ),
    "duplicate source name": (
        _prom().replace("name: prod", "name: legacy") + _sql(),
        "sql[0].name: duplicate name 'legacy'",
    ),
    "invalid yaml": (
        "prometheus:\n  - name: [prod\n",
        "invalid YAML at line 3, column 1",
    ),
}


@pytest.mark.parametrize("text, expected", list(ERRORS.values()), ids=list(ERRORS))
def test_errors_name_the_file_the_key_and_the_problem(tmp_path, text, expected):
    path = _write(tmp_path, text)
    environ = {"LEGACY_DB_URL": "postgresql://u:env-s3cret@db/x"}
    with pytest.raises(SourceConfigError) as caught:
        load_sources(path, environ=environ)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message
    assert "s3cret" not in message and "hunter2" not in message


def test_an_unparseable_url_in_the_environment_is_not_echoed(tmp_path):
    path = _write(tmp_path, _sql())
    with pytest.raises(SourceConfigError) as caught:
        load_sources(path, environ={"LEGACY_DB_URL": "not a url with pa55word"})
    assert str(caught.value) == (
        f"{path}: sql[0].url_env: LEGACY_DB_URL does not hold a valid SQLAlchemy URL"
    )


def test_the_environment_mapping_is_the_one_passed(tmp_path, monkeypatch):
    monkeypatch.setenv("LEGACY_DB_URL", "sqlite:///from-process.db")
    path = _write(tmp_path, _sql())
    (source,) = load_sources(path, environ={"LEGACY_DB_URL": "sqlite:///from-mapping.db"})
    assert source.safe_url == "sqlite:///from-mapping.db"
    with pytest.raises(SourceConfigError, match="LEGACY_DB_URL is not set"):
        load_sources(path, environ={})


def test_a_configured_sql_source_fetches(tmp_path):
    db = tmp_path / "legacy.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE m (tenant, service, metric, ts, value)"))
        conn.execute(
            sa.text("INSERT INTO m VALUES ('acme', 'api', 'cpu_percent', :ts, 42.0)"),
            {"ts": "2026-09-01 06:00:00+00:00"},
        )
    engine.dispose()
    (source,) = load_sources(_write(tmp_path, _sql()), environ={"LEGACY_DB_URL": f"sqlite:///{db}"})
    start = datetime(2026, 9, 1, tzinfo=UTC)
    records = source.fetch(start, start + timedelta(days=1)).records
    assert records[["tenant", "metric", "value", "source"]].values.tolist() == [
        ["acme", "cpu_percent", 42.0, "sql:legacy"]
    ]
