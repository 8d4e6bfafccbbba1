"""``alerts``: list, show, acknowledge, resolve, mark false positives, deliver the outbox."""

import argparse
import json
import os

from monitoring_pipelines.cli.common import CliError, prepare_home
from monitoring_pipelines.cli.output import incident_line
from monitoring_pipelines.settings import load_settings


def cmd_alerts(args: argparse.Namespace) -> int:
    from monitoring_pipelines.alerting.policy import PolicyError
    from monitoring_pipelines.warehouse import Warehouse

    settings = load_settings()
    warehouse = Warehouse(settings.warehouse_url)
    try:
        if args.action not in ("list", "deliver", "retry") and not args.fingerprint:
            raise CliError(f"alerts {args.action} needs a FINGERPRINT (or a prefix of 6+)")
        handler = _ACTIONS.get(args.action, _change)
        return handler(args, settings, warehouse)
    except (LookupError, ValueError, PolicyError) as exc:
        raise CliError(str(exc).splitlines()[0]) from None
    finally:
        warehouse.dispose()


def _list(args, settings, warehouse) -> int:
    from datetime import UTC, datetime

    from monitoring_pipelines.alerting import store
    from monitoring_pipelines.alerting.history import history_only

    since = datetime.fromisoformat(args.since).replace(tzinfo=UTC) if args.since else None
    status = None if args.status == "all" else args.status
    rows = store.read_incidents(warehouse, tenant=args.tenant, status=status, since=since)
    if args.severity:
        rows = [r for r in rows if r.incident.severity.label == args.severity]
    if not rows:
        print("no alerts match")
    shown = rows[-args.limit :]
    history = history_only(warehouse, [s.fingerprint for s in shown])
    for stored in shown:
        print(incident_line(stored, history=stored.fingerprint in history))
    if len(rows) > args.limit:
        print(f"... {len(rows) - args.limit} older (use --limit)")
    return 0


def _deliver(args, settings, warehouse) -> int:
    from monitoring_pipelines.alerting import outbox
    from monitoring_pipelines.alerting.policy import load_policy
    from monitoring_pipelines.alerting.service import deliver

    prepare_home(settings)
    policy = load_policy(settings.alerting_file, home=settings.home)
    report = deliver(warehouse, policy, dagster_url=settings.dagster_url)
    print(
        f"delivered {report.sent}, retrying {report.retried}, dead {report.dead}, "
        f"cancelled {report.cancelled}; {outbox.pending_count(warehouse)} still due"
    )
    for name, error in sorted(report.receiver_errors.items()):
        print(f"  {name}: {error}")
    for name in report.failing_receivers:
        print(f"  receiver {name} keeps failing: operations told (an incident)")
    for name in report.recovered_receivers:
        print(f"  receiver {name} delivers again: its incident is resolved")
    return 0


def _retry(args, settings, warehouse) -> int:
    from monitoring_pipelines.alerting import outbox, store

    fingerprint = None
    if args.fingerprint:
        fingerprint = store.find_fingerprint(warehouse, args.fingerprint)
    dead = outbox.read_notifications(
        warehouse, status=outbox.DEAD, fingerprint=fingerprint, receiver=args.receiver, limit=None
    )
    count = outbox.requeue(warehouse, [n["idempotency_key"] for n in dead])
    print(
        f"re-queued {count} dead notification(s), same idempotency keys; "
        "send them with: monitoring-pipelines alerts deliver"
    )
    return 0


def _show(args, settings, warehouse) -> int:
    from monitoring_pipelines.alerting import outbox, store
    from monitoring_pipelines.alerting.types import incident_to_dict

    fingerprint = store.find_fingerprint(warehouse, args.fingerprint)
    stored = store.read_incidents(warehouse, fingerprints=[fingerprint])[0]
    print(json.dumps(incident_to_dict(stored.incident), indent=2))
    for note in outbox.read_notifications(warehouse, fingerprint=fingerprint, limit=None):
        reason = f" ({note['reason']})" if note.get("reason") else ""
        print(f"  {note['event']:8} -> {note['receiver']}: {note['status']}{reason}")
    return 0


def _change(args, settings, warehouse) -> int:
    """ack, resolve or false-positive one incident; kept across re-runs."""
    from monitoring_pipelines.alerting import store

    by = args.by or os.environ.get("USER") or "cli"
    action = {
        "ack": lambda fp: store.acknowledge(warehouse, fp, by),
        "resolve": lambda fp: store.resolve(warehouse, fp, by),
        "false-positive": lambda fp: store.mark_false_positive(warehouse, fp, args.note or "", by),
    }[args.action]
    print(incident_line(action(args.fingerprint)))
    return 0


_ACTIONS = {"list": _list, "deliver": _deliver, "retry": _retry, "show": _show}


def register(sub) -> None:
    """Add this module's commands to the ``monitoring-pipelines`` parser."""
    alerts = sub.add_parser(
        "alerts",
        help="list, ack, resolve alerts; mark false positives; deliver and retry the outbox",
        description="Work with incidents: `list` (firing by default), `show FP`, `ack FP`, "
        "`resolve FP`, `false-positive FP --note ...` (kept for reports and the promotion gate), "
        "`deliver` (send what is due in the outbox now), `retry [FP] [--receiver R]` (re-queue "
        "dead notifications). FP is a fingerprint or a prefix of 6+.",
    )
    alerts.add_argument(
        "action", choices=["list", "show", "ack", "resolve", "false-positive", "deliver", "retry"]
    )
    alerts.add_argument("fingerprint", nargs="?", metavar="FP")
    alerts.add_argument("--tenant")
    alerts.add_argument(
        "--status", choices=["firing", "acknowledged", "resolved", "all"], default="firing"
    )
    alerts.add_argument("--severity", choices=["critical", "high", "medium", "low"])
    alerts.add_argument("--since", help="only incidents seen since this UTC date or time")
    alerts.add_argument("--limit", type=int, default=50)
    alerts.add_argument(
        "--by",
        help="who acknowledges, resolves or marks a false positive (default: $USER); recorded "
        "in the audit trail",
    )
    alerts.add_argument("--note", help="why it is a false positive")
    alerts.add_argument("--receiver", help="retry: only dead notifications to this receiver")
    alerts.set_defaults(func=cmd_alerts)
