"""The quality gate of one ``raw_metrics`` partition (one day of one tenant).

:func:`run_gate` splits the landed rows into accepted rows (for the ``metrics`` table) and
quarantined rows (each with one human reason), and reports one :class:`CheckOutcome` per
data-quality property. Great Expectations decides which rows break which rule (see
:mod:`monitoring_pipelines.quality.gx_suite`); this module owns the policy: the order in which
reasons are given, which duplicate wins, the tolerance that separates WARN from ERROR, volume and
freshness.

The module imports neither Dagster nor GX, so :data:`CHECK_SPECS` can declare the asset checks
while the code location loads.
"""

import html
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from monitoring_pipelines.quality import gx_suite
from monitoring_pipelines.sources import records

WARN = "WARN"
ERROR = "ERROR"


@dataclass(frozen=True)
class CheckSpec:
    name: str
    description: str
    blocking: bool


CHECK_SPECS: tuple[CheckSpec, ...] = (
    CheckSpec(
        "schema",
        "Every record column (tenant, service, metric, ts, value, tags, source, source_row) is "
        "present with its contract type: text keys, timezone-aware ts, float64 value, int64 "
        "source_row. When it fails no row can be trusted and all are quarantined.",
        True,
    ),
    CheckSpec(
        "keys_not_null",
        "tenant, service, metric and ts are never null: a row without its full key cannot be "
        "placed in a series.",
        True,
    ),
    CheckSpec(
        "values_finite",
        "value is a finite number: NaN, +inf and -inf are quarantined.",
        True,
    ),
    CheckSpec(
        "values_in_range",
        "value lies within the physical bounds of its metric kind (ratio in [0, 1], percent in "
        "[0, 100], latency in [0, 600000] ms, counts and rates not negative, ...).",
        True,
    ),
    CheckSpec(
        "timestamps_in_partition",
        "Every row belongs to this partition: ts within [start, end) of the day, and tenant equal "
        "to the partition's tenant.",
        True,
    ),
    CheckSpec(
        "keys_unique",
        "(tenant, service, metric, ts) is unique. Among duplicates the row received last (highest "
        "source, source_row) is kept and the others are quarantined.",
        True,
    ),
    CheckSpec(
        "volume",
        "Accepted rows compared with the expected count (expected series x slots in the day): "
        "too few rows warn, far too few block.",
        True,
    ),
    CheckSpec(
        "freshness",
        "The newest accepted row is recent enough: no older than the allowed lag before the end "
        "of the partition, or before now for today's partition. Warns only.",
        False,
    ),
)

# Row-level checks in the order their reasons take precedence: a row breaking several rules is
# quarantined once, under the first.
ROW_CHECKS = (
    "keys_not_null",
    "values_finite",
    "values_in_range",
    "timestamps_in_partition",
    "keys_unique",
)

_DUPLICATE_REASON = (
    "duplicate of (tenant, service, metric, ts); superseded by row {row} of {source}"
)
_QUARANTINE_OUT = tuple(c for c in records.QUARANTINE_COLUMNS if c != "stage")
_MAX_EXAMPLES = 5


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    # Meaningful when ``passed`` is False; a passing outcome carries "WARN".
    severity: str
    description: str
    metadata: dict[str, int | float | str | bool | list | dict]


@dataclass(frozen=True)
class GateConfig:
    # Largest fraction of rows that may break a row rule while the partition still goes on (WARN).
    tolerance: float = 0.01
    volume_warn: float = 0.9
    volume_error: float = 0.5
    freshness_lag_seconds: int = 3600
    resolution_seconds: int = 300

    def __post_init__(self) -> None:
        if not 0.0 <= self.tolerance <= 1.0:
            raise ValueError(f"tolerance must be within [0, 1], got {self.tolerance}")
        if not 0.0 <= self.volume_error <= self.volume_warn:
            raise ValueError("volume thresholds need 0 <= volume_error <= volume_warn")
        if self.resolution_seconds <= 0 or self.freshness_lag_seconds < 0:
            raise ValueError("resolution_seconds must be > 0 and freshness_lag_seconds >= 0")


