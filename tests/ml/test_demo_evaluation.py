"""The demo's measurement as the pipeline runs: thresholds and learned weights per tenant."""

import numpy as np
import pandas as pd

from monitoring_pipelines.ml.demo_evaluation import measure_members
from monitoring_pipelines.ml.evaluation import parse_windows

START = pd.Timestamp("2026-01-05", tz="UTC")
TRAIN_END, VAL_END = START + pd.Timedelta(days=7), START + pd.Timedelta(days=14)
INDEX = pd.date_range(START, periods=21 * 288, freq="5min")


def incidents(tenant: str, column: str) -> list[list[pd.Timestamp]]:
    """One incident in the validation week and one in the test week, different per series."""
    offset = (len(tenant) * 7 + len(column) * 3) % 40
    return [
        [day + pd.Timedelta(hours=5 + offset % 12), day + pd.Timedelta(hours=6 + offset % 12)]
        for day in (TRAIN_END + pd.Timedelta(days=2), VAL_END + pd.Timedelta(days=3))
    ]


def member_scores():
    rng = np.random.default_rng(3)
    good, noisy, labels = {}, {}, {}
    for tenant in ("acme", "globex"):
        key, columns = (tenant, "api"), ["latency", "errors"]
        signal = rng.uniform(0.0, 0.3, (len(INDEX), 2))
        for j, column in enumerate(columns):
            windows = incidents(tenant, column)
            labels[f"{tenant}/api/{column}"] = [[str(a), str(b)] for a, b in windows]
            for a, b in windows:
                signal[(a <= INDEX) & (b >= INDEX), j] = 0.97
        good[key] = pd.DataFrame(signal, index=INDEX, columns=columns)
        # Fires at random, as often as the good member fires on incidents: it can only hurt.
        junk = rng.uniform(0.0, 0.3, (len(INDEX), 2))
        junk[rng.random((len(INDEX), 2)) < 0.004] = 0.97
        noisy[key] = pd.DataFrame(junk, index=INDEX, columns=columns)
    return {"zscore": good, "isolation_forest": noisy}, parse_windows(labels)


def test_weights_are_learned_per_tenant_and_a_member_that_hurts_gets_zero():
    scores, windows = member_scores()
    result = measure_members(
        scores, windows, train_end=TRAIN_END, val_end=VAL_END, learn=["zscore", "isolation_forest"]
    )
    assert set(result.learned) == {"acme", "globex"}
    for combiner in result.learned.values():
        weights = dict(combiner.weights)
        assert combiner.rule == "weighted_mean"
        assert weights["isolation_forest"] == 0.0 and weights["zscore"] > 0
    learned = result.test.loc["ensemble:learned"]
    assert learned["windows"] == 4 and learned["detected"] == 4 and learned["false_alerts"] == 0
    # The noisy member drags an equal-weight mean down and raises false alarms of its own.
    assert result.test.loc["isolation_forest", "false_alerts"] > 0
    # Thresholds are fitted per tenant: every series of both tenants has its own.
    assert set(result.thresholds["ensemble:learned"].per_series) == {
        f"{t}/api/{c}" for t in ("acme", "globex") for c in ("latency", "errors")
    }


def test_without_learn_there_is_no_learned_row():
    scores, windows = member_scores()
    result = measure_members(scores, windows, train_end=TRAIN_END, val_end=VAL_END)
    assert result.learned == {}
    assert not any(name.endswith(":learned") for name in result.test.index)
