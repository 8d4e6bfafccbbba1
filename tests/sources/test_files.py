"""Metric files: the bad-input corpus, streaming, path naming, tags, fingerprints, time zones."""

import gzip
import hashlib
import json
import os
import shutil
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from monitoring_pipelines.sources import files
from monitoring_pipelines.sources.files import (
    InputFileError,
    ParsedChunk,
    csv_reader,
    file_fingerprint,
    read_metric_file,
    source_name,
)
from monitoring_pipelines.sources.records import FRAME_COLUMNS, QUARANTINE_COLUMNS

BAD = Path(__file__).resolve().parents[1] / "data" / "bad"
REJECTED_COLUMNS = [c for c in QUARANTINE_COLUMNS if c != "stage"]
HEADER = "tenant,service,metric,ts,value\n"


@dataclass(frozen=True)
class Outcome:
    rows: int = 0
    rejected: dict[int, str] = field(default_factory=dict)  # source_row -> field
    error: str | None = None


CORPUS = {
    "good_records.csv": Outcome(rows=4),
    "good_records.parquet": Outcome(rows=4),
    "good_single_series.csv": Outcome(rows=3),
    "missing_columns.csv": Outcome(
        error="missing required column metric (found 'tenant', 'service', 'ts', 'value';"
    ),
    "extra_columns.csv": Outcome(rows=3),
    "wrong_types.csv": Outcome(
        rows=13,
        rejected={
            2: "value",
            3: "ts",
            4: "ts",
            5: "ts",
            6: "ts",
            7: "value",
            8: "value",
            9: "tags",
            10: "tags",
            11: "tenant",
            12: "ts",
        },
    ),
    "nan_inf.csv": Outcome(rows=8),
    "duplicates_out_of_order.csv": Outcome(rows=6),
    "mixed_timezones.csv": Outcome(rows=7),
    "empty.csv": Outcome(error="empty file (0 bytes)"),
    "header_only.csv": Outcome(rows=0),
    "truncated.csv": Outcome(rows=3, rejected={3: "value"}),
    "ragged_rows.csv": Outcome(rows=5, rejected={2: "value", 3: "row", 4: "value"}),
    "unclosed_quote.csv": Outcome(rows=2, rejected={2: "ts"}),
    "garbage.bin.csv": Outcome(error="not a text CSV file (NUL bytes in the first 64 KiB)"),
    "truncated.parquet": Outcome(error="not a valid Parquet file ("),
    "hostile_names.csv": Outcome(
        rows=11,
        rejected={
            1: "tenant",
            2: "service",
            3: "metric",
            4: "tenant",
            5: "tenant",
            6: "tenant",
            7: "tenant",
            8: "tenant",
            9: "tenant",
        },
    ),
}


def read_all(path: Path, **kwargs) -> tuple[pd.DataFrame, pd.DataFrame, list[ParsedChunk]]:
    chunks = list(read_metric_file(path, **kwargs))
    records = [c.records for c in chunks]
    rejected = [c.rejected for c in chunks]
    return (
        pd.concat(records, ignore_index=True) if records else pd.DataFrame(),
        pd.concat(rejected, ignore_index=True) if rejected else pd.DataFrame(),
        chunks,
    )


def error_of(path: Path, **kwargs) -> str:
    with pytest.raises(InputFileError) as info:
        list(read_metric_file(path, **kwargs))
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    assert message.isprintable()
    return message


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


# -- the corpus -----------------------------------------------------------------------------------


