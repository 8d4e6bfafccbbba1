"""Report figures against the same figures computed here, independently, from the rows the
fixture inserted (see seed.py)."""

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from monitoring_pipelines.reports.build import build_report
from monitoring_pipelines.reports.config import ReportConfig, ReportConfigError, parse_config
from monitoring_pipelines.reports.periods import (
    MONTH,
    WEEK,
    PeriodError,
    period_as_of,
    period_containing,
)
from tests.reports.seed import BLOCKED_DAY, WEEK_END, WEEK_START

TENANT = "zephyrcorp"


def _in_week(inc) -> bool:
    return WEEK_START <= inc["started_at"] < WEEK_END


def _minutes(a, b) -> float:
    return (a - b).total_seconds() / 60


@pytest.fixture
def report(seeded, week):
    return build_report(seeded.warehouse, week, tenant=TENANT, labels_path=seeded.labels_path)


def test_periods_are_the_last_complete_week_or_month():
    assert period_as_of(MONTH, datetime(2026, 11, 1).date()).key == "2026-10-01"
    week = period_as_of(WEEK, datetime(2026, 11, 2).date())
    assert (week.key, week.last_day.isoformat()) == ("2026-10-26", "2026-11-01")
    # A Sunday is still inside its week: the report made that day is of the week before.
    assert period_as_of(WEEK, datetime(2026, 11, 1).date()).key == "2026-10-19"
    paris = period_containing(WEEK, datetime(2026, 10, 21).date(), "Europe/Paris")
    # Summer time ends inside that week (Sunday 25 October): +02:00 at its start, +01:00 after.
    assert paris.start.utcoffset() == timedelta(hours=2)
    assert paris.end.utcoffset() == timedelta(hours=1)
    assert period_containing(MONTH, datetime(2026, 3, 9).date()).previous().key == "2026-02-01"
    with pytest.raises(PeriodError, match="unknown timezone"):
        period_containing(WEEK, datetime(2026, 3, 9).date(), "Mars/Olympus")


def test_operations_figures_match_the_rows(seeded, report):
    mine = [i for i in seeded.incidents if i["tenant"] == TENANT]
    period = [i for i in mine if _in_week(i)]
    fps = {i["fingerprint"] for i in period}
    pages = [
        n
        for n in seeded.notifications
        if n["fingerprint"] in fps and n["event"] != "resolve" and n["status"] == "sent"
    ]
    business = {
        i["fingerprint"]
        for i in period
        if i["started_at"].weekday() < 5 and 8 <= i["started_at"].hour < 18
    }
    acked = [
        _minutes(i["acknowledged_at"], i["started_at"]) for i in period if i["acknowledged_at"]
    ]
    resolved = [_minutes(i["resolved_at"], i["started_at"]) for i in period if i["resolved_at"]]
    ops = report["sections"]["operations"]
    assert ops["figures"] == {
        "incidents": len(period),
        "critical": sum(i["severity"] == "critical" for i in period),
        "pages": len(pages),
        "off_hours_pages": sum(n["fingerprint"] not in business for n in pages),
        "mtta_median_minutes": float(np.median(acked)),
        "mttr_median_minutes": float(np.median(resolved)),
        "still_open": sum(i["resolved_at"] is None for i in mine),
        "false_positives": sum(i["feedback"] == "false_positive" for i in period),
    }
    assert ops["mttr_minutes"]["p90"] == round(float(np.percentile(resolved, 90)), 1)
    before = [i for i in mine if WEEK_START - timedelta(days=7) <= i["started_at"] < WEEK_START]
    assert ops["change"]["incidents"] == len(period) - len(before)
    noisiest = ops["noisiest_series"][0]
    # Incident 4 starts 20 minutes after incident 1 of the same series ended: one flap; it is
    # the false positive among that series' three incidents.
    assert noisiest == {
        "series": f"{TENANT}/api/error_rate",
        "incidents": 3,
        "flaps": 1,
        "false_positive_share": round(1 / 3, 3),
    }


