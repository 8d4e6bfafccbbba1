"""Retraining: on a schedule, and when drift is found.

- ``retrain_schedule`` runs ``training_job`` for every tenant on the settings' cron
  (``MONITORING_RETRAIN_CRON``, default weekly, Monday 02:00 UTC) over the rolling window.
- Two drift checks run with the assets they watch: ``values_drift`` on ``clean_metrics`` (KS and
  PSI of each series' newest day against the same weekdays and hours of its models' training
  window) and
  ``scores_drift`` on ``anomaly_scores`` (Page-Hinkley on each series' ensemble scores); see
  :mod:`monitoring_pipelines.ml.drift` for the statistics and their thresholds. Their per-series
  figures are in the check metadata.
- ``drift_retrain_sensor`` reads the checks' evaluations and starts ``training_job`` for a tenant
  whose drift check failed, once: not while a training run of that tenant is queued or running,
  and not again for the same drift (the same series, whichever check saw it) until a check has
  passed for the tenant.

Every run says why it started in its ``monitoring/retrain_reason`` tag (``schedule`` or ``drift``),
and drift runs also name the check, the series and the statistic. ``training_job`` carries
``pipeline=training``, so the instance's tag concurrency limit for training applies.
"""

import json

import dagster as dg

from monitoring_pipelines.assets.ingestion import clean_metrics
from monitoring_pipelines.assets.scoring import anomaly_scores
from monitoring_pipelines.partitions import TENANTS
from monitoring_pipelines.resources import WarehouseResource

VALUES_DRIFT_CHECK = "values_drift"
SCORES_DRIFT_CHECK = "scores_drift"
DRIFT_CHECK_KEYS = (
    dg.AssetCheckKey(dg.AssetKey("clean_metrics"), VALUES_DRIFT_CHECK),
    dg.AssetCheckKey(dg.AssetKey("anomaly_scores"), SCORES_DRIFT_CHECK),
)
REASON_TAG = "monitoring/retrain_reason"
# Built by build_defs with the detector kinds the settings choose (jobs.training_job_for).
TRAINING_JOB = "training_job"
_IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
# Dagster keeps tag values short; a long list of series is cut with an ellipsis.
_TAG_CHARS = 200


def _result(report, config) -> dg.AssetCheckResult:
    drifted = report.drifted
    if drifted:
        description = "; ".join(
            f"{tenant}: {len(names)} series drifted ({', '.join(names[:3])}"
            f"{', ...' if len(names) > 3 else ''})"
            for tenant, names in drifted.items()
        )
    else:
        description = f"no drift in {len(report.series)} series ({report.statistic})"
    return dg.AssetCheckResult(
        passed=report.passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "statistic": report.statistic,
            "tenants": dg.MetadataValue.json(sorted(report.windows)),
            "drifted": dg.MetadataValue.json(drifted),
            "series": dg.MetadataValue.json(report.series),
            "windows": dg.MetadataValue.json(report.windows),
            "skipped": dg.MetadataValue.json(report.skipped),
            "thresholds": dg.MetadataValue.json(config.__dict__),
        },
    )


