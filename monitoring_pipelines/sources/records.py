"""The metric record, the one shape every source produces.

A record is ``tenant, service, metric, ts (UTC), value`` plus optional ``tags`` (a JSON object
serialised with sorted keys, or empty). Every source yields pandas frames with exactly
:data:`RECORD_COLUMNS` plus the provenance columns :data:`PROVENANCE_COLUMNS`, so that the quality
gate, the warehouse and the quarantine never need to know where a row came from.
"""

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

KEY_COLUMNS = ("tenant", "service", "metric", "ts")
RECORD_COLUMNS = (*KEY_COLUMNS, "value", "tags")
# Where the row came from: a file path or a named query, and its 1-based row (data line) number.
PROVENANCE_COLUMNS = ("source", "source_row")
FRAME_COLUMNS = (*RECORD_COLUMNS, *PROVENANCE_COLUMNS)

# Names become Dagster partition keys, file names in reports and labels in alert messages:
# allow only what is safe in all of them. Dots may not end a name nor follow one another: folder
# names lose trailing dots on some systems (so "acme." would share "acme"'s folders), and "..." is
# how partition ranges are written ("first...last").
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
NAME_RULE = "letters, digits, '_', '.', '-', up to 64, starting with a letter or digit"
DOT_RULE = "a '.' may neither end a name nor follow another '.'"

# Columns of a record frame in quarantine: the row as received (JSON), where it came from, why.
QUARANTINE_COLUMNS = ("source", "source_row", "tenant", "ts", "field", "reason", "raw", "stage")


def broken_name_rule(name: object) -> str | None:
    """The rule a tenant, service or metric name breaks (for a one-line reason), else None."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        return NAME_RULE
    if name.endswith(".") or ".." in name:
        return DOT_RULE
    return None


def is_valid_name(name: object) -> bool:
    return broken_name_rule(name) is None


@dataclass(frozen=True)
class MetricKind:
    """Physical bounds of a family of metrics: values outside are data errors, not anomalies."""

    name: str
    lower: float | None
    upper: float | None
    unit: str


METRIC_KINDS = {
    "latency": MetricKind("latency", 0.0, 600_000.0, "ms"),
    "ratio": MetricKind("ratio", 0.0, 1.0, "ratio"),
    "percent": MetricKind("percent", 0.0, 100.0, "%"),
    "rate": MetricKind("rate", 0.0, None, "per second"),
    "count": MetricKind("count", 0.0, None, "count"),
    "bytes": MetricKind("bytes", 0.0, None, "bytes"),
    "bitrate": MetricKind("bitrate", 0.0, 100_000.0, "kbps"),
    "gauge": MetricKind("gauge", None, None, ""),
}

# The demo platform's metrics; anything else is classified by its suffix, else a free gauge.
KNOWN_METRICS = {
    "latency_p50_ms": "latency",
    "latency_p95_ms": "latency",
    "error_rate": "ratio",
    "requests_per_second": "rate",
    "cpu_percent": "percent",
    "memory_percent": "percent",
    "streams_started": "count",
    "skip_rate": "ratio",
    "buffering_ratio": "ratio",
    "auth_failures": "count",
    "audio_bitrate_kbps": "bitrate",
}
_SUFFIX_KINDS = (
    ("_ms", "latency"),
    ("_kbps", "bitrate"),
    ("_seconds", "count"),
    ("_ratio", "ratio"),
    ("_rate", "ratio"),
    ("_percent", "percent"),
    ("_pct", "percent"),
    ("_per_second", "rate"),
    ("_total", "count"),
    ("_count", "count"),
    ("_bytes", "bytes"),
)


def metric_kind(metric: str) -> MetricKind:
    if metric in KNOWN_METRICS:
        return METRIC_KINDS[KNOWN_METRICS[metric]]
    for suffix, kind in _SUFFIX_KINDS:
        if metric.endswith(suffix):
            return METRIC_KINDS[kind]
    return METRIC_KINDS["gauge"]


def series_name(tenant: str, service: str, metric: str) -> str:
    """The name of one series in label files and backtests: ``tenant/service/metric``."""
    return f"{tenant}/{service}/{metric}"


def empty_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "tenant": pd.Series(dtype="object"),
            "service": pd.Series(dtype="object"),
            "metric": pd.Series(dtype="object"),
            "ts": pd.Series(dtype="datetime64[ns, UTC]"),
            "value": pd.Series(dtype="float64"),
            "tags": pd.Series(dtype="object"),
            "source": pd.Series(dtype="object"),
            "source_row": pd.Series(dtype="int64"),
        }
    )


def empty_quarantine() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in QUARANTINE_COLUMNS}).astype(
        {"source_row": "int64"}
    )


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Coerce a frame that already has the record columns to the canonical dtypes and order."""
    out = frame.copy()
    if "tags" not in out.columns:
        out["tags"] = ""
    out["tags"] = out["tags"].fillna("").astype(str)
    for col in ("tenant", "service", "metric", "source"):
        out[col] = out[col].astype(str)
    out["ts"] = pd.to_datetime(out["ts"], utc=True).astype("datetime64[ns, UTC]")
    out["value"] = out["value"].astype("float64")
    out["source_row"] = out["source_row"].astype("int64")
    return out[list(FRAME_COLUMNS)].reset_index(drop=True)


def finite(values: pd.Series) -> pd.Series:
    return pd.Series(np.isfinite(values.to_numpy(dtype="float64")), index=values.index)
