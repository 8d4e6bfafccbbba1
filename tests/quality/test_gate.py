"""The quality gate on small clean and dirty frames: what gets accepted, what gets quarantined and
why, and what each asset check reports."""

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitoring_pipelines.quality.checks import CHECK_SPECS
from monitoring_pipelines.quality.gate import GateConfig, GateResult, run_gate
from monitoring_pipelines.quality.report import write_validation
from monitoring_pipelines.sources import records

START = datetime(2026, 10, 1, tzinfo=UTC)
END = datetime(2026, 10, 2, tzinfo=UTC)
NOW = datetime(2026, 11, 1, tzinfo=UTC)
SLOTS = 288
SERIES = (("api", "error_rate"), ("api", "latency_p95_ms"), ("cdn", "requests_per_second"))
ROW_CHECKS = ("keys_not_null", "values_finite", "values_in_range", "timestamps_in_partition")


def clean_frame(series=SERIES, slots=SLOTS, source="drop/a.csv") -> pd.DataFrame:
    """One tenant-day on the 5-minute grid, every value well inside its bounds."""
    stamps = pd.date_range(START, periods=slots, freq="300s", tz="UTC")
    rng = np.random.default_rng(7)
    parts = []
    for i, (service, metric) in enumerate(series):
        parts.append(
            pd.DataFrame(
                {
                    "tenant": "acme",
                    "service": service,
                    "metric": metric,
                    "ts": stamps,
                    "value": rng.uniform(0.0, 0.5, slots),
                    "tags": "",
                    "source": source,
                    "source_row": np.arange(slots) + 1 + i * slots,
                }
            )
        )
    return records.normalise(pd.concat(parts, ignore_index=True))


def gate(frame: pd.DataFrame, **overrides) -> GateResult:
    kwargs = {
        "tenant": "acme",
        "start": START,
        "end": END,
        "expected_series": len(SERIES),
        "now": NOW,
    }
    kwargs.update(overrides)
    result = run_gate(frame, **kwargs)
    assert result.rows_in == len(frame) == len(result.accepted) + len(result.quarantined)
    assert not result.accepted.duplicated(list(records.KEY_COLUMNS)).any()
    assert list(result.accepted.columns) == list(records.FRAME_COLUMNS)
    assert list(result.quarantined.columns) == [
        c for c in records.QUARANTINE_COLUMNS if c != "stage"
    ]
    return result


def outcome(result: GateResult, name: str):
    return next(c for c in result.checks if c.name == name)


@pytest.fixture(scope="module")
def clean_result() -> GateResult:
    return gate(clean_frame())


# -- clean data and the contract ---------------------------------------------------------------


def test_clean_partition_passes_every_check_and_keeps_every_row(clean_result):
    assert [(c.name, c.passed) for c in clean_result.checks] == [
        (spec.name, True) for spec in CHECK_SPECS
    ]
    assert len(clean_result.accepted) == len(SERIES) * SLOTS
    assert clean_result.quarantined.empty
    assert not clean_result.blocked
    volume = outcome(clean_result, "volume").metadata
    assert volume["expected"] == volume["observed"] == len(SERIES) * SLOTS
    assert volume["ratio"] == 1.0


def test_check_specs_name_the_outcomes_in_display_order(clean_result):
    assert [spec.name for spec in CHECK_SPECS] == [c.name for c in clean_result.checks]
    assert [spec.name for spec in CHECK_SPECS] == [
        "schema",
        "keys_not_null",
        "values_finite",
        "values_in_range",
        "timestamps_in_partition",
        "keys_unique",
        "volume",
        "freshness",
    ]
    blocking = {spec.name: spec.blocking for spec in CHECK_SPECS}
    assert blocking.pop("freshness") is False
    assert all(blocking.values())
    assert all(spec.description for spec in CHECK_SPECS)


