"""Detector figures for ``make bench``: training time per tenant per detector, ensemble scoring
throughput in metric points per second, and peak memory while scoring (medians over runs).

Run as a module so each measurement gets a fresh process: ``python -m benchmarks.models``.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import pandas as pd

from monitoring_pipelines.ml.ensemble import DEFAULT_COMBINER, combine_groups
from monitoring_pipelines.ml.frames import group_frames
from monitoring_pipelines.ml.incremental import (
    WarehouseStateStore,
    raw_context_steps,
    score_sets_since,
    state_start,
)
from monitoring_pipelines.ml.training import KINDS, TrainingPlan, fit_candidate
from monitoring_pipelines.sources.demo import DemoConfig, generate
from monitoring_pipelines.warehouse import Warehouse

AS_OF = pd.Timestamp("2026-11-02", tz="UTC")


def _frames(tenant: str = "acme") -> dict:
    data = generate(DemoConfig(tenants=(tenant,), days=35, bad_rows=False, broken_partition=False))
    return group_frames(data.records)


def measure(kinds: list[str], score_days: int) -> dict:
    """One process: fit each kind once, then score ``score_days`` day by day with the ensemble,
    through the path ``anomaly_scores`` takes (carried states in a SQLite warehouse, new points
    only)."""
    frames = _frames()
    plan = TrainingPlan.ending(AS_OF)
    fitted, train_seconds = {}, {}
    for kind in kinds:
        started = time.perf_counter()
        fitted[kind] = fit_candidate(kind, frames, plan)
        train_seconds[kind] = time.perf_counter() - started
    start = AS_OF - pd.Timedelta(days=score_days)
    step = pd.Timedelta(minutes=5)
    versions = dict.fromkeys(kinds, 1)
    with tempfile.TemporaryDirectory() as tmp:
        store = WarehouseStateStore(Warehouse(f"sqlite:///{tmp}/warehouse.db"))
        # The one-off catch-up from the first point (a new champion's first day), not timed.
        _, carried = score_sets_since(fitted, _before(frames, start), {}, start, start)
        for kind, states in carried.items():
            store.save("acme", kind, 1, states)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        points, seconds = 0, 0.0
        for day in pd.date_range(start, AS_OF, freq="D", inclusive="left"):
            end = day + pd.Timedelta(days=1)
            started = time.perf_counter()
            states, read_from = {}, end
            for kind, model_set in fitted.items():
                needed = state_start(next(iter(model_set.detectors.values())), step, day)
                states[kind] = store.latest("acme", kind, versions[kind], needed)
                context = max(raw_context_steps(d, step) for d in model_set.detectors.values())
                stands = min(s.as_of for s in states[kind].values())
                read_from = min(read_from, pd.Timestamp(stands, tz="UTC") - context * step)
            window = {k: f[(f.index >= read_from) & (f.index < end)] for k, f in frames.items()}
            members, carried = score_sets_since(fitted, window, states, day, end)
            for kind, group_states in carried.items():
                store.save("acme", kind, versions[kind], group_states)
            ensemble = combine_groups(members, DEFAULT_COMBINER)
            seconds += time.perf_counter() - started
            points += int(sum(f.notna().to_numpy().sum() for f in ensemble.values()))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "train_seconds": train_seconds,
        "score_points": points,
        "score_seconds": seconds,
        "points_per_second": points / seconds,
        "peak_rss_mib": peak_kib / 1024,
        "rss_growth_while_scoring_mib": (peak_kib - before) / 1024,
    }


def _before(frames: dict, end: pd.Timestamp) -> dict:
    return {k: f[f.index < end] for k, f in frames.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--score-days", type=int, default=7)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    if args.one:
        print(json.dumps(measure(kinds, args.score_days)))
        return 0
    runs = []
    for _ in range(args.runs):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.models",
                "--one",
                "--kinds",
                ",".join(kinds),
                "--score-days",
                str(args.score_days),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for kind in kinds:
        seconds = statistics.median(r["train_seconds"][kind] for r in runs)
        print(f"training {kind:17} one tenant (24 series, 21 days): {seconds:.1f} s")
    pps = statistics.median(r["points_per_second"] for r in runs)
    peak = statistics.median(r["peak_rss_mib"] for r in runs)
    growth = statistics.median(r["rss_growth_while_scoring_mib"] for r in runs)
    print(
        f"scoring ensemble ({'+'.join(kinds)}), {runs[0]['score_points']:,} points over "
        f"{args.score_days} days: {pps:,.0f} points/s on 2 cores; peak RSS {peak:,.0f} MiB "
        f"(+{growth:,.0f} MiB while scoring) (median of {len(runs)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
