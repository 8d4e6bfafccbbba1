"""Anomaly scores become incidents: grouping, hysteresis, severity and a stable identity."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from monitoring_pipelines.alerting import types
from monitoring_pipelines.alerting.incidents import detect_incidents
from monitoring_pipelines.alerting.pipeline_incidents import (
    data_quality_incident,
    pipeline_failure_incident,
)
from monitoring_pipelines.alerting.policy import TenantSettings, loads_policy
from monitoring_pipelines.alerting.types import Severity
from monitoring_pipelines.sources.demo import SERVICE_METRICS
from tests.alerting.conftest import score_frame

SETTINGS = TenantSettings()  # min_duration 10m, resolve_after 30m, resolve_ratio 0.8


def detect(scores, config=SETTINGS, **kwargs):
    return detect_incidents(
        scores, config, run_id="run-1", partition_key="2026-10-05|acme", **kwargs
    )


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_metrics_of_a_service_that_move_together_are_one_incident():
    scores = score_frame(
        {
            ("api", "error_rate"): [("2026-10-05T10:00", "2026-10-05T10:30", 0.95)],
            ("api", "latency_p95_ms"): [("2026-10-05T10:20", "2026-10-05T10:50", 0.7)],
            ("api", "memory_percent"): [("2026-10-05T20:00", "2026-10-05T20:20", 0.9)],
        }
    )
    first, second = detect(scores)

    assert [m.metric for m in first.metrics] == ["error_rate", "latency_p95_ms"]
    assert first.started_at == at("2026-10-05T10:00")
    assert first.last_seen_at == at("2026-10-05T10:50")
    assert (first.status, first.resolved_at) == (types.RESOLVED, at("2026-10-05T10:55"))
    error = first.metrics[0]
    assert (error.peak_score, error.points, error.threshold) == (0.95, 7, 0.5)
    assert first.labels["metric"] == "error_rate"
    assert first.labels["metrics"] == "error_rate,latency_p95_ms"
    assert first.model_versions == {"isolation_forest": 3, "zscore": 1}
    assert (first.run_id, first.partition_key) == ("run-1", "2026-10-05|acme")
    assert "error_rate, latency_p95_ms" in first.summary
    assert [m.metric for m in second.metrics] == ["memory_percent"]
    assert first.fingerprint != second.fingerprint


def test_a_blip_shorter_than_min_duration_opens_nothing():
    scores = score_frame({("api", "error_rate"): [("2026-10-05T10:00", "2026-10-05T10:00", 0.99)]})
    assert detect(scores) == []
    assert len(detect(scores, replace(SETTINGS, min_duration=timedelta(0)))) == 1


def test_short_dips_and_hovering_do_not_split_an_incident():
    scores = score_frame(
        {
            ("api", "error_rate"): [
                ("2026-10-05T10:00", "2026-10-05T10:30", 0.9),
                # 20 minutes quiet (< resolve_after), then back: still the same incident.
                ("2026-10-05T10:55", "2026-10-05T11:10", 0.9),
                # Below the threshold but above 0.8 x threshold for an hour: keeps it open.
                ("2026-10-05T11:15", "2026-10-05T12:15", 0.45),
            ]
        }
    )
    (incident,) = detect(scores)
    assert incident.started_at == at("2026-10-05T10:00")
    assert incident.last_seen_at == at("2026-10-05T12:15")
    assert incident.resolved_at == at("2026-10-05T12:20")


def test_a_quiet_stretch_of_resolve_after_ends_the_incident():
    scores = score_frame(
        {
            ("api", "error_rate"): [
                ("2026-10-05T10:00", "2026-10-05T10:30", 0.9),
                ("2026-10-05T11:05", "2026-10-05T11:30", 0.9),  # 30 minutes quiet before
            ]
        }
    )
    first, second = detect(scores)
    assert first.resolved_at == at("2026-10-05T10:35")
    assert second.started_at == at("2026-10-05T11:05")


def test_an_incident_open_at_the_end_of_the_data_is_firing():
    scores = score_frame({("api", "error_rate"): [("2026-10-05T23:30", "2026-10-05T23:55", 0.9)]})
    (incident,) = detect(scores)
    assert incident.status == types.FIRING
    assert incident.resolved_at is None


def test_an_incident_across_midnight_keeps_its_fingerprint():
    stretches = {("api", "error_rate"): [("2026-10-05T23:00", "2026-10-06T01:00", 0.9)]}
    day0 = score_frame(stretches)
    two_days = score_frame(stretches, periods=2 * 288)
    day1_start = at("2026-10-06T00:00")

    (yesterday,) = detect(day0)
    (today,) = detect(two_days, since=day1_start)
    (again,) = detect(two_days, since=day1_start)

    assert yesterday.status == types.FIRING
    assert today.status == types.RESOLVED
    assert today.fingerprint == yesterday.fingerprint == again.fingerprint
    assert today.started_at == at("2026-10-05T23:00")
    assert today == again
    # The previous day's own incidents are not reported again for the next partition.
    earlier = score_frame(
        {("api", "error_rate"): [("2026-10-05T09:00", "2026-10-05T09:30", 0.9)]}, periods=576
    )
    assert detect(earlier, since=day1_start) == []


def test_an_incident_that_began_before_the_data_continues_the_stored_one():
    stretches = {("api", "error_rate"): [("2026-10-05T22:00", "2026-10-06T02:00", 0.9)]}
    (stored,) = detect(score_frame(stretches))
    day1 = score_frame(stretches, start=pd.Timestamp("2026-10-06T00:00Z"))

    (alone,) = detect(day1)
    (continued,) = detect(day1, previous=[stored])

    assert alone.fingerprint != stored.fingerprint
    assert continued.fingerprint == stored.fingerprint
    assert continued.started_at == stored.started_at
    assert continued.status == types.RESOLVED


def test_severity_grows_with_excess_duration_breadth_and_business_impact():
    spike = [("2026-10-05T10:00", "2026-10-05T10:25", 1.0)]  # twice the threshold, 30 minutes
    (errors,) = detect(score_frame({("api", "error_rate"): spike}))
    (memory,) = detect(score_frame({("api", "memory_percent"): spike}))
    small = [("2026-10-05T10:00", "2026-10-05T10:10", 0.55)]
    (barely,) = detect(score_frame({("api", "latency_p95_ms"): small}))

    assert errors.severity == Severity.CRITICAL
    assert memory.severity == Severity.MEDIUM
    assert barely.severity == Severity.LOW
    # Impact weights come from the tenant's settings.
    heavy = replace(SETTINGS, impact={**SETTINGS.impact, "memory_percent": 1.5})
    assert detect(score_frame({("api", "memory_percent"): spike}), heavy)[0].severity == (
        Severity.CRITICAL
    )


def test_sensitivity_scales_the_threshold_per_tenant():
    policy = loads_policy(
        """
        receivers: {files: {type: file, path: notifications}}
        route: {receiver: files}
        tenants: {globex: {sensitivity: 1.5}}
        """
    )
    stretch = {("api", "error_rate"): [("2026-10-05T10:00", "2026-10-05T10:30", 0.4)]}
    scores = pd.concat([score_frame(stretch, tenant="acme"), score_frame(stretch, tenant="globex")])
    (incident,) = detect(scores, policy)
    assert incident.tenant == "globex"
    assert incident.metrics[0].threshold == pytest.approx(0.5 / 1.5)


def test_missing_scores_and_empty_frames_raise_nothing():
    assert detect(score_frame().iloc[0:0]) == []
    scores = score_frame({("api", "error_rate"): [("2026-10-05T10:00", "2026-10-05T10:30", 0.9)]})
    scores.loc[scores["metric"] == "latency_p95_ms", "ensemble_score"] = np.nan
    (incident,) = detect(scores)
    assert [m.metric for m in incident.metrics] == ["error_rate"]


def test_a_tenant_day_is_processed_in_well_under_a_second():
    rng = np.random.default_rng(7)
    scores = score_frame(metrics=SERVICE_METRICS, periods=1460)  # 24 series, ~35k points
    scores["ensemble_score"] = rng.beta(1, 8, len(scores))
    scores.loc[rng.random(len(scores)) < 0.02, "ensemble_score"] = 0.9
    assert len(scores) >= 35_000
    incidents = detect(scores, replace(SETTINGS, min_duration=timedelta(0)))
    assert incidents


def test_data_quality_and_pipeline_failure_incidents_have_stable_identities():
    dq = data_quality_incident("acme", "2026-10-05|acme", "values_in_range", "12% out\nmore", "r1")
    dq_rerun = data_quality_incident("acme", "2026-10-05|acme", "values_in_range", "again", "r2")
    assert dq.kind == types.DATA_QUALITY
    assert dq.fingerprint == dq_rerun.fingerprint
    assert dq.started_at == at("2026-10-05T00:00")
    assert dq.summary == "acme: partition 2026-10-05|acme blocked by values_in_range: 12% out"

    failed = pipeline_failure_incident("scoring_job", "run-9", "Boom\ntraceback", "2026-10-05|acme")
    retried = pipeline_failure_incident("scoring_job", "run-10", "Boom", "2026-10-05|acme")
    assert failed.kind == types.PIPELINE_FAILURE
    assert failed.fingerprint == retried.fingerprint
    assert failed.summary == "scoring_job failed for partition 2026-10-05|acme: Boom"
    other = pipeline_failure_incident("scoring_job", "run-11", "Boom", None)
    assert other.fingerprint != failed.fingerprint


def test_a_data_quality_alert_links_the_partition_view_its_report_and_its_quarantine():
    from monitoring_pipelines.alerting import templates

    dq = data_quality_incident("Acme", "2026-10-05|Acme", "values_in_range", "12% out", "r1")
    links = types.incident_links(dq, "http://dagster.local:3000/", "http://files.local:3002")
    assert links == {
        "run": "http://dagster.local:3000/runs/r1",
        # What the Dagster UI itself links a multi-partition key to, '|' encoded.
        "checked_partition": "http://dagster.local:3000/assets/raw_metrics"
        "?view=partitions&partition=2026-10-05%7CAcme",
        # The folder name encodes the upper-case letter (a case-insensitive file system).
        "validation_report": "http://files.local:3002/quality/2026-10-05_%2541cme/validation.html",
        "quarantine": "http://files.local:3002/quality/2026-10-05_%2541cme/quarantine.csv",
    }
    payload = types.notification_payload(dq, "trigger", "http://dagster.local:3000")
    labels = [label for label, _ in templates.render(payload, "en").links]
    assert labels == [
        "Open the Dagster run",
        "Open the checked partition",
        "Open the validation report",
        "Open the quarantine",
    ]
    # A failed run over a range of days has no single partition view to open.
    ranged = replace(
        dq, kind=types.PIPELINE_FAILURE, partition_key="2026-10-01|acme...2026-10-05|acme"
    )
    assert set(types.incident_links(ranged, "http://dagster.local:3000")) == {"run"}
