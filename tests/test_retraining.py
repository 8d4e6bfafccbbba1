"""Retraining end to end on a real Dagster instance in a temporary home: drift found by the check
on clean_metrics starts one training run through the drift sensor, the retrained candidate becomes
challenger and is scored in shadow, and its promotion check uses operator feedback."""

import json
from datetime import UTC, datetime

import dagster as dg
import pandas as pd
import pytest

from monitoring_pipelines.alerting import store
from monitoring_pipelines.cli import main
from monitoring_pipelines.definitions import build_defs
from monitoring_pipelines.grid import regular_grid
from monitoring_pipelines.ingest import stage_file
from monitoring_pipelines.partitions import TENANTS, tenant_day_key
from monitoring_pipelines.settings import load_settings
from monitoring_pipelines.sources.demo import DemoConfig, generate
from monitoring_pipelines.warehouse import Warehouse

CONFIG = DemoConfig(
    tenants=("acme",), services=("api",), days=38, bad_rows=False, broken_partition=False
)
HISTORY_DAYS = 35  # 2026-09-28 .. 2026-11-01, gridded straight into the warehouse
DRIFTED = ("api", "latency_p50_ms")  # from 2026-11-02 on, 60% higher for good
SPIKE = ("api", "error_rate")  # an hour ten times higher on 2026-11-03: one incident
ZSCORE = dg.AssetKey("zscore_model")


@pytest.fixture
def env(home):
    settings = load_settings()
    settings.ensure_dirs()
    data = generate(CONFIG)
    (settings.home / "labels.json").write_text(json.dumps(data.labels))
    records = data.records.copy()
    ts = pd.to_datetime(records["ts"], utc=True)
    drifted = (records["service"] == DRIFTED[0]) & (records["metric"] == DRIFTED[1])
    records.loc[drifted & (ts >= "2026-11-02"), "value"] *= 1.6
    spike = (records["service"] == SPIKE[0]) & (records["metric"] == SPIKE[1])
    records.loc[spike & (ts >= "2026-11-03T10:00Z") & (ts < "2026-11-03T11:00Z"), "value"] *= 10
    warehouse = Warehouse(settings.warehouse_url)
    for day in pd.date_range(CONFIG.start, periods=HISTORY_DAYS, freq="D"):
        end = day + pd.Timedelta(days=1)
        grid, _ = regular_grid(
            records[(ts >= day) & (ts < end)], start=day, end=end, resolution_seconds=300
        )
        warehouse.replace_partition("clean_metrics", "acme", day, end, grid)
    defs = build_defs(settings)
    with dg.instance_for_test(temp_dir=str(settings.dagster_home)) as instance:
        instance.add_dynamic_partitions(TENANTS, ["acme"])
        yield {
            "settings": settings,
            "defs": defs,
            "instance": instance,
            "warehouse": warehouse,
            "records": records,
        }
    warehouse.dispose()


def _ingest(env, day: str) -> dg.ExecuteInProcessResult:
    """A new day's file staged and gated + gridded by ingest_job, as the sensors would."""
    settings, records = env["settings"], env["records"]
    ts = pd.to_datetime(records["ts"], utc=True)
    start = pd.Timestamp(day, tz="UTC")
    path = settings.drop_dir / f"acme-{day}.csv"
    records[(ts >= start) & (ts < start + pd.Timedelta(days=1))].to_csv(path, index=False)
    stage_file(
        env["warehouse"],
        path,
        root=settings.drop_dir,
        earliest=datetime(2026, 9, 1, tzinfo=UTC),
    )
    return (
        env["defs"]
        .resolve_job_def("ingest_job")
        .execute_in_process(partition_key=tenant_day_key(day, "acme"), instance=env["instance"])
    )


def _run(env, job: str, partition_key, **kwargs) -> dg.ExecuteInProcessResult:
    return (
        env["defs"]
        .resolve_job_def(job)
        .execute_in_process(partition_key=partition_key, instance=env["instance"], **kwargs)
    )


def _tick(env, cursor):
    sensor = env["defs"].resolve_sensor_def("drift_retrain_sensor")
    context = dg.build_sensor_context(
        instance=env["instance"], cursor=cursor, definitions=env["defs"]
    )
    result = sensor(context)
    # As the daemon does: the cursor a SensorResult carries, else the one the sensor set.
    if isinstance(result, dg.SensorResult) and result.cursor is not None:
        return result, result.cursor
    return result, context.cursor


def _evaluation(result, check: str) -> dg.AssetCheckEvaluation:
    return next(e for e in result.get_asset_check_evaluations() if e.check_name == check)


def _models_list(capsys) -> str:
    capsys.readouterr()
    assert main(["models", "list", "--tenant", "acme"]) == 0
    return capsys.readouterr().out


