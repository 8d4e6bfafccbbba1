"""Declarative automation: which tenant-days Dagster scores and alerts on its own, tick by tick."""

import dagster as dg
import pytest

from monitoring_pipelines.definitions import build_defs
from monitoring_pipelines.partitions import TENANTS, tenant_day_key
from monitoring_pipelines.settings import load_settings

SCORES = dg.AssetKey("anomaly_scores")
ALERTS = dg.AssetKey("alerts")
CLEAN = dg.AssetKey("clean_metrics")
DAYS = ["2026-10-01", "2026-10-02", "2026-10-03", "2026-10-04"]


@pytest.fixture
def ticks(home):
    """A function that reports materializations, then runs one automation tick and returns the
    requested partitions of clean_metrics, anomaly_scores and alerts as
    ``{asset: sorted dates}``."""
    defs = build_defs(load_settings())
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(TENANTS, ["acme"])
        state = {"cursor": None}

        def tick(*materialized: tuple[str, str | None]):
            for asset, day in materialized:
                partition = "acme" if day is None else tenant_day_key(day, "acme")
                instance.report_runless_asset_event(
                    dg.AssetMaterialization(asset, partition=partition)
                )
            result = dg.evaluate_automation_conditions(defs, instance, cursor=state["cursor"])
            state["cursor"] = result.cursor
            return {
                key.path[-1]: sorted(
                    dg.MultiPartitionKey.from_str(str(k)).keys_by_dimension["date"]
                    if isinstance(k, dg.MultiPartitionKey)
                    else str(k).split("|")[0]
                    for k in result.get_requested_partitions(key)
                )
                for key in (CLEAN, SCORES, ALERTS)
                if result.get_num_requested(key)
            }

        yield tick


def test_history_and_retraining_start_nothing_new_days_are_scored_then_alerted(ticks):
    # What the CLI left before the daemon's first tick: gridded, trained, scored. Nothing starts.
    assert ticks(("clean_metrics", DAYS[0]), ("detection_policy", None)) == {}
    # A new day is gridded: scored and alerted once, in one run.
    new_day = {"anomaly_scores": [DAYS[1]], "alerts": [DAYS[1]]}
    assert ticks(("clean_metrics", DAYS[1])) == new_day
    assert ticks() == {}
    assert ticks(("anomaly_scores", DAYS[1]), ("alerts", DAYS[1])) == {}
    # A retrain refits the tenant's policy: the history is not re-scored.
    assert ticks(("detection_policy", None)) == {}
    # Late data for a past day: that day is scored again, once.
    assert ticks(("clean_metrics", DAYS[0])) == {"anomaly_scores": [DAYS[0]], "alerts": [DAYS[0]]}
    assert ticks() == {}
    # Scores rewritten by hand (the CLI's scoring_job): only the alerts follow.
    assert ticks(("anomaly_scores", DAYS[2])) == {"alerts": [DAYS[2]]}


def test_days_a_blocked_neighbour_kept_from_the_grid_are_gridded_once(ticks):
    assert ticks(("detection_policy", None)) == {}
    # An ingest run gates and grids its days: nothing left for the grid.
    assert ticks(("raw_metrics", DAYS[1]), ("clean_metrics", DAYS[1])) == {
        "anomaly_scores": [DAYS[1]],
        "alerts": [DAYS[1]],
    }
    # A ranged run whose DAYS[3] was blocked: DAYS[2] passed the gate and was not gridded.
    assert ticks(("raw_metrics", DAYS[2])) == {"clean_metrics": [DAYS[2]]}
    assert ticks() == {}
    # Once gridded, it is scored like any new day.
    assert ticks(("clean_metrics", DAYS[2])) == {"anomaly_scores": [DAYS[2]], "alerts": [DAYS[2]]}


def test_a_day_handled_by_the_cli_between_two_ticks_is_not_redone(ticks):
    assert ticks(("detection_policy", None)) == {}
    # The CLI gridded, scored and alerted a day between two ticks: nothing to do.
    assert (
        ticks(
            ("clean_metrics", DAYS[2]),
            ("anomaly_scores", DAYS[2]),
            ("alerts", DAYS[2]),
        )
        == {}
    )


def test_a_day_gridded_before_the_tenant_has_a_champion_waits_for_it(home):
    defs = build_defs(load_settings())
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(TENANTS, ["acme"])
        first = dg.evaluate_automation_conditions(defs, instance)
        key = tenant_day_key(DAYS[3], "acme")
        instance.report_runless_asset_event(dg.AssetMaterialization("clean_metrics", partition=key))
        waiting = dg.evaluate_automation_conditions(defs, instance, cursor=first.cursor)
        assert waiting.get_num_requested(SCORES) == 0
        instance.report_runless_asset_event(
            dg.AssetMaterialization("detection_policy", partition="acme")
        )
        trained = dg.evaluate_automation_conditions(defs, instance, cursor=waiting.cursor)
        assert trained.get_requested_partitions(SCORES) == {key}


def test_the_automation_sensor_runs_by_default_on_a_fresh_home(home):
    sensor = build_defs(load_settings()).resolve_sensor_def("automation_condition_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