def test_service_health_is_request_weighted_against_the_slo(seeded, report):
    rows = seeded.metrics[
        (seeded.metrics["tenant"] == TENANT)
        & (seeded.metrics["service"] == "api")
        & (seeded.metrics["ts"] >= WEEK_START)
        & (seeded.metrics["ts"] < WEEK_END)
    ]
    wide = rows.pivot(index="ts", columns="metric", values="value")
    errors = float((wide["error_rate"] * wide["requests_per_second"]).sum())
    ratio = errors / float(wide["requests_per_second"].sum())
    api = next(s for s in report["sections"]["health"]["services"] if s["service"] == "api")
    assert api["error_rate"] == pytest.approx(ratio, abs=1e-6)
    assert api["availability"] == pytest.approx(1 - ratio, abs=1e-6)
    assert api["budget_burn"] == pytest.approx(ratio / (1 - 0.995), abs=1e-3)
    assert api["budget_left"] == pytest.approx(1 - ratio / (1 - 0.995), abs=1e-3)
    p95 = np.percentile(wide["latency_p95_ms"], 95)
    assert api["latency_p95_ms"] == pytest.approx(p95, abs=0.1)
    assert api["met"] is True  # 0.3 % errors within the default 99.5 %, p95 under 400 ms
    custom = parse_config({"slo": {"tenants": {TENANT: {"api": {"availability": 0.999}}}}})
    strict = build_report(seeded.warehouse, report_period(report), tenant=TENANT, config=custom)
    api = next(s for s in strict["sections"]["health"]["services"] if s["service"] == "api")
    assert api["availability_target"] == 0.999 and api["met"] is False
    assert api["budget_left"] == pytest.approx(1 - ratio / 0.001, abs=1e-3)  # overspent


def report_period(report):
    return period_containing(WEEK, datetime.fromisoformat(report["period"]["start"]).date())


def test_data_quality_counts_blocked_days_and_completeness(seeded, report):
    rows = seeded.metrics
    accepted = int(
        ((rows["tenant"] == TENANT) & (rows["ts"] >= WEEK_START) & (rows["ts"] < WEEK_END)).sum()
    )
    quarantined = [q for q in seeded.quarantine if q["tenant"] == TENANT]
    dq = report["sections"]["data_quality"]
    (row,) = dq["tenants"]
    assert row["accepted"] == accepted
    assert row["quarantined"] == len(quarantined) == 7
    assert row["rows_in"] == accepted + len(quarantined)
    assert row["quarantined_by_reason"] == {"value: out of range": 5, "key: duplicate": 2}
    assert row["blocked_partitions"] == [BLOCKED_DAY]
    assert row["completeness"] == pytest.approx(6 / 7, abs=1e-4)  # the blocked day is missing
    assert row["freshness_lag_hours"] == pytest.approx(5 / 60, abs=0.05)  # one 5-min step


def test_detection_precision_agreement_and_labels(seeded, report):
    det = report["sections"]["detection"]
    anomalies = [
        i
        for i in seeded.incidents
        if i["tenant"] == TENANT and _in_week(i) and i["kind"] == "anomaly"
    ]
    fp = sum(i["feedback"] == "false_positive" for i in anomalies)
    assert det["figures"]["precision_feedback"] == round((len(anomalies) - fp) / len(anomalies), 3)
    # Two label windows in the week; the first overlaps incident 1 only.
    assert det["labels"] == {
        "labelled": 2,
        "found": 1,
        "incidents_matching": 1,
        "recall": 0.5,
        "precision": round(1 / len(anomalies), 3),
    }
    flagged = seeded.flagged[seeded.flagged["tenant"] == TENANT]
    members = det["agreement"]["members"]
    assert members["isolation_forest"] == round(
        float((flagged["isolation_forest_score"] >= 0.5).mean()), 3
    )
    assert members["zscore"] == 1.0 and members["prophet"] == 0.0
    assert "lstm" not in members  # it scored nothing
    by_name = {d["detector"]: d for d in det["detectors"]}
    assert by_name["zscore"]["incidents"] == 2 and by_name["prophet"]["incidents"] == 0


def test_forecast_dates_the_capacity_crossing(report):
    cpu = next(
        f
        for f in report["sections"]["forecast"]["series"]
        if f["service"] == "api" and f["metric"] == "cpu_percent"
    )
    assert cpu["source"] == "fitted" and cpu["limit"] == 85.0
    # cpu = 50 + 0.06 per hour since 2026-10-05: 85 % is reached 583.3 hours in.
    expected = datetime(2026, 10, 5, tzinfo=UTC) + timedelta(hours=35 / 0.06)
    crosses = datetime.fromisoformat(cpu["crosses_at"])
    assert abs(crosses - expected) <= timedelta(hours=3)
    assert len(cpu["points"]) == 7 * 24
    assert all(lo <= y <= hi for _, y, lo, hi in cpu["points"])


