"""Incidents in the warehouse: idempotent by fingerprint, and what people did survives re-runs."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from monitoring_pipelines.alerting import types
from monitoring_pipelines.alerting.incidents import detect_incidents
from monitoring_pipelines.alerting.planning import plan_notifications
from monitoring_pipelines.alerting.policy import TenantSettings, load_policy
from monitoring_pipelines.alerting.store import (
    acknowledge,
    load_states,
    mark_false_positive,
    read_incidents,
    resolve,
    upsert_incidents,
)
from tests.alerting.conftest import score_frame

STRETCHES = {
    ("api", "error_rate"): [("2026-10-05T23:00", "2026-10-06T01:00", 0.9)],
    ("api", "memory_percent"): [("2026-10-05T10:00", "2026-10-05T10:30", 0.9)],
}


def day0():
    return detect_incidents(
        score_frame(STRETCHES), TenantSettings(), run_id="r0", partition_key="2026-10-05|acme"
    )


def day1():
    """The next partition, scored with the previous day as lookback."""
    return detect_incidents(
        score_frame(STRETCHES, periods=576),
        TenantSettings(),
        run_id="r1",
        partition_key="2026-10-06|acme",
        since=datetime(2026, 10, 6, tzinfo=UTC),
    )


def stored(warehouse, fingerprint):
    (state,) = load_states(warehouse, [fingerprint]).values()
    return state


def test_rerunning_a_partition_updates_instead_of_duplicating(warehouse):
    incidents = day0()
    assert upsert_incidents(warehouse, incidents) == {"inserted": 2, "updated": 0, "unchanged": 0}
    assert upsert_incidents(warehouse, incidents) == {"inserted": 0, "updated": 0, "unchanged": 2}
    assert warehouse.count("alerts") == 2

    rows = read_incidents(warehouse)
    assert [s.incident for s in rows] == incidents  # a full round trip, metrics and times included
    night = stored(warehouse, incidents[1].fingerprint).incident
    assert night.status == types.FIRING

    assert upsert_incidents(warehouse, day1())["updated"] == 1
    night = stored(warehouse, night.fingerprint).incident
    assert night.status == types.RESOLVED
    assert night.resolved_at == datetime(2026, 10, 6, 1, 5, tzinfo=UTC)
    assert night.partition_key == "2026-10-06|acme"
    # Re-running yesterday afterwards does not bring the incident back to life.
    assert upsert_incidents(warehouse, day0())["updated"] == 0
    assert stored(warehouse, night.fingerprint).incident.status == types.RESOLVED


def test_acknowledgement_and_feedback_survive_reruns(warehouse):
    upsert_incidents(warehouse, day0())
    night = day0()[1].fingerprint
    state = acknowledge(warehouse, night[:8], by="alice")
    assert (state.status, state.acknowledged_by) == (types.ACKNOWLEDGED, "alice")
    mark_false_positive(warehouse, night, note="deploy, expected")

    upsert_incidents(warehouse, day0())
    state = stored(warehouse, night)
    assert state.status == types.ACKNOWLEDGED
    assert (state.feedback, state.feedback_note) == ("false_positive", "deploy, expected")

    upsert_incidents(warehouse, day1())  # the data says it ended
    state = stored(warehouse, night)
    assert state.status == types.RESOLVED
    assert state.acknowledged_by == "alice"
    assert state.feedback == "false_positive"
    with pytest.raises(ValueError, match="already resolved"):
        acknowledge(warehouse, night, by="bob")


def test_an_incident_resolved_by_hand_stays_resolved(warehouse):
    upsert_incidents(warehouse, day0())
    night = day0()[1].fingerprint
    state = resolve(warehouse, night, by="carol")
    assert (state.status, state.resolved_by) == (types.RESOLVED, "carol")
    assert state.incident.resolved_at is not None
    longer = [replace(i, last_seen_at=i.last_seen_at + timedelta(minutes=5)) for i in day0()]
    upsert_incidents(warehouse, longer)
    assert stored(warehouse, night).status == types.RESOLVED


def test_fingerprints_are_found_by_unique_prefix_with_one_line_errors(warehouse):
    upsert_incidents(warehouse, day0())
    fingerprint = day0()[1].fingerprint
    assert acknowledge(warehouse, fingerprint[:6].upper(), by="dan").fingerprint == fingerprint
    with pytest.raises(LookupError) as caught:
        resolve(warehouse, "0123456789abcdef", by="dan")
    assert str(caught.value) == "no incident with fingerprint '0123456789abcdef'"
    with pytest.raises(ValueError, match="at least 6 characters"):
        resolve(warehouse, fingerprint[:5], by="dan")
    with pytest.raises(LookupError, match="no incident"):
        mark_false_positive(warehouse, "abc%de", note="")
    twin = replace(day0()[1], fingerprint=fingerprint[:6] + "0" * 10)
    upsert_incidents(warehouse, [twin])
    with pytest.raises(LookupError) as caught:
        resolve(warehouse, fingerprint[:6], by="dan")
    assert str(caught.value).startswith(f"fingerprint prefix '{fingerprint[:6]}' is ambiguous")


def test_read_incidents_filters_by_tenant_status_and_time(warehouse):
    other = detect_incidents(
        score_frame(STRETCHES, tenant="globex"), TenantSettings(), run_id="r", partition_key="p"
    )
    upsert_incidents(warehouse, day0() + other)
    assert len(read_incidents(warehouse)) == 4
    assert {s.incident.tenant for s in read_incidents(warehouse, tenant="globex")} == {"globex"}
    firing = read_incidents(warehouse, tenant="acme", status=types.FIRING)
    assert [s.incident.metrics[0].metric for s in firing] == ["error_rate"]
    late = read_incidents(warehouse, since=datetime(2026, 10, 5, 12, tzinfo=UTC))
    assert {s.incident.started_at.hour for s in late} == {23}


def test_writes_join_the_callers_transaction(warehouse):
    with pytest.raises(RuntimeError), warehouse.engine.begin() as conn:
        upsert_incidents(warehouse, day0(), conn=conn)
        assert conn.execute(sa.text("select count(*) from alerts")).scalar_one() == 2
        raise RuntimeError("the outbox write failed")
    assert warehouse.count("alerts") == 0


def test_stored_states_drive_the_next_plan(warehouse, home):
    policy = load_policy()  # the embedded default: everything to the file receiver
    now = datetime(2026, 10, 6, 9, tzinfo=UTC)
    first = day0()
    before = load_states(warehouse, [i.fingerprint for i in first])
    assert [n.event for n in plan_notifications(first, before, policy, now, "http://d")] == [
        "trigger",
        "resolve",
        "trigger",
    ]
    upsert_incidents(warehouse, first)
    acknowledge(warehouse, first[1].fingerprint, by="erin")

    second = day1()
    before = load_states(warehouse, [i.fingerprint for i in second])
    planned = plan_notifications(second, before, policy, now, "http://d")
    assert [(n.event, n.fingerprint) for n in planned] == [("resolve", first[1].fingerprint)]
