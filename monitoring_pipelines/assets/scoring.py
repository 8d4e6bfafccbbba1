"""Scoring assets: the ensemble's alert policy per tenant, then anomaly scores per tenant-day."""

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
import pandas as pd

from monitoring_pipelines.assets.ingestion import clean_metrics
from monitoring_pipelines.assets.training import BY_TENANT, MODEL_ASSETS, tenant_history
from monitoring_pipelines.automation import scored_when
from monitoring_pipelines.ml.catalogue import CATALOGUE, KINDS
from monitoring_pipelines.ml.ensemble import DEFAULT_COMBINER, CombinerConfig, combine_groups
from monitoring_pipelines.ml.frames import group_frames
from monitoring_pipelines.ml.incremental import WarehouseStateStore, score_carried
from monitoring_pipelines.ml.thresholds import DEFAULT_THRESHOLD, AlertPolicy
from monitoring_pipelines.ml.training import (
    judge,
    learn_combiner,
    per_series,
    score_period,
    slice_frames,
)
from monitoring_pipelines.partitions import (
    tenant_day_key,
    tenant_day_partitions,
    tenant_partitions,
)
from monitoring_pipelines.resources import (
    MlflowResource,
    PipelineSettingsResource,
    WarehouseResource,
)
from monitoring_pipelines.warehouse import Warehouse

if TYPE_CHECKING:
    from monitoring_pipelines.ml.registry import ModelRegistry


