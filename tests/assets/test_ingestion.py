"""Ingestion through Dagster: assets materialised on a real instance, sensors and the schedule
evaluated as the daemon would."""

import contextlib
import json
import os
import time
from datetime import UTC, datetime

import dagster as dg
import pandas as pd
import pytest

from monitoring_pipelines.assets.ingestion import clean_metrics, raw_metrics
from monitoring_pipelines.definitions import build_defs
from monitoring_pipelines.ingest import stage_file
from monitoring_pipelines.partitions import TENANTS, tenant_day_key
from monitoring_pipelines.settings import load_settings
from monitoring_pipelines.sources.demo import DemoConfig, generate, write_demo
from monitoring_pipelines.warehouse import Warehouse

DAY = "2026-09-29"
CONFIG = DemoConfig(tenants=("acme",), days=3, broken_partition=False, bad_rows=True)


@pytest.fixture
def env(home):
    stack = contextlib.ExitStack()
    settings = load_settings()
    settings.ensure_dirs()
    defs = build_defs(settings)
    instance = stack.enter_context(dg.instance_for_test())
    instance.add_dynamic_partitions(TENANTS, ["acme"])
    data = generate(CONFIG)
    write_demo(data, settings.drop_dir, fmt="parquet")
    warehouse = Warehouse(settings.warehouse_url)
    staged = stage_file(
        warehouse,
        settings.drop_dir / "acme.parquet",
        root=settings.drop_dir,
        earliest=datetime(2026, 9, 1, tzinfo=UTC),
    )
    yield {
        "settings": settings,
        "defs": defs,
        "instance": instance,
        "warehouse": warehouse,
        "data": data,
        "staged": staged,
    }
    warehouse.dispose()
    stack.close()


def _materialize(env, day=DAY, tenant="acme", raise_on_error=True):
    defs = env["defs"]
    return dg.materialize(
        [raw_metrics, clean_metrics],
        partition_key=tenant_day_key(day, tenant),
        instance=env["instance"],
        resources=defs.resources,
        raise_on_error=raise_on_error,
    )


def _checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_a_partition_is_gated_written_and_gridded(env):
    result = _materialize(env)
    assert result.success
    wh = env["warehouse"]
    day = pd.Timestamp(DAY, tz="UTC")
    landed = env["data"].records
    landed = landed[(landed["ts"] >= day) & (landed["ts"] < day + pd.Timedelta(days=1))]
    accepted, quarantined = wh.count("metrics"), wh.count("quarantine", stage="quality")
    assert accepted + quarantined == len(landed)
    assert quarantined > 0  # the demo's declared bad rows for that day
    checks = _checks(result)
    assert checks["schema"].passed and checks["keys_not_null"].passed
    assert not checks["values_finite"].passed or not checks["values_in_range"].passed
    assert all(c.severity == dg.AssetCheckSeverity.WARN for c in checks.values() if not c.passed)
    meta = result.asset_materializations_for_node("raw_metrics")[0].metadata
    assert meta["rows_in"].value == len(landed)
    # Links into the home's quality folder as `monitoring-pipelines ui` serves it.
    files_url = env["settings"].files_url
    assert meta["gx_validation"].value == f"{files_url}/quality/2026-09-29_acme/validation.json"
    assert meta["gx_report"].value == f"{files_url}/quality/2026-09-29_acme/validation.html"
    folder = env["settings"].quality_dir / "2026-09-29_acme"
    assert (folder / "validation.json").exists() and (folder / "validation.html").exists()
    assert len(pd.read_csv(folder / "quarantine.csv")) == quarantined
    assert wh.count("clean_metrics") == 24 * 288


def test_rerunning_a_partition_changes_nothing(env):
    _materialize(env)
    wh = env["warehouse"]
    before = {t: wh.count(t) for t in ("metrics", "quarantine", "clean_metrics", "landing")}
    _materialize(env)
    assert {t: wh.count(t) for t in before} == before


def test_a_partition_failing_a_blocking_check_stops_downstream(env):
    wh = env["warehouse"]
    landed = wh.read_records("landing", source="acme.parquet")
    garbage = landed[landed["ts"].dt.strftime("%Y-%m-%d") == DAY].copy()
    garbage["value"] = -5.0  # every row out of physical range
    wh.replace_source("landing", "acme.parquet", garbage)
    result = _materialize(env, raise_on_error=False)
    assert not result.success
    checks = _checks(result)
    assert not checks["values_in_range"].passed
    assert checks["values_in_range"].severity == dg.AssetCheckSeverity.ERROR
    assert result.asset_materializations_for_node("clean_metrics") == []
    assert wh.count("clean_metrics") == 0