def test_row_checks_report_their_figures_and_the_gx_expectations_used(clean_result):
    for name in (*ROW_CHECKS, "keys_unique"):
        meta = outcome(clean_result, name).metadata
        assert meta["rows_checked"] == len(SERIES) * SLOTS
        assert meta["violations"] == meta["quarantined"] == 0
        assert meta["fraction"] == 0.0
        assert meta["examples"] == []
        assert all(e.startswith("expect_") for e in meta["gx_expectations"]), name
    kinds = outcome(clean_result, "values_in_range").metadata["kinds"]
    assert set(kinds) == {"ratio", "latency", "rate"}
    assert kinds["ratio"]["bounds"] == "[0, 1]"


def test_validation_evidence_is_the_gx_result(clean_result):
    validation = clean_result.validation
    assert validation["success"] is True
    checks = {r["expectation_config"]["meta"]["check"] for r in validation["results"]}
    assert checks == {"schema", *ROW_CHECKS, "keys_unique"}
    json.dumps(validation, allow_nan=False)


def test_object_dtype_text_columns_are_accepted():
    frame = clean_frame().astype({c: object for c in ("tenant", "service", "metric", "tags")})
    assert outcome(gate(frame), "schema").passed


def test_a_non_default_input_index_does_not_matter():
    frame = clean_frame()
    frame.index = frame.index * 10 + 5
    frame.loc[frame.index[4], "value"] = np.nan
    result = gate(frame)
    assert result.quarantined["source_row"].tolist() == [5]


# -- one rule at a time ------------------------------------------------------------------------

ERROR_RATE_ROW = 3  # error_rate: source_row 4
LATENCY_ROW = SLOTS + 3  # latency_p95_ms: source_row 292
RATE_ROW = 2 * SLOTS + 3  # requests_per_second: source_row 580


@pytest.mark.parametrize(
    ("position", "column", "bad", "check", "field", "reason"),
    [
        (ERROR_RATE_ROW, "tenant", None, "keys_not_null", "tenant", "tenant: null"),
        (ERROR_RATE_ROW, "service", None, "keys_not_null", "service", "service: null"),
        (ERROR_RATE_ROW, "metric", None, "keys_not_null", "metric", "metric: null"),
        (ERROR_RATE_ROW, "ts", pd.NaT, "keys_not_null", "ts", "ts: null"),
        (RATE_ROW, "value", np.nan, "values_finite", "value", "value: not finite (nan)"),
        (RATE_ROW, "value", np.inf, "values_finite", "value", "value: not finite (inf)"),
        (RATE_ROW, "value", -np.inf, "values_finite", "value", "value: not finite (-inf)"),
        (
            ERROR_RATE_ROW,
            "value",
            1.7,
            "values_in_range",
            "value",
            "value: 1.7 outside [0, 1] for ratio metric error_rate",
        ),
        (
            LATENCY_ROW,
            "value",
            700_000.0,
            "values_in_range",
            "value",
            "value: 700000 outside [0, 600000] for latency metric latency_p95_ms",
        ),
        (
            RATE_ROW,
            "value",
            -3.0,
            "values_in_range",
            "value",
            "value: -3 outside [0, +inf) for rate metric requests_per_second",
        ),
        (
            ERROR_RATE_ROW,
            "ts",
            pd.Timestamp("2026-10-02T00:05:00Z"),
            "timestamps_in_partition",
            "ts",
            "ts: 2026-10-02T00:05:00+00:00 outside partition [2026-10-01, 2026-10-02)",
        ),
        (
            ERROR_RATE_ROW,
            "ts",
            pd.Timestamp("2026-09-30T23:55:00Z"),
            "timestamps_in_partition",
            "ts",
            "ts: 2026-09-30T23:55:00+00:00 outside partition [2026-10-01, 2026-10-02)",
        ),
        (
            ERROR_RATE_ROW,
            "tenant",
            "globex",
            "timestamps_in_partition",
            "tenant",
            "tenant: globex is not the partition tenant acme",
        ),
    ],
)
def test_each_rule_quarantines_its_bad_row_with_a_reason(
    position, column, bad, check, field, reason
):
    frame = clean_frame()
    frame.loc[position, column] = bad
    result = gate(frame)

    quarantined = result.quarantined
    assert len(quarantined) == 1
    row = quarantined.iloc[0]
    assert (row["field"], row["reason"]) == (field, reason)
    assert row["source"] == "drop/a.csv"
    assert row["source_row"] == position + 1
    raw = json.loads(row["raw"])
    assert raw["source_row"] == position + 1
    assert set(raw) == set(records.FRAME_COLUMNS)

    failed = outcome(result, check)
    assert (failed.passed, failed.severity) == (False, "WARN")
    assert failed.metadata["violations"] == failed.metadata["quarantined"] == 1
    assert failed.metadata["examples"] == [reason]
    assert reason in failed.description
    assert not result.blocked
    assert len(result.accepted) == len(frame) - 1