@dataclass
class GateResult:
    accepted: pd.DataFrame
    quarantined: pd.DataFrame
    checks: list[CheckOutcome]
    validation: dict
    rows_in: int

    @property
    def blocked(self) -> bool:
        """True when a blocking check failed with ERROR: nothing downstream may use it."""
        blocking = {spec.name for spec in CHECK_SPECS if spec.blocking}
        return any(c.name in blocking and not c.passed and c.severity == ERROR for c in self.checks)

    def check(self, name: str) -> CheckOutcome:
        return next(c for c in self.checks if c.name == name)


# -- formatting --------------------------------------------------------------------------------


def _utc(value: datetime) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)


def _show(value: object, limit: int = 120) -> str:
    """A value for a one-line reason: control characters escaped, long text cut."""
    text = str(value)
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _number(value: float) -> str:
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _bounds(kind: records.MetricKind) -> str:
    lower = "(-inf" if kind.lower is None else f"[{_number(kind.lower)}"
    upper = "+inf)" if kind.upper is None else f"{_number(kind.upper)}]"
    return f"{lower}, {upper}"


def _instant(ts: pd.Timestamp) -> str:
    """A partition bound: the date alone at midnight UTC, the full instant otherwise."""
    if ts == ts.normalize():
        return ts.date().isoformat()
    return ts.isoformat()


def _nonfinite(value: object) -> str:
    number = float(value)
    if math.isnan(number):
        return "nan"
    return "inf" if number > 0 else "-inf"


def _jsonable(value: object) -> object:
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp | datetime):
        return pd.Timestamp(value).isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, bool | int | str):
        return value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _ts_text(value: object) -> str | None:
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp | datetime):
        return pd.Timestamp(value).isoformat()
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)[:64]


def _fraction_text(count: int, total: int) -> str:
    return f"{count:,} of {total:,} rows ({count / total:.2%})" if total else "0 rows"


# -- the row rules ------------------------------------------------------------------------------


@dataclass
class _RowCheck:
    """The rows one row-level check found bad, each with its field and reason."""

    name: str
    bad: dict[int, tuple[str, str]]
    extra: dict


def _kind_column(data: pd.DataFrame) -> pd.Series:
    if "metric" not in data.columns:
        return pd.Series("gauge", index=data.index, dtype=object)
    names = {
        m: records.metric_kind(m).name if isinstance(m, str) else "gauge"
        for m in pd.unique(data["metric"].dropna())
    }
    return data["metric"].map(names).fillna("gauge").astype(object)


def _bound_column(kinds: pd.Series, which: str) -> np.ndarray:
    bounds = {
        name: np.nan if getattr(kind, which) is None else float(getattr(kind, which))
        for name, kind in records.METRIC_KINDS.items()
    }
    return kinds.map(bounds).to_numpy(dtype="float64")


def _errored(finding: gx_suite.Finding, n: int, field_name: str) -> dict[int, tuple[str, str]]:
    """A rule GX could not evaluate protects nothing: every row is held back under it."""
    message = _show(finding.error.splitlines()[0] if finding.error else "unknown error")
    reason = f"{field_name}: not evaluated by {finding.expectation} ({message})"
    return dict.fromkeys(range(n), (field_name, reason))


def _keys_not_null(findings, data: pd.DataFrame) -> _RowCheck:
    bad: dict[int, tuple[str, str]] = {}
    nulls = {}
    for column in records.KEY_COLUMNS:
        for f in findings:
            if f.column != column:
                continue
            if f.error:
                for pos, item in _errored(f, len(data), column).items():
                    bad.setdefault(pos, item)
                continue
            nulls[column] = len(f.rows)
            for pos in sorted(f.rows):
                bad.setdefault(pos, (column, f"{column}: null"))
    return _RowCheck("keys_not_null", bad, {"nulls_by_column": nulls})


