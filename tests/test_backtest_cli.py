"""`monitoring-pipelines backtest` as a user runs it on a folder of their own files."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd


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
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "monitoring_pipelines.cli",
            "backtest",
            "--data",
            str(data),
            "--labels",
            str(labels),
            "--train-fraction",
            "0.15",
            "--out",
            str(out),
            "--detectors",
            "isolation_forest",
            "--quiet",
        ],
        capture_output=True,
        text=True,
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
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "monitoring_pipelines.cli",
            "backtest",
            "--data",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.strip().endswith("nope: no such file or directory")
    assert run.stderr.strip().count("\n") == 0