@dg.asset_check(
    asset=clean_metrics,
    name=VALUES_DRIFT_CHECK,
    description="Per series, the newest clean day against the same weekdays and hours of the day "
    "of the training window of the tenant's models: fails (warning) when the Kolmogorov-Smirnov "
    "test and the population stability index both find the distribution moved; a failure starts "
    "retraining of the tenant. Figures per series in the metadata.",
)
def clean_metrics_drift(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    from monitoring_pipelines.ml.drift import DriftConfig, values_drift

    config = DriftConfig.from_env()
    return _result(values_drift(warehouse.get(), context.partition_keys, config), config)


@dg.asset_check(
    asset=anomaly_scores,
    name=SCORES_DRIFT_CHECK,
    description="Per series, a Page-Hinkley test on the newest scored day's ensemble scores "
    "against their mean since the models' training window began: fails (warning) on a "
    "sustained rise, which starts retraining of the tenant. Figures per series in the metadata.",
)
def anomaly_scores_drift(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    from monitoring_pipelines.ml.drift import DriftConfig, scores_drift

    config = DriftConfig.from_env()
    return _result(scores_drift(warehouse.get(), context.partition_keys, config), config)


DRIFT_ASSET_CHECKS = [clean_metrics_drift, anomaly_scores_drift]


def build_retrain_schedule(cron: str) -> dg.ScheduleDefinition:
    """``retrain_schedule`` on ``cron`` (UTC): ``training_job`` for every known tenant."""

    @dg.schedule(
        name="retrain_schedule",
        job_name=TRAINING_JOB,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    def retrain_schedule(context: dg.ScheduleEvaluationContext):
        """Retrains every tenant's detectors over the rolling window; a candidate becomes
        challenger and is promoted only after its shadow days."""
        tenants = sorted(context.instance.get_dynamic_partitions(TENANTS))
        if not tenants:
            return dg.SkipReason("no tenants yet")
        tick = context.scheduled_execution_time
        return [
            dg.RunRequest(
                run_key=f"schedule:{tenant}:{tick:%Y-%m-%dT%H:%M}",
                partition_key=tenant,
                tags={REASON_TAG: "schedule"},
            )
            for tenant in tenants
        ]

    return retrain_schedule


def _training_in_flight(instance: dg.DagsterInstance, tenant: str) -> bool:
    return bool(
        instance.get_run_records(
            dg.RunsFilter(
                job_name=TRAINING_JOB,
                statuses=_IN_FLIGHT,
                tags={"dagster/partition": tenant},
            ),
            limit=1,
        )
    )


def _evaluations(instance: dg.DagsterInstance, after: int, limit: int = 200) -> list:
    """``(id, evaluation)`` of the drift checks' completed evaluations after ``after``, oldest
    first (the checks' execution index works on every event log storage, run-sharded SQLite
    included)."""
    from dagster._core.storage.asset_check_execution_record import (
        COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES,
    )

    found = []
    for check in DRIFT_CHECK_KEYS:
        for record in instance.event_log_storage.get_asset_check_execution_history(
            check, limit=limit, status=COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES
        ):
            if record.id <= after:
                break
            event = record.event.dagster_event if record.event else None
            if event is not None and event.asset_check_evaluation_data is not None:
                found.append((record.id, event.asset_check_evaluation_data))
    return sorted(found, key=lambda item: item[0])


def _latest_evaluation_id(instance: dg.DagsterInstance) -> int:
    newest = [
        records[0].id
        for check in DRIFT_CHECK_KEYS
        if (records := instance.event_log_storage.get_asset_check_execution_history(check, 1))
    ]
    return max(newest, default=0)


def _statistic(check: str, figures: dict) -> str:
    if check == SCORES_DRIFT_CHECK:
        return f"page_hinkley={figures['page_hinkley']}"
    return f"psi={figures['psi']} ks={figures['ks_statistic']} p={figures['ks_pvalue']}"


def _strength(figures: dict) -> float:
    return float(figures.get("page_hinkley", figures.get("psi", 0.0)))


def _cut(text: str) -> str:
    return text if len(text) <= _TAG_CHARS else text[: _TAG_CHARS - 3] + "..."


def _record_drift(drifts: dict[str, dict[str, dict]], record_id: int, evaluation) -> None:
    """Note what one drift check evaluation said of each tenant: its drifted series, the strongest
    one's statistic and strength; a tenant the check passes is dropped from that check."""
    metadata = evaluation.metadata
    drifted = metadata["drifted"].value if "drifted" in metadata else {}
    figures = metadata["series"].value if "series" in metadata else {}
    for tenant in metadata["tenants"].value if "tenants" in metadata else []:
        names = drifted.get(tenant)
        if not names:
            drifts.get(tenant, {}).pop(evaluation.check_name, None)
            continue
        strongest = max(names, key=lambda n: _strength(figures[f"{tenant}/{n}"]))
        drifts.setdefault(tenant, {})[evaluation.check_name] = {
            "series": names,
            "strength": _strength(figures[f"{tenant}/{strongest}"]),
            "statistic": f"{strongest} "
            + _statistic(evaluation.check_name, figures[f"{tenant}/{strongest}"]),
            "evaluation": record_id,
        }


@dg.sensor(
    job_name=TRAINING_JOB,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def drift_retrain_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    """Starts training_job for a tenant whose drift check failed, once per drift: not while a
    training run of the tenant is queued or running, and not again for the same drifted series
    until a check passes for the tenant. The run's tags name the check, the series and the
    statistic. Evaluations from before the sensor's first tick are not acted on."""
    instance = context.instance
    if not context.cursor:
        after = _latest_evaluation_id(instance)
        context.update_cursor(json.dumps({"after": after, "drifts": {}, "acted": {}}))
        return dg.SkipReason(f"starting after check evaluation {after}")
    cursor = json.loads(context.cursor)
    # drifts: what each check last said per tenant; acted: the drift each tenant was retrained for.
    drifts: dict[str, dict[str, dict]] = cursor["drifts"]
    acted: dict[str, str] = cursor["acted"]
    for record_id, evaluation in _evaluations(instance, cursor["after"]):
        cursor["after"] = record_id
        _record_drift(drifts, record_id, evaluation)
    requests, skipped = [], []
    for tenant in sorted(drifts):
        by_check = drifts[tenant]
        if not by_check:
            # Every check passes again: a later drift of the same series acts again.
            del drifts[tenant]
            acted.pop(tenant, None)
            continue
        # The same series drifting, whichever check saw it, is the same drift.
        series = sorted({name for drift in by_check.values() for name in drift["series"]})
        signature = ",".join(series)
        if acted.get(tenant) == signature:
            skipped.append(f"{tenant}: drift unchanged since the retraining it started")
            continue
        if _training_in_flight(instance, tenant):
            skipped.append(f"{tenant}: a training run is already queued or running")
            continue
        acted[tenant] = signature
        strongest = max(by_check.values(), key=lambda drift: drift["strength"])
        requests.append(
            dg.RunRequest(
                run_key=f"drift:{tenant}:{max(d['evaluation'] for d in by_check.values())}",
                partition_key=tenant,
                tags={
                    REASON_TAG: "drift",
                    "monitoring/drift_check": ",".join(sorted(by_check)),
                    "monitoring/drift_series": _cut(signature),
                    "monitoring/drift_statistic": _cut(strongest["statistic"]),
                },
            )
        )
    return dg.SensorResult(
        run_requests=requests,
        cursor=json.dumps(cursor, sort_keys=True),
        skip_reason=None if requests else "; ".join(skipped) or "no new drift",
    )
