"""The code location: what the Dagster UI shows, and that it loads without heavy libraries."""

import json
import subprocess
import sys

import dagster as dg
import pytest

from monitoring_pipelines.ml.catalogue import CATALOGUE

HEAVY = ("tensorflow", "keras", "prophet", "mlflow", "great_expectations")
# The quality checks on raw_metrics that block the partition when they fail (freshness only warns).
BLOCKING_CHECKS = (
    "schema",
    "keys_not_null",
    "values_finite",
    "values_in_range",
    "timestamps_in_partition",
    "keys_unique",
    "volume",
)


def _defs(home):
    from monitoring_pipelines.definitions import build_defs

    return build_defs()


def test_code_location_lists_assets_checks_jobs_sensors_and_schedule(home):
    defs = _defs(home)
    repo = defs.get_repository_def()
    assert {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()} == {
        "raw_metrics",
        "clean_metrics",
        # One training asset per catalogued detector kind.
        *(row.asset_name for row in CATALOGUE.values()),
        "detection_policy",
        "anomaly_scores",
        "alerts",
        "weekly_report",
        "monthly_report",
    }
    checks = {(k.asset_key.to_user_string(), k.name) for k in repo.asset_graph.asset_check_keys}
    for name in (*BLOCKING_CHECKS, "freshness"):
        assert ("raw_metrics", name) in checks
    assert ("clean_metrics", "gap_fraction") in checks
    assert ("clean_metrics", "values_drift") in checks
    assert ("anomaly_scores", "scores_drift") in checks
    assert {j.name for j in repo.get_all_jobs()} >= {
        "stage_file_job",
        "ingest_job",
        "training_job",
        "scoring_job",
        "alerting_job",
        "delivery_job",
        "weekly_report_job",
        "monthly_report_job",
        "retention_job",
    }
    assert {s.name for s in repo.sensor_defs} == {
        "file_drop_sensor",
        "staged_file_sensor",
        "automation_condition_sensor",
        "outbox_sensor",
        "run_failure_alert_sensor",
        "drift_retrain_sensor",
    }
    assert {s.name for s in repo.schedule_defs} == {
        "ingest_schedule",
        "weekly_report_schedule",
        "monthly_report_schedule",
        "retrain_schedule",
        "retention_schedule",
    }


def test_checks_that_mean_bad_data_block_downstream(home):
    defs = _defs(home)
    specs = {s.name: s for s in defs.resolve_assets_def("raw_metrics").check_specs}
    blocking = {name for name, spec in specs.items() if spec.blocking}
    assert blocking == set(BLOCKING_CHECKS)
    assert not specs["freshness"].blocking


def test_every_asset_has_a_description_and_group(home):
    defs = _defs(home)
    repo = defs.get_repository_def()
    for key in repo.asset_graph.get_all_asset_keys():
        spec = next(iter(defs.resolve_assets_def(key).specs))
        assert spec.description and len(spec.description) > 40
        assert spec.group_name in {
            "ingestion",
            "features",
            "training",
            "scoring",
            "alerting",
            "reporting",
        }


def test_loading_the_code_location_imports_no_heavy_library(home):
    code = (
        "import sys, time, json; t = time.perf_counter();"
        "import monitoring_pipelines.definitions as d; d.defs.get_repository_def();"
        "print(json.dumps({'seconds': time.perf_counter() - t,"
        f" 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["heavy"] == []


def test_warehouse_url_from_environment_is_not_shown_in_config(home, monkeypatch):
    monkeypatch.setenv("MONITORING_WAREHOUSE_URL", "postgresql://u:s3cret@db.example/wh")
    defs = _defs(home)
    resource = defs.resources["warehouse"]
    assert isinstance(resource.url, dg.EnvVar) or "s3cret" not in repr(resource)


def test_partitions_start_at_the_start_date_of_the_settings_given_to_build_defs(home):
    from dataclasses import replace

    from monitoring_pipelines.definitions import build_defs
    from monitoring_pipelines.settings import load_settings

    defs = build_defs(replace(load_settings(), start_date="2025-03-01"))
    for asset in ("raw_metrics", "clean_metrics", "anomaly_scores", "alerts"):
        days = defs.resolve_assets_def(asset).partitions_def.get_partitions_def_for_dimension(
            "date"
        )
        assert days.start.strftime("%Y-%m-%d") == "2025-03-01", asset
    for job in ("ingest_job", "scoring_job", "alerting_job"):
        days = defs.resolve_job_def(job).partitions_def.get_partitions_def_for_dimension("date")
        assert days.start.strftime("%Y-%m-%d") == "2025-03-01", job


def test_a_home_holding_a_demo_starts_its_partitions_on_the_demos_first_day(home, monkeypatch):
    from monitoring_pipelines.definitions import build_defs
    from monitoring_pipelines.settings import DEFAULT_START_DATE, load_settings

    assert load_settings().start_date == DEFAULT_START_DATE
    period = load_settings().demo_period_file
    period.parent.mkdir(parents=True)
    period.write_text('{"start": "2026-11-02", "end": "2026-12-06"}\n')
    assert load_settings().start_date == "2026-11-02"
    days = build_defs().resolve_assets_def("raw_metrics").partitions_def
    first = days.get_partitions_def_for_dimension("date").get_first_partition_key()
    assert first == "2026-11-02"
    # The environment wins: a deployment pins its own first day.
    monkeypatch.setenv("MONITORING_START_DATE", "2026-01-01")
    assert load_settings().start_date == "2026-01-01"
    monkeypatch.delenv("MONITORING_START_DATE")
    period.write_text('{"start": "yesterday"}\n')
    with pytest.raises(ValueError, match=r"period\.json: 'start' must be a YYYY-MM-DD date"):
        load_settings()


def test_monitoring_detectors_chooses_the_kinds_training_job_trains(home, monkeypatch):
    from monitoring_pipelines.definitions import build_defs
    from monitoring_pipelines.settings import load_settings

    def trained() -> set[str]:
        job = build_defs(load_settings()).resolve_job_def("training_job")
        return {key.to_user_string() for key in job.asset_layer.executable_asset_keys}

    assert trained() == {row.asset_name for row in CATALOGUE.values()} | {"detection_policy"}
    monkeypatch.setenv("MONITORING_DETECTORS", "zscore, isolation_forest")
    assert trained() == {
        CATALOGUE["zscore"].asset_name,
        CATALOGUE["isolation_forest"].asset_name,
        "detection_policy",
    }
    monkeypatch.setenv("MONITORING_DETECTORS", "zscore,nope")
    with pytest.raises(ValueError, match=r"^MONITORING_DETECTORS: unknown detector kind nope;"):
        load_settings()
