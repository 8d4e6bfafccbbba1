"""What every quality check shares: its spec, its outcome, the gate's settings and the partition
it judges, and the one-line formatting of the values a reason quotes.

A check is one module in this package holding a :class:`Check`; the catalogue in
:mod:`monitoring_pipelines.quality.checks` lists them in the order their reasons take precedence.
Three levels exist:

* ``table``: judges the frame as a whole before any row rule (the schema). When it fails, its
  reason quarantines every row and the row checks are not evaluated;
* ``row``: names the rows that break the rule, each with its field and reason; a row breaking
  several rules is quarantined once, under the first check of the catalogue;
* ``partition``: judges the accepted rows as a whole (volume, freshness).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd

WARN = "WARN"
ERROR = "ERROR"
TABLE, ROW, PARTITION = "table", "row", "partition"
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class CheckSpec:
    name: str
    description: str
    blocking: bool


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
class Partition:
    """The partition under judgement: its landed rows, bounds and the rows already held back."""

    data: pd.DataFrame
    tenant: str
    start: pd.Timestamp
    end: pd.Timestamp
    now: pd.Timestamp
    expected_series: int
    config: GateConfig
    # Input position -> (check, field, reason) of every row quarantined so far.
    held: dict[int, tuple[str, str, str]] = field(default_factory=dict)


@dataclass
class RowFindings:
    """The rows one row-level check found bad, each with its field and reason."""

    bad: dict[int, tuple[str, str]]
    extra: dict


def _no_expectations(meta: dict) -> list:
    return []


@dataclass(frozen=True)
class Check:
    """One catalogue entry.

    ``expectations(meta)`` returns the GX expectations that find the check's violations (each
    carrying ``meta``, which maps its result back to the check); it runs only when the suite is
    built, so it may import GX. ``prepare(data)`` adds helper columns the expectations read.
    ``evaluate`` depends on the level: ``table`` -> ``(findings, partition) -> (outcome, reason
    or None)``; ``row`` -> ``(findings, partition) -> RowFindings``; ``partition`` ->
    ``(accepted, partition) -> outcome``.
    """

    spec: CheckSpec
    level: str
    evaluate: Callable
    expectations: Callable[[dict], list] = _no_expectations
    prepare: Callable[[pd.DataFrame], dict] | None = None


# -- one-line formatting of values in reasons ---------------------------------------------------


def utc(value: datetime) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)


def show(value: object, limit: int = 120) -> str:
    """A value for a one-line reason: control characters escaped, long text cut."""
    text = str(value)
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def number(value: float) -> str:
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def ts_text(value: object) -> str | None:
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


def errored(finding, n: int, field_name: str) -> dict[int, tuple[str, str]]:
    """A rule GX could not evaluate protects nothing: every row is held back under it."""
    message = show(finding.error.splitlines()[0] if finding.error else "unknown error")
    reason = f"{field_name}: not evaluated by {finding.expectation} ({message})"
    return dict.fromkeys(range(n), (field_name, reason))


def flagged_rows(findings, n: int, field_name: str) -> tuple[set[int], dict[int, tuple[str, str]]]:
    """The rows GX flagged, and every row (under ``field_name``) when an expectation errored."""
    flagged: set[int] = set()
    bad: dict[int, tuple[str, str]] = {}
    for f in findings:
        if f.error:
            for pos, item in errored(f, n, field_name).items():
                bad.setdefault(pos, item)
            continue
        flagged |= f.rows
    return flagged, bad


def _fraction_text(count: int, total: int) -> str:
    return f"{count:,} of {total:,} rows ({count / total:.2%})" if total else "0 rows"


def row_outcome(
    spec: CheckSpec, found: RowFindings, findings, partition: Partition
) -> tuple[CheckOutcome, dict[int, tuple[str, str, str]]]:
    """The outcome of one row check, and the rows it quarantines (those not already held)."""
    n, config, held = len(partition.data), partition.config, partition.held
    newly = {pos: (spec.name, *item) for pos, item in found.bad.items() if pos not in held}
    violations = len(found.bad)
    fraction = violations / n if n else 0.0
    examples = [found.bad[pos][1] for pos in sorted(found.bad)[:MAX_EXAMPLES]]
    metadata = {
        "rows_checked": n,
        "violations": violations,
        "fraction": round(fraction, 6),
        "quarantined": len(newly),
        "tolerance": config.tolerance,
        "examples": examples,
        "gx_expectations": sorted({f.expectation for f in findings}),
        **found.extra,
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
    return CheckOutcome(spec.name, passed, severity, description, metadata), newly


def not_evaluated(spec: CheckSpec, failed: str) -> CheckOutcome:
    return CheckOutcome(
        spec.name,
        False,
        ERROR,
        f"Not evaluated: the {failed} check failed, so every row was quarantined.",
        {"evaluated": False, "rows_checked": 0},
    )
