"""Detector figures for ``make bench``, medians over runs, each run in a fresh process:

- training: seconds per tenant per detector (one tenant: 3 services, 24 series, 21 days);
- scoring: the whole ensemble (every kind scored, then combined) in metric points per second on
  two cores: two worker processes sharing ``SCALE`` x the demo's series (5 ``SCALE`` tenants of
  24 series, ``make bench SCALE=N``), each scoring its tenants one run at a time the way a
  Dagster run does (the multiprocess executor runs two partitions at once), one thread each.
  Every tenant is scored with the champions fitted on the first (scoring costs the same whoever
  a model was fitted on; fitting 5 ``SCALE`` tenants is the training figure times that). Two
  paths:
  - daily: a week scored one tenant-day per call, each detector's state read from and written
    back to the warehouse between days (a scheduled run of one partition);
  - backfill: four weeks in one call (a ranged backfill run, which takes up to a month; the demo
    has five weeks, the first of which the catch-up before timing needs);
  with peak memory of a scoring process. Champions are loaded afresh before each call, as each
  run is a process of its own, but loading them is not timed; nor are reading ``clean_metrics``
  and writing ``anomaly_scores``;
- the ``anomaly_scores`` asset's whole body on SQLite (read the look-back, score, write), per
  daily run and per backfill run, to show what the warehouse adds.

Run as a module: ``python -m benchmarks.models [--runs 3] [--scale N] [--kinds ...]
[--daily-days 7] [--backfill-days 28]``.
"""

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from monitoring_pipelines.ml.catalogue import KINDS, detector_class
from monitoring_pipelines.ml.ensemble import DEFAULT_COMBINER, combine_groups
from monitoring_pipelines.ml.frames import group_frames
from monitoring_pipelines.ml.training import TrainingPlan, fit_candidate
from monitoring_pipelines.sources.demo import DemoConfig, generate

AS_OF = pd.Timestamp("2026-11-02", tz="UTC")
STEP = pd.Timedelta(minutes=5)
TENANT = "acme"
WORKERS = 2
MODES = ("daily", "backfill")


def tenants(scale: int) -> tuple[str, ...]:
    """The tenants of ``scale`` x the demo's series: the demo's five, then made-up ones."""
    named = DemoConfig().tenants
    count = 5 * scale
    return (*named, *(f"tenant-{i:03d}" for i in range(len(named) + 1, count + 1)))[:count]


def _records(names: tuple[str, ...] = (TENANT,)) -> pd.DataFrame:
    config = DemoConfig(tenants=names, days=35, bad_rows=False, broken_partition=False)
    return generate(config).records


def _load_sets(models: Path, kinds: list[str], tenant: str = TENANT) -> dict:
    """The champions fitted on ``TENANT``, as ``tenant``'s (its groups are the same services)."""
    from monitoring_pipelines.ml.model_set import DetectorSet

    sets = {}
    for kind in kinds:
        loaded = DetectorSet.load(models / kind, detector_class(kind))
        detectors = {(tenant, *group[1:]): d for group, d in loaded.detectors.items()}
        sets[kind] = DetectorSet(kind, detectors)
    return sets


def _of_tenant(frames: dict, tenant: str) -> dict:
    return {group: frame for group, frame in frames.items() if group[0] == tenant}


def _between(frames: dict, start: pd.Timestamp | None, end: pd.Timestamp) -> dict:
    """The rows of each frame in ``[start, end)`` (from the first row when ``start`` is None)."""
    return {
        k: f.iloc[(0 if start is None else f.index.searchsorted(start)) : f.index.searchsorted(end)]
        for k, f in frames.items()
    }


def _points(members: dict) -> int:
    ensemble = combine_groups(members, DEFAULT_COMBINER)
    return int(sum(f.notna().to_numpy().sum() for f in ensemble.values()))


def _reference_seconds(frames: dict, start: pd.Timestamp, end: pd.Timestamp) -> float:
    """The same-run reference: scikit-learn's IsolationForest ``score_samples`` alone (100
    trees, fitted on the week before, untimed) on the points of ``[start, end)``, one row per
    point with its group's values at that time as features, so the ratio holds on a noisy
    machine."""
    import numpy as np
    from sklearn.ensemble import IsolationForest

    seconds = 0.0
    for frame in frames.values():
        train = frame[(frame.index >= start - pd.Timedelta(days=7)) & (frame.index < start)]
        rows = frame[(frame.index >= start) & (frame.index < end)]
        forest = IsolationForest(random_state=0).fit(np.nan_to_num(train.to_numpy()))
        points = np.repeat(np.nan_to_num(rows.to_numpy()), rows.shape[1], axis=0)
        began = time.perf_counter()
        forest.score_samples(points)
        seconds += time.perf_counter() - began
    return seconds


