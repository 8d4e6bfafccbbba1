"""The monitoring-pipelines command as a user runs it."""

import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitoring_pipelines.settings import load_settings
from monitoring_pipelines.warehouse import Warehouse
from tests.command import run_cli

BAD = Path(__file__).parent / "data" / "bad"


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["demo"],
        ["ingest"],
        ["backtest"],
        ["models"],
        ["quarantine"],
        ["report"],
        ["ui"],
        ["tenant"],
        ["audit"],
        ["exporter"],
    ],
)
def test_every_command_has_help(command):
    out = run_cli(*command, "--help")
    assert out.returncode == 0
    assert out.stdout.startswith("usage: monitoring-pipelines")


def test_ingest_of_a_missing_path_exits_non_zero_with_one_line(home):
    out = run_cli("ingest", str(home / "nope.csv"))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "nope.csv: no such file or directory" in out.stderr


def test_ingest_reports_a_refused_file_and_keeps_the_good_one(home, tmp_path, monkeypatch):
    monkeypatch.setenv("MONITORING_START_DATE", "2026-01-01")
    drop = tmp_path / "in"
    drop.mkdir()
    (drop / "good.csv").write_bytes((BAD / "good_records.csv").read_bytes())
    (drop / "garbage.bin.csv").write_bytes((BAD / "garbage.bin.csv").read_bytes())
    out = run_cli("ingest", str(drop), "--workers", "1")
    assert out.returncode == 1
    assert re.search(r"refused: .*garbage\.bin\.csv: not a text CSV file", out.stdout)
    match = re.search(r"rows: ([\d,]+) in = ([\d,]+) accepted \+ ([\d,]+) quarantined", out.stdout)
    rows_in, accepted, quarantined = (int(g.replace(",", "")) for g in match.groups())
    assert rows_in == accepted + quarantined and accepted > 0


def test_demo_refuses_an_unknown_service_in_one_line(home):
    out = run_cli("demo", "--services", "api,nope", "--skip-models")
    assert out.returncode != 0
    [line] = out.stderr.strip().splitlines()
    assert "demo: services must be distinct names from" in line and "nope" in line


def test_demo_runs_end_to_end_and_a_second_run_adds_nothing(home):
    pinned = ("--start", "2026-09-28", "--days", "3")
    out = run_cli("demo", "--tenants", "2", *pinned, "--workers", "2", "--skip-models")
    assert out.returncode == 0, out.stderr[-2000:]
    assert (
        "demo data: 2 tenants, 3 services, 24 series per tenant, 3 days (2026-09-28 to 2026-09-30)"
        in out.stdout
    )
    assert "partitions (day x tenant): 6 gated, 1 blocked by quality checks" in out.stdout
    assert re.search(r"blocked: 2026-\d\d-\d\d\|globex \(values_in_range\)", out.stdout)
    # It ends with the last complete week's and month's reports: three days from Monday
    # 2026-09-28 make no complete week (an empty report says so) and September's month.
    assert "reports (week 2026-09-21 to 2026-09-27):" in out.stdout
    assert "reports (month 2026-09-01 to 2026-09-30):" in out.stdout
    # A line per stage with its seconds as it ends, then the total with every stage's.
    stages = re.findall(r"^\[stage\] (\w+): [\d.]+ s \(CPU \d+ s\)$", out.stdout, re.M)
    assert stages == ["generate", "ingest", "reports"]
    assert re.search(
        r"^done in \d+s \(CPU \d+ s\); generate \d+s, ingest \d+s, reports \d+s;", out.stdout, re.M
    )
    printed = re.findall(r"^  (?:all tenants|acme|globex): (\S+report\.html)$", out.stdout, re.M)
    assert len(printed) == 6 and all(Path(p).exists() for p in printed)
    settings = load_settings()
    assert (settings.demo_dir / "labels.json").exists()
    warehouse = Warehouse(settings.warehouse_url)
    counts = {t: warehouse.count(t) for t in ("metrics", "quarantine", "clean_metrics")}
    assert counts["metrics"] > 0 and counts["clean_metrics"] == 5 * 24 * 288

    again = run_cli("demo", "--tenants", "2", *pinned, "--workers", "1", "--skip-models")
    assert again.returncode == 0
    assert "5 ingested" not in again.stdout
    assert {t: warehouse.count(t) for t in counts} == counts
    quarantine = run_cli("quarantine", "--limit", "3")
    assert quarantine.returncode == 0 and len(quarantine.stdout.strip().splitlines()) == 4
    warehouse.dispose()


def test_demo_scores_each_tenants_consecutive_days_as_ranged_runs():
    from monitoring_pipelines.cli import backfill_ranges

    days = [f"2026-10-{d:02d}" for d in range(1, 32)] + ["2026-11-01", "2026-11-02"]
    keys = [f"{day}|acme" for day in days] + [f"{day}|initech" for day in days[:10]]
    keys.remove("2026-10-05|initech")  # blocked by a quality check: never scored
    assert backfill_ranges(keys) == [
        "2026-10-01|acme...2026-11-02|acme",
        "2026-10-01|initech...2026-10-04|initech",
        "2026-10-06|initech...2026-10-10|initech",
    ]


def _series_csv(path: Path, rows: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"2026-10-01T{i // 12:02d}:{i % 12 * 5:02d}:00Z,{i % 7 * 0.1:.1f}" for i in range(rows)
    ]
    path.write_text("timestamp,value\n" + "\n".join(lines) + "\n")


def _rows_line(stdout: str) -> tuple[int, int, int]:
    match = re.search(r"rows: ([\d,]+) in = ([\d,]+) accepted \+ ([\d,]+) quarantined", stdout)
    return tuple(int(g.replace(",", "")) for g in match.groups())


def test_ingest_reads_the_layout_below_the_folder_given_and_counts_only_this_ingest(
    home, tmp_path, monkeypatch
):
    monkeypatch.setenv("MONITORING_START_DATE", "2026-01-01")
    first = tmp_path / "first"
    first.mkdir()
    (first / "good.csv").write_bytes((BAD / "good_records.csv").read_bytes())
    out = run_cli("ingest", str(first), "--workers", "1")
    assert out.returncode == 0, out.stdout + out.stderr

    second = tmp_path / "exports"
    _series_csv(second / "acme" / "api" / "latency_p95_ms.csv", 288)
    out = run_cli("ingest", str(second), "--workers", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert _rows_line(out.stdout) == (288, 288, 0)
    assert "grid: 288 steps, 0 gaps" in out.stdout

    warehouse = Warehouse(load_settings().warehouse_url)
    series = warehouse.series(
        "metrics", "acme", datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 2, tzinfo=UTC)
    )
    warehouse.dispose()
    assert ("acme", "api", "latency_p95_ms") in series


def test_a_single_series_file_given_alone_reads_its_path_as_typed(home, tmp_path, monkeypatch):
    monkeypatch.setenv("MONITORING_START_DATE", "2026-01-01")
    _series_csv(tmp_path / "globex" / "cdn" / "error_rate.csv", 12)
    out = subprocess.run(
        [sys.executable, "-m", "monitoring_pipelines.cli", "ingest", "globex/cdn/error_rate.csv"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert _rows_line(out.stdout) == (12, 12, 0)
    warehouse = Warehouse(load_settings().warehouse_url)
    assert warehouse.count("metrics", tenant="globex") == 12
    assert warehouse.count("metrics", tenant="default") == 0
    warehouse.dispose()