def _values_finite(findings, data: pd.DataFrame) -> _RowCheck:
    bad: dict[int, tuple[str, str]] = {}
    values = data["value"].to_numpy()
    counts = {"nan": 0, "inf": 0, "-inf": 0}
    for f in findings:
        if f.error:
            for pos, item in _errored(f, len(data), "value").items():
                bad.setdefault(pos, item)
            continue
        for pos in sorted(f.rows):
            label = _nonfinite(values[pos])
            if pos not in bad:
                counts[label] += 1
                bad[pos] = ("value", f"value: not finite ({label})")
    return _RowCheck("values_finite", bad, {"by_value": counts})


def _values_in_range(findings, data: pd.DataFrame) -> _RowCheck:
    bad: dict[int, tuple[str, str]] = {}
    values = data["value"].to_numpy()
    metrics = data["metric"].to_numpy()
    kinds = _kind_column(data).to_numpy()
    flagged: set[int] = set()
    for f in findings:
        if f.error:
            for pos, item in _errored(f, len(data), "value").items():
                bad.setdefault(pos, item)
            continue
        flagged |= f.rows
    per_kind = {}
    for name in sorted(set(kinds)):
        kind = records.METRIC_KINDS[name]
        if kind.lower is None and kind.upper is None:
            continue
        rows = np.flatnonzero(kinds == name)
        per_kind[name] = {
            "bounds": _bounds(kind),
            "rows": len(rows),
            "violations": len(flagged.intersection(rows.tolist())),
        }
    for pos in sorted(flagged):
        kind = records.METRIC_KINDS[kinds[pos]]
        reason = (
            f"value: {_number(float(values[pos]))} outside {_bounds(kind)} "
            f"for {kind.name} metric {_show(metrics[pos])}"
        )
        bad.setdefault(pos, ("value", reason))
    return _RowCheck("values_in_range", bad, {"kinds": per_kind})


def _timestamps_in_partition(
    findings, data: pd.DataFrame, tenant: str, start: pd.Timestamp, end: pd.Timestamp
) -> _RowCheck:
    bad: dict[int, tuple[str, str]] = {}
    window = f"[{_instant(start)}, {_instant(end)})"
    stamps = data["ts"].to_numpy(dtype=object) if len(data) else []
    tenants = data["tenant"].to_numpy(dtype=object) if len(data) else []
    outside = foreign = 0
    # ts findings first: the time window is the property this check is named after.
    for f in sorted(findings, key=lambda f: f.column != "ts"):
        if f.error:
            for pos, item in _errored(f, len(data), f.column or "ts").items():
                bad.setdefault(pos, item)
            continue
        for pos in sorted(f.rows):
            if f.column == "ts":
                outside += 1
                text = _ts_text(pd.Timestamp(stamps[pos]))
                bad.setdefault(pos, ("ts", f"ts: {text} outside partition {window}"))
            else:
                foreign += 1
                reason = (
                    f"tenant: {_show(tenants[pos])} is not the partition tenant {_show(tenant)}"
                )
                bad.setdefault(pos, ("tenant", reason))
    extra = {"window": window, "outside_window": outside, "other_tenant": foreign}
    return _RowCheck("timestamps_in_partition", bad, extra)


