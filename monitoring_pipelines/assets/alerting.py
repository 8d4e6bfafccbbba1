"""Alerting assets: a tenant-day's anomaly scores become incidents and queued notifications."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from monitoring_pipelines.assets.scoring import anomaly_scores
from monitoring_pipelines.automation import alerted_when
from monitoring_pipelines.partitions import tenant_day_key, tenant_day_partitions
from monitoring_pipelines.resources import AlertingResource, WarehouseResource


def policy_or_failure(alerting: AlertingResource):
    """The alerting policy, or a run failure whose one line names the file and key at fault."""
    from monitoring_pipelines.alerting.policy import PolicyError

    try:
        return alerting.policy()
    except PolicyError as exc:
        raise dg.Failure(description=str(exc)) from None


# A backfill raises up to a month of a tenant's days per run, day by day in order (the demo's
# 175 tenant-days are 5 runs, not 175), so Dagster's per-run cost is paid once per range.
MAX_DAYS_PER_RUN = 31


@dg.asset(
    partitions_def=tenant_day_partitions,
    group_name="alerting",
    kinds={"pandas"},
    deps=[anomaly_scores],
    automation_condition=alerted_when(),
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=MAX_DAYS_PER_RUN),
)
def alerts(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    alerting: AlertingResource,
) -> dg.MaterializeResult:
    """Incidents of one tenant for one UTC day, from its anomaly scores: anomalous points grouped
    per service (metrics that move together make one incident), opened and resolved with
    hysteresis, given a severity, and routed by the alerting policy to its receivers through the
    outbox (silences, inhibition and the rate limit applied; suppressed notifications are kept
    with their reason). Incidents are keyed by a fingerprint of the data, so re-running a day
    updates its incidents and queues nothing twice. Raised automatically once the day's scores
    change; the outbox sensor delivers. A ranged run raises its days one by one, oldest first,
    exactly as runs of one day each would."""
    from monitoring_pipelines.alerting.service import raise_incidents

    policy = policy_or_failure(alerting)
    wh = warehouse.get()
    # "date|tenant" keys, each tenant's days oldest first: a day's incidents continue the last.
    days = sorted(str(key).split("|", 1)[::-1] for key in context.partition_keys)
    total = 0
    for tenant, date in days:
        start = datetime.fromisoformat(date).replace(tzinfo=UTC)
        key = tenant_day_key(date, tenant)
        outcome = raise_incidents(
            wh,
            policy,
            tenant,
            start,
            start + timedelta(days=1),
            run_id=context.run.run_id,
            partition_key=key,
            dagster_url=alerting.dagster_url,
            now=datetime.now(UTC),
        )
        total += len(outcome.incidents)
        context.add_asset_metadata(_day_metadata(outcome, policy), partition_key=key)
    return dg.MaterializeResult(metadata={"days": len(days), "incidents_in_run": total})


def _day_metadata(outcome, policy) -> dict:
    return {
        "dagster/row_count": len(outcome.incidents),
        "incidents": len(outcome.incidents),
        "by_severity": dg.MetadataValue.json(outcome.by_severity()),
        "by_status": dg.MetadataValue.json(outcome.by_status()),
        "notifications_queued": outcome.queued,
        "notifications_suppressed": outcome.suppressed,
        "policy": policy.source,
        "incident_list": dg.MetadataValue.md(_incident_table(outcome.incidents)),
    }


def _incident_table(incidents) -> str:
    if not incidents:
        return "No incidents."
    lines = [
        "| fingerprint | service | severity | status | started | metrics |",
        "|---|---|---|---|---|---|",
    ]
    for i in incidents:
        metrics = ", ".join(m.metric for m in i.metrics)
        lines.append(
            f"| `{i.fingerprint}` | {i.service} | {i.severity.label} | {i.status} | "
            f"{i.started_at:%Y-%m-%d %H:%M} | {metrics} |"
        )
    return "\n".join(lines)
