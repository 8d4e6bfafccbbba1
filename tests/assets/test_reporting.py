"""The report assets, schedules and command on the seeded warehouse of tests/reports."""

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from tests.reports.seed import TENANTS, seeded  # noqa: F401


@pytest.fixture
def env(seeded, home, monkeypatch):  # noqa: F811
    monkeypatch.setenv("MONITORING_WAREHOUSE_URL", seeded.warehouse.url)
    monkeypatch.setenv("MONITORING_TENANTS", ",".join(TENANTS))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    (home / "dagster").mkdir(parents=True)
    return home


@pytest.mark.parametrize(
    ("name", "tick", "partition"),
    [
        ("weekly_report_schedule", datetime(2026, 11, 2, 8, tzinfo=UTC), "2026-10-26"),
        ("monthly_report_schedule", datetime(2026, 11, 1, 8, tzinfo=UTC), "2026-10-01"),
    ],
)
def test_schedules_report_the_period_that_just_ended(env, name, tick, partition):
    from monitoring_pipelines.definitions import build_defs

    schedule = build_defs().get_repository_def().get_schedule_def(name)
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.execution_timezone == "UTC"
    with dg.DagsterInstance.ephemeral() as instance:
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=tick)
        result = schedule.evaluate_tick(context)
    assert [r.partition_key for r in result.run_requests] == [partition]


def test_weekly_report_asset_writes_every_tenant_and_shows_the_summary(env):
    from monitoring_pipelines.assets.reporting import weekly_report
    from monitoring_pipelines.definitions import build_resources
    from monitoring_pipelines.settings import load_settings

    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [weekly_report],
            partition_key="2026-10-19",
            resources=build_resources(load_settings()),
            instance=instance,
        )
    assert result.success
    (mat,) = result.asset_materializations_for_node("weekly_report")
    meta = mat.metadata
    assert meta["reports"].value == 3 and meta["has_data"].value is True
    assert meta["incidents"].value == 11  # 6 of zephyrcorp + 5 of quillbank
    assert "| Incidents | 11 |" in meta["summary"].value
    paths = meta["paths"].value
    assert set(paths) == {"all", *TENANTS}
    assert all(Path(p).exists() for files in paths.values() for p in files.values())
    assert Path(meta["report"].value) == env / "reports/weekly/2026-10-19/all/report.html"


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "monitoring_pipelines.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_report_command_builds_a_past_period_for_one_tenant(env, tmp_path):
    out = _cli(
        "report",
        "--period",
        "week",
        "--tenant",
        "quillbank",
        "--as-of",
        "2026-10-26",
        "--out",
        str(tmp_path / "out"),
    )
    assert out.returncode == 0, out.stderr
    html = tmp_path / "out/weekly/2026-10-19/tenants/quillbank/report.html"
    assert f"quillbank: {html}" in out.stdout
    data = json.loads(html.with_name("report.json").read_text())
    assert data["tenant"] == "quillbank" and data["period"]["key"] == "2026-10-19"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--period", "fortnight"], "unknown period 'fortnight' (expected week or month)"),
        (["--period", "month", "--as-of", "2026-13-01"], "bad date '2026-13-01'"),
        (["--period", "week", "--tenant", " "], "--tenant needs a tenant name"),
    ],
)
def test_report_command_refuses_bad_input_with_one_line(env, args, message):
    out = _cli("report", *args)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert message in out.stderr
