"""Gating a run: however its partitions are batched into GX validations, each partition is judged
on its own rows with its own evidence."""

from datetime import UTC, datetime

import pandas as pd

from monitoring_pipelines import gating
from monitoring_pipelines.ingest import partition_key, stage_file
from monitoring_pipelines.quality.gate import GateConfig
from monitoring_pipelines.sources.demo import DemoConfig, generate, write_demo
from monitoring_pipelines.warehouse import Warehouse

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def _gate(tmp_path, drop, name: str) -> tuple[list, Warehouse]:
    wh = Warehouse(f"sqlite:///{tmp_path / name}")
    start = datetime(2026, 9, 28, tzinfo=UTC)
    staged = [
        stage_file(wh, f, root=drop, earliest=start, now=NOW)
        for f in sorted(drop.glob("*.parquet"))
    ]
    keys = sorted({partition_key(d, t) for s in staged for d, t in s.pending})
    return gating.gate_days(wh, keys, config=GateConfig(), now=NOW), wh


def test_one_validation_per_run_or_per_stretch_judges_every_partition_alike(tmp_path, monkeypatch):
    drop = tmp_path / "drop"
    config = DemoConfig(tenants=("acme", "globex"), days=2, bad_rows=True, broken_partition=True)
    write_demo(generate(config), drop, fmt="parquet")
    together, one = _gate(tmp_path, drop, "together.db")
    # Every tenant stretch in a validation of its own.
    monkeypatch.setattr(gating, "MAX_VALIDATION_ROWS", 1)
    apart, other = _gate(tmp_path, drop, "apart.db")

    assert [g.day.key for g in together] == [g.day.key for g in apart]
    assert len(together) == 4 and any(g.gate.blocked for g in together)
    for a, b in zip(together, apart, strict=True):
        assert a.gate.blocked == b.gate.blocked and a.gate.rows_in == b.gate.rows_in
        pd.testing.assert_frame_equal(a.gate.accepted, b.gate.accepted)
        pd.testing.assert_frame_equal(a.gate.quarantined, b.gate.quarantined)
        assert [(c.name, c.passed, c.metadata) for c in a.gate.checks] == [
            (c.name, c.passed, c.metadata) for c in b.gate.checks
        ]
        # The validation evidence is the partition's own: its rows, not the run's.
        counts = {
            r["result"].get("element_count")
            for r in a.gate.validation["results"]
            if "unexpected_index_list" in r["result"]
        }
        assert counts == {a.gate.rows_in}
    for table in ("metrics", "quarantine", "partition_states"):
        assert one.count(table) == other.count(table)
    one.dispose()
    other.dispose()
