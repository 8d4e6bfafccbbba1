"""When Dagster materializes the scoring and alerting assets on its own: declarative automation.

The chain after a file is dropped (or the hourly pull) is: the sensors stage and ingest it
(``raw_metrics`` and ``clean_metrics``; a day a blocked neighbour kept from being gridded is
gridded by its own condition), then these conditions, evaluated by
``automation_condition_sensor``, score each newly gridded tenant-day and raise its alerts; the
outbox sensor delivers. Each condition is true for a partition once, when an upstream partition
was updated after the asset itself was last materialized or requested (``since_last_handled``):
runs launched by the CLI count as handled, so the daemon never redoes what the CLI did, and the
first evaluation on a home starts nothing for history.
"""

import dagster as dg

# The tenant's alert policy is refitted by every retraining; it must exist before a day is scored
# (it proves a champion exists), but refitting it must not re-score the tenant's whole history.
DETECTION_POLICY = dg.AssetKey("detection_policy")


def _updated_after_handled(deps: dg.AutomationCondition) -> dg.AutomationCondition:
    """True once per partition after ``deps`` updated, until the asset is requested or updated,
    and only when no dependency is missing or in progress."""
    return (
        deps.since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    )


def gridded_when() -> dg.AutomationCondition:
    """``clean_metrics`` of a tenant-day whose ``raw_metrics`` passed the gate but were not
    gridded by the same run: a ranged ingest run stops its grid step when one of its days is
    blocked, and the days that passed are gridded here (what the CLI's ``grid_job`` does)."""
    gated = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.newly_updated())
    return _updated_after_handled(gated.with_label("raw_metrics gated")).with_label(
        "grid a tenant-day that passed the gate in a run stopped by a blocked day"
    )


def scored_when() -> dg.AutomationCondition:
    """``anomaly_scores`` of a tenant-day: after its ``clean_metrics`` were (re)gridded, once the
    tenant has a detection policy (a champion)."""
    gridded = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.newly_updated()).ignore(
        dg.AssetSelection.assets(DETECTION_POLICY)
    )
    return _updated_after_handled(gridded.with_label("clean_metrics gridded")).with_label(
        "score a tenant-day once its clean metrics change and the tenant has a champion"
    )


def alerted_when() -> dg.AutomationCondition:
    """``alerts`` of a tenant-day: after its ``anomaly_scores`` were (re)written, or in the same
    run as its scoring when that is requested on the same tick (one process start fewer between
    a file and its page)."""
    return _updated_after_handled(dg.AutomationCondition.any_deps_updated()).with_label(
        "raise a tenant-day's alerts once its scores change"
    )


# Evaluates the conditions above every 30 seconds; running by default, so a fresh home needs no
# click in the UI. Several partitions on one tick become one backfill (ranged runs per tenant).
automation_condition_sensor = dg.AutomationConditionSensorDefinition(
    "automation_condition_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Scores newly gridded tenant-days and raises their alerts (see each asset's "
    "automation condition); the Automation page shows why each run started.",
)