def _score_worker(models, kinds, mode, days, names, barrier, results) -> None:
    """One scoring process: catch each of its tenants up to the first day, wait for the
    others, then score ``days`` days the way ``mode`` says, a run per tenant (and per day when
    daily), through the asset's incremental path. As in the pipeline, where every run is a
    process of its own, the champions are loaded afresh for each run (untimed), so each run pays
    for what a run pays: Prophet forecasting its new days, the LSTM tracing its first batch."""
    from monitoring_pipelines.ml.incremental import WarehouseStateStore, score_sets_since
    from monitoring_pipelines.ml.lookback import score_carried
    from monitoring_pipelines.warehouse import Warehouse

    frames = group_frames(_records(names)) if names else {}
    by_tenant = {tenant: _of_tenant(frames, tenant) for tenant in names}
    versions = dict.fromkeys(kinds, 1)
    start = AS_OF - pd.Timedelta(days=days)
    step = pd.Timedelta(days=1 if mode == "daily" else days)
    with tempfile.TemporaryDirectory() as tmp:
        store = WarehouseStateStore(Warehouse(f"sqlite:///{tmp}/warehouse.db"))
        for tenant, own in by_tenant.items():
            sets = _load_sets(Path(models), kinds, tenant)
            before = _between(own, None, start)
            _, carried = score_sets_since(sets, before, {}, start, start, n_jobs=1)
            for kind, states in carried.items():
                store.save(tenant, kind, 1, states)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        barrier.wait()
        seconds, points, reference = 0.0, 0, 0.0
        for first in pd.date_range(start, AS_OF, freq=step, inclusive="left"):
            for tenant, own in by_tenant.items():
                sets = _load_sets(Path(models), kinds, tenant)
                began = time.perf_counter()
                members = score_carried(
                    store,
                    tenant,
                    sets,
                    versions,
                    first,
                    first + step,
                    STEP,
                    lambda a, b, own=own: _between(own, a, b),
                    n_jobs=1,
                ).members
                seconds += time.perf_counter() - began
                points += _points(members)
                reference += _reference_seconds(own, first, first + step)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results.put(
        {
            "points": points,
            "seconds": seconds,
            "reference_seconds": reference,
            "peak_rss_mib": peak / 1024,
            "growth_mib": (peak - rss_before) / 1024,
        }
    )


