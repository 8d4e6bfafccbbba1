"""Pull sources (Prometheus, SQL databases) configured in ``$MONITORING_HOME/sources.yaml``.

Example::

    prometheus:
      - name: prod
        url: http://prometheus:9090
        step_seconds: 300
        bearer_token_env: PROM_TOKEN      # optional: the name of the variable holding the token
        queries:
          - {name: api_latency_p95, query: 'histogram_quantile(0.95, ...)', metric: latency_p95_ms}
    sql:
      - name: legacy
        url_env: LEGACY_DB_URL            # the URL, which may hold a password, is read from here
        query: "SELECT tenant, service, metric, ts, value FROM m WHERE ts >= :start AND ts < :end"

Secrets never live in the file: a bearer token or a database password is named by an environment
variable, and a literal SQL ``url`` that carries a password is refused.

This module also holds what both pull sources share: :class:`FetchResult`, :class:`SourceError`
and the helpers that build the rejected-rows frame.
"""

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml
from sqlalchemy.engine import make_url

from monitoring_pipelines.sources.records import QUARANTINE_COLUMNS, broken_name_rule

if TYPE_CHECKING:
    from monitoring_pipelines.sources.prometheus import PrometheusSource
    from monitoring_pipelines.sources.sql import SqlSource

# The sources fill everything but the stage, which the caller that quarantines the rows knows.
REJECTED_COLUMNS = tuple(c for c in QUARANTINE_COLUMNS if c != "stage")

_QUOTE_LIMIT = 60
# The quarantine table's column widths: a hostile value must not fail the quarantine insert.
_TENANT_LIMIT = 256
_TS_LIMIT = 64
_RAW_VALUE_LIMIT = 4096


class SourceError(ValueError):
    """A pull source failed as a whole (unreachable, bad query, wrong columns); one line."""


class SourceConfigError(ValueError):
    """``sources.yaml`` is invalid; the one-line message names the file and the key path."""


@dataclass(frozen=True)
class FetchResult:
    """What one fetch produced: valid records (``FRAME_COLUMNS``) and rejected rows
    (``REJECTED_COLUMNS``), both numbered by ``source_row`` in one sequence."""

    records: pd.DataFrame
    rejected: pd.DataFrame


def quote(value: object, limit: int = _QUOTE_LIMIT) -> str:
    """A received value quoted for a one-line message: repr escapes control characters."""
    text = str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def received_text(value: object, kind: str = "ts") -> str | None:
    """A received tenant or ts as text for the quarantine row, cut to fit its column."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = value.isoformat() if isinstance(value, datetime | date) else str(value)
    return text[: _TENANT_LIMIT if kind == "tenant" else _TS_LIMIT]


def jsonable(value: Any) -> Any:
    """A database or label value as plain JSON (strict: no NaN tokens, no custom types)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        return jsonable(float(value))
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return jsonable(value.item())
    return str(value)


def compact_json(value: Any, *, sort_keys: bool = False) -> str:
    return json.dumps(jsonable(value), separators=(",", ":"), sort_keys=sort_keys)


def raw_json(row: Mapping[str, Any]) -> str:
    """A rejected row as received, for quarantine: JSON, with overlong values cut."""

    def cut(value: Any) -> Any:
        if isinstance(value, str) and len(value) > _RAW_VALUE_LIMIT:
            return f"{value[:_RAW_VALUE_LIMIT]}...[{len(value)} characters]"
        if isinstance(value, dict):
            return {k: cut(v) for k, v in value.items()}
        if isinstance(value, list):
            return [cut(v) for v in value]
        return value

    return json.dumps(cut(jsonable(row)), separators=(",", ":"))


def tags_json(tags: Mapping[str, Any]) -> str:
    """Tags as the record contract wants them: sorted compact JSON, or empty when there are none."""
    return compact_json(tags, sort_keys=True) if tags else ""


def empty_rejected() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in REJECTED_COLUMNS}).astype(
        {"source_row": "int64"}
    )


