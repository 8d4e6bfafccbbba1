"""The backtest on a pool of processes: the same output as one process, in the same order."""

import os

import pandas as pd
import pytest

from monitoring_pipelines.ml.backtest import run_backtest
from monitoring_pipelines.ml.backtest_rows import Group
from monitoring_pipelines.ml.backtest_workers import MIN_PARALLEL_CELLS, worker_count
from monitoring_pipelines.ml.catalogue import KINDS, detector_class
from monitoring_pipelines.ml.zscore import ZScoreDetector
from monitoring_pipelines.sources.demo import DemoConfig, generate


def records(services: tuple[str, ...], days: int = 4):
    data = generate(
        DemoConfig(
            tenants=("acme",), services=services, days=days, bad_rows=False, broken_partition=False
        )
    )
    # Rows in no particular order: the output must still follow the input row by row.
    return data.records.sample(frac=1.0, random_state=1).reset_index(drop=True), data.labels


def assert_same(serial, parallel) -> None:
    pd.testing.assert_frame_equal(serial.rows, parallel.rows, check_exact=True)
    pd.testing.assert_frame_equal(serial.summary, parallel.summary, check_exact=True)
    assert list(serial.series) == list(parallel.series)
    for name, frame in serial.series.items():
        pd.testing.assert_frame_equal(frame, parallel.series[name], check_exact=True)
    assert serial.skipped == parallel.skipped


def test_two_processes_give_exactly_the_serial_output():
    data, labels = records(("api", "playback", "recommendations"))
    kinds = [k for k in KINDS if k not in ("lstm", "prophet")]
    options = {"detectors": [detector_class(k) for k in kinds], "progress": False}
    serial = run_backtest(data, labels, workers=1, **options)
    parallel = run_backtest(data, labels, workers=2, **options)
    assert set(serial.detectors) == set(kinds)
    assert serial.rows[["isolation_forest_score", "zscore_score"]].notna().any().all()
    assert_same(serial, parallel)


@pytest.mark.slow
def test_every_kind_on_two_processes_gives_exactly_the_serial_output():
    # The LSTM's compiled trainers are reused from group to group in one process and built anew
    # in each worker; Prophet and the LSTM are seeded per fit, so neither changes a score.
    data, labels = records(("api", "playback"), days=3)
    serial = run_backtest(data, labels, train_fraction=0.5, workers=1, progress=False)
    parallel = run_backtest(data, labels, train_fraction=0.5, workers=2, progress=False)
    assert serial.detectors == list(KINDS)
    assert serial.rows[[f"{k}_score" for k in KINDS]].notna().any().all()
    assert_same(serial, parallel)


def group(steps: int, key: str = "g") -> Group:
    frame = pd.DataFrame({"m": range(steps)}, index=pd.date_range("2026-01-01", periods=steps))
    return Group((key,), frame, {"m": f"{key}/m"}, steps // 2)


def test_a_small_backtest_stays_in_one_process_and_a_big_one_uses_the_cores():
    small = [group(100, "a"), group(100, "b")]
    assert worker_count(small, [ZScoreDetector], None) == 1
    big = [group(MIN_PARALLEL_CELLS, "a"), group(MIN_PARALLEL_CELLS, "b")]
    assert worker_count(big, [ZScoreDetector], None) == min(2, len(os.sched_getaffinity(0)))
    # A detector made by a lambda cannot be sent to another process.
    assert worker_count(big, [lambda: ZScoreDetector()], None) == 1
    assert worker_count(big, [ZScoreDetector], 1) == 1
    assert worker_count([big[0]], [ZScoreDetector], 4) == 1
    with pytest.raises(ValueError, match="workers"):
        worker_count(big, [ZScoreDetector], 0)