def measure_scoring(models: Path, kinds: list[str], mode: str, days: int, scale: int) -> dict:
    """``WORKERS`` scoring processes at once (they start together, the tenants dealt out in
    turn); the rate on the machine is the sum of each process's points over its scoring
    seconds."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(WORKERS), ctx.Queue()
    names = tenants(scale)
    workers = [
        ctx.Process(
            target=_score_worker,
            args=(str(models), kinds, mode, days, names[i::WORKERS], barrier, results),
        )
        for i in range(WORKERS)
    ]
    for worker in workers:
        worker.start()
    found = [results.get(timeout=7200) for _ in workers]
    for worker in workers:
        worker.join()
    return {
        "points": sum(r["points"] for r in found),
        "points_per_second": sum(r["points"] / r["seconds"] for r in found if r["points"]),
        "reference_per_second": sum(
            r["points"] / r["reference_seconds"] for r in found if r["points"]
        ),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in found),
        "growth_mib": max(r["growth_mib"] for r in found),
    }


def measure_asset(models: Path, kinds: list[str], records: pd.DataFrame, days: dict) -> dict:
    """The body of ``anomaly_scores`` on a SQLite warehouse holding the tenant's clean grid,
    champions loaded before each run (untimed): ``days["daily"]`` daily runs, then
    ``days["backfill"]`` days as one backfill run."""
    from monitoring_pipelines.grid import regular_grid
    from monitoring_pipelines.ml.incremental import WarehouseStateStore, score_sets_since
    from monitoring_pipelines.ml.scoring_service import score_members, scored_points
    from monitoring_pipelines.warehouse import Warehouse

    frames = group_frames(records)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        wh = Warehouse(f"sqlite:///{tmp}/warehouse.db")
        for day in pd.date_range(AS_OF - pd.Timedelta(days=35), AS_OF, freq="D", inclusive="left"):
            end = day + pd.Timedelta(days=1)
            rows = records[(records["ts"] >= day) & (records["ts"] < end)]
            grid, _ = regular_grid(rows, start=day, end=end, resolution_seconds=300)
            wh.replace_partition("clean_metrics", TENANT, day, end, grid)
        store = WarehouseStateStore(wh)
        # Each path keeps its states under its own version, so neither finds the other's.
        for version, mode in enumerate(MODES, start=1):
            start = AS_OF - pd.Timedelta(days=days[mode])
            step = pd.Timedelta(days=1 if mode == "daily" else days[mode])
            sets = _load_sets(models, kinds)
            _, initial = score_sets_since(sets, _between(frames, None, start), {}, start, start)
            versions = dict.fromkeys(sets, version)
            for kind, states in initial.items():
                store.save(TENANT, kind, version, states)
            seconds, runs = 0.0, 0
            for first in pd.date_range(start, AS_OF, freq=step, inclusive="left"):
                sets = _load_sets(models, kinds)
                began, end = time.perf_counter(), first + step
                carried = score_members(
                    wh, store, TENANT, sets, versions, first, end, int(STEP.total_seconds())
                )
                scored = scored_points(
                    carried.frames, carried.members, first, end, {}, {}, versions, "bench"
                )
                wh.replace_partition("anomaly_scores", TENANT, first, end, scored)
                seconds += time.perf_counter() - began
                runs += 1
            out[mode] = {"seconds_per_run": seconds / runs, "runs": runs}
        wh.dispose()
    return out


def measure(kinds: list[str], days: dict, scale: int) -> dict:
    """One run: fit each kind once on one tenant (timed), then the scoring paths."""
    records = _records()
    frames = group_frames(records)
    plan = TrainingPlan.ending(AS_OF)
    train_seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp)
        for kind in kinds:
            started = time.perf_counter()
            fitted = fit_candidate(kind, frames, plan)
            train_seconds[kind] = time.perf_counter() - started
            fitted.save(models / kind)
        scoring = {mode: measure_scoring(models, kinds, mode, days[mode], scale) for mode in MODES}
        asset = measure_asset(models, kinds, records, days)
    return {"train_seconds": train_seconds, "scoring": scoring, "asset": asset}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--scale", type=int, default=int(os.environ.get("SCALE") or 1), help="x the demo's series"
    )
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--daily-days", type=int, default=7)
    parser.add_argument("--backfill-days", type=int, default=28)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    days = {"daily": args.daily_days, "backfill": args.backfill_days}
    if args.scale < 1:
        parser.error("--scale must be at least 1")
    if args.one:
        print(json.dumps(measure(kinds, days, args.scale)))
        return 0
    command = [sys.executable, "-m", "benchmarks.models", "--one", "--kinds", ",".join(kinds)]
    command += ["--scale", str(args.scale)]
    command += ["--daily-days", str(args.daily_days), "--backfill-days", str(args.backfill_days)]
    runs = []
    for _ in range(args.runs):
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))

    def median(path) -> float:
        return statistics.median(path(r) for r in runs)

    for kind in kinds:
        seconds = median(lambda r, k=kind: r["train_seconds"][k])
        print(f"training {kind:17} one tenant (24 series, 21 days): {seconds:.1f} s")
    count = len(tenants(args.scale))
    print(
        f"scoring the ensemble ({'+'.join(kinds)}) at {args.scale}x the demo's series ({count} "
        f"tenants, {24 * count} series), {WORKERS} processes of one thread sharing the tenants "
        f"(median of {len(runs)}):"
    )
    for mode in MODES:
        pps = median(lambda r, m=mode: r["scoring"][m]["points_per_second"])
        peak = median(lambda r, m=mode: r["scoring"][m]["peak_rss_mib"])
        growth = median(lambda r, m=mode: r["scoring"][m]["growth_mib"])
        calls = (
            f"{days[mode]} days, one tenant-day per call"
            if mode == "daily"
            else f"{days[mode]} days in one call"
        )
        reference = median(lambda r, m=mode: r["scoring"][m]["reference_per_second"])
        print(
            f"  {mode:8} ({calls}): {pps:,.0f} points/s on 2 cores; reference (scikit-learn "
            f"IsolationForest score_samples alone, same points, same run): {reference:,.0f} "
            f"points/s, ratio {pps / reference:.2f}; peak RSS per process "
            f"{peak:,.0f} MiB (+{growth:,.0f} MiB while scoring)"
        )
    daily = median(lambda r: r["asset"]["daily"]["seconds_per_run"])
    backfill = median(lambda r: r["asset"]["backfill"]["seconds_per_run"])
    print(
        f"anomaly_scores asset on SQLite (read look-back, score, write): {daily:.2f} s per "
        f"tenant-day run; {backfill:.2f} s per {days['backfill']}-day backfill run"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