def _status(instance, asset: str, partitions_def) -> tuple[set[str], set[str]]:
    """(materialized, failed) partitions of ``asset`` as the UI's partition view reads them."""
    from dagster._core.storage.partition_status_cache import (
        get_and_update_asset_status_cache_value,
    )

    value = get_and_update_asset_status_cache_value(instance, dg.AssetKey(asset), partitions_def)
    return (
        set(value.deserialize_materialized_partition_subsets(partitions_def).get_partition_keys()),
        set(value.deserialize_failed_partition_subsets(partitions_def).get_partition_keys()),
    )


def test_a_blocked_day_of_a_ranged_run_is_failed_and_the_others_done(env):
    defs, instance, wh = env["defs"], env["instance"], env["warehouse"]
    landed = wh.read_records("landing", source="acme.parquet")
    bad = landed["ts"].dt.strftime("%Y-%m-%d") == DAY
    landed.loc[bad, "value"] = -5.0  # the middle day: every row out of physical range
    wh.replace_source("landing", "acme.parquet", landed)
    tags = {
        "dagster/asset_partition_range_start": "2026-09-28|acme",
        "dagster/asset_partition_range_end": "2026-09-30|acme",
    }
    run = defs.resolve_job_def("ingest_job").execute_in_process(
        instance=instance, tags=tags, raise_on_error=False
    )
    assert not run.success
    failure = run.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert failure.description == (
        "raw_metrics: 1 partition(s) stopped: 2026-09-29|acme by values_in_range, volume"
    )
    partitions_def = defs.resolve_assets_def("raw_metrics").partitions_def
    good = {"2026-09-28|acme", "2026-09-30|acme"}
    assert _status(instance, "raw_metrics", partitions_def) == (good, {"2026-09-29|acme"})
    # The ingest run stopped before gridding; the grid job (what `ingest` runs next) grids the
    # days that passed and leaves the blocked one failed.
    assert _status(instance, "clean_metrics", partitions_def) == (set(), {*good, DAY + "|acme"})
    grid = defs.resolve_job_def("grid_job").execute_in_process(instance=instance, tags=tags)
    assert grid.success
    assert _status(instance, "clean_metrics", partitions_def) == (good, {"2026-09-29|acme"})
    assert wh.count("clean_metrics") == 2 * 24 * 288


def _sensor_context(env, cursor=None):
    return dg.build_sensor_context(
        instance=env["instance"], cursor=cursor, resources=env["defs"].resources
    )


def test_file_drop_sensor_requests_each_new_or_changed_file_once(env):
    defs, drop = env["defs"], env["settings"].drop_dir
    sensor = defs.resolve_sensor_def("file_drop_sensor")
    old = time.time() - 60
    os.utime(drop / "acme.parquet", (old, old))
    first = sensor(_sensor_context(env))
    assert [r.tags["monitoring/source"] for r in first.run_requests] == ["acme.parquet"]
    config = first.run_requests[0].run_config["ops"]["stage_file_op"]["config"]
    assert config["path"] == str(drop / "acme.parquet")
    tenants = first.dynamic_partitions_requests[0].partition_keys
    assert set(tenants) == set(env["settings"].tenants) - {"acme"}

    again = sensor(_sensor_context(env, cursor=first.cursor))
    assert again.run_requests == []

    (drop / "new-tenant").mkdir()
    pd.read_parquet(drop / "acme.parquet").head(10).to_parquet(drop / "new-tenant" / "x.parquet")
    os.utime(drop / "new-tenant" / "x.parquet", (old, old))
    os.utime(drop / "acme.parquet", (old + 1, old + 1))
    changed = sensor(_sensor_context(env, cursor=again.cursor))
    assert sorted(r.tags["monitoring/source"] for r in changed.run_requests) == [
        "acme.parquet",
        "new-tenant/x.parquet",
    ]


def test_file_drop_sensor_waits_for_a_file_still_being_written(env):
    sensor = env["defs"].resolve_sensor_def("file_drop_sensor")
    os.utime(env["settings"].drop_dir / "acme.parquet")
    result = sensor(_sensor_context(env))
    assert result.run_requests == []
    assert json.loads(result.cursor) == {}


def _staged_file_context(defs, instance, result) -> dg.RunStatusSensorContext:
    """The staged-file sensor's context for the success of the run ``result``."""
    records = instance.get_records_for_run(
        result.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS
    ).records
    return dg.build_run_status_sensor_context(
        sensor_name="staged_file_sensor",
        dagster_event=records[0].event_log_entry.dagster_event,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources=defs.resources,
    )


