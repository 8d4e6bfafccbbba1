"""The report assets, schedules and command on the seeded warehouse of tests/reports."""

import functools
import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from tests.command import run_cli
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
    meta = _materialize_week()
    assert meta["reports"].value == 3 and meta["has_data"].value is True
    assert meta["incidents"].value == 11  # 6 of zephyrcorp + 5 of quillbank
    assert "| Incidents | 11 |" in meta["summary"].value
    paths = meta["paths"].value
    assert set(paths) == {"all", *TENANTS}
    assert all(Path(p).exists() for files in paths.values() for p in files.values())
    assert Path(meta["report"].value) == env / "reports/weekly/2026-10-19/all/report.html"


_cli = functools.partial(run_cli, timeout=300)


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


# -- delivery -------------------------------------------------------------------------------------

REPORTS_URL = "https://reports.example.org/r/"


@pytest.fixture
def smtp():
    from tests.alerting.servers import SMTPSink

    sink = SMTPSink()
    yield sink
    sink.close()


@pytest.fixture
def delivering(seeded, home, monkeypatch, tmp_path, smtp):  # noqa: F811
    """A copy of the seeded warehouse (delivery writes to it) and a policy that sends quillbank's
    and the all-tenants weekly reports by email and to a file, with a reports URL."""
    import sqlite3

    copy = tmp_path / "warehouse.db"
    # The backup API, not a file copy: the seeded database may still hold pages in its WAL.
    with sqlite3.connect(seeded.warehouse.url.removeprefix("sqlite:///")) as source:
        target = sqlite3.connect(copy)
        source.backup(target)
        target.close()
    monkeypatch.setenv("MONITORING_WAREHOUSE_URL", f"sqlite:///{copy}")
    monkeypatch.setenv("MONITORING_TENANTS", ",".join(TENANTS))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.setenv("MONITORING_REPORTS_URL", REPORTS_URL)
    (home / "dagster").mkdir(parents=True)
    (home / "alerting.yaml").write_text(
        "receivers:\n"
        "  files: {type: file, path: sent}\n"
        f"  mail: {{type: email, host: 127.0.0.1, port: {smtp.port},"
        " from: reports@monitoring.example, to: [leads@example.com]}\n"
        "route: {receiver: files}\n"
        "reports:\n"
        "  - {receivers: [mail, files], tenants: [quillbank, all], kinds: [weekly]}\n"
    )
    return home


def _deliver():
    from monitoring_pipelines.alerting.policy import load_policy
    from monitoring_pipelines.alerting.service import deliver
    from monitoring_pipelines.settings import load_settings
    from monitoring_pipelines.warehouse import Warehouse

    settings = load_settings()
    wh = Warehouse(settings.warehouse_url)
    try:
        return deliver(wh, load_policy(home=settings.home))
    finally:
        wh.dispose()


def _materialize_week():
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
    return mat.metadata


def test_the_weekly_asset_queues_its_reports_and_each_is_mailed_once(delivering, smtp):
    home = delivering
    meta = _materialize_week()
    assert (meta["queued"].value, meta["already_queued"].value) == (4, 0)
    assert sorted(meta["delivery"].value["queued"]) == [
        "files <- all tenants weekly 2026-10-19",
        "files <- quillbank weekly 2026-10-19",
        "mail <- all tenants weekly 2026-10-19",
        "mail <- quillbank weekly 2026-10-19",
    ]
    report = _deliver()
    assert (report.sent, report.retried, report.dead) == (4, 0, 0), report.errors

    folder = home / "reports/weekly/2026-10-19/tenants/quillbank"
    (mail,) = [m for m in smtp.messages if "quillbank" in m["Subject"]]
    assert mail["Subject"].startswith("Weekly report · Tenant quillbank · ")
    assert mail.get_content_type() == "multipart/alternative"
    html = mail.get_body(("html",)).get_content().replace("\r\n", "\n")
    assert html == (folder / "report.html").read_text(encoding="utf-8")
    text = mail.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text.startswith((folder / "summary.md").read_text(encoding="utf-8").rstrip())
    assert f"{REPORTS_URL}weekly/2026-10-19/tenants/quillbank/report.html" in text

    lines = [json.loads(x) for x in (home / "sent/notifications.jsonl").read_text().splitlines()]
    assert sorted(line["tenant"] for line in lines) == ["all", "quillbank"]
    everyone = next(line["report"] for line in lines if line["tenant"] == "all")
    assert everyone["tenant"] is None
    assert everyone["url"] == f"{REPORTS_URL}weekly/2026-10-19/all/report.html"
    incidents = next(h for h in everyone["headlines"] if h["key"] == "incidents")
    assert incidents["value"] == "11"  # 6 of zephyrcorp + 5 of quillbank

    # The partition re-run: the files are written again, nothing is queued or sent again.
    again = _materialize_week()
    assert (again["queued"].value, again["already_queued"].value) == (0, 4)
    assert _deliver().claimed == 0
    assert len(smtp.messages) == 2
    assert len((home / "sent/notifications.jsonl").read_text().splitlines()) == 2


def test_report_command_prints_what_it_queued_and_queues_it_once(delivering):
    args = ("report", "--period", "week", "--tenant", "quillbank", "--as-of", "2026-10-26")
    first = _cli(*args)
    assert first.returncode == 0, first.stderr
    assert "delivery: 2 queued (sent by `monitoring-pipelines alerts deliver`" in first.stdout
    assert "  mail <- quillbank weekly 2026-10-19\n" in first.stdout
    assert "  files <- quillbank weekly 2026-10-19\n" in first.stdout
    again = _cli(*args)
    assert again.returncode == 0, again.stderr
    assert "delivery: 2 queued by an earlier run, not queued again:" in again.stdout
    assert "delivery: 2 queued (" not in again.stdout
    skipped = _cli(*args, "--no-deliver")
    assert "delivery: skipped (--no-deliver)" in skipped.stdout
    sent = _cli("alerts", "deliver")
    assert sent.returncode == 0, sent.stderr
    assert "delivered 2," in sent.stdout
    assert len((delivering / "sent/notifications.jsonl").read_text().splitlines()) == 1


def test_without_a_reports_section_the_command_says_nothing_is_sent(env):
    out = _cli("report", "--period", "week", "--tenant", "quillbank", "--as-of", "2026-10-26")
    assert out.returncode == 0, out.stderr
    assert "delivery: none (the alerting policy has no reports: section)" in out.stdout
