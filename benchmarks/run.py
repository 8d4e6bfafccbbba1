"""``make bench``: the figures users ask about, as medians over several runs.

- code-location load time (a fresh interpreter importing ``monitoring_pipelines.definitions``),
- ingest throughput in rows per second on SQLite and on PostgreSQL: staging Parquet drop files
  (parse + landing) and gating them (GX suite + metrics + quarantine + grid), per stage and in all.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd


def _median(values: list[float]) -> float:
    return statistics.median(values)


def bench_load(runs: int) -> dict:
    code = (
        "import time, json; t = time.perf_counter();"
        "import monitoring_pipelines.definitions as d; d.defs.get_repository_def();"
        "print(json.dumps(time.perf_counter() - t))"
    )
    times = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return {"load_seconds_median": _median(times), "load_seconds_runs": times}


def _ingest_once(url: str, drop: Path, start: datetime, resolution: int) -> dict:
    from monitoring_pipelines.grid import regular_grid
    from monitoring_pipelines.ingest import stage_file
    from monitoring_pipelines.quality.gate import GateConfig, run_gate
    from monitoring_pipelines.warehouse import Warehouse, metadata

    warehouse = Warehouse(url)
    metadata.drop_all(warehouse.engine)
    metadata.create_all(warehouse.engine)
    files = sorted(drop.glob("*.parquet"))
    t0 = time.perf_counter()
    staged = [stage_file(warehouse, f, root=drop, earliest=start) for f in files]
    t1 = time.perf_counter()
    rows = sum(s.rows_in for s in staged)
    config = GateConfig(resolution_seconds=resolution)
    for result in staged:
        for date, tenant in result.partitions:
            lo = datetime.fromisoformat(date).replace(tzinfo=UTC)
            hi = lo + timedelta(days=1)
            landed = warehouse.read_records("landing", tenant=tenant, start=lo, end=hi)
            gate = run_gate(
                landed,
                tenant=tenant,
                start=lo,
                end=hi,
                expected_series=24,
                now=datetime.now(UTC),
                config=config,
            )
            warehouse.replace_partition("metrics", tenant, lo, hi, gate.accepted)
            warehouse.replace_quarantine(
                gate.quarantined, stage="quality", partition_key=f"{date}|{tenant}"
            )
            grid, _ = regular_grid(gate.accepted, start=lo, end=hi, resolution_seconds=resolution)
            warehouse.replace_partition("clean_metrics", tenant, lo, hi, grid)
    t2 = time.perf_counter()
    warehouse.dispose()
    return {
        "rows": rows,
        "stage_rows_per_s": rows / (t1 - t0),
        "gate_rows_per_s": rows / (t2 - t1),
        "end_to_end_rows_per_s": rows / (t2 - t0),
    }


def bench_ingest(url: str, label: str, drop: Path, start: datetime, runs: int) -> dict:
    from monitoring_pipelines.quality.gate import run_gate

    # Warm the GX context once so the figures are steady-state, as in a long-lived worker.
    empty = pd.DataFrame(
        columns=["tenant", "service", "metric", "ts", "value", "tags", "source", "source_row"]
    )
    run_gate(
        empty.astype({"ts": "datetime64[ns, UTC]", "value": "float64", "source_row": "int64"}),
        tenant="t",
        start=start,
        end=start + timedelta(days=1),
        expected_series=0,
        now=datetime.now(UTC),
    )
    results = [_ingest_once(url, drop, start, 300) for _ in range(runs)]
    return {
        "backend": label,
        "rows": results[0]["rows"],
        **{
            key: _median([r[key] for r in results])
            for key in ("stage_rows_per_s", "gate_rows_per_s", "end_to_end_rows_per_s")
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tenants", type=int, default=2)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    from monitoring_pipelines.devservices import temporary_database
    from monitoring_pipelines.sources.demo import DemoConfig, generate, write_demo

    figures: dict = {"load": bench_load(max(args.runs, 5))}
    print(
        f"code location load: {figures['load']['load_seconds_median']:.2f} s "
        f"(median of {len(figures['load']['load_seconds_runs'])})"
    )

    with tempfile.TemporaryDirectory() as tmp:
        drop = Path(tmp) / "drop"
        config = DemoConfig(
            tenants=DemoConfig().tenants[: args.tenants],
            days=args.days,
            bad_rows=True,
            broken_partition=False,
        )
        data = generate(config)
        write_demo(data, drop, fmt="parquet")
        start = pd.Timestamp(config.start).to_pydatetime()
        figures["ingest"] = []
        backends = [("sqlite", f"sqlite:///{Path(tmp) / 'bench.db'}")]
        with temporary_database(prefix="mp_bench") as pg:
            backends.append(("postgresql", pg))
            for label, url in backends:
                row = bench_ingest(url, label, drop, start, args.runs)
                figures["ingest"].append(row)
                print(
                    f"ingest {label:10} {row['rows']:,} rows: stage {row['stage_rows_per_s']:,.0f}"
                    f" rows/s, gate+grid {row['gate_rows_per_s']:,.0f} rows/s, end to end"
                    f" {row['end_to_end_rows_per_s']:,.0f} rows/s (median of {args.runs})"
                )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
