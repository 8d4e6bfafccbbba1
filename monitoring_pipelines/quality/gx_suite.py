"""Everything Great Expectations (GX 1.x): the suite, the cached context and one validation run.

GX is imported only inside functions: importing it costs seconds and the Dagster code location must
load fast. The ephemeral context, its pandas data source and batch definition are created once per
process together with the one suite (partition bounds are suite parameters), so a warm validation
only pays for computing the metrics.

The suite is the expectations of every check in the catalogue
(:mod:`monitoring_pipelines.quality.checks`). Every expectation carries
``meta = {"check": <check name>, ...}`` so that results map back to the gate's checks whatever
order GX returns them in. Row-level expectations run with result format
``COMPLETE`` and :data:`ROW_ID` as an unexpected index column: the ``unexpected_index_list`` of each
result is exactly the set of input rows GX found bad.
"""

import threading
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from monitoring_pipelines.quality.jsonsafe import json_safe

# Helper column added to the validated frame: the input position of each row.
ROW_ID = "gate_row"

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

    from monitoring_pipelines.quality.checks import CHECKS

    suite = gx.ExpectationSuite(name="raw_metrics_gate")
    for check in CHECKS:
        for expectation in check.expectations({"check": check.spec.name}):
            suite.add_expectation(expectation)
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


def validate(
    work: pd.DataFrame, *, tenant: str, start: datetime, end: datetime
) -> tuple[list[Finding], dict]:
    """Validate ``work`` (the partition plus :data:`ROW_ID` and the checks' helper columns).

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
