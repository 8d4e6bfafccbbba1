"""What the commands print: progress, alert summaries and incident lines."""

import sys


def progress_start(job_name: str, total: int) -> None:
    if total and sys.stderr.isatty():
        sys.stderr.write(f"{job_name}: {total} partitions\n")


def show_progress(done: int, total: int) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r  {done}/{total} partitions")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def counts_text(values) -> str:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "0"


def print_alerts(incidents, notes, policy) -> None:
    from monitoring_pipelines.alerting import types

    anomalies = [s.incident for s in incidents if s.incident.kind == types.ANOMALY]
    order = [s.label for s in sorted(types.Severity, reverse=True)]
    severities = {label: 0 for label in order}
    for incident in anomalies:
        severities[incident.severity.label] += 1
    print(
        f"alerts: {len(anomalies)} incidents from anomalies ("
        + ", ".join(f"{n} {label}" for label, n in severities.items())
        + f"); {sum(1 for s in incidents if s.incident.kind == types.DATA_QUALITY)} data-quality "
        "incidents for the data owner"
    )
    print(f"  notifications: {len(notes)} ({counts_text(n['status'] for n in notes)})")
    for name, spec in sorted(policy.receivers.items()):
        sent = sum(1 for n in notes if n["receiver"] == name and n["status"] == "sent")
        where = ""
        if spec.get("type") == "file":
            from monitoring_pipelines.alerting.receivers import receiver_from_spec

            where = f" -> {receiver_from_spec(name, spec).target}"
        print(f"  receiver {name} ({spec.get('type')}): {sent} delivered{where}")
    print(f"  policy: {policy.source}; list them with: monitoring-pipelines alerts list")


def incident_line(stored) -> str:
    i = stored.incident
    metrics = ", ".join(m.metric for m in i.metrics) or i.summary
    flags = []
    if stored.acknowledged_by:
        flags.append(f"ack by {stored.acknowledged_by}")
    if stored.feedback:
        flags.append(stored.feedback.replace("_", " "))
    extra = f"  [{'; '.join(flags)}]" if flags else ""
    return (
        f"{i.fingerprint[:12]}  {i.started_at:%Y-%m-%d %H:%M}  {i.severity.label:8} "
        f"{i.status:12} {i.tenant}/{i.service}: {metrics}{extra}"
    )