def _keys_unique(findings, data: pd.DataFrame, held: dict) -> _RowCheck:
    """Resolve the duplicate groups GX found: the last received valid row of each group wins."""
    bad: dict[int, tuple[str, str]] = {}
    flagged: set[int] = set()
    for f in findings:
        if f.error:
            for pos, item in _errored(f, len(data), "key").items():
                bad.setdefault(pos, item)
            continue
        flagged |= f.rows
    # Rows already held back by an earlier rule cannot win: a broken row must not displace a
    # good one that shares its key.
    candidates = sorted(flagged - held.keys())
    groups = 0
    if candidates:
        sub = data.loc[candidates, [*records.KEY_COLUMNS, "source", "source_row"]].copy()
        sub["position"] = candidates
        sub = sub.sort_values(["source", "source_row", "position"], kind="stable")
        grouped = sub.groupby(list(records.KEY_COLUMNS), sort=False, dropna=False)
        sub["winner"] = grouped["position"].transform("last")
        losers = sub[sub["position"] != sub["winner"]]
        groups = int(losers["winner"].nunique())
        sources = data["source"].to_numpy(dtype=object)
        source_rows = data["source_row"].to_numpy()
        for pos, winner in zip(losers["position"], losers["winner"], strict=True):
            reason = _DUPLICATE_REASON.format(
                row=int(source_rows[winner]), source=_show(sources[winner], 300)
            )
            bad.setdefault(int(pos), ("key", reason))
    extra = {"rows_in_duplicate_groups": len(flagged), "duplicate_keys_resolved": groups}
    return _RowCheck("keys_unique", bad, extra)


def _row_outcome(
    check: _RowCheck, findings, n: int, held: dict, config: GateConfig
) -> tuple[CheckOutcome, dict[int, tuple[str, str, str]]]:
    """The outcome of one row check, and the rows it quarantines (those not already held)."""
    newly = {pos: (check.name, *item) for pos, item in check.bad.items() if pos not in held}
    violations = len(check.bad)
    fraction = violations / n if n else 0.0
    examples = [check.bad[pos][1] for pos in sorted(check.bad)[:_MAX_EXAMPLES]]
    metadata = {
        "rows_checked": n,
        "violations": violations,
        "fraction": round(fraction, 6),
        "quarantined": len(newly),
        "tolerance": config.tolerance,
        "examples": examples,
        "gx_expectations": sorted({f.expectation for f in findings}),
        **check.extra,
    }
    errors = sorted({f.error.splitlines()[0] for f in findings if f.error})
    if errors:
        metadata["gx_errors"] = errors
    if violations == 0:
        passed, severity = True, WARN
        description = f"All {n:,} rows pass."
    elif fraction <= config.tolerance:
        passed, severity = False, WARN
        description = (
            f"{_fraction_text(violations, n)} break the rule, within the {config.tolerance:.2%} "
            "tolerance: they are quarantined and the rest goes on."
        )
    else:
        passed, severity = False, ERROR
        description = (
            f"{_fraction_text(violations, n)} break the rule, above the {config.tolerance:.2%} "
            "tolerance: the partition is blocked."
        )
    if examples:
        description += f" First: {examples[0]}"
    return CheckOutcome(check.name, passed, severity, description, metadata), newly


# -- partition-level checks ------------------------------------------------------------------


# GX checks object columns value by value, so a column of Timestamp or float objects would pass;
# the time and number columns must carry a real dtype for the comparisons and writes downstream.
_NATIVE_DTYPES = {
    "ts": lambda dtype: isinstance(dtype, pd.DatetimeTZDtype),
    "value": lambda dtype: dtype == np.float64,
    "source_row": lambda dtype: dtype == np.int64,
}


