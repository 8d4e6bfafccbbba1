"""The one catalogue of detector kinds: everything that lists kinds asks it."""

import subprocess
import sys

import pytest

from monitoring_pipelines.ml import registry
from monitoring_pipelines.ml.catalogue import CATALOGUE, KINDS, detector_class, parse_kinds
from monitoring_pipelines.warehouse import anomaly_scores


def test_unknown_detector_kinds_are_refused_in_one_line():
    with pytest.raises(ValueError, match="unknown detector kind 'arima'"):
        detector_class("arima")
    with pytest.raises(ValueError, match="unknown detector kind arima; choose from"):
        parse_kinds("zscore, arima")
    assert parse_kinds(" zscore,lstm,zscore ") == ["zscore", "lstm"]


def test_every_kind_resolves_to_its_detector_and_the_registry_knows_it():
    assert registry.KINDS == KINDS
    assert {"isolation_forest", "lstm", "prophet", "zscore"} <= set(KINDS)
    for kind in KINDS:
        assert detector_class(kind).kind == kind


def test_every_kind_has_its_score_column_training_asset_and_place_in_the_training_job():
    from monitoring_pipelines.definitions import defs

    columns = set(anomaly_scores.columns.keys())
    job = defs.resolve_job_def("training_job")
    selected = {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
    for row in CATALOGUE.values():
        assert row.score_column in columns
        assert defs.resolve_assets_def(row.asset_name).descriptions_by_key
        assert row.asset_name in selected


def test_the_catalogue_imports_no_detector_until_asked():
    code = (
        "import sys; import monitoring_pipelines.ml.catalogue as c; c.detector_class('zscore');"
        "print(sorted(m for m in ('tensorflow', 'prophet', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
