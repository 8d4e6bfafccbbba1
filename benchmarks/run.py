"""``make bench``: the figures users ask about, as medians over several runs.

- code-location load time (a fresh interpreter importing ``monitoring_pipelines.definitions``)
  beside the bare import of dagster, pandas and sqlalchemy measured in the same run (the floor),
- ingest throughput in rows per second on SQLite and on PostgreSQL: staging Parquet drop files
  (parse + landing), gating them (one GX validation per run + metrics + quarantine) and
  gridding, per stage and in all, each beside a plain DBAPI ``executemany`` insert of the same
  rows measured in the same run (the ratio holds on a noisy machine). Gate and grid run once per
  tenant and stretch of days, as the ingest runs the staged-file sensor requests do.

``--scale N`` (``make bench SCALE=N``) ingests N times the demo's series (5 N tenants of 24
series); ``--only load`` or ``--only ingest`` (``BENCH=...``) runs one part.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

# The bare stack a code location cannot load faster than.
FLOOR_IMPORT = "import dagster, pandas, sqlalchemy"
LOAD_CODE = "import monitoring_pipelines.definitions as d; d.defs.get_repository_def()"
# The executemany reference inserts at most this many rows: its rate is per row, and a plain
# PostgreSQL executemany of 4M rows would take longer than the whole ingest.
REFERENCE_ROWS = 50_000


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _load_average() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def _import_seconds(code: str) -> float:
    timed = f"import time, json; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", timed], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def bench_load(runs: int) -> dict:
    """The code location's load and the bare stack's import, alternated so both see the same
    machine load."""
    load, floor = [], []
    for _ in range(runs):
        floor.append(_import_seconds(FLOOR_IMPORT))
        load.append(_import_seconds(LOAD_CODE))
    return {
        "load_seconds_median": _median(load),
        "floor_seconds_median": _median(floor),
        "ratio": _median(load) / _median(floor),
        "load_seconds_runs": load,
        "floor_seconds_runs": floor,
    }


def _ingest_once(url: str, drop: Path, start: datetime, resolution: int) -> dict:
    """Stage every file, then gate and grid each tenant's stretch of days as one ingest run
    does (one landing read and one GX validation per run), Dagster aside."""
    from monitoring_pipelines.gating import days_of, gate_days, grid_days, stretches
    from monitoring_pipelines.ingest import partition_key, stage_file
    from monitoring_pipelines.quality.gate import GateConfig
    from monitoring_pipelines.warehouse import Warehouse, metadata

    warehouse = Warehouse(url)
    metadata.drop_all(warehouse.engine)
    metadata.create_all(warehouse.engine)
    files = sorted(drop.glob("*.parquet"))
    t0 = time.perf_counter()
    staged = [stage_file(warehouse, f, root=drop, earliest=start) for f in files]
    t1 = time.perf_counter()
    rows = sum(s.rows_in for s in staged)
    keys = sorted({partition_key(d, t) for s in staged for d, t in s.pending})
    runs = [[d.key for d in stretch] for stretch in stretches(days_of(keys))]
    now = datetime.now(UTC)
    gate_s = grid_s = 0.0
    for run in runs:
        g0 = time.perf_counter()
        gate_days(warehouse, run, config=GateConfig(resolution_seconds=resolution), now=now)
        g1 = time.perf_counter()
        grid_days(warehouse, run, resolution_seconds=resolution, now=now)
        gate_s, grid_s = gate_s + g1 - g0, grid_s + time.perf_counter() - g1
    bare, indexed = _executemany_reference(warehouse)
    warehouse.dispose()
    return {
        "rows": rows,
        "stage_rows_per_s": rows / (t1 - t0),
        "gate_rows_per_s": rows / gate_s,
        "grid_rows_per_s": rows / grid_s,
        "end_to_end_rows_per_s": rows / (t1 - t0 + gate_s + grid_s),
        "executemany_rows_per_s": bare,
        "executemany_indexed_rows_per_s": indexed,
    }


def _executemany_reference(warehouse) -> tuple[float, float]:
    """A plain DBAPI ``executemany`` of the landed rows (up to :data:`REFERENCE_ROWS`), rows per
    second: into an empty copy of ``landing`` without keys or indexes, and into ``landing``
    itself (emptied; its primary key and index are what staging pays for too)."""
    import sqlalchemy as sa

    with warehouse.engine.connect() as conn:
        query = sa.text(f"SELECT * FROM landing LIMIT {REFERENCE_ROWS}")
        rows = [tuple(r) for r in conn.execute(query)]
    with warehouse.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS bench_reference")
        conn.exec_driver_sql("CREATE TABLE bench_reference AS SELECT * FROM landing WHERE 1 = 0")
        conn.exec_driver_sql("DELETE FROM landing")
    bare = _executemany(warehouse, "bench_reference", rows)
    indexed = _executemany(warehouse, "landing", rows)
    with warehouse.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE bench_reference")
    return bare, indexed


def _executemany(warehouse, table: str, rows: list[tuple]) -> float:
    columns = "source, source_row, tenant, service, metric, ts, value, tags"
    marks = ", ".join(["?" if warehouse.dialect == "sqlite" else "%s"] * 8)
    t0 = time.perf_counter()
    with warehouse.engine.begin() as conn:
        cursor = conn.connection.dbapi_connection.cursor()
        cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)
        cursor.close()
    return len(rows) / (time.perf_counter() - t0)


def bench_ingest(url: str, label: str, drop: Path, start: datetime, runs: int) -> dict:
    from monitoring_pipelines.quality import gx_suite

    # Warm the GX context once so the figures are steady-state, as in a long-lived worker.
    gx_suite.warm_up()
    results = [_ingest_once(url, drop, start, 300) for _ in range(runs)]
    keys = (
        "stage_rows_per_s",
        "gate_rows_per_s",
        "grid_rows_per_s",
        "end_to_end_rows_per_s",
        "executemany_rows_per_s",
        "executemany_indexed_rows_per_s",
    )
    return {
        "backend": label,
        "rows": results[0]["rows"],
        **{key: _median([r[key] for r in results]) for key in keys},
    }


def _tenants(count: int) -> tuple[str, ...]:
    """The demo's tenants, then made-up ones (``tenant-006``...) up to ``count``."""
    from monitoring_pipelines.sources.demo import DemoConfig

    named = DemoConfig().tenants
    return (*named, *(f"tenant-{i:03d}" for i in range(len(named) + 1, count + 1)))[:count]


