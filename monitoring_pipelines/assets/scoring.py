"""Scoring assets: the ensemble's alert policy per tenant, then anomaly scores per tenant-day."""

from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from monitoring_pipelines.assets.ingestion import clean_metrics
from monitoring_pipelines.assets.training import BY_TENANT, MODEL_ASSETS
from monitoring_pipelines.automation import scored_when
from monitoring_pipelines.partitions import tenant_day_key, tenant_day_partitions, tenant_partitions
from monitoring_pipelines.resources import (
    MlflowResource,
    PipelineSettingsResource,
    WarehouseResource,
)


@dg.asset(
    partitions_def=tenant_partitions,
    group_name="scoring",
    kinds={"mlflow", "pandas"},
    deps=list(MODEL_ASSETS.values()),
)
def detection_policy(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    pipeline: PipelineSettingsResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """How the tenant's champion detectors become alerts: the ensemble rule and one threshold per
    series on the ensemble score, fitted on the calibration week to a target false-alarm rate and
    judged on the validation week. Also shows each detector alone on the same week, so you can
    see that the ensemble beats its best member. Refitted on its own when a challenger is
    promoted while scoring."""
    from monitoring_pipelines.ml.scoring_service import NoChampion
    from monitoring_pipelines.ml.train_and_promote import (
        NoCleanData,
        fit_detection_policy,
        tenant_history,
    )

    wh, tenant = warehouse.get(), context.partition_key
    try:
        history = tenant_history(wh, tenant, pipeline.labels_file, pipeline.resolution_seconds)
        fitted = fit_detection_policy(wh, mlflow.registry(), tenant, *history)
    except (NoCleanData, NoChampion) as exc:
        raise dg.Failure(str(exc)) from None
    return dg.MaterializeResult(metadata=_policy_metadata(fitted))


def _policy_metadata(fitted) -> dict:
    return {
        "model_versions": dg.MetadataValue.json(fitted.versions),
        "combiner": dg.MetadataValue.json(fitted.policy["combiner"]),
        "weights": "learned on the calibration week's labelled incidents"
        if fitted.learned
        else "data-free defaults (no labelled incident in the calibration week)",
        "series_thresholds": len(fitted.per_series),
        "default_threshold": round(fitted.policy["default_threshold"], 4),
        "validation": dg.MetadataValue.md(_table({"ensemble": fitted.ensemble, **fitted.members})),
        **{f"ensemble/{k}": float(v) for k, v in fitted.ensemble.items()},
    }


def _table(rows: dict[str, dict[str, float]]) -> str:
    """A Markdown table: one row per model, one column per metric."""
    columns = list(next(iter(rows.values())))
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, metrics in rows.items():
        cells = " | ".join(f"{metrics.get(c, float('nan')):.3f}" for c in columns)
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


# A backfill run takes up to 31 partitions. Dagster cuts a backfill into ranges along the
# dimension with fewer keys: a month of a few tenants becomes one run per tenant and month, whose
# look-back is read and champions loaded once instead of once per day (most of the cost of
# scoring a single day); a day of many tenants becomes runs of up to 31 tenants of that day.
MAX_DAYS_PER_RUN = 31


@dg.asset(
    partitions_def=tenant_day_partitions,
    group_name="scoring",
    kinds={"mlflow", "pandas"},
    deps=[
        clean_metrics,
        dg.AssetDep(detection_policy, partition_mapping=BY_TENANT),
    ],
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=MAX_DAYS_PER_RUN),
    automation_condition=scored_when(),
)
def anomaly_scores(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
    pipeline: PipelineSettingsResource,
) -> dg.MaterializeResult:
    """Anomaly scores of one tenant for one UTC day: per point, each champion detector's
    calibrated score in [0, 1], the ensemble score, the series' threshold, the anomaly flag and the
    model versions used (champions loaded by alias once per run). Re-scoring replaces the day.
    A backfill scores up to a month of a tenant's days in one run, each day exactly as a run of
    its own would. Challengers are scored in shadow on their live days (table `shadow_scores`,
    never alerted on); one that has shadowed long enough in earlier runs gets its promotion check
    before the run scores, and the days scored use the champions that came out of it."""
    from monitoring_pipelines.ml.challenger_review import review_challengers
    from monitoring_pipelines.ml.scoring_service import NoChampion, score_days

    wh, models = warehouse.get(), mlflow.registry()

    def review(tenant, champions, challengers):
        return review_challengers(
            wh,
            models,
            tenant,
            champions,
            challengers,
            pipeline.labels_file,
            pipeline.resolution_seconds,
            pipeline.shadow_days,
        )

    try:
        outcome = score_days(
            wh,
            models,
            context.partition_keys,
            pipeline.resolution_seconds,
            context.run.run_id,
            review,
        )
    except NoChampion as exc:
        raise dg.Failure(str(exc)) from None
    for day in outcome.days:
        context.add_asset_metadata(
            _day_metadata(day.rows, day.versions, day.shadow, day.lookback),
            partition_key=tenant_day_key(day.day.strftime("%Y-%m-%d"), day.tenant),
        )
    for review_ in outcome.reviews:
        context.log.info(f"challenger {review_.kind} v{review_.version}: {review_.reasons}")
    context.log.info(
        f"scored {outcome.points:,} points of {len(context.partition_keys)} tenant-days, "
        f"{outcome.anomalies:,} anomalous; champions {outcome.champions}; "
        f"challengers in shadow {outcome.challengers}"
    )
    return dg.MaterializeResult(
        metadata={
            "scored_at": datetime.now(UTC).isoformat(),
            "challenger_reviews": dg.MetadataValue.json([r.__dict__ for r in outcome.reviews]),
        }
    )


def _day_metadata(
    rows: pd.DataFrame, versions: dict[str, int], shadow: dict[str, int], lookback: str
) -> dict:
    """What one tenant-day's materialization shows in the UI; ``look_back`` says whether the
    features' past values came carried from the previous run or were read, and why."""
    shown = {"model_versions": dg.MetadataValue.json(versions), "look_back": lookback}
    if shadow:
        shown["shadow_points"] = dg.MetadataValue.json(shadow)
    if rows.empty:
        return {"points": 0, "anomalies": 0, **shown}
    flagged = rows[rows["is_anomaly"]]
    return {
        "dagster/row_count": len(rows),
        "points": len(rows),
        "anomalies": len(flagged),
        "series_with_anomalies": dg.MetadataValue.json(
            sorted(set(flagged["service"] + "/" + flagged["metric"]))
        ),
        **shown,
    }