def _schema(findings, data: pd.DataFrame) -> tuple[CheckOutcome, str | None]:
    """The schema outcome, and the quarantine reason for every row when it fails."""
    missing = [c for c in records.FRAME_COLUMNS if c not in data.columns]
    extra = [str(c) for c in data.columns if c not in records.FRAME_COLUMNS]
    wrong = {}
    for f in findings:
        if f.column is None or f.column in missing or f.success:
            continue
        observed = str(data[f.column].dtype)
        if f.unexpected_count:
            observed += f" ({f.unexpected_count} values not {gx_suite.COLUMN_TYPES[f.column]})"
        wrong[f.column] = observed
    # An empty read from the warehouse types every column object; with no value, nothing is wrong.
    for column, native in _NATIVE_DTYPES.items() if len(data) else ():
        if column in data.columns and column not in wrong and not native(data[column].dtype):
            wrong[column] = str(data[column].dtype)
    passed = all(f.success for f in findings) and not missing and not wrong
    metadata = {
        "columns_missing": missing,
        "columns_ignored": extra,
        "wrong_types": wrong,
        "expected_types": dict(gx_suite.COLUMN_TYPES),
        "observed_types": {str(c): str(t) for c, t in data.dtypes.items()},
        "gx_expectations": sorted({f.expectation for f in findings}),
    }
    if passed:
        outcome = CheckOutcome(
            "schema", True, WARN, "All record columns have their type.", metadata
        )
        return outcome, None
    parts = []
    if missing:
        parts.append("missing columns " + ", ".join(missing))
    if wrong:
        labels = {c: gx_suite.TYPE_LABELS[gx_suite.COLUMN_TYPES[c]] for c in wrong}
        parts.append(
            "wrong types "
            + ", ".join(f"{c} is {t}, expected {labels[c]}" for c, t in wrong.items())
        )
    if not parts:
        errors = [f.error for f in findings if f.error]
        parts.append(_show(errors[0].splitlines()[0]) if errors else "failed")
    reason = "schema: " + "; ".join(parts)
    description = f"{reason}. Every row is quarantined."
    return CheckOutcome("schema", False, ERROR, description, metadata), reason


def _not_evaluated(name: str) -> CheckOutcome:
    return CheckOutcome(
        name,
        False,
        ERROR,
        "Not evaluated: the schema check failed, so every row was quarantined.",
        {"evaluated": False, "rows_checked": 0},
    )