def test_a_period_without_data_says_so_and_rebuilds_identically(seeded, week):
    empty = period_containing(WEEK, datetime(2027, 3, 1).date())
    report = build_report(seeded.warehouse, empty, tenant=TENANT)
    assert report["has_data"] is False
    assert report["sections"]["operations"]["figures"]["incidents"] == 0
    assert report["sections"]["data_quality"]["tenants"] == []
    once = json.dumps(build_report(seeded.warehouse, week, labels_path=seeded.labels_path))
    twice = json.dumps(build_report(seeded.warehouse, week, labels_path=seeded.labels_path))
    assert once == twice


def test_bad_report_settings_stop_with_one_line():
    with pytest.raises(ReportConfigError, match=r"slo.default.availability: 1.5 must be"):
        parse_config({"slo": {"default": {"availability": 1.5}}})
    with pytest.raises(ReportConfigError, match="unknown key 'slos'"):
        parse_config({"slos": {}})
    assert ReportConfig().capacity_limit("x", "api", "cpu_percent") == 85.0


class FakeRegistry:
    """Versions as the MLflow registry holds them, and a Prophet champion that forecasts."""

    def __init__(self, champion=None):
        self.champion = champion

    def versions(self, tenant):
        def v(kind, version, **tags):
            return {
                "tenant": tenant,
                "kind": kind,
                "version": version,
                "created": None,
                "tags": tags,
            }

        return [
            # Judged on a window that ended inside the week: promoted there.
            v(
                "zscore",
                2,
                **{
                    "validation.window_end": "2026-10-24T00:00:00+00:00",
                    "promotion.decision": "promoted",
                    "promotion.reasons": "event_f1 0.91 >= 0.88",
                    "validation.event_f1": "0.91",
                },
            ),
            v(
                "lstm",
                3,
                **{
                    "validation.window_end": "2026-10-26T00:00:00+00:00",
                    "promotion.decision": "rejected",
                    "promotion.reasons": "event_f1 0.50 < 0.62",
                },
            ),
            # The week after: not in this report, so re-building the week later changes nothing.
            v("zscore", 3, **{"validation.window_end": "2026-11-02T00:00:00+00:00"}),
            v(
                "zscore",
                1,
                **{
                    "data.window_end": "2026-10-01T00:00:00+00:00",
                    "rollback.rolled_back_at": "2026-10-22T09:00:00+00:00",
                    "rollback.reason": "noisy after deploy",
                },
            ),
        ]

    def prophet_champion(self, tenant):
        return self.champion


class FlatForecaster:
    def __init__(self, column="api/cpu_percent"):
        self.column = column
        self.columns = [column]

    def forecast(self, start, end):
        ts = pd.date_range(start, end, freq="5min", tz="UTC")
        return pd.DataFrame(
            {
                "ts": ts,
                "column": self.column,
                "yhat": 90.0,
                "yhat_lower": 88.0,
                "yhat_upper": 92.0,
            }
        )


class DetectorSetLike:
    """The shape the pipeline registers: one detector per (tenant, service), metric columns."""

    def __init__(self):
        self.detectors = {(TENANT, "api"): FlatForecaster("cpu_percent")}


@pytest.mark.parametrize("detector", [FlatForecaster(), DetectorSetLike()])
def test_models_and_champion_forecast_from_the_registry(seeded, week, detector):
    champion = {"detector": detector, "version": 4}
    report = build_report(seeded.warehouse, week, tenant=TENANT, registry=FakeRegistry(champion))
    models = report["sections"]["models"]
    assert [(e["kind"], e["version"], e["event"]) for e in models["events"]] == [
        ("zscore", 1, "rolled_back"),
        ("zscore", 2, "promoted"),
        ("lstm", 3, "rejected"),
    ]
    assert models["figures"] == {"retrains": 2, "promotions": 1, "rejections": 1, "rollbacks": 1}
    assert models["events"][1]["reasons"] == "event_f1 0.91 >= 0.88"
    series = {(f["service"], f["metric"]): f for f in report["sections"]["forecast"]["series"]}
    cpu = series[("api", "cpu_percent")]
    assert cpu["source"] == "prophet v4" and cpu["crosses_at"] == WEEK_END.isoformat()
    assert series[("search", "cpu_percent")]["source"] == "fitted"  # the champion lacks it


def test_precision_from_feedback_is_blank_until_an_operator_reviews_an_incident():
    from monitoring_pipelines.reports.sections.detection import feedback_precision

    assert feedback_precision(incidents=4, false_positives=0, reviewed=0) is None
    assert feedback_precision(incidents=4, false_positives=1, reviewed=1) == 0.75
    assert feedback_precision(incidents=0, false_positives=0, reviewed=0) is None
