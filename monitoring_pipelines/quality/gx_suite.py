"""Everything Great Expectations (GX 1.x): the suite, the cached context and one validation run.

GX is imported only inside functions: importing it costs seconds and the Dagster code location must
load fast. The ephemeral context, its pandas data source and batch definition are created once per
process together with the one suite (partition bounds are suite parameters), so a warm validation
only pays for computing the metrics.

One validation covers every partition of a run (a ranged run gates a tenant's days at once): the
partition bounds are per-row helper columns, and :func:`split` cuts the findings and the
validation result back into one per partition, so each partition keeps its own evidence.

The suite is the expectations of every check in the catalogue
(:mod:`monitoring_pipelines.quality.checks`). Every expectation carries
``meta = {"check": <check name>, ...}`` so that results map back to the gate's checks whatever
order GX returns them in. Row-level expectations run with result format
``COMPLETE`` and :data:`ROW_ID` as an unexpected index column: the ``unexpected_index_list`` of each
result is exactly the set of input rows GX found bad.
"""

import dataclasses
import threading
from dataclasses import dataclass

import pandas as pd

from monitoring_pipelines.quality.jsonsafe import json_safe

# Helper column added to the validated frame: the input position of each row.
ROW_ID = "gate_row"

PARTIAL = 10
RESULT_FORMAT_BASE = {
    "result_format": "COMPLETE",
    # The query text would repeat every unexpected index: large and useless for pandas.
    "return_unexpected_index_query": False,
    "partial_unexpected_count": PARTIAL,
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
    # Row-level (GX listed the unexpected rows) rather than about the table as a whole.
    per_row: bool = False


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


def validate(work: pd.DataFrame) -> tuple[list[Finding], dict]:
    """Validate ``work`` (the rows plus :data:`ROW_ID` and the checks' helper columns).

    Returns one :class:`Finding` per expectation and the JSON-safe GX validation result.
    """
    index_columns = [ROW_ID, *(c for c in ("source", "source_row") if c in work.columns)]
    result_format = {**RESULT_FORMAT_BASE, "unexpected_index_column_names": index_columns}
    with _lock:
        engine = _get_engine()
        suite = engine.suite
        batch = engine.batch_definition.get_batch(batch_parameters={"dataframe": work})
        result = batch.validate(suite, result_format=result_format)

    findings = []
    for item in result.results:
        config = item.expectation_config
        meta = config.meta or {}
        body = item.result or {}
        error = error_message(item.exception_info)
        index_list = body.get("unexpected_index_list")
        rows = frozenset(
            int(entry[ROW_ID]) for entry in index_list or [] if isinstance(entry, dict)
        )
        kwargs = config.kwargs
        pair = [kwargs.get(k) for k in ("column_A", "column_B") if kwargs.get(k)]
        column = kwargs.get("column") or next(
            (c for c in pair if not str(c).startswith("gate_")), None
        )
        findings.append(
            Finding(
                check=str(meta.get("check", "")),
                expectation=config.type,
                column=column,
                kind=meta.get("kind"),
                success=bool(item.success),
                element_count=int(body.get("element_count") or 0),
                unexpected_count=int(body.get("unexpected_count") or 0),
                rows=rows,
                error=error,
                observed=body.get("observed_value"),
                per_row=index_list is not None,
            )
        )
    return findings, json_safe(result.to_json_dict())


def split(
    findings: list[Finding], validation: dict, bounds: list[tuple[int, int]]
) -> list[tuple[list[Finding], dict]]:
    """The findings and validation result of each partition, the rows ``[lo, hi)`` of the run.

    Row-level results keep only the partition's rows (renumbered from 0) with their counts and
    success recomputed; results about the table as a whole apply to every partition alike.
    """
    out = []
    total = sum(hi - lo for lo, hi in bounds)
    for lo, hi in bounds:
        n = hi - lo
        mine = []
        for f in findings:
            if not f.per_row or f.error:
                mine.append(f)
                continue
            rows = frozenset(r - lo for r in f.rows if lo <= r < hi)
            mine.append(
                dataclasses.replace(
                    f,
                    rows=rows,
                    element_count=n,
                    unexpected_count=len(rows),
                    success=not rows,
                )
            )
        out.append((mine, _split_validation(validation, lo, hi, total)))
    return out


def _split_validation(validation: dict, lo: int, hi: int, total: int) -> dict:
    results = []
    for item in validation.get("results", []):
        body = item.get("result") or {}
        if "unexpected_index_list" not in body or item.get("exception_info", {}).get(
            "raised_exception"
        ):
            results.append(item)
            continue
        index_list = body.get("unexpected_index_list") or []
        values = body.get("unexpected_list") or [None] * len(index_list)
        kept = [
            ({**entry, ROW_ID: int(entry[ROW_ID]) - lo}, value)
            for entry, value in zip(index_list, values, strict=False)
            if isinstance(entry, dict) and lo <= int(entry[ROW_ID]) < hi
        ]
        n = hi - lo
        part = {
            k: v
            for k, v in body.items()
            if not k.startswith(("missing_", "unexpected_percent_", "partial_unexpected_counts"))
        }
        part.update(
            element_count=n,
            unexpected_count=len(kept),
            unexpected_percent=100.0 * len(kept) / n if n else 0.0,
            unexpected_index_list=[entry for entry, _ in kept],
            unexpected_list=[value for _, value in kept],
            partial_unexpected_index_list=[entry for entry, _ in kept[:PARTIAL]],
            partial_unexpected_list=[value for _, value in kept[:PARTIAL]],
        )
        results.append({**item, "result": part, "success": not kept})
    evaluated = len(results)
    met = sum(1 for r in results if r.get("success"))
    statistics = {
        **validation.get("statistics", {}),
        "evaluated_expectations": evaluated,
        "successful_expectations": met,
        "unsuccessful_expectations": evaluated - met,
        "success_percent": 100.0 * met / evaluated if evaluated else None,
    }
    meta = {**validation.get("meta", {}), "validated_with": {"partitions_rows": total}}
    return {
        **validation,
        "results": results,
        "success": met == evaluated,
        "statistics": statistics,
        "meta": meta,
    }