def _volume(
    accepted: pd.DataFrame,
    *,
    start: pd.Timestamp,
    end: pd.Timestamp,
    now: pd.Timestamp,
    expected_series: int,
    config: GateConfig,
) -> CheckOutcome:
    # Today's partition is judged on the part of the day that should have arrived by now.
    until = min(end, now - pd.Timedelta(seconds=config.freshness_lag_seconds))
    slots = max(int((until - start).total_seconds() // config.resolution_seconds), 0)
    expected = max(int(expected_series), 0) * slots
    observed = len(accepted)
    ratio = observed / expected if expected else 1.0
    counts = accepted.groupby(["service", "metric"], sort=False).size() if observed else None
    observed_series = 0 if counts is None else len(counts)
    short = 0 if counts is None else int((counts < slots).sum())
    metadata = {
        "expected": expected,
        "observed": observed,
        "ratio": round(ratio, 6),
        "expected_series": int(expected_series),
        "observed_series": observed_series,
        "missing_series": max(int(expected_series) - observed_series, 0),
        "incomplete_series": short,
        "slots_per_series": slots,
        "warn_below": config.volume_warn,
        "error_below": config.volume_error,
    }
    figures = f"{observed:,} of {expected:,} expected rows ({ratio:.1%})"
    if ratio < config.volume_error:
        return CheckOutcome(
            "volume", False, ERROR, f"{figures}, below {config.volume_error:.0%}.", metadata
        )
    if ratio < config.volume_warn:
        return CheckOutcome(
            "volume", False, WARN, f"{figures}, below {config.volume_warn:.0%}.", metadata
        )
    return CheckOutcome("volume", True, WARN, f"{figures}.", metadata)


def _freshness(
    accepted: pd.DataFrame, *, end: pd.Timestamp, now: pd.Timestamp, config: GateConfig
) -> CheckOutcome:
    reference = min(end, now)
    limit = reference - pd.Timedelta(seconds=config.freshness_lag_seconds)
    metadata: dict = {
        "reference_ts": reference.isoformat(),
        "max_lag_seconds": config.freshness_lag_seconds,
    }
    if accepted.empty:
        metadata["newest_ts"] = "none"
        return CheckOutcome("freshness", False, WARN, "No accepted row.", metadata)
    newest = _utc(accepted["ts"].max())
    lag = (reference - newest).total_seconds()
    metadata.update({"newest_ts": newest.isoformat(), "lag_seconds": lag})
    text = f"Newest row {newest.isoformat()}, {lag:,.0f} s before {reference.isoformat()}"
    if newest >= limit:
        return CheckOutcome("freshness", True, WARN, f"{text}.", metadata)
    return CheckOutcome(
        "freshness",
        False,
        WARN,
        f"{text}: more than the {config.freshness_lag_seconds:,} s allowed.",
        metadata,
    )


# -- quarantine frame --------------------------------------------------------------------------


def _quarantine_frame(data: pd.DataFrame, held: dict[int, tuple[str, str, str]]) -> pd.DataFrame:
    if not held:
        return records.empty_quarantine().drop(columns=["stage"])
    positions = sorted(held)
    rows = data.iloc[positions]
    columns = [str(c) for c in data.columns]
    cells = [rows[c].to_numpy(dtype=object) for c in data.columns]
    raw = [
        json.dumps(
            {c: _jsonable(v) for c, v in zip(columns, values, strict=True)},
            allow_nan=False,
            ensure_ascii=False,
        )
        for values in zip(*cells, strict=True)
    ]

    def column(name: str, default):
        if name in data.columns:
            return rows[name].to_numpy(dtype=object)
        return [default(pos) for pos in positions]

    sources = [
        "unknown" if _jsonable(v) is None else str(v) for v in column("source", lambda _: "unknown")
    ]
    source_rows = []
    for pos, v in zip(positions, column("source_row", lambda p: p + 1), strict=True):
        try:
            source_rows.append(int(v))
        except (TypeError, ValueError):
            source_rows.append(pos + 1)
    tenants = [None if _jsonable(v) is None else str(v) for v in column("tenant", lambda _: None)]
    out = pd.DataFrame(
        {
            "source": pd.Series(sources, dtype=object),
            "source_row": pd.Series(source_rows, dtype="int64"),
            "tenant": pd.Series(tenants, dtype=object),
            "ts": pd.Series([_ts_text(v) for v in column("ts", lambda _: None)], dtype=object),
            "field": pd.Series([held[p][1] for p in positions], dtype=object),
            "reason": pd.Series([held[p][2] for p in positions], dtype=object),
            "raw": pd.Series(raw, dtype=object),
        }
    )
    return out[list(_QUARANTINE_OUT)]


# -- public API --------------------------------------------------------------------------------


def run_gate(
    frame: pd.DataFrame,
    *,
    tenant: str,
    start: datetime,
    end: datetime,
    expected_series: int,
    now: datetime,
    config: GateConfig = GateConfig(),
) -> GateResult:
    """Gate the landed rows of one partition ``[start, end)`` of ``tenant``.

    Every input row ends up either in ``accepted`` or, once, in ``quarantined``.
    """
    start_ts, end_ts, now_ts = _utc(start), _utc(end), _utc(now)
    if end_ts <= start_ts:
        raise ValueError(f"empty partition window [{start_ts}, {end_ts})")
    data = frame.reset_index(drop=True)
    n = len(data)
    kinds = _kind_column(data)
    work = data.assign(
        **{
            gx_suite.ROW_ID: np.arange(n, dtype="int64"),
            gx_suite.KIND: kinds,
            gx_suite.LOWER: _bound_column(kinds, "lower"),
            gx_suite.UPPER: _bound_column(kinds, "upper"),
        }
    )
    findings, validation = gx_suite.validate(
        work,
        tenant=tenant,
        start=start_ts.to_pydatetime(),
        end=end_ts.to_pydatetime(),
    )
    by_check: dict[str, list[gx_suite.Finding]] = {}
    for f in findings:
        by_check.setdefault(f.check, []).append(f)

    schema, schema_reason = _schema(by_check.get("schema", []), data)
    outcomes = [schema]
    held: dict[int, tuple[str, str, str]] = {}
    if schema_reason is not None:
        held = dict.fromkeys(range(n), ("schema", "schema", schema_reason))
        outcomes += [_not_evaluated(name) for name in ROW_CHECKS]
        accepted = records.empty_frame()
    else:
        for name in ROW_CHECKS:
            found = by_check.get(name, [])
            if name == "keys_not_null":
                check = _keys_not_null(found, data)
            elif name == "values_finite":
                check = _values_finite(found, data)
            elif name == "values_in_range":
                check = _values_in_range(found, data)
            elif name == "timestamps_in_partition":
                check = _timestamps_in_partition(found, data, tenant, start_ts, end_ts)
            else:
                check = _keys_unique(found, data, held)
            outcome, newly = _row_outcome(check, found, n, held, config)
            held.update(newly)
            outcomes.append(outcome)
        keep = np.ones(n, dtype=bool)
        keep[list(held)] = False
        accepted = data.loc[keep, list(records.FRAME_COLUMNS)].reset_index(drop=True)
        accepted["ts"] = accepted["ts"].dt.tz_convert(UTC)

    outcomes.append(
        _volume(
            accepted,
            start=start_ts,
            end=end_ts,
            now=now_ts,
            expected_series=expected_series,
            config=config,
        )
    )
    outcomes.append(_freshness(accepted, end=end_ts, now=now_ts, config=config))
    quarantined = _quarantine_frame(data, held)
    if len(accepted) + len(quarantined) != n:
        raise AssertionError(
            f"gate lost rows: {n} in, {len(accepted)} accepted, {len(quarantined)} quarantined"
        )
    return GateResult(
        accepted=accepted,
        quarantined=quarantined,
        checks=outcomes,
        validation=validation,
        rows_in=n,
    )


# -- evidence ----------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def safe_partition_key(partition_key: str) -> str:
    """A directory name for a partition key: ``2026-10-01|acme`` becomes ``2026-10-01_acme``."""
    name = _UNSAFE.sub("_", partition_key).strip(".")
    return name[:200] or "_"


def _atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` in one step, so a reader never sees half a page."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _gate_summary(result: GateResult, partition_key: str) -> dict:
    return {
        "partition_key": partition_key,
        "rows_in": result.rows_in,
        "accepted": len(result.accepted),
        "quarantined": len(result.quarantined),
        "blocked": result.blocked,
        "checks": [
            {
                "name": c.name,
                "passed": c.passed,
                "severity": c.severity,
                "description": c.description,
                "metadata": c.metadata,
            }
            for c in result.checks
        ],
    }


def write_validation(result: GateResult, directory: Path, partition_key: str) -> tuple[Path, Path]:
    """Write the GX validation result as JSON and as a small HTML page for one partition.

    Files go to ``<directory>/<safe partition key>/validation.{json,html}`` and are replaced on
    every run. The JSON is the GX result with a ``gate`` section (the check outcomes) added.
    """
    folder = Path(directory) / safe_partition_key(partition_key)
    folder.mkdir(parents=True, exist_ok=True)
    payload = dict(result.validation)
    payload["gate"] = _gate_summary(result, partition_key)
    json_path = folder / "validation.json"
    html_path = folder / "validation.html"
    text = json.dumps(gx_suite.json_safe(payload), indent=2, allow_nan=False, default=str)
    _atomic_write(json_path, text + "\n")
    _atomic_write(html_path, _render_html(result, partition_key))
    return json_path, html_path


def _e(value: object) -> str:
    return html.escape(value if isinstance(value, str) else str(value), quote=True)


def _compact(value: object, limit: int = 400) -> str:
    text = json.dumps(gx_suite.json_safe(value), default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}
table{border-collapse:collapse;margin:0.5rem 0 1.5rem;font-size:0.9rem}
th,td{border:1px solid #ccc;padding:0.3rem 0.5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}.pass{color:#176b2c}.warn{color:#9a6700}.error{color:#b3261e}
code{font-size:0.85rem;word-break:break-all}
"""


def _status(passed: bool, severity: str) -> tuple[str, str]:
    if passed:
        return "pass", "PASS"
    return ("error", "ERROR") if severity == ERROR else ("warn", "WARN")


def _render_html(result: GateResult, partition_key: str) -> str:
    blocking = {spec.name: spec.blocking for spec in CHECK_SPECS}
    gx = result.validation
    stats = gx.get("statistics", {})
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Quality gate {_e(partition_key)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Quality gate: partition <code>{_e(partition_key)}</code></h1>",
        f"<p>{result.rows_in:,} rows in, {len(result.accepted):,} accepted, "
        f"{len(result.quarantined):,} quarantined. "
        f"{'<strong class=error>Blocked</strong>' if result.blocked else 'Not blocked'}. "
        f"GX suite <code>{_e(gx.get('suite_name', ''))}</code>: "
        f"{_e(stats.get('successful_expectations', '?'))} of "
        f"{_e(stats.get('evaluated_expectations', '?'))} expectations met.</p>",
        "<h2>Checks</h2>",
        "<table><tr><th>Check</th><th>Blocking</th><th>Status</th><th>Description</th>"
        "<th>Figures</th></tr>",
    ]
    for c in result.checks:
        css, label = _status(c.passed, c.severity)
        out.append(
            f"<tr><td>{_e(c.name)}</td><td>{'yes' if blocking.get(c.name) else 'no'}</td>"
            f"<td class={css}>{label}</td><td>{_e(c.description)}</td>"
            f"<td><code>{_e(_compact(c.metadata, 1200))}</code></td></tr>"
        )
    out.append("</table>")

    out += [
        "<h2>Expectations</h2>",
        "<table><tr><th>Check</th><th>Expectation</th><th>Arguments</th><th>Success</th>"
        "<th>Observed</th><th>Unexpected</th><th>Examples</th></tr>",
    ]
    for item in gx.get("results", []):
        config = item.get("expectation_config") or {}
        body = item.get("result") or {}
        kwargs = {k: v for k, v in (config.get("kwargs") or {}).items() if k != "batch_id"}
        check = (config.get("meta") or {}).get("check", "")
        if "observed_value" in body:
            observed = _compact(body["observed_value"])
        else:
            observed = f"{body.get('element_count', 0)} rows"
        unexpected = ""
        if "unexpected_count" in body:
            percent = body.get("unexpected_percent")
            unexpected = str(body["unexpected_count"])
            if percent:
                unexpected += f" ({percent:.3g}%)"
        examples = body.get("partial_unexpected_index_list") or body.get(
            "partial_unexpected_list", []
        )
        error = gx_suite.error_message(item.get("exception_info"))
        if error:
            unexpected = f"error: {error.splitlines()[0]}"
        success = bool(item.get("success"))
        out.append(
            f"<tr><td>{_e(check)}</td><td>{_e(config.get('type', ''))}</td>"
            f"<td><code>{_e(_compact(kwargs))}</code></td>"
            f"<td class={'pass' if success else 'error'}>{'yes' if success else 'no'}</td>"
            f"<td><code>{_e(observed)}</code></td><td>{_e(unexpected)}</td>"
            f"<td><code>{_e(_compact(examples[:_MAX_EXAMPLES]))}</code></td></tr>"
        )
    out.append("</table>")

    if len(result.quarantined):
        shown = result.quarantined.head(50)
        out += [
            f"<h2>Quarantined rows (first {len(shown)} of {len(result.quarantined):,})</h2>",
            "<table><tr><th>Source</th><th>Row</th><th>Field</th><th>Reason</th></tr>",
        ]
        for row in shown.itertuples(index=False):
            out.append(
                f"<tr><td>{_e(row.source)}</td><td>{_e(row.source_row)}</td>"
                f"<td>{_e(row.field)}</td><td>{_e(row.reason)}</td></tr>"
            )
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