def test_corpus_is_complete():
    on_disk = {p.name for p in BAD.iterdir() if p.name != "README.md"}
    assert on_disk == set(CORPUS)
    readme = (BAD / "README.md").read_text()
    for name in CORPUS:
        assert f"`{name}`" in readme


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_outcome(name):
    outcome = CORPUS[name]
    path = BAD / name
    if outcome.error is not None:
        message = error_of(path, root=BAD)
        assert message.startswith(f"{name}: ")
        assert outcome.error in message
        return
    records, rejected, chunks = read_all(path, root=BAD)
    if outcome.rows == 0:
        assert chunks == []
        return
    for chunk in chunks:
        assert list(chunk.records.columns) == list(FRAME_COLUMNS)
        assert list(chunk.rejected.columns) == REJECTED_COLUMNS
    assert len(records) + len(rejected) == outcome.rows
    assert dict(zip(rejected["source_row"], rejected["field"], strict=True)) == outcome.rejected
    kept = sorted(set(range(1, outcome.rows + 1)) - set(outcome.rejected))
    assert sorted(records["source_row"]) == kept
    assert set(records["source"]) | set(rejected["source"]) == {name}
    assert str(records["ts"].dtype) == "datetime64[ns, UTC]"
    assert records["value"].dtype == np.float64
    for row in rejected.itertuples():
        assert row.reason.startswith(f"{row.field}: ")
        assert row.reason.isprintable() and len(row.reason) < 240
        assert isinstance(json.loads(row.raw), dict)


def test_wrong_types_reasons():
    _, rejected, _ = read_all(BAD / "wrong_types.csv", root=BAD)
    reasons = dict(zip(rejected["source_row"], rejected["reason"], strict=True))
    assert reasons == {
        2: "value: 'abc' is not a number",
        3: "ts: cannot parse 'yesterday' as a timestamp",
        4: "ts: cannot parse '2026-13-45' as a timestamp",
        5: "ts: cannot parse 'now' as a timestamp",
        6: "ts: '3000-01-01T00:00:00Z' is outside the supported range 1677-09-22..2262-04-11",
        7: "value: '1,5' is not a number",
        8: "value: '0x10' is not a number",
        9: 'tags: \'["not", "an object"]\' is not a JSON object',
        10: "tags: '{broken json' is not a JSON object",
        11: "tenant: missing",
        12: "ts: missing",
    }
    row = rejected.set_index("source_row").loc[3]
    assert row["tenant"] == "acme" and row["ts"] == "yesterday"
    assert json.loads(row["raw"]) == {
        "tenant": "acme",
        "service": "api",
        "metric": "latency_p95_ms",
        "ts": "yesterday",
        "value": "118.0",
        "tags": "",
    }


def test_hostile_names_are_quoted_on_one_line():
    records, rejected, _ = read_all(BAD / "hostile_names.csv", root=BAD)
    reasons = dict(zip(rejected["source_row"], rejected["reason"], strict=True))
    assert reasons[1].startswith('tenant: "acme\'; DROP TABLE metrics;--" is not a valid name')
    assert reasons[2].startswith("service: '<script>alert(1)</script>' is not a valid name")
    assert reasons[3].startswith("metric: '../../etc/passwd' is not a valid name")
    assert reasons[4].startswith(f"tenant: '{'t' * 60}'... (300 characters) is not")
    assert reasons[5].startswith("tenant: 'acme\\x1b[31mred' is not")
    assert reasons[6].startswith("tenant: 'ac\\u202eme' is not")
    assert reasons[7].startswith("tenant: 'acme\\nevil' is not")
    assert reasons[8].startswith("tenant: '\u0430cme' is not")
    # The quarantine keeps the tenant as received, cut to the width of its column.
    tenants = dict(zip(rejected["source_row"], rejected["tenant"], strict=True))
    assert tenants[4] == "t" * 256
    assert tenants[7] == "acme\nevil"
    assert json.loads(rejected.set_index("source_row").loc[7, "raw"])["tenant"] == "acme\nevil"
    # Blanks around a valid name are not part of it.
    assert records[["tenant", "service", "metric"]].drop_duplicates().values.tolist() == [
        ["acme", "api", "latency_p95_ms"]
    ]


def test_nan_inf_and_blank_values_pass_through():
    records, _, _ = read_all(BAD / "nan_inf.csv", root=BAD)
    np.testing.assert_array_equal(
        records["value"].to_numpy(),
        [np.nan, np.nan, np.inf, -np.inf, np.nan, np.inf, -5.0, 120.5],
    )