def _champions(models: "ModelRegistry", tenant: str) -> tuple[dict, dict[str, int]]:
    from monitoring_pipelines.ml.registry import ModelNotFound

    model_sets, versions = {}, {}
    for kind in KINDS:
        try:
            model_set, info = models.load_by_alias(kind, tenant)
        except ModelNotFound:
            continue
        model_sets[kind] = model_set
        versions[kind] = info.version
    return model_sets, versions


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
    see that the ensemble beats its best member."""
    tenant = context.partition_key
    wh = warehouse.get()
    plan, frames, windows = tenant_history(wh, pipeline, tenant)
    model_sets, versions = _champions(mlflow.registry(), tenant)
    if not model_sets:
        raise dg.Failure(f"{tenant}: no champion model yet; materialize the *_model assets first")
    scores = score_period(
        model_sets, frames, plan.train_end, plan.validation_end, context_start=plan.train_start
    )
    combiner, learned = learn_combiner(scores, plan, windows)
    ensemble = judge(scores, plan, windows, combiner=combiner)
    members = {kind: judge({kind: s}, plan, windows).metrics for kind, s in scores.items()}
    policy = {
        "combiner": combiner.to_dict(),
        "weights_learned": learned,
        "alert_policy": ensemble.thresholds.to_dict()["policy"],
        "default_threshold": ensemble.thresholds.default,
        "model_versions": versions,
        "validation_window": [plan.calibration_end.isoformat(), plan.validation_end.isoformat()],
        "validation": {"ensemble": ensemble.metrics, **members},
    }
    per_series_thresholds = {
        name.split("/", 1)[1]: value for name, value in ensemble.thresholds.per_series.items()
    }
    wh.replace_thresholds(tenant, per_series_thresholds, policy)
    return dg.MaterializeResult(
        metadata={
            "model_versions": dg.MetadataValue.json(versions),
            "combiner": dg.MetadataValue.json(combiner.to_dict()),
            "weights": "learned on the calibration week's labelled incidents"
            if learned
            else "data-free defaults (no labelled incident in the calibration week)",
            "series_thresholds": len(per_series_thresholds),
            "default_threshold": round(ensemble.thresholds.default, 4),
            "validation": dg.MetadataValue.md(_table({"ensemble": ensemble.metrics, **members})),
            **{f"ensemble/{k}": float(v) for k, v in ensemble.metrics.items()},
        }
    )


def _table(rows: dict[str, dict[str, float]]) -> str:
    """A Markdown table: one row per model, one column per metric."""
    columns = list(next(iter(rows.values())))
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, metrics in rows.items():
        cells = " | ".join(f"{metrics.get(c, float('nan')):.3f}" for c in columns)
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


# What the detectors read of clean_metrics (not its bookkeeping columns).
GRID_COLUMNS = ("tenant", "service", "metric", "ts", "value", "is_gap")


def score_members(
    wh: Warehouse,
    store: WarehouseStateStore,
    tenant: str,
    model_sets: dict,
    versions: dict[str, int],
    start: pd.Timestamp,
    end: pd.Timestamp,
    step_seconds: int,
) -> tuple[dict[tuple, pd.DataFrame], dict[str, dict[tuple, pd.DataFrame]]]:
    """The tenant's grid frames and each champion's scores on ``[start, end)``.

    Exactly the scores of the whole history (each detector scored from the tenant's first
    point), computed for the new points only: each detector's calibration state is carried from
    the last scored day (:mod:`monitoring_pipelines.ml.incremental`), and only the past *values*
    its features need are read. States live in the warehouse's ``score_states`` table; without
    one (first run, a new champion, the rows deleted) it catches up from the first point once.
    """

    def frames_from(first: pd.Timestamp | None, last: pd.Timestamp) -> dict:
        grid = wh.read_records(
            "clean_metrics", tenant=tenant, start=first, end=last, columns=GRID_COLUMNS
        )
        return group_frames(grid, step_seconds=step_seconds) if len(grid) else {}

    step = pd.Timedelta(seconds=step_seconds)
    return score_carried(store, tenant, model_sets, versions, start, end, step, frames_from)


def scored_points(
    frames: dict[tuple, pd.DataFrame],
    members: dict[str, dict[tuple, pd.DataFrame]],
    start: pd.Timestamp,
    end: pd.Timestamp,
    thresholds: dict[str, float],
    policy: dict,
    versions: dict[str, int],
    run_id: str,
) -> pd.DataFrame:
    """Per point of ``[start, end)``: each member's score, the ensemble score and the decision,
    with the model versions and the run that scored it (the rows of ``anomaly_scores``)."""
    combiner = CombinerConfig.from_dict(policy.get("combiner", DEFAULT_COMBINER.to_dict()))
    ensemble = per_series(combine_groups(members, combiner))
    by_member = {kind: per_series(groups) for kind, groups in members.items()}
    default = float(policy.get("default_threshold", DEFAULT_THRESHOLD))
    values = per_series(slice_frames(frames, start, end))
    parts = []
    for name, score in ensemble.items():
        tenant, service, metric = name.split("/", 2)
        threshold = thresholds.get(f"{service}/{metric}", default)
        part = pd.DataFrame(
            {
                "tenant": tenant,
                "service": service,
                "metric": metric,
                "ts": score.index,
                "value": values[name].reindex(score.index).to_numpy() if name in values else np.nan,
                "ensemble_score": score.to_numpy(),
                "threshold": threshold,
            }
        )
        for kind, row in CATALOGUE.items():
            member = by_member.get(kind, {}).get(name)
            part[row.score_column] = (
                np.nan if member is None else member.reindex(score.index).to_numpy()
            )
        with np.errstate(invalid="ignore"):
            part["is_anomaly"] = part["ensemble_score"].to_numpy() >= threshold
        parts.append(part[part["value"].notna()])
    if not parts:
        return pd.DataFrame()
    scored = pd.concat(parts, ignore_index=True)
    scored["model_versions"] = json.dumps(versions, sort_keys=True)
    scored["run_id"] = run_id
    return scored


def tenant_spans(partition_keys: list[str]) -> dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]]:
    """``date|tenant`` keys as each tenant's runs of consecutive days, ``[start, end)`` each."""
    days: dict[str, list[pd.Timestamp]] = {}
    for key in partition_keys:
        by_dimension = tenant_day_partitions.get_partition_key_from_str(key).keys_by_dimension
        days.setdefault(by_dimension["tenant"], []).append(
            pd.Timestamp(by_dimension["date"], tz="UTC")
        )
    one = pd.Timedelta(days=1)
    spans: dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]] = {}
    for tenant, found in sorted(days.items()):
        runs = spans.setdefault(tenant, [])
        for day in sorted(set(found)):
            if runs and runs[-1][1] == day:
                runs[-1] = (runs[-1][0], day + one)
            else:
                runs.append((day, day + one))
    return spans


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
    its own would."""
    wh = warehouse.get()
    models = mlflow.registry()
    totals = {"points": 0, "anomalies": 0}
    all_versions: dict[str, dict[str, int]] = {}
    by_tenant = tenant_spans(list(context.partition_keys))
    # A run of several tenants writes nothing unless every one of them can be scored.
    untrained = [t for t in by_tenant if not models.champion_versions(t)]
    if untrained:
        raise dg.Failure(f"{', '.join(untrained)}: no champion model yet; run training_job first")
    for tenant, spans in by_tenant.items():
        model_sets, versions = _champions(models, tenant)
        all_versions[tenant] = versions
        thresholds, policy = wh.read_thresholds(tenant)
        policy = policy or {"alert_policy": AlertPolicy().__dict__}
        store = WarehouseStateStore(wh)
        for start, end in spans:
            frames, members = score_members(
                wh, store, tenant, model_sets, versions, start, end, pipeline.resolution_seconds
            )
            scored = scored_points(
                frames, members, start, end, thresholds, policy, versions, context.run.run_id
            )
            wh.replace_partition("anomaly_scores", tenant, start, end, scored)
            by_day = _by_day(scored)
            for day in pd.date_range(start, end, freq="D", inclusive="left"):
                rows = by_day.get(day, scored.iloc[:0])
                context.add_asset_metadata(
                    _day_metadata(rows, versions),
                    partition_key=tenant_day_key(day.strftime("%Y-%m-%d"), tenant),
                )
                totals["points"] += len(rows)
                totals["anomalies"] += int(rows["is_anomaly"].sum()) if len(rows) else 0
    context.log.info(
        f"scored {totals['points']:,} points of {len(context.partition_keys)} tenant-days, "
        f"{totals['anomalies']:,} anomalous; champions {all_versions}"
    )
    return dg.MaterializeResult(metadata={"scored_at": datetime.now(UTC).isoformat()})


def _by_day(scored: pd.DataFrame) -> dict[pd.Timestamp, pd.DataFrame]:
    if scored.empty:
        return {}
    return dict(tuple(scored.groupby(pd.DatetimeIndex(scored["ts"]).floor("D"))))


def _day_metadata(rows: pd.DataFrame, versions: dict[str, int]) -> dict:
    """What one tenant-day's materialization shows in the UI."""
    if rows.empty:
        return {"points": 0, "anomalies": 0, "model_versions": dg.MetadataValue.json(versions)}
    flagged = rows[rows["is_anomaly"]]
    return {
        "dagster/row_count": len(rows),
        "points": len(rows),
        "anomalies": len(flagged),
        "series_with_anomalies": dg.MetadataValue.json(
            sorted(set(flagged["service"] + "/" + flagged["metric"]))
        ),
        "model_versions": dg.MetadataValue.json(versions),
    }