def test_quarantine_row_keeps_tenant_ts_and_the_raw_row_as_json():
    frame = clean_frame()
    frame.loc[RATE_ROW, "value"] = np.nan
    row = gate(frame).quarantined.iloc[0]
    assert row["tenant"] == "acme"
    assert row["ts"] == "2026-10-01T00:15:00+00:00"
    raw = json.loads(row["raw"])
    assert raw["value"] == "NaN"
    assert raw["metric"] == "requests_per_second"
    assert raw["ts"] == "2026-10-01T00:15:00+00:00"


def test_a_row_breaking_several_rules_is_quarantined_once_under_the_first():
    frame = clean_frame()
    frame.loc[ERROR_RATE_ROW, ["tenant", "value"]] = [None, np.nan]
    frame.loc[ERROR_RATE_ROW, "ts"] = pd.Timestamp("2026-10-03T00:00:00Z")
    result = gate(frame)

    assert result.quarantined["reason"].tolist() == ["tenant: null"]
    assert outcome(result, "keys_not_null").metadata["quarantined"] == 1
    finite = outcome(result, "values_finite")
    assert finite.metadata["violations"] == 1
    assert finite.metadata["quarantined"] == 0
    assert finite.metadata["examples"] == ["value: not finite (nan)"]
    assert outcome(result, "timestamps_in_partition").metadata["violations"] == 1


def test_infinity_on_a_bounded_metric_is_reported_by_both_rules_but_quarantined_once():
    frame = clean_frame()
    frame.loc[ERROR_RATE_ROW, "value"] = np.inf
    result = gate(frame)
    assert result.quarantined["reason"].tolist() == ["value: not finite (inf)"]
    in_range = outcome(result, "values_in_range").metadata
    assert (in_range["violations"], in_range["quarantined"]) == (1, 0)


# -- tolerance --------------------------------------------------------------------------------


def _with_bad_values(count: int) -> pd.DataFrame:
    frame = clean_frame()
    frame.loc[: count - 1, "value"] = 2.0  # error_rate rows: outside [0, 1]
    return frame


def test_bad_rows_within_tolerance_warn_and_the_good_rows_go_on():
    count = 8  # 8 of 864 rows: 0.93 %
    result = gate(_with_bad_values(count))
    check = outcome(result, "values_in_range")
    assert (check.passed, check.severity) == (False, "WARN")
    assert check.metadata["fraction"] == pytest.approx(count / (len(SERIES) * SLOTS), abs=1e-6)
    assert len(check.metadata["examples"]) == 5
    assert len(result.quarantined) == count
    assert len(result.accepted) == len(SERIES) * SLOTS - count
    assert not result.blocked


def test_bad_rows_above_tolerance_are_an_error_that_blocks():
    result = gate(_with_bad_values(20))
    check = outcome(result, "values_in_range")
    assert (check.passed, check.severity) == (False, "ERROR")
    assert "blocked" in check.description
    assert result.blocked
    # The bad rows are still quarantined one by one, with their reasons.
    assert len(result.quarantined) == 20
    assert set(result.quarantined["field"]) == {"value"}


