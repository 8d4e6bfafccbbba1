"""Alerting assets: a tenant-day's anomaly scores become incidents and queued notifications."""

from datetime import UTC, datetime

import dagster as dg

from monitoring_pipelines.assets.scoring import anomaly_scores
from monitoring_pipelines.automation import alerted_when
from monitoring_pipelines.partitions import tenant_day_partitions
from monitoring_pipelines.resources import AlertingResource, WarehouseResource


def policy_or_failure(alerting: AlertingResource):
    """The alerting policy, or a run failure whose one line names the file and key at fault."""
    from monitoring_pipelines.alerting.policy import PolicyError

    try:
        return alerting.policy()
    except PolicyError as exc:
        raise dg.Failure(description=str(exc)) from None


@dg.asset(
    partitions_def=tenant_day_partitions,
    group_name="alerting",
    kinds={"pandas"},
    deps=[anomaly_scores],
    automation_condition=alerted_when(),
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
    change; the outbox sensor delivers."""
    from monitoring_pipelines.alerting.service import raise_incidents

    keys = context.partition_key.keys_by_dimension
    window = context.partition_time_window
    policy = policy_or_failure(alerting)
    outcome = raise_incidents(
        warehouse.get(),
        policy,
        keys["tenant"],
        window.start,
        window.end,
        run_id=context.run.run_id,
        partition_key=context.partition_key,
        dagster_url=alerting.dagster_url,
        now=datetime.now(UTC),
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(outcome.incidents),
            "incidents": len(outcome.incidents),
            "by_severity": dg.MetadataValue.json(outcome.by_severity()),
            "by_status": dg.MetadataValue.json(outcome.by_status()),
            "notifications_queued": outcome.queued,
            "notifications_suppressed": outcome.suppressed,
            "policy": policy.source,
            "incident_list": dg.MetadataValue.md(_incident_table(outcome.incidents)),
        }
    )


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
