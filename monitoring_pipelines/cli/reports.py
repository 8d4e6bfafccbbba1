"""``report``: write the weekly or monthly reports of a past period (the demo ends with them) and
queue them for the receivers the alerting policy's ``reports:`` section names."""

import argparse
from pathlib import Path

from monitoring_pipelines.cli.common import CliError
from monitoring_pipelines.settings import Settings, load_settings


def demo_reports(settings: Settings, tenants: list[str]) -> None:
    """The last complete week's and month's reports of the demo data, for every tenant."""
    from datetime import timedelta

    from monitoring_pipelines.warehouse import Warehouse

    warehouse = Warehouse(settings.warehouse_url)
    newest = [ts for t in tenants if (ts := warehouse.newest_ts("metrics", t)) is not None]
    warehouse.dispose()
    if not newest:
        return
    # The day after the newest point: its week or month is complete if that day starts a new one.
    as_of = (max(newest) + timedelta(days=1)).date().isoformat()
    for kind in ("week", "month"):
        period, written = write_period_reports(settings, kind, as_of, tenants=tenants)
        print(f"reports ({kind} {period.start:%Y-%m-%d} to {period.last_day}):")
        for report in written:
            name = "all tenants" if report.tenant is None else report.tenant
            print(f"  {name}: {report.paths['html']}")


def write_period_reports(
    settings: Settings,
    kind: str,
    as_of: str | None,
    tenant: str | None = None,
    out: str | None = None,
    *,
    tenants: list[str] | None = None,
):
    """Build and write one period's reports: all tenants and each of ``tenants`` (default: every
    known tenant), or only ``tenant``'s."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from monitoring_pipelines.alerting.policy import PolicyError
    from monitoring_pipelines.reports.config import ReportConfigError
    from monitoring_pipelines.reports.periods import (
        PeriodError,
        parse_date,
        parse_kind,
        period_as_of,
        zone,
    )
    from monitoring_pipelines.reports.registry import default_registry
    from monitoring_pipelines.reports.service import write_reports

    try:
        kind = parse_kind(kind)
        zone(settings.report_timezone)
        day = (
            parse_date(as_of) if as_of else datetime.now(ZoneInfo(settings.report_timezone)).date()
        )
        if tenant is not None and not tenant.strip():
            raise CliError("--tenant needs a tenant name")
        period = period_as_of(kind, day, settings.report_timezone)
        registry = default_registry(settings.mlflow_tracking_uri, settings.home / "mlartifacts")
        return period, write_reports(
            settings,
            period,
            tenants=tenants if tenant is None else [tenant],
            include_all=tenant is None,
            out_dir=Path(out).expanduser().resolve() if out else None,
            registry=registry,
        )
    except (PeriodError, ReportConfigError, PolicyError) as exc:
        raise CliError(str(exc)) from None


def queue_and_print(settings: Settings, written) -> None:
    """Queue the written reports for their receivers and say what was queued."""
    from monitoring_pipelines.alerting.policy import PolicyError, load_policy
    from monitoring_pipelines.reports.service import describe_queued, queue_delivery

    try:
        policy = load_policy(settings.alerting_file, home=settings.home)
    except PolicyError as exc:
        raise CliError(str(exc)) from None
    if not policy.report_routes:
        print("delivery: none (the alerting policy has no reports: section)")
        return
    outcome = queue_delivery(settings, written, policy=policy)
    if not outcome.queued and not outcome.already:
        print("delivery: no receiver is routed these reports (see the policy's reports: section)")
    if outcome.queued:
        print(
            f"delivery: {len(outcome.queued)} queued"
            " (sent by `monitoring-pipelines alerts deliver` or the outbox sensor):"
        )
        for note in outcome.queued:
            print(f"  {describe_queued(note)}")
    if outcome.already:
        print(f"delivery: {len(outcome.already)} queued by an earlier run, not queued again:")
        for note in outcome.already:
            print(f"  {describe_queued(note)}")


def cmd_report(args: argparse.Namespace) -> int:
    settings = load_settings()
    period, written = write_period_reports(settings, args.period, args.as_of, args.tenant, args.out)
    print(
        f"{period.kind} {period.start:%Y-%m-%d} to {period.last_day} ({period.timezone}):"
        f" {len(written)} reports"
    )
    for report in written:
        name = "all tenants" if report.tenant is None else report.tenant
        note = "" if report.has_data else " (no data in this period)"
        print(f"  {name}: {report.paths['html']}{note}")
    if args.no_deliver:
        print("delivery: skipped (--no-deliver)")
    else:
        queue_and_print(settings, written)
    return 0


def register(sub) -> None:
    """Add this module's commands to the ``monitoring-pipelines`` parser."""
    report = sub.add_parser(
        "report",
        help="write the weekly or monthly report of a past period",
        description="Build the reports of the last complete week (Monday to Sunday) or month "
        "before --as-of, across all tenants and one per tenant (or only --tenant's), as HTML, "
        "JSON and Markdown under MONITORING_HOME/reports (or --out), then queue them for the "
        "receivers of the alerting policy's reports: section (each receiver gets a report once, "
        "however often it is rebuilt; `alerts deliver` or the outbox sensor sends them).",
    )
    report.add_argument("--period", required=True, help="week or month")
    report.add_argument("--tenant", help="only this tenant's report")
    report.add_argument(
        "--as-of",
        help="a date (YYYY-MM-DD); the period is the last one complete by then (default: today)",
    )
    report.add_argument("--out", help="folder for the reports (default MONITORING_HOME/reports)")
    report.add_argument(
        "--no-deliver",
        action="store_true",
        help="only write the files; queue nothing for the policy's report receivers",
    )
    report.set_defaults(func=cmd_report)