def rejected_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    rows = list(rows)
    if not rows:
        return empty_rejected()
    # Built column by column as object: pandas would otherwise infer its string dtype and turn
    # a missing tenant (None) into NaN.
    return pd.DataFrame(
        {
            c: pd.Series([r[c] for r in rows], dtype="int64" if c == "source_row" else "object")
            for c in REJECTED_COLUMNS
        }
    )


def as_utc(moment: datetime) -> pd.Timestamp:
    """A window bound as a UTC timestamp; a naive datetime is taken to be UTC already."""
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


# --- sources.yaml ------------------------------------------------------------------------------

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Invalid(Exception):
    def __init__(self, key: str, problem: str):
        super().__init__(problem)
        self.key = key
        self.problem = problem


def _type_name(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _mapping(value: object, key: str, allowed: set[str], required: set[str]) -> dict:
    if not isinstance(value, dict):
        raise _Invalid(key, f"expected a mapping, got {_type_name(value)}")
    for name in value:
        if name not in allowed:
            where = f"{key}.{name}" if key else str(name)
            raise _Invalid(where, f"unknown key (allowed: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(value))
    if missing:
        raise _Invalid(f"{key}.{missing[0]}" if key else missing[0], "missing key")
    return value


def _string(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(key, f"expected a string, got {_type_name(value)}")
    if not value.strip():
        raise _Invalid(key, "must not be empty")
    return value


def _name(value: object, key: str) -> str:
    text = _string(value, key)
    rule = broken_name_rule(text)
    if rule:
        raise _Invalid(key, f"{quote(text)} is not a valid name ({rule})")
    return text


def _positive(value: object, key: str, kind: type) -> float:
    # YAML's true/false are ints to Python; a boolean step is a typo, not a number.
    accepted = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, accepted):
        noun = "an integer" if kind is int else "a number"
        raise _Invalid(key, f"expected {noun}, got {_type_name(value)}")
    if value <= 0:
        raise _Invalid(key, f"must be positive, got {value}")
    return value


def _env_var(value: object, key: str, environ: Mapping[str, str]) -> str:
    name = _string(value, key)
    if not _ENV_NAME.match(name):
        raise _Invalid(key, f"not an environment variable name {quote(name)}")
    if not environ.get(name):
        raise _Invalid(key, f"environment variable {name} is not set")
    return name


def _list(value: object, key: str) -> list:
    if not isinstance(value, list):
        raise _Invalid(key, f"expected a list, got {_type_name(value)}")
    return value


def _unique(names: list[tuple[str, str]]) -> None:
    seen: set[str] = set()
    for key, name in names:
        if name in seen:
            raise _Invalid(key, f"duplicate name {name!r}")
        seen.add(name)


_PROM_KEYS = {"name", "url", "step_seconds", "timeout", "bearer_token_env", "queries"}
_QUERY_KEYS = {"name", "query", "metric", "tenant_label", "service_label", "tenant", "service"}
_SQL_KEYS = {"name", "url", "url_env", "query", "timeout"}


def _prometheus(entry: object, key: str, environ: Mapping[str, str]) -> "PrometheusSource":
    from monitoring_pipelines.sources.prometheus import LABEL_NAME, PrometheusSource, PromQuery

    spec = _mapping(entry, key, _PROM_KEYS, {"name", "url", "queries"})
    name = _name(spec["name"], f"{key}.name")
    url = _string(spec["url"], f"{key}.url")
    if not re.match(r"^https?://[^/\s]+", url):
        raise _Invalid(f"{key}.url", "expected an http:// or https:// URL")
    options: dict[str, Any] = {}
    if "step_seconds" in spec:
        options["step_seconds"] = _positive(spec["step_seconds"], f"{key}.step_seconds", int)
    if "timeout" in spec:
        options["timeout"] = float(_positive(spec["timeout"], f"{key}.timeout", float))
    if spec.get("bearer_token_env") is not None:
        options["bearer_token_env"] = _env_var(
            spec["bearer_token_env"], f"{key}.bearer_token_env", environ
        )
    queries = []
    entries = _list(spec["queries"], f"{key}.queries")
    if not entries:
        raise _Invalid(f"{key}.queries", "must list at least one query")
    for j, raw in enumerate(entries):
        qkey = f"{key}.queries[{j}]"
        q = _mapping(raw, qkey, _QUERY_KEYS, {"name", "query", "metric"})
        fields: dict[str, Any] = {
            "name": _name(q["name"], f"{qkey}.name"),
            "query": _string(q["query"], f"{qkey}.query"),
            "metric": _name(q["metric"], f"{qkey}.metric"),
        }
        for label in ("tenant_label", "service_label"):
            if label in q:
                value = _string(q[label], f"{qkey}.{label}")
                if not LABEL_NAME.match(value):
                    raise _Invalid(f"{qkey}.{label}", f"not a label name {quote(value)}")
                fields[label] = value
        for constant in ("tenant", "service"):
            if q.get(constant) is not None:
                fields[constant] = _name(q[constant], f"{qkey}.{constant}")
        queries.append(PromQuery(**fields))
    _unique([(f"{key}.queries[{j}].name", q.name) for j, q in enumerate(queries)])
    return PrometheusSource(url, queries, name=name, environ=environ, **options)


def _sql(entry: object, key: str, environ: Mapping[str, str]) -> "SqlSource":
    from monitoring_pipelines.sources.sql import SqlSource, missing_parameters

    spec = _mapping(entry, key, _SQL_KEYS, {"name", "query"})
    name = _name(spec["name"], f"{key}.name")
    if ("url" in spec) == ("url_env" in spec):
        raise _Invalid(key, "needs exactly one of url_env (preferred) and url")
    if "url_env" in spec:
        variable = _env_var(spec["url_env"], f"{key}.url_env", environ)
        where, url, problem = f"{key}.url_env", environ[variable], f"{variable} does not hold"
    else:
        where = f"{key}.url"
        url, problem = _string(spec["url"], where), "not"
    try:
        has_password = make_url(url).password is not None
    except Exception:
        # Never echo the URL: it may hold a password that could not be located.
        raise _Invalid(where, f"{problem} a valid SQLAlchemy URL") from None
    if has_password and "url_env" not in spec:
        raise _Invalid(where, "holds a password; put the URL in an environment variable")
    query = _string(spec["query"], f"{key}.query")
    missing = missing_parameters(query)
    if missing:
        names = ", ".join(f":{m}" for m in missing)
        raise _Invalid(f"{key}.query", f"must use the bind parameters {names}")
    options: dict[str, Any] = {}
    if "timeout" in spec:
        options["timeout"] = float(_positive(spec["timeout"], f"{key}.timeout", float))
    return SqlSource(name, url, query, **options)


def load_sources(
    path: Path, environ: Mapping[str, str] = os.environ
) -> list["PrometheusSource | SqlSource"]:
    """The pull sources listed in ``path`` (none when the file does not exist).

    Environment variables named by ``bearer_token_env`` and ``url_env`` must be set now, so that
    a typo fails at load time rather than at the first scheduled fetch.
    """
    path = Path(path)
    if not path.exists():
        return []
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise SourceConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceConfigError(f"{path}: cannot read: {exc}") from None
    if document is None:
        return []
    sources: list[PrometheusSource | SqlSource] = []
    try:
        top = _mapping(document, "", {"prometheus", "sql"}, set())
        for kind, build in (("prometheus", _prometheus), ("sql", _sql)):
            entries = top.get(kind)
            if entries is None:
                continue
            for i, entry in enumerate(_list(entries, kind)):
                sources.append(build(entry, f"{kind}[{i}]", environ))
        _unique(
            [
                (f"{kind}[{i}].name", entry["name"])
                for kind in ("prometheus", "sql")
                for i, entry in enumerate(top.get(kind) or [])
            ]
        )
    except _Invalid as exc:
        key = f"{exc.key}: " if exc.key else ""
        raise SourceConfigError(f"{path}: {key}{exc.problem}") from None
    return sources