def test_tolerance_is_configurable():
    frame = _with_bad_values(20)
    assert outcome(gate(frame, config=GateConfig(tolerance=0.05)), "values_in_range").severity == (
        "WARN"
    )
    strict = gate(_with_bad_values(1), config=GateConfig(tolerance=0.0))
    assert outcome(strict, "values_in_range").severity == "ERROR"


# -- duplicates -------------------------------------------------------------------------------

DUPLICATE = "duplicate of (tenant, service, metric, ts); superseded by row {row} of {source}"


def test_exact_duplicate_from_a_later_file_supersedes_the_earlier_row():
    frame = clean_frame()
    copy = frame.iloc[[5]].assign(source="drop/b.csv", source_row=1)
    result = gate(pd.concat([frame, copy], ignore_index=True))

    assert result.quarantined["reason"].tolist() == [DUPLICATE.format(row=1, source="drop/b.csv")]
    assert result.quarantined["source_row"].tolist() == [6]
    assert result.quarantined["field"].tolist() == ["key"]
    kept = result.accepted[result.accepted["ts"] == frame.loc[5, "ts"]]
    kept = kept[kept["metric"] == "error_rate"]
    assert kept["source"].tolist() == ["drop/b.csv"]
    check = outcome(result, "keys_unique")
    assert (check.passed, check.severity) == (False, "WARN")
    assert check.metadata["violations"] == check.metadata["quarantined"] == 1
    assert check.metadata["rows_in_duplicate_groups"] == 2


def test_identical_rows_with_the_same_provenance_keep_exactly_one():
    frame = clean_frame()
    result = gate(pd.concat([frame, frame.iloc[[5]]], ignore_index=True))
    assert result.quarantined["reason"].tolist() == [DUPLICATE.format(row=6, source="drop/a.csv")]
    assert len(result.accepted) == len(frame)


def test_conflicting_duplicates_keep_the_value_received_last_whatever_the_input_order():
    frame = clean_frame()
    key = frame.loc[10, list(records.KEY_COLUMNS)]
    later = frame.iloc[[10, 10]].assign(value=[0.25, 0.75], source_row=[900, 901])
    combined = pd.concat([later.iloc[[1]], frame, later.iloc[[0]]], ignore_index=True)
    for shuffled in (combined, combined.sample(frac=1.0, random_state=3)):
        result = gate(shuffled)
        mask = np.logical_and.reduce([result.accepted[c] == key[c] for c in key.index])
        assert result.accepted.loc[mask, "value"].tolist() == [0.75]
        assert sorted(result.quarantined["source_row"]) == [11, 900]
        assert set(result.quarantined["reason"]) == {DUPLICATE.format(row=901, source="drop/a.csv")}


def test_a_broken_duplicate_does_not_displace_the_good_row():
    frame = clean_frame()
    broken = frame.iloc[[10]].assign(value=np.nan, source_row=999)
    result = gate(pd.concat([frame, broken], ignore_index=True))

    assert result.quarantined["reason"].tolist() == ["value: not finite (nan)"]
    assert outcome(result, "keys_unique").passed
    assert len(result.accepted) == len(frame)


# -- volume and freshness ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keep", "passed", "severity"),
    [(1.0, True, "WARN"), (0.95, True, "WARN"), (0.8, False, "WARN"), (0.4, False, "ERROR")],
)
def test_volume_thresholds(keep, passed, severity):
    frame = clean_frame()
    frame = frame.groupby("metric", group_keys=False).head(int(SLOTS * keep))
    result = gate(frame)
    check = outcome(result, "volume")
    assert (check.passed, check.severity) == (passed, severity)
    assert check.metadata["expected"] == len(SERIES) * SLOTS
    assert check.metadata["observed"] == len(frame)
    assert check.metadata["ratio"] == pytest.approx(len(frame) / (len(SERIES) * SLOTS), abs=1e-6)
    assert result.blocked is (severity == "ERROR" and not passed)


