"""The regular grid: gaps marked, never invented; duplicates averaged; no future steps."""

from datetime import UTC, datetime

import pandas as pd

from monitoring_pipelines.grid import regular_grid

START = datetime(2026, 10, 1, tzinfo=UTC)
END = datetime(2026, 10, 2, tzinfo=UTC)


def _frame(points):
    return pd.DataFrame(
        {
            "tenant": "acme",
            "service": "api",
            "metric": [m for m, _, _ in points],
            "ts": pd.to_datetime([t for _, t, _ in points], utc=True),
            "value": [v for _, _, v in points],
        }
    )


def test_every_series_gets_one_row_per_step_and_gaps_are_empty():
    frame = _frame(
        [
            ("cpu_percent", "2026-10-01T00:00:00Z", 10.0),
            ("cpu_percent", "2026-10-01T00:10:00Z", 30.0),
        ]
    )
    grid, summary = regular_grid(frame, start=START, end=END, resolution_seconds=300)
    assert len(grid) == 288 and summary.steps == 288
    assert grid["ts"].is_monotonic_increasing
    second = grid.iloc[1]
    assert bool(second["is_gap"]) and pd.isna(second["value"]) and second["n_raw"] == 0
    assert summary.gaps == 286
    assert grid.loc[~grid["is_gap"], "value"].tolist() == [10.0, 30.0]


def test_points_in_one_step_become_their_mean_and_are_counted():
    frame = _frame(
        [
            ("cpu_percent", "2026-10-01T00:00:00Z", 10.0),
            ("cpu_percent", "2026-10-01T00:02:30Z", 20.0),
            ("cpu_percent", "2026-10-01T00:04:59Z", 30.0),
        ]
    )
    grid, summary = regular_grid(frame, start=START, end=END, resolution_seconds=300)
    first = grid.iloc[0]
    assert first["value"] == 20.0 and first["n_raw"] == 3
    assert summary.merged == 2


def test_expected_series_that_sent_nothing_are_all_gaps():
    frame = _frame([("cpu_percent", "2026-10-01T00:00:00Z", 1.0)])
    grid, _ = regular_grid(
        frame, start=START, end=END, resolution_seconds=3600, series=[("acme", "api", "error_rate")]
    )
    silent = grid[grid["metric"] == "error_rate"]
    assert len(silent) == 24 and silent["is_gap"].all()


def test_future_steps_of_the_current_day_are_not_emitted():
    frame = _frame([("cpu_percent", "2026-10-01T05:00:00Z", 1.0)])
    until = datetime(2026, 10, 1, 6, 2, tzinfo=UTC)
    grid, _ = regular_grid(frame, start=START, end=END, resolution_seconds=3600, until=until)
    assert grid["ts"].max() == pd.Timestamp("2026-10-01T06:00:00Z")
    assert len(grid) == 7


def test_empty_input_gives_an_empty_grid():
    grid, summary = regular_grid(_frame([]), start=START, end=END, resolution_seconds=300)
    assert grid.empty and summary.steps == 0