def test_mixed_time_zones_are_converted_to_utc():
    records, _, _ = read_all(BAD / "mixed_timezones.csv", root=BAD)
    expected = pd.Timestamp("2026-03-01T10:00:00Z")
    assert records["ts"].tolist() == [expected] * 7
    assert records["value"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]


def test_utc_conversion_exact_instants(tmp_path):
    path = write(
        tmp_path / "zones.csv",
        HEADER
        + "acme,api,m,2026-10-25T02:30:00+02:00,1\n"
        + "acme,api,m,2026-10-25T02:30:00+01:00,2\n"
        + "acme,api,m,2026-12-31T23:59:59.999-00:30,3\n"
        + "acme,api,m,2026-01-01T00:00:00.123456789+14:00,4\n"
        + "acme,api,m,2026-06-01,5\n"
        + "acme,api,m,1700000000.5,6\n"
        + "acme,api,m,-86400,7\n",
    )
    records, rejected, _ = read_all(path)
    assert rejected.empty
    assert records["ts"].tolist() == [
        pd.Timestamp("2026-10-25T00:30:00Z"),
        pd.Timestamp("2026-10-25T01:30:00Z"),
        pd.Timestamp("2027-01-01T00:29:59.999Z"),
        pd.Timestamp("2025-12-31T10:00:00.123456789Z"),
        pd.Timestamp("2026-06-01T00:00:00Z"),
        pd.Timestamp("2023-11-14T22:13:20.5Z"),
        pd.Timestamp("1969-12-31T00:00:00Z"),
    ]


def test_duplicates_and_disorder_are_kept_in_file_order():
    records, _, _ = read_all(BAD / "duplicates_out_of_order.csv", root=BAD)
    assert records["source_row"].tolist() == [1, 2, 3, 4, 5, 6]
    assert records["value"].tolist() == [3.0, 1.0, 2.0, 2.0, 2.5, 9.0]
    assert records["ts"].iloc[5] == pd.Timestamp("2026-03-01T00:00:00Z")


def test_extra_columns_become_tags():
    records, _, _ = read_all(BAD / "extra_columns.csv", root=BAD)
    assert records["tags"].tolist() == [
        '{"env":"prod","host":"api-1","region":"eu-west"}',
        '{"region":"eu-west"}',
        "",
    ]


def test_tags_json_is_canonical_and_combinations_stay_apart(tmp_path):
    path = write(
        tmp_path / "tags.csv",
        "Tenant, Service ,METRIC,ts,value,zone,tags\n"
        'acme,api,m,2026-03-01T00:00:00Z,1,b,"{ ""z"": 1, ""a"": [1, 2] }"\n'
        "acme,api,m,2026-03-01T00:01:00Z,2,a,\n"
        'acme,api,m,2026-03-01T00:02:00Z,3,b,"{}"\n'
        "acme,api,m,2026-03-01T00:03:00Z,4,,\n"
        'acme,api,m,2026-03-01T00:04:00Z,5,a,"{""z"": 1, ""a"": [1, 2]}"\n'
        'acme,api,m,2026-03-01T00:05:00Z,6,b,"{""x"": NaN}"\n',
    )
    records, rejected, _ = read_all(path)
    assert records["tags"].tolist() == [
        '{"a":[1,2],"z":1,"zone":"b"}',
        '{"zone":"a"}',
        '{"zone":"b"}',
        "",
        '{"a":[1,2],"z":1,"zone":"a"}',
    ]
    assert rejected["field"].tolist() == ["tags"]


def test_truncated_row_names_the_missing_field():
    _, rejected, _ = read_all(BAD / "truncated.csv", root=BAD)
    row = rejected.iloc[0]
    assert row["reason"] == "value: missing, the row is truncated (4 of 5 fields)"
    assert row["ts"] == "2026-03-01T00:0"
    assert json.loads(row["raw"]) == {
        "tenant": "acme",
        "service": "api",
        "metric": "latency_p95_ms",
        "ts": "2026-03-01T00:0",
    }


