"""Everything Great Expectations (GX 1.x): the suite, the cached context and one validation run.

GX is imported only inside functions: importing it costs seconds and the Dagster code location must
load fast. The ephemeral context, its pandas data source and batch definition are created once per
process together with the one suite (partition bounds are suite parameters), so a warm validation
only pays for computing the metrics.

Every expectation carries ``meta = {"check": <check name>, ...}`` so that results map back to the
gate's checks whatever order GX returns them in. Row-level expectations run with result format
``COMPLETE`` and :data:`ROW_ID` as an unexpected index column: the ``unexpected_index_list`` of each
result is exactly the set of input rows GX found bad.
"""

import math
import threading
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from monitoring_pipelines.sources import records

# Helper columns added to the validated frame: the input position of each row, and the metric kind
# that the per-kind range expectations select with a row condition.
ROW_ID = "gate_row"
KIND = "gate_kind"
LOWER = "gate_lower"
UPPER = "gate_upper"

# The widest finite float64: a "between" on it fails exactly the infinities (NaN is null for GX).
_FLOAT_MAX = 1.7976931348623157e308

# Accepted pandas dtypes, as GX names them: "str" matches both the pandas 3 string dtype and object
# columns holding str (GX checks object columns value by value); "Timestamp" matches timezone-aware
# datetime columns at any resolution and refuses naive ones.
COLUMN_TYPES = {
    "tenant": "str",
    "service": "str",
    "metric": "str",
    "ts": "Timestamp",
    "value": "float64",
    "tags": "str",
    "source": "str",
    "source_row": "int64",
}

# How each GX type name reads in a quarantine reason.
TYPE_LABELS = {
    "str": "text",
    "Timestamp": "timezone-aware datetime",
    "float64": "float64",
    "int64": "int64",
}

RESULT_FORMAT_BASE = {
    "result_format": "COMPLETE",
    # The query text would repeat every unexpected index: large and useless for pandas.
    "return_unexpected_index_query": False,
    "partial_unexpected_count": 10,
}


@dataclass(frozen=True)
class Finding:
    """What one expectation found: the rows (input positions) it flagged, or why it failed."""

    check: str
    expectation: str
    column: str | None
    kind: str | None
    success: bool
    element_count: int
    unexpected_count: int
    rows: frozenset[int]
    error: str | None
    observed: object = None


@dataclass
class _Engine:
    batch_definition: object
    suite: object


_engine: _Engine | None = None
# GX contexts are not documented as thread-safe; one validation at a time per process costs nothing
# under Dagster's multiprocess executor and keeps the in-process executor safe.
_lock = threading.Lock()


def _get_engine() -> _Engine:
    global _engine
    if _engine is None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        # tqdm bars would flood the Dagster compute logs with one line per metric batch.
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        source = context.data_sources.add_pandas(name="monitoring_gate")
        asset = source.add_dataframe_asset(name="raw_metrics_partition")
        batch_definition = asset.add_batch_definition_whole_dataframe(name="whole_partition")
        _engine = _Engine(batch_definition=batch_definition, suite=_build_suite())
    return _engine


def warm_up() -> None:
    """Import GX and build the context now, e.g. before timing or in a long-lived worker."""
    with _lock:
        _get_engine()


