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
    history_line = _history_text(notes, policy)
    if history_line:
        print(f"  {history_line}")
    for name, spec in sorted(policy.receivers.items()):
        sent = sum(1 for n in notes if n["receiver"] == name and n["status"] == "sent")
        where = ""
        if spec.get("type") == "file":
            from monitoring_pipelines.alerting.receivers import receiver_from_spec

            where = f" -> {receiver_from_spec(name, spec).target}"
        print(f"  receiver {name} ({spec.get('type')}): {sent} delivered{where}")
    print(f"  policy: {policy.source}; list them with: monitoring-pipelines alerts list")


def _history_text(notes, policy) -> str | None:
    """What history held back and how it was summarised, or None when there was none."""
    from monitoring_pipelines.alerting import types
    from monitoring_pipelines.alerting.policy_reader import format_duration

    held = [n for n in notes if (n.get("reason") or "").startswith(types.HISTORY)]
    if not held:
        return None
    incidents = {n["fingerprint"] for n in held}
    digests = [n for n in notes if n["event"] == types.DIGEST]
    lookback = format_duration(policy.defaults.page_lookback)
    return (
        f"history: {len(incidents)} incidents older than page_lookback ({lookback} by default) "
        f"not paged ({len(held)} notifications held); "
        f"summaries (one per tenant and receiver): {len(digests)} "
        f"({counts_text(n['status'] for n in digests)})"
    )


def incident_line(stored, history: bool = False) -> str:
    """One incident as ``alerts list`` prints it; ``history``: found in the past, not paged."""
    i = stored.incident
    metrics = ", ".join(m.metric for m in i.metrics) or i.summary
    flags = ["history, not paged"] if history else []
    if stored.acknowledged_by:
        flags.append(f"ack by {stored.acknowledged_by}")
    if stored.feedback:
        flags.append(stored.feedback.replace("_", " "))
    extra = f"  [{'; '.join(flags)}]" if flags else ""
    return (
        f"{i.fingerprint[:12]}  {i.started_at:%Y-%m-%d %H:%M}  {i.severity.label:8} "
        f"{i.status:12} {i.tenant}/{i.service}: {metrics}{extra}"
    )
