"""Staging files: every row accounted for, nothing duplicated, failures recorded once."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitoring_pipelines.ingest import stage_file
from monitoring_pipelines.sources.files import InputFileError

BAD = Path(__file__).parent / "data" / "bad"
EARLIEST = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 1, tzinfo=UTC)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_rows_in_equal_staged_plus_quarantined_and_restaging_adds_nothing(warehouse, tmp_path):
    path = _write(
        tmp_path / "drop" / "m.csv",
        "tenant,service,metric,ts,value\n"
        "acme,api,cpu_percent,2026-10-01T00:00:00Z,10\n"
        "acme,api,cpu_percent,2026-10-01T00:05:00+02:00,abc\n"
        "acme,api,cpu_percent,not-a-time,11\n"
        "globex,api,cpu_percent,2026-10-02T00:00:00Z,12\n",
    )
    first = stage_file(warehouse, path, root=tmp_path / "drop", earliest=EARLIEST, now=NOW)
    assert (first.rows_in, first.staged, first.quarantined) == (4, 2, 2)
    assert first.partitions == (("2026-10-01", "acme"), ("2026-10-02", "globex"))
    # Staged but not yet gated (a crash would leave it so): staging is not redone, the gate is.
    again = stage_file(warehouse, path, root=tmp_path / "drop", earliest=EARLIEST, now=NOW)
    assert again.resumed and not again.skipped and again.partitions == first.partitions
    assert warehouse.count("landing") == 2
    warehouse.mark_ingested("m.csv")
    done = stage_file(warehouse, path, root=tmp_path / "drop", earliest=EARLIEST, now=NOW)
    assert done.skipped and done.partitions == first.partitions
    forced = stage_file(
        warehouse, path, root=tmp_path / "drop", earliest=EARLIEST, now=NOW, force=True
    )
    assert not forced.skipped
    assert warehouse.count("landing") == 2
    assert warehouse.count("quarantine", stage="parse") == 2
    reasons = set(warehouse.read_quarantine(source="m.csv")["field"])
    assert reasons == {"value", "ts"}


def test_a_changed_file_replaces_its_earlier_rows(warehouse, tmp_path):
    path = _write(
        tmp_path / "m.csv",
        "tenant,service,metric,ts,value\n"
        "acme,api,cpu_percent,2026-10-01T00:00:00Z,10\n"
        "acme,api,cpu_percent,2026-10-01T00:05:00Z,11\n",
    )
    stage_file(warehouse, path, root=tmp_path, earliest=EARLIEST, now=NOW)
    _write(path, "tenant,service,metric,ts,value\nacme,api,cpu_percent,2026-10-01T00:00:00Z,99\n")
    result = stage_file(warehouse, path, root=tmp_path, earliest=EARLIEST, now=NOW)
    assert not result.skipped
    landed = warehouse.read_records("landing", source="m.csv")
    assert landed["value"].tolist() == [99.0]


def test_a_shortened_file_leaves_every_day_it_touched_pending(warehouse, tmp_path):
    path = _write(
        tmp_path / "m.csv",
        "tenant,service,metric,ts,value\n"
        "acme,api,cpu_percent,2026-10-01T00:00:00Z,10\n"
        "acme,api,cpu_percent,2026-10-02T00:00:00Z,11\n",
    )
    stage_file(warehouse, path, root=tmp_path, earliest=EARLIEST, now=NOW)
    _write(path, "tenant,service,metric,ts,value\nacme,api,cpu_percent,2026-10-01T00:00:00Z,9\n")
    result = stage_file(warehouse, path, root=tmp_path, earliest=EARLIEST, now=NOW)
    assert result.partitions == (("2026-10-01", "acme"),)
    # The day the file no longer has must be gated again, so its old rows go.
    assert result.pending == (("2026-10-01", "acme"), ("2026-10-02", "acme"))


def test_nanosecond_timestamps_are_counted_when_cut_to_microseconds(warehouse, tmp_path):
    path = _write(
        tmp_path / "m.csv",
        "tenant,service,metric,ts,value\n"
        "acme,api,cpu_percent,2026-10-01T00:00:00.123456789Z,10\n"
        "acme,api,cpu_percent,2026-10-01T00:00:01.123456Z,11\n",
    )
    result = stage_file(warehouse, path, root=tmp_path, earliest=EARLIEST, now=NOW)
    assert result.ts_truncated == 1
    landed = warehouse.read_records("landing", source="m.csv")
    assert str(landed["ts"].iloc[0]) == "2026-10-01 00:00:00.123456+00:00"


def test_rows_before_the_first_partition_or_in_the_future_are_quarantined(warehouse, tmp_path):
    path = _write(
        tmp_path / "m.csv",
        "tenant,service,metric,ts,value\n"
        "acme,api,cpu_percent,2025-06-01T00:00:00Z,1\n"
        "acme,api,cpu_percent,2026-10-01T00:00:00Z,2\n"
        "acme,api,cpu_percent,2027-01-01T00:00:00Z,3\n",
    )
    result = stage_file(warehouse, path, root=tmp_path, earliest=EARLIEST, now=NOW)
    assert (result.rows_in, result.staged, result.quarantined) == (3, 1, 2)
    reasons = warehouse.read_quarantine(source="m.csv")["reason"].tolist()
    assert any("before the first partition day 2026-01-01" in r for r in reasons)
    assert any("in the future" in r for r in reasons)


@pytest.mark.parametrize(
    "name", ["empty.csv", "garbage.bin.csv", "truncated.parquet", "missing_columns.csv"]
)
def test_an_unreadable_file_is_refused_in_one_line_and_recorded_as_failed(warehouse, name):
    with pytest.raises(InputFileError) as info:
        stage_file(warehouse, BAD / name, root=BAD, earliest=EARLIEST, now=NOW)
    message = str(info.value)
    assert message.startswith(f"{name}: ") and "\n" not in message
    record = warehouse.read_ingest(name)
    assert record.status == "failed" and record.error == message
    assert warehouse.count("landing") == 0


def test_hostile_names_never_reach_the_landing_table(warehouse):
    result = stage_file(warehouse, BAD / "hostile_names.csv", root=BAD, earliest=EARLIEST, now=NOW)
    landed = warehouse.read_records("landing")
    assert result.quarantined >= 4
    for column in ("tenant", "service", "metric"):
        assert landed[column].str.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*").all()
    assert warehouse.count("landing") + warehouse.count("quarantine") == result.rows_in