def _print_load(load: dict) -> None:
    print(
        f"code location load: {load['load_seconds_median']:.2f} s beside the bare import of"
        f" dagster, pandas and sqlalchemy {load['floor_seconds_median']:.2f} s:"
        f" {load['ratio']:.2f}x (target <= 1.25x; medians of {len(load['load_seconds_runs'])};"
        f" load average {_load_average()})"
    )


def _print_ingest(row: dict, runs: int) -> None:
    ref, indexed = row["executemany_rows_per_s"], row["executemany_indexed_rows_per_s"]
    stage, end = row["stage_rows_per_s"], row["end_to_end_rows_per_s"]
    print(
        f"ingest {row['backend']:10} {row['rows']:,} rows, {row['tenants']} tenants"
        f" (medians of {runs}): stage {stage:,.0f} rows/s (target 250,000;"
        f" {stage / ref:.2f}x executemany, {stage / indexed:.2f}x executemany into landing),"
        f" gate {row['gate_rows_per_s']:,.0f}, grid {row['grid_rows_per_s']:,.0f},"
        f" end to end {end:,.0f} rows/s (target 100,000; {end / ref:.2f}x executemany);"
        f" reference executemany {ref:,.0f} rows/s, into landing with its keys {indexed:,.0f};"
        f" load average {_load_average()}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--scale", type=int, default=int(os.environ.get("SCALE") or 1), help="x the demo's series"
    )
    parser.add_argument("--tenants", type=int, help="instead of 5 x scale")
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument(
        "--only",
        default=os.environ.get("BENCH") or "all",
        help="load, ingest or all (other parts of make bench are skipped here)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    figures: dict = {"scale": args.scale}
    if args.only in ("all", "load"):
        figures["load"] = bench_load(max(args.runs, 5))
        _print_load(figures["load"])
    if args.only in ("all", "ingest"):
        figures["ingest"] = bench_ingest_backends(args)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


def bench_ingest_backends(args: argparse.Namespace) -> list[dict]:
    from monitoring_pipelines.devservices import temporary_database
    from monitoring_pipelines.sources.demo import DemoConfig, generate, write_demo

    out = []
    tenants = _tenants(args.tenants or 5 * args.scale)
    with tempfile.TemporaryDirectory() as tmp:
        drop = Path(tmp) / "drop"
        config = DemoConfig(tenants=tenants, days=args.days, bad_rows=True, broken_partition=False)
        write_demo(generate(config), drop, fmt="parquet")
        start = pd.Timestamp(config.start).to_pydatetime()
        wanted = args.backends.split(",")
        with temporary_database(prefix="mp_bench") as pg:
            urls = {"sqlite": f"sqlite:///{Path(tmp) / 'bench.db'}", "postgresql": pg}
            for label in wanted:
                row = bench_ingest(urls[label], label, drop, start, args.runs)
                row["tenants"] = len(tenants)
                out.append(row)
                _print_ingest(row, args.runs)
    return out


if __name__ == "__main__":
    sys.exit(main())