def test_short_row_is_told_from_blank_trailing_fields(tmp_path):
    path = write(
        tmp_path / "short.csv",
        HEADER + "acme,api,m,2026-03-01T00:00:00Z,\nacme,api,m,2026-03-01T00:01:00Z\nacme,api\n",
    )
    records, rejected, _ = read_all(path)
    assert records["source_row"].tolist() == [1]
    assert np.isnan(records["value"].iloc[0])
    assert rejected["reason"].tolist() == [
        "value: missing, the row is truncated (4 of 5 fields)",
        "metric: missing, the row is truncated (2 of 5 fields)",
    ]
    assert rejected["ts"].tolist() == ["2026-03-01T00:01:00Z", None]


def test_ragged_rows_keep_their_numbers():
    records, rejected, _ = read_all(BAD / "ragged_rows.csv", root=BAD)
    assert records["value"].tolist() == [120.5, 119.0]
    reasons = dict(zip(rejected["source_row"], rejected["reason"], strict=True))
    assert reasons == {
        2: "value: missing, the row is truncated (4 of 5 fields)",
        3: "row: more fields than the 5 columns of the header",
        4: "value: 'multi\\nline value' is not a number",
    }


def test_unclosed_quote_rejects_the_rest_of_the_file():
    records, rejected, _ = read_all(BAD / "unclosed_quote.csv", root=BAD)
    assert records["source_row"].tolist() == [1]
    assert rejected["reason"].tolist() == [
        "ts: cut off inside a quoted field, the row is truncated (4 of 5 fields)"
    ]


def test_parquet_reads_like_csv():
    csv_records, _, _ = read_all(BAD / "good_records.csv", root=BAD)
    pq_records, _, _ = read_all(BAD / "good_records.parquet", root=BAD)
    columns = ["tenant", "service", "metric", "ts", "value", "source_row"]
    pd.testing.assert_frame_equal(csv_records[columns], pq_records[columns])
    assert pq_records["tags"].tolist() == ['{"env":"prod"}', "", "", '{"env":"prod"}']


# -- small blocks: records split anywhere between reads -------------------------------------------


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64])
@pytest.mark.parametrize("crlf", [False, True])
@pytest.mark.parametrize(
    "name",
    ["wrong_types.csv", "ragged_rows.csv", "extra_columns.csv", "hostile_names.csv"],
)
def test_block_boundaries_do_not_change_the_result(tmp_path, monkeypatch, name, block, crlf):
    text = (BAD / name).read_bytes()
    if crlf:
        text = text.replace(b"\n", b"\r\n")
    path = write(tmp_path / name, text)
    expected_records, expected_rejected, _ = read_all(path)
    monkeypatch.setattr(csv_reader, "_BLOCK_CHARS", block)
    records, rejected, _ = read_all(path, chunk_rows=2)
    pd.testing.assert_frame_equal(records, expected_records)
    pd.testing.assert_frame_equal(rejected, expected_rejected)


def test_chunks_are_numbered_across_chunk_boundaries():
    for name in ("good_records.csv", "good_records.parquet"):
        _, _, chunks = read_all(BAD / name, root=BAD, chunk_rows=3)
        assert [len(c.records) for c in chunks] == [3, 1]
        assert chunks[1].records["source_row"].tolist() == [4]


# -- file-level errors ----------------------------------------------------------------------------


def test_input_file_error_is_always_one_line():
    assert str(InputFileError("a\nb.csv", "bad\rthing")) == "a\\nb.csv: bad\\rthing"
    assert str(InputFileError("x.csv: cannot read\u2028file")) == "x.csv: cannot read\\u2028file"
    assert isinstance(InputFileError("x.csv", "y"), ValueError)


