"""The alerting steps as the jobs run them, on SQLite and the real PostgreSQL: adjacent days of a
tenant raised at the same moment (parallel runs) still give one incident and one notification per
receiver and event."""

import threading
from dataclasses import replace
from datetime import timedelta

import pandas as pd

from monitoring_pipelines.alerting import outbox, store, types
from monitoring_pipelines.alerting.policy import default_policy
from monitoring_pipelines.alerting.service import raise_incidents
from tests.assets.test_alerting import DAY1, DAY2, _scores


def test_parallel_runs_on_adjacent_days_raise_each_incident_once(warehouse, home):
    for day in (DAY1, DAY2):
        start = pd.Timestamp(day, tz="UTC")
        warehouse.replace_partition(
            "anomaly_scores", "acme", start, start + pd.Timedelta(days=1), _scores(day)
        )
    # Raised the day after DAY2, within a lookback that keeps both days live: these incidents
    # are paged (trigger and resolve), which is what parallel runs must not duplicate.
    policy = default_policy({})
    policy = replace(policy, defaults=replace(policy.defaults, page_lookback=timedelta(days=3)))
    now = pd.Timestamp(DAY2, tz="UTC") + pd.Timedelta(days=1)
    errors = []

    def run(day):
        start = pd.Timestamp(day, tz="UTC")
        try:
            raise_incidents(
                warehouse,
                policy,
                "acme",
                start,
                start + pd.Timedelta(days=1),
                run_id=f"alerts-{day}",
                partition_key=f"{day}|acme",
                dagster_url="http://dagster.example",
                now=now.to_pydatetime(),
            )
        except Exception as exc:  # collected: a failure in a thread must fail the test
            errors.append(exc)

    for _ in range(3):
        threads = [threading.Thread(target=run, args=(day,)) for day in (DAY1, DAY2, DAY2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    incidents = store.read_incidents(warehouse)
    assert sorted(s.incident.service for s in incidents) == ["api", "recommendations"]
    over_midnight = next(s.incident for s in incidents if s.incident.service == "recommendations")
    assert over_midnight.status == types.RESOLVED
    notes = outbox.read_notifications(warehouse, limit=None)
    events = [(n["fingerprint"], n["receiver"], n["event"]) for n in notes]
    assert len(events) == len(set(events))
    assert (over_midnight.fingerprint, "files", types.RESOLVE) in events