def test_staging_run_leads_to_one_ranged_run_of_the_touched_days(env):
    defs, instance = env["defs"], env["instance"]
    path = env["settings"].drop_dir / "acme.parquet"
    run = defs.resolve_job_def("stage_file_job").execute_in_process(
        run_config={"ops": {"stage_file_op": {"config": {"path": str(path), "force": True}}}},
        instance=instance,
        tags={"monitoring/source": "acme.parquet"},
    )
    assert run.success
    sensor = defs.resolve_sensor_def("staged_file_sensor")
    context = _staged_file_context(defs, instance, run)
    requests = sensor(context)
    assert len(requests) == 1
    tags = requests[0].tags
    assert tags["dagster/asset_partition_range_start"] == "2026-09-28|acme"
    assert tags["dagster/asset_partition_range_end"] == "2026-09-30|acme"

    # The ranged run gates and grids the three days, each with its own check results.
    ranged = defs.resolve_job_def("ingest_job").execute_in_process(
        instance=instance, tags=tags, raise_on_error=False
    )
    evaluated = {
        (e.asset_check_evaluation_data.partition, e.asset_check_evaluation_data.check_name)
        for e in ranged.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert {p for p, name in evaluated if name == "schema"} == {
        f"{d}|acme" for d in ("2026-09-28", "2026-09-29", "2026-09-30")
    }
    warehouse = env["warehouse"]
    assert warehouse.read_ingest("acme.parquet").status == "ingested"

    # Staging the same content again changes nothing, so no partition is requested again.
    rerun = defs.resolve_job_def("stage_file_job").execute_in_process(
        run_config={"ops": {"stage_file_op": {"config": {"path": str(path)}}}},
        instance=instance,
        tags={"monitoring/source": "acme.parquet"},
    )
    context = _staged_file_context(defs, instance, rerun)
    assert isinstance(sensor(context), dg.SkipReason)


def test_a_file_the_command_line_staged_is_left_to_it(env):
    """The CLI gates what it staged in its own runs; the daemon's sensor starts no second ingest
    of the same days beside them."""
    defs, instance = env["defs"], env["instance"]
    path = env["settings"].drop_dir / "acme.parquet"
    run = defs.resolve_job_def("stage_file_job").execute_in_process(
        run_config={"ops": {"stage_file_op": {"config": {"path": str(path), "force": True}}}},
        instance=instance,
        tags={"monitoring/source": "acme.parquet", "monitoring/trigger": "cli"},
    )
    assert run.success and env["warehouse"].read_ingest("acme.parquet").status == "staged"
    context = _staged_file_context(defs, instance, run)
    skipped = defs.resolve_sensor_def("staged_file_sensor")(context)
    assert isinstance(skipped, dg.SkipReason)
    assert "staged by the command line" in skipped.skip_message


def test_a_file_that_cannot_be_read_fails_its_run_with_a_one_line_reason(env):
    bad = env["settings"].drop_dir / "broken.csv"
    bad.write_bytes(b"\x00\x01\x02garbage\xff\xfe")
    run = (
        env["defs"]
        .resolve_job_def("stage_file_job")
        .execute_in_process(
            run_config={"ops": {"stage_file_op": {"config": {"path": str(bad)}}}},
            instance=env["instance"],
            raise_on_error=False,
        )
    )
    assert not run.success
    failure = next(e for e in run.all_events if e.event_type_value == "STEP_FAILURE")
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith("broken.csv: ") and "\n" not in description
    assert env["warehouse"].read_ingest("broken.csv").status == "failed"


def test_ingest_schedule_skips_without_sources_and_requests_every_tenant_with_them(env):
    schedule = env["defs"].resolve_schedule_def("ingest_schedule")
    tick = datetime(2026, 10, 5, 1, 7, tzinfo=UTC)
    context = dg.build_schedule_context(
        instance=env["instance"],
        scheduled_execution_time=tick,
        resources=env["defs"].resources,
        repository_def=env["defs"].get_repository_def(),
    )
    assert isinstance(schedule.evaluate_tick(context).skip_message, str)

    (env["settings"].home / "sources.yaml").write_text("prometheus: []\n")
    requests = schedule.evaluate_tick(context).run_requests
    keys = {str(r.partition_key) for r in requests}
    tenants = env["settings"].tenants
    assert keys == {f"{d}|{t}" for d in ("2026-10-04", "2026-10-05") for t in tenants}