def test_missing_file(tmp_path):
    message = error_of(tmp_path / "gone.csv", root=tmp_path)
    assert message == "gone.csv: file not found"


def test_unsupported_suffix_and_a_hostile_file_name(tmp_path):
    path = write(tmp_path / "evil\nname.json", "{}")
    assert error_of(path, root=tmp_path) == (
        "evil\\nname.json: unsupported file type '.json' (expected .csv, .csv.gz, .parquet or .pq)"
    )


def test_directory_is_not_a_file(tmp_path):
    (tmp_path / "dir.csv").mkdir()
    assert error_of(tmp_path / "dir.csv", root=tmp_path) == "dir.csv: not a regular file"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("\n\n\n", "empty file (no header)"),
        ('"tenant,service\n', "cannot read the header (a quote never closed?)"),
        (HEADER.replace("value", "Tenant"), "duplicate column 'Tenant'"),
        ("ts,timestamp,value\n", "both 'ts' and 'timestamp' columns"),
        ("timestamp\n1\n", "missing required column value (found 'timestamp';"),
        ("tenant;service;metric;ts;value\n", "(found 'tenant;service;metric;ts;value';"),
        (b"\xff\xfet\x00e\x00n\x00", "not a text CSV file (NUL bytes in the first 64 KiB)"),
        (b"tenant,\xc3\x28\n", "not a text CSV file (invalid UTF-8 at byte 7)"),
    ],
)
def test_file_level_errors(tmp_path, content, problem):
    path = write(tmp_path / "bad.csv", content)
    message = error_of(path, root=tmp_path)
    assert message.startswith("bad.csv: ")
    assert problem in message


def test_missing_columns_are_summarised_on_one_line(tmp_path):
    names = [f"col\n{i}" for i in range(20)]
    path = write(tmp_path / "wide.csv", ",".join(f'"{n}"' for n in names) + "\n")
    message = error_of(path)
    assert "missing required columns ts, value" in message
    assert "'col\\n0'" in message and "... (20 columns)" in message
    assert len(message) < 400


def test_invalid_utf8_after_the_first_block(tmp_path):
    good = "".join(f"acme,api,m,2026-03-01T00:00:{i % 60:02d}Z,{i}\n" for i in range(3000))
    path = write(tmp_path / "late.csv", HEADER.encode() + good.encode() + b"acme,\xff\xfe,m,x,1\n")
    message = error_of(path, root=tmp_path)
    assert message.startswith("late.csv: not valid UTF-8 text (after data row ")


def test_gzip_csv(tmp_path):
    path = tmp_path / "good.csv.gz"
    path.write_bytes(gzip.compress((BAD / "good_records.csv").read_bytes()))
    records, rejected, _ = read_all(path, root=tmp_path)
    assert len(records) == 4 and rejected.empty
    assert set(records["source"]) == {"good.csv.gz"}