def test_volume_reports_missing_series():
    frame = clean_frame(series=SERIES[:2])
    check = outcome(gate(frame), "volume")
    assert (check.passed, check.severity) == (False, "WARN")
    assert check.metadata["missing_series"] == 1
    assert check.metadata["observed_series"] == 2
    assert check.metadata["ratio"] == pytest.approx(2 / 3, abs=1e-6)


def test_volume_counts_accepted_rows_only():
    frame = clean_frame()
    frame.loc[: SLOTS * 2, "value"] = np.nan
    result = gate(frame)
    assert outcome(result, "volume").severity == "ERROR"
    assert outcome(result, "volume").metadata["observed"] == len(result.accepted)


def test_volume_of_todays_partition_counts_only_the_part_of_the_day_that_has_arrived():
    now = START + timedelta(hours=10)  # data is expected up to 09:00 (one hour of lag allowed)
    check = outcome(gate(clean_frame(slots=9 * 12), now=now), "volume")
    assert check.passed
    assert check.metadata["expected"] == len(SERIES) * 9 * 12
    early = outcome(gate(clean_frame(slots=0), now=START + timedelta(minutes=30)), "volume")
    assert early.passed and early.metadata["expected"] == 0


def test_freshness_of_a_partition_still_being_written():
    now = START + timedelta(hours=10)
    frame = clean_frame(slots=10 * 12)  # up to 09:55
    fresh = outcome(gate(frame, now=now), "freshness")
    assert fresh.passed
    assert fresh.metadata["lag_seconds"] == 300
    assert fresh.metadata["newest_ts"] == "2026-10-01T09:55:00+00:00"

    stale = gate(clean_frame(slots=8 * 12), now=now)  # up to 07:55
    check = outcome(stale, "freshness")
    assert (check.passed, check.severity) == (False, "WARN")
    assert check.metadata["lag_seconds"] == 2 * 3600 + 300


def test_freshness_of_a_past_partition_is_measured_from_its_end_and_never_blocks():
    frame = clean_frame(slots=20 * 12)  # stops at 19:55
    result = gate(frame)
    check = outcome(result, "freshness")
    assert (check.passed, check.severity) == (False, "WARN")
    assert check.metadata["reference_ts"] == "2026-10-02T00:00:00+00:00"
    assert check.metadata["lag_seconds"] == 4 * 3600 + 300
    assert not result.blocked
    assert outcome(
        gate(frame, config=GateConfig(freshness_lag_seconds=5 * 3600)), "freshness"
    ).passed


# -- empty and malformed input ----------------------------------------------------------------


def test_empty_partition_passes_row_checks_and_fails_volume():
    result = gate(records.empty_frame())
    assert result.rows_in == 0
    for name in ("schema", *ROW_CHECKS, "keys_unique"):
        assert outcome(result, name).passed, name
    volume = outcome(result, "volume")
    assert (volume.passed, volume.severity) == (False, "ERROR")
    assert volume.metadata["observed"] == 0
    assert not outcome(result, "freshness").passed
    assert result.blocked

    nothing_expected = gate(records.empty_frame(), expected_series=0)
    assert outcome(nothing_expected, "volume").passed


def test_an_empty_warehouse_read_typed_object_passes_the_schema():
    frame = records.empty_frame().astype({"source_row": object})
    result = gate(frame)
    assert outcome(result, "schema").passed
    assert outcome(result, "keys_unique").passed


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda f: f.drop(columns=["value"]), "schema: missing columns value"),
        (
            lambda f: f.assign(ts=f["ts"].dt.tz_localize(None)),
            "schema: wrong types ts is datetime64[ns], expected timezone-aware datetime",
        ),
        (
            lambda f: f.assign(value=f["value"].astype(str)),
            "schema: wrong types value is str, expected float64",
        ),
        (
            lambda f: f.assign(ts=f["ts"].astype(object)),
            "schema: wrong types ts is object, expected timezone-aware datetime",
        ),
    ],
)
def test_a_broken_schema_quarantines_every_row_and_blocks(mutate, reason):
    frame = mutate(clean_frame(slots=12))
    result = gate(frame)
    schema = outcome(result, "schema")
    assert (schema.passed, schema.severity) == (False, "ERROR")
    assert result.accepted.empty
    assert len(result.quarantined) == len(frame)
    assert set(result.quarantined["field"]) == {"schema"}
    assert set(result.quarantined["reason"]) == {reason}
    for name in (*ROW_CHECKS, "keys_unique"):
        assert outcome(result, name).metadata["evaluated"] is False
    assert result.blocked


