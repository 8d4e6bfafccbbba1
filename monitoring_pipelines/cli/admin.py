"""``tenant purge`` (erase a tenant) and ``audit`` (read the audit trail)."""

import argparse
import os
from datetime import UTC, datetime

from monitoring_pipelines.cli.common import CliError, prepare_home
from monitoring_pipelines.settings import load_settings

# A purge without --yes only says what it would remove and exits with this status, so a script
# that forgot --yes does not carry on as if the tenant were gone.
DRY_RUN_EXIT = 1


def _by(args: argparse.Namespace) -> str:
    return args.by or os.environ.get("USER") or "cli"


def cmd_tenant(args: argparse.Namespace) -> int:
    from monitoring_pipelines.purge import purge_tenant

    settings = load_settings()
    prepare_home(settings)
    try:
        report = purge_tenant(
            settings, args.tenant, by=_by(args), dry_run=not args.yes, reason=args.reason
        )
    except ValueError as exc:
        raise CliError(str(exc).splitlines()[0]) from None
    for line in report.lines():
        print(line)
    if args.tenant in settings.tenants:
        print(
            f"note: {args.tenant} is in MONITORING_TENANTS: remove it there, or the sensors and "
            "commands give it its partitions again"
        )
    if report.dry_run:
        print(
            f"dry run: nothing removed; to remove it: monitoring-pipelines tenant purge "
            f"{args.tenant} --yes"
        )
        return DRY_RUN_EXIT
    print(f"recorded in the audit trail: monitoring-pipelines audit --tenant {args.tenant}")
    return 0


def _since(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"--since {text!r}: expected a UTC date or time like 2026-12-01") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _short(value) -> str:
    import json

    text = json.dumps(value, sort_keys=True, default=str) if value is not None else "-"
    return text if len(text) <= 160 else text[:157] + "..."


def cmd_audit(args: argparse.Namespace) -> int:
    from monitoring_pipelines.warehouse import Warehouse, audit

    if args.action and args.action not in audit.ACTIONS:
        raise CliError(f"--action {args.action!r}: one of {', '.join(audit.ACTIONS)}")
    settings = load_settings()
    warehouse = Warehouse(settings.warehouse_url)
    try:
        entries = audit.read(
            warehouse.engine,
            tenant=args.tenant,
            action=args.action,
            since=_since(args.since),
            limit=args.limit,
        )
    finally:
        warehouse.dispose()
    if not entries:
        print("no audit entries match")
    for e in entries:
        print(
            f"{e.at:%Y-%m-%d %H:%M:%S} {e.actor} {e.action} tenant={e.tenant or '-'} "
            f"target={e.target or '-'}"
        )
        print(f"    before: {_short(e.before)}")
        print(f"    after:  {_short(e.after)}")
        if e.reason:
            print(f"    reason: {e.reason}")
    return 0


def register(sub) -> None:
    """Add this module's commands to the ``monitoring-pipelines`` parser."""
    tenant = sub.add_parser(
        "tenant",
        help="erase a tenant: every row, file, run, partition and model of it",
        description="`tenant purge T` lists everything of tenant T (rows per warehouse table, "
        "files, Dagster partitions and runs, MLflow models and runs) and exits 1 without "
        "removing anything; with --yes it removes them and records the purge in the audit "
        "trail. Matches are exact: purging acme leaves acme2 and acme-eu whole.",
    )
    tenant.add_argument("action", choices=["purge"])
    tenant.add_argument("tenant", metavar="TENANT")
    tenant.add_argument("--yes", action="store_true", help="really remove (default: dry run)")
    tenant.add_argument("--by", help="who purges (default: $USER); in the audit trail")
    tenant.add_argument("--reason", help="why (e.g. the erasure request's reference)")
    tenant.set_defaults(func=cmd_tenant)

    trail = sub.add_parser(
        "audit",
        help="print the audit trail (acks, resolves, promotions, rollbacks, purges, policies)",
        description="Who did what, when, to what and why, oldest first (the newest --limit).",
    )
    trail.add_argument("--tenant")
    trail.add_argument("--action", help="e.g. alert.acknowledge, model.rollback, tenant.purge")
    trail.add_argument("--since", help="only entries at or after this UTC date or time")
    trail.add_argument("--limit", type=int, default=50)
    trail.set_defaults(func=cmd_audit)
