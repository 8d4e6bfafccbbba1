"""`monitoring-pipelines backtest` as a user runs it on a folder of their own files."""

import json

import numpy as np
import pandas as pd
import pytest

from monitoring_pipelines.ml.catalogue import KINDS
from monitoring_pipelines.ml.ensemble import DEFAULT_COMBINER, combine_arrays, refractory
from tests.command import run_cli


def _series_file(path, *, spike_at, naive=True, n=3000):
    rng = np.random.default_rng(7)
    ts = pd.date_range("2026-01-01", periods=n, freq="5min", tz=None if naive else "UTC")
    values = 100 + 10 * np.sin(np.arange(n) * 2 * np.pi / 288) + rng.normal(0, 1, n)
    values[spike_at : spike_at + 6] += 60
    frame = pd.DataFrame({"timestamp": ts.astype(str), "value": values})
    # A duplicate and an out-of-order row: both must come back, in input order.
    frame = pd.concat([frame, frame.iloc[[10]], frame.iloc[[5]]], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return frame, ts[spike_at], ts[spike_at + 5]


def test_backtest_writes_one_row_per_input_row_and_an_honest_summary(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    frame, start, end = _series_file(data / "web" / "checkout_latency.csv", spike_at=2500)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"web/checkout_latency.csv": [[str(start), str(end)]]}))
    run = _backtest(
        "--data",
        data,
        "--labels",
        labels,
        "--train-fraction",
        "0.15",
        "--out",
        out,
        "--detectors",
        "isolation_forest",
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    scored = pd.read_csv(out / "web" / "checkout_latency.csv")
    assert list(scored.columns) == [
        "timestamp",
        "value",
        "isolation_forest_score",
        "ensemble_score",
        "is_anomaly",
    ]
    assert len(scored) == len(frame)
    assert np.allclose(scored["value"], frame["value"])
    assert scored["ensemble_score"].dropna().between(0, 1).all()
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["series"]) == ["web/checkout_latency.csv", "overall"]
    assert summary.loc[0, "windows"] == 1
    assert "web/checkout_latency.csv" in run.stdout


def test_backtest_refuses_a_missing_folder_in_one_line(tmp_path):
    run = run_cli("backtest", "--data", tmp_path / "nope", "--out", tmp_path / "out", timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().endswith("nope: no such file or directory")
    assert run.stderr.strip().count("\n") == 0


def _backtest(*args, timeout=120):
    return run_cli("backtest", "--quiet", *args, timeout=timeout)


@pytest.mark.slow
def test_without_detectors_the_backtest_runs_every_kind_and_the_pipelines_ensemble(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    _series_file(data / "checkout.csv", spike_at=1500, n=2000)
    run = _backtest("--data", data, "--out", out, "--max-train-points", 750, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    scored = pd.read_csv(out / "checkout.csv")
    members = [f"{kind}_score" for kind in KINDS]
    assert list(scored.columns) == ["timestamp", "value", *members, "ensemble_score", "is_anomaly"]
    # Every member scored the part after training; the ensemble is the pipeline's rule of them.
    for column in [*members, "ensemble_score"]:
        assert scored[column].iloc[800:].notna().mean() > 0.95, column
    weights = dict(DEFAULT_COMBINER.weights)
    used = [k for k in KINDS if weights.get(k, 1.0) > 0]
    later = scored.iloc[800:].dropna(subset=[f"{k}_score" for k in used])
    assert len(later) > 1000
    assert DEFAULT_COMBINER.rule == "noisy_or"
    quiet = np.prod([(1.0 - later[f"{k}_score"]) ** weights.get(k, 1.0) for k in used], axis=0)
    expected = 1.0 - quiet
    members_of = {k: scored[f"{k}_score"].to_numpy(dtype="float64") for k in KINDS}
    undamped = combine_arrays(members_of, DEFAULT_COMBINER)
    assert np.allclose(undamped[later.index], expected, equal_nan=True)
    # The output is early and once: that ensemble after the refractory step.
    damped = refractory(undamped)
    assert np.allclose(scored["ensemble_score"], damped, equal_nan=True)
    assert (scored["ensemble_score"].iloc[800:] == 0.0).mean() > 0.5


def test_labels_that_match_no_series_are_named_in_one_warning(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    _, start, end = _series_file(data / "web" / "checkout.csv", spike_at=2500)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"checkout.csv": [[str(start), str(end)]]}))
    run = _backtest("--data", data, "--labels", labels, "--out", out, "--detectors", "zscore")
    assert run.returncode == 0, run.stderr[-2000:]
    warning = [line for line in run.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1
    assert "'checkout.csv'" in warning[0] and "'web/checkout.csv'" in warning[0]


def test_a_missing_or_malformed_labels_file_is_refused_in_one_line_naming_it(tmp_path):
    data = tmp_path / "data"
    _series_file(data / "s.csv", spike_at=2500)
    broken = tmp_path / "broken.json"
    broken.write_text('{"s.csv": [["2026-01-01"')
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"s.csv": "2026-01-01"}')
    for labels, reason in (
        (tmp_path / "missing.json", "labels file not found"),
        (broken, "not a JSON labels file"),
        (wrong, "expected a list of [start, end] pairs"),
    ):
        run = _backtest("--data", data, "--labels", labels, "--out", tmp_path / "out")
        assert run.returncode == 2, run.stderr
        line = run.stderr.strip()
        assert line.count("\n") == 0
        assert str(labels) in line and reason in line


def test_an_unknown_detector_is_refused_in_one_line(tmp_path):
    run = _backtest("--data", tmp_path, "--out", tmp_path / "out", "--detectors", "zscore,arima")
    assert run.returncode == 2
    assert "unknown detector kind arima; choose from" in run.stderr.strip()
    assert run.stderr.strip().count("\n") == 0