def test_drift_starts_one_retraining_whose_challenger_is_judged_with_feedback(env, capsys):
    instance, wh = env["instance"], env["warehouse"]
    models = env["defs"].resources["mlflow"].registry()

    # A champion trained on the history, and its alert policy.
    trained = _run(
        env, "training_job", "acme", asset_selection=[ZSCORE, dg.AssetKey("detection_policy")]
    )
    assert trained.success
    assert models.champion_versions("acme") == {"zscore": 1}
    first, cursor = _tick(env, None)
    assert isinstance(first, dg.SkipReason)

    # A drifted day: the check on clean_metrics fails with the series' figures...
    ingested = _ingest(env, "2026-11-02")
    assert ingested.success
    check = _evaluation(ingested, "values_drift")
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    name = "acme/" + "/".join(DRIFTED)
    assert check.metadata["drifted"].value == {"acme": ["/".join(DRIFTED)]}
    figures = check.metadata["series"].value[name]
    assert figures["psi"] >= 0.25 and figures["ks_statistic"] >= 0.3
    # ... while the series that did not move pass.
    others = {k: v for k, v in check.metadata["series"].value.items() if k != name}
    assert len(others) == 7 and not any(v["drifted"] for v in others.values())

    # ... and the sensor asks for exactly one training run of the tenant, saying why.
    result, cursor = _tick(env, cursor)
    assert len(result.run_requests) == 1
    request = result.run_requests[0]
    assert request.partition_key == "acme"
    assert request.tags["monitoring/retrain_reason"] == "drift"
    assert request.tags["monitoring/drift_check"] == "values_drift"
    assert request.tags["monitoring/drift_series"] == "/".join(DRIFTED)
    assert request.tags["monitoring/drift_statistic"].startswith(f"{'/'.join(DRIFTED)} psi=")

    # The same drift found again (the day re-ingested) starts nothing more.
    assert not _evaluation(_ingest(env, "2026-11-02"), "values_drift").passed
    again, cursor = _tick(env, cursor)
    assert not again.run_requests
    assert "drift unchanged" in again.skip_reason.skip_message

    # The requested run: the candidate becomes challenger, not champion.
    retrained = _run(env, "training_job", "acme", asset_selection=[ZSCORE], tags=request.tags)
    assert retrained.success
    assert retrained.dagster_run.tags["pipeline"] == "training"
    drift_runs = instance.get_run_records(
        dg.RunsFilter(job_name="training_job", tags={"monitoring/retrain_reason": "drift"})
    )
    assert len(drift_runs) == 1
    assert models.champion_versions("acme") == {"zscore": 1}
    _, challenger = models.load_by_alias("zscore", "acme", "challenger")
    assert challenger.version == 2
    assert challenger.tags["retrain.reason"] == "drift"
    assert challenger.tags["challenger.live_from"] == "2026-11-03T00:00:00Z"
    assert _models_list(capsys) == (
        "acme: zscore v1\n"
        "  zscore challenger v2: in shadow since 2026-11-03T00:00:00Z, judged after 1 live day(s)\n"
    )

    # A live day: scored by the champion, the challenger in shadow, an incident raised.
    assert _ingest(env, "2026-11-03").success
    key = tenant_day_key("2026-11-03", "acme")
    scored = _run(env, "scoring_job", key)
    assert scored.success
    day = pd.Timestamp("2026-11-03", tz="UTC")
    scores = wh.read_records("anomaly_scores", tenant="acme", start=day)
    assert set(scores["model_versions"]) == {'{"zscore": 1}'}
    shadow = wh.read_records("shadow_scores", tenant="acme", start=day)
    assert len(shadow) == len(scores) > 8 * 280
    assert set(shadow["version"]) == {2} and shadow["score"].between(0, 1).all()
    assert _run(env, "alerting_job", key).success
    raised = [
        s
        for s in store.read_incidents(wh, tenant="acme")
        if s.incident.kind == "anomaly"
        and s.incident.service == SPIKE[0]
        and any(m.metric == SPIKE[1] for m in s.incident.metrics)
    ]
    assert raised, "the spike raised no incident"
    # Nothing the challenger scored reached alerting: every incident names the champion only.
    assert {json.dumps(s.incident.model_versions) for s in store.read_incidents(wh)} == {
        '{"zscore": 1}'
    }
    false_positive = raised[0].fingerprint
    store.mark_false_positive(wh, false_positive, "load test, not a real problem")

    # The next day's scoring run holds the promotion check: it used the feedback.
    assert _ingest(env, "2026-11-04").success
    next_day = _run(env, "scoring_job", tenant_day_key("2026-11-04", "acme"))
    assert next_day.success
    review = next_day.asset_materializations_for_node("anomaly_scores")[-1].metadata
    assert [(r["kind"], r["version"]) for r in review["challenger_reviews"].value] == [
        ("zscore", 2)
    ]
    decided = models.client().get_model_version("anomaly-zscore-acme", "2")
    feedback = json.loads(decided.tags["promotion.feedback"])
    # The false positive counted against the champion that raised it, and against the challenger
    # whose shadow scores flagged the same spike: equal feedback, equal labelled figures.
    assert feedback["champion"] == {"false_positive": [false_positive], "confirmed": []}
    assert feedback["challenger"] == {"false_positive": [false_positive], "confirmed": []}
    assert feedback["shadow_days"] == 1
    assert feedback["window"] == ["2026-11-03T00:00:00Z", "2026-11-04T00:00:00Z"]
    assert decided.tags["promotion.decision"] == "promoted"
    assert (
        "operator feedback over 1 shadow day(s): the challenger would have flagged "
        "1 false positive(s) and 0 confirmed incident(s), the champion raised 1 and 0"
    ) in decided.tags["promotion.reasons"]
    assert "PROMOTED to champion" in decided.description
    # The promoted champion scores the day, under an alert policy refitted for it.
    assert models.champion_versions("acme") == {"zscore": 2}
    assert wh.read_thresholds("acme")[1]["model_versions"] == {"zscore": 2}
    day = pd.Timestamp("2026-11-04", tz="UTC")
    scores = wh.read_records("anomaly_scores", tenant="acme", start=day)
    assert set(scores["model_versions"]) == {'{"zscore": 2}'}
    assert _models_list(capsys) == "acme: zscore v2\n"

    # models rollback still puts the previous champion back.
    assert main(["models", "rollback", "--kind", "zscore", "--tenant", "acme"]) == 0
    assert "champion v2 -> v1" in capsys.readouterr().out
    assert models.champion_versions("acme") == {"zscore": 1}
    # The review and the rollback are in the audit trail.
    from monitoring_pipelines.warehouse import audit

    (reviewed,) = [e for e in audit.read(wh.engine) if e.target == "zscore v2 (challenger)"]
    assert (reviewed.action, reviewed.actor) == (audit.PROMOTE, "pipeline")
    assert reviewed.after["feedback"]["champion"]["false_positive"] == [false_positive]
    (rolled,) = audit.read(wh.engine, action=audit.ROLLBACK)
    assert (rolled.before, rolled.after) == ({"champion": 2}, {"champion": 1})


