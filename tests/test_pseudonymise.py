"""Personal tags are pseudonymised before anything is written: the raw value never reaches the
warehouse (landing or quarantine), the same value gives the same pseudonym under one key and a
different one under another, and the key never shows in logs."""

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from monitoring_pipelines.ingest import stage_file
from monitoring_pipelines.sources.pseudonyms import PseudonymKeyMissing, from_environment
from monitoring_pipelines.warehouse import metadata

EARLIEST = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 1, tzinfo=UTC)
KEY = "k3y-that-must-never-leak-7f1c"
ALICE = "alice@example.org"
CSV = (
    "tenant,service,metric,ts,value,email,user_id,region\n"
    f"acme,api,logins,2026-10-01T00:00:00Z,1,{ALICE},u-1001,eu\n"
    f"acme,api,logins,2026-10-01T00:05:00Z,2,{ALICE},u-1001,eu\n"
    "acme,api,logins,2026-10-01T00:10:00Z,3,bob@example.org,u-1002,eu\n"
    f"acme,api,logins,2026-10-01T00:15:00Z,abc,{ALICE},u-1001,eu\n"
)


def _every_text(engine) -> str:
    with engine.connect() as conn:
        return "\n".join(
            repr(row) for table in metadata.sorted_tables for row in conn.execute(sa.select(table))
        )


def _stage(warehouse, tmp_path: Path):
    path = tmp_path / "drop" / "logins.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(CSV)
    return stage_file(
        warehouse, path, root=tmp_path / "drop", earliest=EARLIEST, now=NOW, force=True
    )


def test_personal_tags_never_reach_the_warehouse_and_pseudonyms_are_stable_per_key(
    warehouse, tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("MONITORING_PERSONAL_TAGS", "email,user_id")
    monkeypatch.setenv("MONITORING_PSEUDONYM_KEY", KEY)
    caplog.set_level(logging.DEBUG)

    result = _stage(warehouse, tmp_path)

    assert (result.staged, result.quarantined) == (3, 1)
    stored = _every_text(warehouse.engine)
    for raw in (ALICE, "bob@example.org", "u-1001", "u-1002", KEY):
        assert raw not in stored
    tags = [json.loads(t) for t in warehouse.read_records("landing")["tags"]]
    assert tags[0] == tags[1]  # same person, same pseudonym
    assert tags[0]["email"] != tags[2]["email"]
    assert tags[0]["email"].startswith("ps:") and tags[0]["region"] == "eu"
    (quarantined,) = warehouse.read_quarantine()["raw"]
    assert json.loads(quarantined)["email"] == tags[0]["email"]

    monkeypatch.setenv("MONITORING_PSEUDONYM_KEY", "another-key")
    _stage(warehouse, tmp_path)
    other = json.loads(warehouse.read_records("landing")["tags"].iloc[0])
    assert other["email"].startswith("ps:") and other["email"] != tags[0]["email"]
    assert KEY not in caplog.text and ALICE not in caplog.text


def test_personal_tags_without_a_key_are_refused_in_one_line_before_anything_is_written(
    warehouse, tmp_path, monkeypatch
):
    monkeypatch.setenv("MONITORING_PERSONAL_TAGS", "email")
    monkeypatch.delenv("MONITORING_PSEUDONYM_KEY", raising=False)
    with pytest.raises(PseudonymKeyMissing) as refused:
        _stage(warehouse, tmp_path)
    assert "\n" not in str(refused.value)
    assert "MONITORING_PSEUDONYM_KEY is not set" in str(refused.value)
    assert warehouse.count("landing") == 0 and warehouse.count("ingests") == 0


def test_the_key_never_shows_in_the_stage_run_or_its_logs(home, tmp_path, monkeypatch):
    import dagster as dg

    from monitoring_pipelines.jobs import stage_file_job
    from monitoring_pipelines.resources import PipelineSettingsResource, WarehouseResource

    monkeypatch.setenv("MONITORING_PERSONAL_TAGS", "email,user_id")
    monkeypatch.setenv("MONITORING_PSEUDONYM_KEY", KEY)
    drop = home / "drop"
    drop.mkdir(parents=True)
    (drop / "logins.csv").write_text(CSV)
    instance = dg.DagsterInstance.ephemeral()
    result = stage_file_job.execute_in_process(
        run_config={"ops": {"stage_file_op": {"config": {"path": str(drop / "logins.csv")}}}},
        resources={
            "warehouse": WarehouseResource(url=f"sqlite:///{home / 'warehouse.db'}"),
            "pipeline": PipelineSettingsResource(
                home=str(home), drop_dir=str(drop), start_date="2026-01-01"
            ),
        },
        instance=instance,
    )
    assert result.success
    logs = "\n".join(repr(e) for e in instance.all_logs(result.run_id))
    assert "logins.csv" in logs and KEY not in logs and ALICE not in logs
    assert KEY not in repr(from_environment())
