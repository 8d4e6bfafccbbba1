"""What the backtest runs by default, and how it reads (or refuses) labels."""

import json

import numpy as np
import pandas as pd
import pytest

from monitoring_pipelines.ml.backtest import run_backtest
from monitoring_pipelines.ml.backtest_io import (
    BacktestInputError,
    read_inputs,
    read_labels,
    unmatched_labels,
)
from monitoring_pipelines.ml.catalogue import KINDS
from monitoring_pipelines.ml.ensemble import DEFAULT_COMBINER


def test_without_detectors_the_backtest_runs_every_kind_and_the_pipelines_ensemble():
    # Too short to train (30 training steps): every kind is named as skipped, nothing is fitted,
    # so this checks the choice of members without training an LSTM or Prophet.
    ts = pd.date_range("2026-01-05", periods=200, freq="5min").strftime("%Y-%m-%dT%H:%M:%S")
    result = run_backtest({"s": (ts.to_numpy(), np.ones(200))}, progress=False)
    assert result.detectors == list(KINDS)
    assert result.combiner == DEFAULT_COMBINER.for_members(KINDS)
    assert sorted(result.skipped) == sorted(f"s {kind}" for kind in KINDS)


def test_labels_whose_keys_match_no_series_give_one_line_naming_examples_of_both(tmp_path):
    folder = tmp_path / "data" / "web"
    folder.mkdir(parents=True)
    (folder / "checkout.csv").write_text("timestamp,value\n2026-01-01T00:00:00,1\n")
    records = tmp_path / "records.csv"
    records.write_text("tenant,service,metric,ts,value\nacme,api,latency,2026-01-01T00:00:00Z,1\n")
    names = read_inputs(tmp_path / "data").series_names() + read_inputs(records).series_names()
    assert names == ["web/checkout.csv", "acme/api/latency"]
    labels = {"checkout.csv": [], "acme/api/latency": [], "acme/api/errors": []}
    warning = unmatched_labels(labels, names)
    assert warning.count("\n") == 0
    assert warning.startswith("warning: 2 of 3 label keys match no series")
    assert "'checkout.csv'" in warning and "'acme/api/errors'" in warning
    assert "'web/checkout.csv'" in warning and "'acme/api/latency'" in warning
    assert unmatched_labels({"web/checkout.csv": []}, names) is None
    assert "nothing (no series read)" in unmatched_labels({"x": []}, [])


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (None, "labels file not found"),
        ('{"s.csv": [["2026-01-01"', "not a JSON labels file"),
        ("", "not a JSON labels file"),
        ('[["2026-01-01", "2026-01-02"]]', "labels must be a JSON object"),
        ('{"s.csv": "2026-01-01"}', "expected a list of [start, end] pairs"),
        ('{"s.csv": [["2026-01-01"]]}', "expected a list of [start, end] pairs"),
    ],
)
def test_a_missing_or_malformed_labels_file_is_one_line_naming_it(tmp_path, text, reason):
    path = tmp_path / "labels.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(BacktestInputError) as raised:
        read_labels(path)
    message = str(raised.value)
    assert message.count("\n") == 0
    assert message.startswith(f"{path}: ") and reason in message


def test_a_well_formed_labels_file_is_read_as_written(tmp_path):
    path = tmp_path / "labels.json"
    labels = {"web/checkout.csv": [["2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"]]}
    path.write_text(json.dumps(labels))
    assert read_labels(path) == labels