def test_retrain_schedule_runs_every_tenant_weekly_or_on_the_configured_cron(home, monkeypatch):
    weekly = build_defs(load_settings()).resolve_schedule_def("retrain_schedule")
    assert weekly.cron_schedule == "0 2 * * 1"
    monkeypatch.setenv("MONITORING_RETRAIN_CRON", "30 4 * * 0")
    defs = build_defs(load_settings())
    schedule = defs.resolve_schedule_def("retrain_schedule")
    assert schedule.cron_schedule == "30 4 * * 0"
    assert schedule.job_name == "training_job"
    with dg.instance_for_test() as instance:
        tick = datetime(2026, 11, 8, 4, 30, tzinfo=UTC)
        context = dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=tick,
            repository_def=defs.get_repository_def(),
        )
        assert isinstance(schedule.evaluate_tick(context).skip_message, str)
        instance.add_dynamic_partitions(TENANTS, ["globex", "acme"])
        requests = schedule.evaluate_tick(context).run_requests
    assert [
        (r.partition_key, r.run_key, r.tags["monitoring/retrain_reason"]) for r in requests
    ] == [(t, f"schedule:{t}:2026-11-08T04:30", "schedule") for t in ("acme", "globex")]


def test_drift_waits_while_the_tenant_is_training_and_is_not_forgotten(home):
    defs = build_defs(load_settings())
    pending = {
        "after": 0,
        "drifts": {
            "acme": {
                "scores_drift": {
                    "series": ["api/error_rate"],
                    "strength": 42.0,
                    "statistic": "api/error_rate page_hinkley=42.0",
                    "evaluation": 7,
                }
            }
        },
        "acted": {},
    }
    with dg.instance_for_test() as instance:
        # Resolved with an instance open: Dagster's definitions state storage is per instance,
        # and an earlier test's closed instance must not be the one it finds.
        sensor = defs.resolve_sensor_def("drift_retrain_sensor")
        instance.add_dynamic_partitions(TENANTS, ["acme"])
        running = instance.create_run_for_job(
            job_def=defs.resolve_job_def("training_job"),
            status=dg.DagsterRunStatus.STARTED,
            tags={"dagster/partition": "acme", "monitoring/retrain_reason": "schedule"},
        )

        def tick(cursor):
            context = dg.build_sensor_context(
                instance=instance, cursor=json.dumps(cursor), definitions=defs
            )
            return sensor(context)

        waiting = tick(pending)
        assert not waiting.run_requests
        assert "already queued or running" in waiting.skip_reason.skip_message
        instance.report_run_canceled(running)
        started = tick(json.loads(waiting.cursor))
    [request] = started.run_requests
    assert request.tags == {
        "monitoring/retrain_reason": "drift",
        "monitoring/drift_check": "scores_drift",
        "monitoring/drift_series": "api/error_rate",
        "monitoring/drift_statistic": "api/error_rate page_hinkley=42.0",
    }
    assert json.loads(started.cursor)["acted"] == {"acme": "api/error_rate"}
