"""Tenant names that differ only by dots, case, Unicode normalisation or separators: refused at
parse with a one-line reason, or given quality report folders of their own."""

import unicodedata
from datetime import UTC, datetime

import pandas as pd

from monitoring_pipelines.ingest import stage_file
from monitoring_pipelines.quality.gate import run_gate
from monitoring_pipelines.quality.report import folder_name, write_validation
from monitoring_pipelines.sources.files import read_metric_file

CAFE_NFC = unicodedata.normalize("NFC", "café")
CAFE_NFD = unicodedata.normalize("NFD", "café")
NAMES = [
    "acme", "acme.", "acme..", "Acme", "ACME", "probe03", "probe03..", "a...b", "a.b", "a..b",
    "a_b", "a-b", "ab", CAFE_NFC, CAFE_NFD, "acme|x", "acme/x", "acme%2E", ".acme",
]  # fmt: skip
VALID = {"acme", "Acme", "ACME", "probe03", "a.b", "a_b", "a-b", "ab"}


def _csv(tmp_path):
    path = tmp_path / "tenants.csv"
    rows = [f'"{name}",api,error_rate,2026-10-01T00:00:00Z,0.5' for name in NAMES]
    path.write_text("tenant,service,metric,ts,value\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_unsafe_names_are_refused_at_parse_with_one_line(tmp_path):
    chunks = list(read_metric_file(_csv(tmp_path), root=tmp_path))
    accepted = set(pd.concat([c.records for c in chunks])["tenant"])
    rejected = pd.concat([c.rejected for c in chunks])
    assert accepted == VALID
    assert len(rejected) == len(NAMES) - len(VALID)
    assert all("\n" not in r and "is not a valid name" in r for r in rejected["reason"])
    dots = rejected[rejected["tenant"].isin(["acme.", "probe03..", "a...b"])]["reason"]
    assert all("may neither end a name nor follow another '.'" in r for r in dots)


def test_a_tenant_with_a_range_separator_is_quarantined_not_a_crash(tmp_path, warehouse):
    result = stage_file(
        warehouse, _csv(tmp_path), root=tmp_path, earliest=datetime(2026, 1, 1, tzinfo=UTC)
    )
    assert {t for _, t in result.partitions} == VALID
    assert result.staged == len(VALID) and result.quarantined == len(NAMES) - len(VALID)


def test_no_two_names_share_a_quality_report_folder(tmp_path):
    keys = [f"2026-10-01|{name}" for name in NAMES] + ["2026-10-01_acme", "2026-10-01"]
    folders = [folder_name(key) for key in keys]
    # Case-insensitive file systems (macOS, Windows) fold case; some drop trailing dots.
    assert len({f.lower().rstrip(".") for f in folders}) == len(keys)
    assert all("/" not in f and f not in (".", "..") for f in folders)

    frame = pd.DataFrame(
        {
            "tenant": pd.Series([], dtype=object),
            "service": pd.Series([], dtype=object),
            "metric": pd.Series([], dtype=object),
            "ts": pd.Series([], dtype="datetime64[ns, UTC]"),
            "value": pd.Series([], dtype="float64"),
            "tags": pd.Series([], dtype=object),
            "source": pd.Series([], dtype=object),
            "source_row": pd.Series([], dtype="int64"),
        }
    )
    start, end = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 2, tzinfo=UTC)
    for name in sorted(VALID):
        result = run_gate(frame, tenant=name, start=start, end=end, expected_series=0, now=end)
        write_validation(result, tmp_path / "quality", f"2026-10-01|{name}")
    assert len(list((tmp_path / "quality").iterdir())) == len(VALID)


def test_a_long_key_gets_a_hashed_folder_name_within_limits():
    a, b = "2026-10-01|" + "x" * 300 + "a", "2026-10-01|" + "x" * 300 + "b"
    assert folder_name(a) != folder_name(b)
    assert len(folder_name(a)) <= 200