def test_corrupt_and_truncated_gzip(tmp_path):
    data = gzip.compress(("x" * 10 + "\n").encode() * 100_000)
    truncated = write(tmp_path / "cut.csv.gz", data[: len(data) // 2])
    assert "gzip data is truncated" in error_of(truncated)
    not_gzip = write(tmp_path / "plain.csv.gz", b"tenant,service\n")
    assert error_of(not_gzip).endswith("not a valid gzip file")


def test_fields_beyond_the_csv_module_limit(tmp_path):
    cut = write(tmp_path / "cut.csv", HEADER + 'acme,api,m,"' + "x" * 200_000)
    _, rejected, _ = read_all(cut)
    assert rejected["reason"].tolist() == [
        "ts: cut off inside a quoted field, the row is truncated (4 of 5 fields)"
    ]
    assert len(rejected["raw"].iloc[0]) < 5000
    wide_header = write(tmp_path / "header.csv", '"' + "x" * 200_000 + '",value\n')
    assert "cannot read the header (field larger than field limit" in error_of(wide_header)


def test_overlong_record_is_a_file_error(tmp_path, monkeypatch):
    monkeypatch.setattr(csv_reader, "_MAX_RECORD_CHARS", 1000)
    monkeypatch.setattr(csv_reader, "_BLOCK_CHARS", 100)
    path = write(tmp_path / "long.csv", HEADER + 'acme,api,m,"' + "x\n" * 2000)
    message = error_of(path)
    assert message.endswith("a row is longer than 1000 characters (a quote never closed?)")


def test_header_only_parquet_and_corrupt_parquet(tmp_path):
    table = pq.read_table(BAD / "good_records.parquet")
    empty = tmp_path / "empty.parquet"
    pq.write_table(table.slice(0, 0), empty)
    assert list(read_metric_file(empty)) == []
    junk = write(tmp_path / "junk.pq", b"PAR1" + b"\x00" * 100 + b"PAR1")
    assert "not a valid Parquet file (" in error_of(junk)
    zero = write(tmp_path / "zero.parquet", b"")
    assert error_of(zero).endswith("empty file (0 bytes)")


def test_corrupt_parquet_pages_fail_after_the_good_row_groups(tmp_path):
    rows = 1000
    table = pa.table(
        {
            "tenant": ["acme"] * rows,
            "service": ["api"] * rows,
            "metric": ["m"] * rows,
            "ts": np.arange(rows, dtype=np.int64) + 1_772_359_200,
            "value": np.arange(rows, dtype=np.float64),
        }
    )
    path = tmp_path / "pages.parquet"
    pq.write_table(table, path, row_group_size=250)
    column = pq.ParquetFile(path).metadata.row_group(2).column(4)
    data = bytearray(path.read_bytes())
    start = column.data_page_offset
    data[start + 10 : start + column.total_compressed_size - 2] = b"\xab" * (
        column.total_compressed_size - 12
    )
    path.write_bytes(bytes(data))
    read = []
    with pytest.raises(InputFileError) as info:
        for chunk in read_metric_file(path, root=tmp_path, chunk_rows=250):
            read.append(len(chunk.records))
    assert read == [250, 250]
    assert str(info.value).startswith("pages.parquet: corrupt Parquet data after data row 500 (")
    assert "\n" not in str(info.value)


def test_parquet_rows_are_checked_like_csv_rows(tmp_path):
    table = pa.table(
        {
            "tenant": pa.array(["acme", None, "../x", "acme", "acme", "acme"]),
            "service": pa.array(["api"] * 6).dictionary_encode(),
            "metric": ["m"] * 6,
            "ts": pa.array(
                [
                    1_772_359_200_000,
                    1_772_359_200_000,
                    1_772_359_200_000,
                    None,
                    1_772_359_200,
                    10**17,
                ],
                pa.int64(),
            ),
            "value": pa.array(["1.5", "2", "3", "4", "nan", "x"]),
            "shard": pa.array([1, 2, 3, 4, 5, 6], pa.int32()),
        }
    )
    path = tmp_path / "rows.parquet"
    pq.write_table(table, path)
    records, rejected, _ = read_all(path)
    assert records["source_row"].tolist() == [1, 5]
    assert records["ts"].tolist() == [pd.Timestamp("2026-03-01T10:00:00Z")] * 2
    assert records["tags"].tolist() == ['{"shard":"1"}', '{"shard":"5"}']
    assert dict(zip(rejected["source_row"], rejected["reason"], strict=True)) == {
        2: "tenant: missing",
        3: "tenant: '../x' is not a valid name (letters, digits, '_', '.', '-', up to 64,"
        " starting with a letter or digit)",
        4: "ts: missing",
        6: "ts: '100000000000000000' is outside the supported range 1677-09-22..2262-04-11",
    }
    assert rejected["tenant"].tolist() == [None, "../x", "acme", "acme"]
    assert json.loads(rejected["raw"].iloc[0])["tenant"] is None


def test_parquet_native_timestamps_naive_and_aware(tmp_path):
    naive = pd.to_datetime(["2026-03-01 10:00:00", "2500-01-01 00:00:00"]).as_unit("us")
    table = pa.table(
        {
            "timestamp": pa.array(naive, pa.timestamp("us")),
            "value": pa.array([1, 2], pa.int64()),
        }
    )
    path = tmp_path / "acme" / "api" / "cpu_percent.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(table, path)
    records, rejected, _ = read_all(path, root=tmp_path)
    assert records[["tenant", "service", "metric"]].iloc[0].tolist() == [
        "acme",
        "api",
        "cpu_percent",
    ]
    assert records["ts"].tolist() == [pd.Timestamp("2026-03-01T10:00:00Z")]
    assert rejected["field"].tolist() == ["ts"]
    assert rejected["ts"].tolist() == ["2500-01-01T00:00:00"]

    aware = tmp_path / "aware.parquet"
    stamps = pd.to_datetime(["2026-03-01T12:00:00+02:00"]).as_unit("ms")
    pq.write_table(pa.table({"ts": pa.array(stamps), "value": [1.0]}), aware)
    records, _, _ = read_all(aware)
    assert records["ts"].tolist() == [pd.Timestamp("2026-03-01T10:00:00Z")]


def test_parquet_nested_column_is_a_file_error(tmp_path):
    path = tmp_path / "nested.parquet"
    pq.write_table(pa.table({"ts": ["2026-03-01"], "value": [1.0], "tags": [[1, 2]]}), path)
    assert "column tags has unsupported Parquet type list<element: int64>" in error_of(path)


# -- single series: names from the path -----------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "names"),
    [
        ("acme/api/latency_p95_ms.csv", ["acme", "api", "latency_p95_ms"]),
        ("api/error_rate.csv", ["default", "api", "error_rate"]),
        ("cpu_percent.csv", ["default", "default", "cpu_percent"]),
        ("acme/api/bytes.sent.csv.gz", ["acme", "api", "bytes.sent"]),
        ("acme/api/auth_failures.PQ", ["acme", "api", "auth_failures"]),
    ],
)
def test_single_series_names_come_from_the_path(tmp_path, relative, names):
    root = tmp_path / "drop"
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "ts,value\n2026-03-01T00:00:00Z,1\n1772323260,2\n"
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    elif path.name.lower().endswith(".pq"):
        pq.write_table(
            pa.table({"ts": ["2026-03-01T00:00:00Z", "1772323260"], "value": [1, 2]}), path
        )
    else:
        path.write_text(text)
    records, rejected, _ = read_all(path, root=root)
    assert rejected.empty
    assert records[["tenant", "service", "metric"]].drop_duplicates().values.tolist() == [names]
    assert records["ts"].tolist() == [
        pd.Timestamp("2026-03-01T00:00:00Z"),
        pd.Timestamp("2026-03-01T00:01:00Z"),
    ]
    assert set(records["source"]) == {relative}


def test_single_series_without_root_uses_the_stem(tmp_path):
    path = write(tmp_path / "acme" / "queue_depth.csv", "timestamp,value\n2026-03-01,1\n")
    records, _, _ = read_all(path)
    assert records[["tenant", "service", "metric"]].iloc[0].tolist() == [
        "default",
        "default",
        "queue_depth",
    ]
    assert records["source"].iloc[0] == path.as_posix()


@pytest.mark.parametrize(
    ("relative", "problem"),
    [
        ("bad tenant/api/m.csv", "tenant 'bad tenant' taken from the path is not a valid name"),
        ("acme/api/m;drop.csv", "metric 'm;drop' taken from the path is not a valid name"),
        ("a/b/c/m.csv", "single-series file nested too deep"),
    ],
)
def test_single_series_bad_paths(tmp_path, relative, problem):
    path = write(tmp_path / relative, "ts,value\n2026-03-01,1\n")
    message = error_of(path, root=tmp_path)
    assert message.startswith(f"{relative}: ")
    assert problem in message


# -- naming and fingerprints ----------------------------------------------------------------------


def test_source_name(tmp_path):
    root = tmp_path / "drop"
    assert source_name(root / "acme" / "x.csv", root) == "acme/x.csv"
    assert source_name(root / "acme" / ".." / "x.csv", root) == "x.csv"
    outside = tmp_path / "elsewhere" / "x.csv"
    assert source_name(outside, root) == outside.as_posix()
    assert (
        source_name(root / ".." / "drop2" / "x.csv", root) == (tmp_path / "drop2/x.csv").as_posix()
    )
    assert source_name(Path("relative.csv"), None) == (Path.cwd() / "relative.csv").as_posix()


def test_fingerprint_follows_content_not_mtime(tmp_path):
    path = tmp_path / "f.csv"
    shutil.copy(BAD / "good_records.csv", path)
    first = file_fingerprint(path)
    assert first == hashlib.sha256(path.read_bytes()).hexdigest()
    later = time.time() + 3600
    os.utime(path, (later, later))
    assert file_fingerprint(path) == first
    path.write_bytes(path.read_bytes().replace(b"120.5", b"120.6"))
    assert file_fingerprint(path) != first
    with pytest.raises(InputFileError, match="file not found"):
        file_fingerprint(tmp_path / "gone.csv")


def test_fingerprint_streams_large_files(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_HASH_BLOCK", 7)
    path = write(tmp_path / "x.csv", b"0123456789" * 10)
    assert file_fingerprint(path) == hashlib.sha256(b"0123456789" * 10).hexdigest()


# -- streaming ------------------------------------------------------------------------------------


def _metric_csv(path: Path, rows: int) -> int:
    """A CSV of ``rows`` random metric rows; returns its size in bytes."""
    rng = np.random.default_rng(7)
    pd.DataFrame(
        {
            "tenant": rng.choice(["acme", "globex", "initech"], rows),
            "service": rng.choice(["api", "cdn", "auth"], rows),
            "metric": "latency_p95_ms",
            "ts": pd.date_range("2026-01-01", periods=rows, freq="s").strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
            "value": rng.normal(100, 10, rows).round(3),
        }
    ).to_csv(path, index=False)
    return path.stat().st_size


def _traced_read(path: Path, chunk_rows: int) -> tuple[int, int]:
    """Read ``path`` chunk by chunk under tracemalloc, checking every chunk; (rows, peak bytes)."""
    total = 0
    tracemalloc.start()
    try:
        for chunk in read_metric_file(path, chunk_rows=chunk_rows):
            assert chunk.rejected.empty
            assert 0 < len(chunk.records) <= chunk_rows
            assert chunk.records["source_row"].iloc[0] == total + 1
            total += len(chunk.records)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return total, peak


def test_large_csv_streams_in_bounded_chunks(tmp_path):
    """The peak of a read does not grow with the file: a file four times longer (16 chunks, 8 MiB,
    eight 1 MiB read blocks) peaks where the short one does. A reader holding the file, its text
    or its rows peaks at least one byte higher per extra byte of file (measured: 4x the peak when
    read in one chunk, +6 MiB when the text is read in one block)."""
    chunk_rows, rows = 10_000, 40_000
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    small_size, large_size = _metric_csv(small, rows), _metric_csv(large, 4 * rows)
    assert _traced_read(small, chunk_rows)[0] == rows
    small_rows, small_peak = _traced_read(small, chunk_rows)
    large_rows, large_peak = _traced_read(large, chunk_rows)
    assert (small_rows, large_rows) == (rows, 4 * rows)
    figures = (
        f"peak {small_peak / 2**20:.2f} MiB for {small_size / 2**20:.1f} MiB, "
        f"{large_peak / 2**20:.2f} MiB for {large_size / 2**20:.1f} MiB"
    )
    assert large_peak - small_peak < (large_size - small_size) / 8, figures
    # A few read blocks and one chunk's frames, whatever the file's size.
    assert large_peak < 32 * 2**20, figures
