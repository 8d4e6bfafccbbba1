"""``make bench``: the figures users ask about, as medians over several runs.

- code-location load time (a fresh interpreter importing ``monitoring_pipelines.definitions``),
- ingest throughput in rows per second on SQLite and on PostgreSQL: staging Parquet drop files
  (parse + landing), gating them (one GX validation per tenant stretch + metrics + quarantine)
  and gridding, per stage and in all, each beside a plain DBAPI ``executemany`` insert of the
  same rows measured in the same run (the ratio holds on a noisy machine).
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
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
    """Stage every file, then gate and grid every partition as the ranged ingest runs do (one
    landing read and one GX validation per tenant and stretch of days), Dagster aside."""
    from monitoring_pipelines.gating import gate_days, grid_days
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
    now = datetime.now(UTC)
    gate_days(warehouse, keys, config=GateConfig(resolution_seconds=resolution), now=now)
    t2 = time.perf_counter()
    grid_days(warehouse, keys, resolution_seconds=resolution, now=now)
    t3 = time.perf_counter()
    reference = _executemany_reference(warehouse)
    warehouse.dispose()
    return {
        "rows": rows,
        "stage_rows_per_s": rows / (t1 - t0),
        "gate_rows_per_s": rows / (t2 - t1),
        "grid_rows_per_s": rows / (t3 - t2),
        "end_to_end_rows_per_s": rows / (t3 - t0),
        "executemany_rows_per_s": reference,
    }


def _executemany_reference(warehouse) -> float:
    """A plain DBAPI ``executemany`` of the landed rows into an empty copy of ``landing``."""
    import sqlalchemy as sa

    with warehouse.engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.text("SELECT * FROM landing"))]
    columns = "source, source_row, tenant, service, metric, ts, value, tags"
    mark = "?" if warehouse.dialect == "sqlite" else "%s"
    with warehouse.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS bench_reference")
        conn.exec_driver_sql("CREATE TABLE bench_reference AS SELECT * FROM landing WHERE 1 = 0")
    t0 = time.perf_counter()
    with warehouse.engine.begin() as conn:
        cursor = conn.connection.dbapi_connection.cursor()
        cursor.executemany(
            f"INSERT INTO bench_reference ({columns}) VALUES ({', '.join([mark] * 8)})", rows
        )
        cursor.close()
    seconds = time.perf_counter() - t0
    with warehouse.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE bench_reference")
    return len(rows) / seconds


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
    )
    return {
        "backend": label,
        "rows": results[0]["rows"],
        **{key: _median([r[key] for r in results]) for key in keys},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tenants", type=int, default=2)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--skip-load", action="store_true", help="only the ingest figures")
    args = parser.parse_args()

    from monitoring_pipelines.devservices import temporary_database
    from monitoring_pipelines.sources.demo import DemoConfig, generate, write_demo

    figures: dict = {}
    if not args.skip_load:
        figures["load"] = bench_load(max(args.runs, 5))
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
                ref = row["executemany_rows_per_s"]
                print(
                    f"ingest {label:10} {row['rows']:,} rows (medians of {args.runs}):"
                    f" stage {row['stage_rows_per_s']:,.0f} rows/s"
                    f" ({row['stage_rows_per_s'] / ref:.2f}x executemany),"
                    f" gate {row['gate_rows_per_s']:,.0f}, grid {row['grid_rows_per_s']:,.0f},"
                    f" end to end {row['end_to_end_rows_per_s']:,.0f} rows/s"
                    f" ({row['end_to_end_rows_per_s'] / ref:.2f}x);"
                    f" reference executemany {ref:,.0f} rows/s"
                )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