def test_extra_columns_are_dropped_not_refused():
    frame = clean_frame(slots=12).assign(ingested_by="loader")
    result = gate(frame)
    schema = outcome(result, "schema")
    assert schema.passed
    assert schema.metadata["columns_ignored"] == ["ingested_by"]
    assert "ingested_by" not in result.accepted.columns


def test_a_rule_gx_could_not_evaluate_holds_back_every_row(monkeypatch):
    from dataclasses import replace

    from monitoring_pipelines.quality import gx_suite

    real = gx_suite.validate

    def failing(*args, **kwargs):
        findings, validation = real(*args, **kwargs)
        broken = [
            replace(f, success=False, rows=frozenset(), error="TypeError: cannot compare")
            if f.check == "timestamps_in_partition" and f.column == "ts"
            else f
            for f in findings
        ]
        return broken, validation

    monkeypatch.setattr(gx_suite, "validate", failing)
    frame = clean_frame(slots=12)
    result = gate(frame)
    check = outcome(result, "timestamps_in_partition")
    assert (check.passed, check.severity) == (False, "ERROR")
    assert check.metadata["gx_errors"] == ["TypeError: cannot compare"]
    assert result.accepted.empty
    assert set(result.quarantined["reason"]) == {
        "ts: not evaluated by expect_column_pair_values_a_to_be_greater_than_b"
        " (TypeError: cannot compare)"
    }


# -- evidence ---------------------------------------------------------------------------------


def test_write_validation_writes_strict_json_and_an_escaped_html_page(tmp_path):
    hostile = "<script>alert(1)</script>_ratio"
    frame = clean_frame(series=(("api", hostile),), slots=12)
    frame.loc[0, "value"] = 1.5
    frame.loc[1, "value"] = np.inf
    result = gate(frame, expected_series=1)
    assert hostile in result.quarantined["reason"].iloc[0]

    json_path, html_path = write_validation(result, tmp_path, "2026-10-01|acme")
    assert json_path == tmp_path / "2026-10-01_acme" / "validation.json"
    assert html_path == tmp_path / "2026-10-01_acme" / "validation.html"

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    payload = json.loads(json_path.read_text(encoding="utf-8"), parse_constant=refuse)
    assert payload["success"] is False
    assert payload["gate"]["rows_in"] == 12
    assert payload["gate"]["quarantined"] == 2
    assert [c["name"] for c in payload["gate"]["checks"]] == [s.name for s in CHECK_SPECS]

    page = html_path.read_text(encoding="utf-8")
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;_ratio" in page
    assert "expect_column_values_to_be_between" in page
    assert "values_in_range" in page


def test_write_validation_overwrites_and_keeps_hostile_keys_inside_the_directory(tmp_path):
    result = gate(clean_frame(slots=12), expected_series=1)
    first = write_validation(result, tmp_path, "../../etc/<b>|x")
    second = write_validation(result, tmp_path, "../../etc/<b>|x")
    assert first == second
    folder = first[0].parent
    assert folder.parent == tmp_path
    assert sorted(p.name for p in folder.iterdir()) == [
        "quarantine.csv",
        "validation.html",
        "validation.json",
    ]
    assert "&lt;b&gt;" in first[1].read_text(encoding="utf-8")


# -- load time --------------------------------------------------------------------------------


def test_importing_the_gate_does_not_import_great_expectations():
    code = (
        "import sys, monitoring_pipelines.quality.gate; "
        "assert 'great_expectations' not in sys.modules, 'GX imported at load'"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