def _build_suite():
    import great_expectations as gx
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(name="raw_metrics_gate")
    add = suite.add_expectation

    add(
        gxe.ExpectTableColumnsToMatchSet(
            column_set=list(records.FRAME_COLUMNS),
            # Extra columns (the gate's own helpers among them) are dropped, not an error.
            exact_match=False,
            meta={"check": "schema"},
        )
    )
    for column, type_ in COLUMN_TYPES.items():
        add(gxe.ExpectColumnValuesToBeOfType(column=column, type_=type_, meta={"check": "schema"}))

    for column in records.KEY_COLUMNS:
        add(gxe.ExpectColumnValuesToNotBeNull(column=column, meta={"check": "keys_not_null"}))

    # NaN is null to GX, so "not null" finds NaN and the widest finite range finds +/-inf.
    add(
        gxe.ExpectColumnValuesToNotBeNull(
            column="value", meta={"check": "values_finite", "finding": "nan"}
        )
    )
    add(
        gxe.ExpectColumnValuesToBeBetween(
            column="value",
            min_value=-_FLOAT_MAX,
            max_value=_FLOAT_MAX,
            meta={"check": "values_finite", "finding": "inf"},
        )
    )

    # One pair of expectations against per-row bound columns covers every metric kind: a suite per
    # kind costs GX's per-expectation overhead once per kind and partition. Rows of a kind without
    # a bound have NaN there and are skipped.
    add(
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="value",
            column_B=LOWER,
            or_equal=True,
            ignore_row_if="either_value_is_missing",
            meta={"check": "values_in_range", "bound": "lower"},
        )
    )
    add(
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A=UPPER,
            column_B="value",
            or_equal=True,
            ignore_row_if="either_value_is_missing",
            meta={"check": "values_in_range", "bound": "upper"},
        )
    )

    # Partition bounds change on every call: suite parameters keep the suite itself cacheable.
    add(
        gxe.ExpectColumnValuesToBeBetween(
            column="ts",
            min_value={"$PARAMETER": "partition_start"},
            max_value={"$PARAMETER": "partition_end"},
            strict_max=True,
            meta={"check": "timestamps_in_partition"},
        )
    )
    add(
        gxe.ExpectColumnValuesToBeInSet(
            column="tenant",
            value_set={"$PARAMETER": "partition_tenant"},
            meta={"check": "timestamps_in_partition"},
        )
    )

    add(
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=list(records.KEY_COLUMNS), meta={"check": "keys_unique"}
        )
    )
    return suite


def error_message(exception_info: object) -> str | None:
    """The first exception message of a result, whichever of GX's two shapes it comes in."""
    if not isinstance(exception_info, dict):
        return None
    if exception_info.get("raised_exception"):
        return str(exception_info.get("exception_message") or "GX raised an exception")
    for value in exception_info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message") or "GX raised an exception")
    return None


def json_safe(value: object) -> object:
    """``value`` with non-finite floats spelled as strings, so strict JSON can encode it."""
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def validate(
    work: pd.DataFrame, *, tenant: str, start: datetime, end: datetime
) -> tuple[list[Finding], dict]:
    """Validate ``work`` (the partition plus :data:`ROW_ID` and :data:`KIND`) against the suite.

    Returns one :class:`Finding` per expectation and the JSON-safe GX validation result.
    """
    index_columns = [ROW_ID, *(c for c in ("source", "source_row") if c in work.columns)]
    result_format = {**RESULT_FORMAT_BASE, "unexpected_index_column_names": index_columns}
    parameters = {
        "partition_start": pd.Timestamp(start).to_pydatetime(),
        "partition_end": pd.Timestamp(end).to_pydatetime(),
        "partition_tenant": [tenant],
    }
    with _lock:
        engine = _get_engine()
        suite = engine.suite
        batch = engine.batch_definition.get_batch(batch_parameters={"dataframe": work})
        result = batch.validate(
            suite, result_format=result_format, expectation_parameters=parameters
        )

    findings = []
    for item in result.results:
        config = item.expectation_config
        meta = config.meta or {}
        body = item.result or {}
        error = error_message(item.exception_info)
        index_list = body.get("unexpected_index_list") or []
        rows = frozenset(int(entry[ROW_ID]) for entry in index_list if isinstance(entry, dict))
        findings.append(
            Finding(
                check=str(meta.get("check", "")),
                expectation=config.type,
                column=config.kwargs.get("column"),
                kind=meta.get("kind"),
                success=bool(item.success),
                element_count=int(body.get("element_count") or 0),
                unexpected_count=int(body.get("unexpected_count") or 0),
                rows=rows,
                error=error,
                observed=body.get("observed_value"),
            )
        )
    return findings, json_safe(result.to_json_dict())
