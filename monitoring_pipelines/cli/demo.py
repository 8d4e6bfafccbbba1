"""``demo``: generate the demo data, then run the whole pipeline on it through the same jobs."""

import argparse
import json
import os
import shutil
import time
from contextlib import contextmanager
from datetime import UTC, date, datetime

from monitoring_pipelines.cli.common import QUIET, CliError, prepare_home, prepare_mlflow
from monitoring_pipelines.cli.ingest import ingest_paths, print_ingest
from monitoring_pipelines.cli.output import print_alerts
from monitoring_pipelines.cli.reports import demo_reports
from monitoring_pipelines.cli.runner import (
    backfill_ranges,
    dagster_instance,
    failed_ingest_run,
    failure_reason,
    job_def,
    run_all,
)
from monitoring_pipelines.settings import Settings, load_settings, redact_url


def _period(args: argparse.Namespace) -> tuple[date, date]:
    """The demo's days: the given ``--start``/``--end``/``--days``, else the 35 ending yesterday."""
    from monitoring_pipelines.sources.demo import demo_period

    try:
        start, end = demo_period(
            datetime.now(UTC).date(), start=args.start, end=args.end, days=args.days
        )
    except ValueError as exc:
        raise CliError(f"demo: {exc}") from None
    pinned = os.environ.get("MONITORING_START_DATE")
    if pinned and start.isoformat() < pinned:
        raise CliError(
            f"demo: the period starts on {start}, before MONITORING_START_DATE {pinned}: "
            "give --start on or after it"
        )
    return start, end


def _record_period(settings: Settings, start: date, end: date) -> Settings:
    """Write the demo's period into the home, where the settings read their start date (the
    first partition) from, and return the settings as they now are."""
    path = settings.demo_period_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"start": start.isoformat(), "end": end.isoformat()}) + "\n")
    return load_settings()


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (the runs' worker pools)."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Stages:
    """Wall seconds per stage of the demo, each printed as its stage ends with the CPU seconds
    it took (on a busy machine wall time grows, CPU time much less), then the total."""

    def __init__(self):
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        began, cpu = time.perf_counter(), _cpu_seconds()
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - began
            used = _cpu_seconds() - cpu
            print(f"[stage] {name}: {self.seconds[name]:.1f} s (CPU {used:.0f} s)", flush=True)

    def total(self) -> float:
        return time.perf_counter() - self.started


def cmd_demo(args: argparse.Namespace) -> int:
    from monitoring_pipelines.sources.demo import DemoConfig, generate, write_demo

    settings = load_settings()
    start, end = _period(args)
    settings = _record_period(settings, start, end)
    prepare_home(settings)
    stages = Stages()
    options = {}
    if args.services:
        options["services"] = tuple(s.strip() for s in args.services.split(",") if s.strip())
    try:
        config = DemoConfig(
            seed=args.seed,
            start=f"{start.isoformat()}T00:00:00Z",
            days=(end - start).days + 1,
            tenants=settings.tenants[: args.tenants],
            **options,
        )
    except ValueError as exc:
        raise CliError(f"demo: {exc}") from None
    with stages.stage("generate"):
        data = generate(config)
        drop = settings.drop_dir / "demo"
        manifest = write_demo(data, settings.demo_dir, fmt=args.format)
        drop.mkdir(parents=True, exist_ok=True)
        for tenant in config.tenants:
            src = settings.demo_dir / f"{tenant}.{args.format}"
            shutil.copyfile(src, drop / src.name)
    print(
        f"demo data: {len(config.tenants)} tenants, {data.records['service'].nunique()} services,"
        f" {data.records[['service', 'metric']].drop_duplicates().shape[0]} series per tenant,"
        f" {config.days} days ({start} to {end}) at {config.resolution_seconds // 60}-minute"
        " resolution:"
        f" {len(data.records):,} rows, {len(data.incidents)} labelled incidents"
    )
    print(f"  files: {drop}  labels: {manifest['labels']}")
    with stages.stage("ingest"):
        summary = ingest_paths([drop], settings, force=args.force, workers=args.workers)
    print_ingest(summary, settings)
    failed = bool(summary.failed or summary.partition_failures)
    if not args.skip_models:
        shutil.copyfile(manifest["labels"], settings.home / "labels.json")
        blocked = {line.split(" ", 1)[0] for line in summary.blocked}
        days = sorted(summary.partitions - blocked)
        failed |= train_and_score(settings, list(config.tenants), days, args.workers, stages)
        failed |= raise_and_deliver(settings, days, sorted(blocked), args.workers, stages)
    with stages.stage("reports"):
        demo_reports(settings, list(config.tenants))
    print(
        f"done in {stages.total():.0f}s (CPU {_cpu_seconds():.0f} s); "
        + ", ".join(f"{name} {seconds:.0f}s" for name, seconds in stages.seconds.items())
        + "; see it with: make ui"
    )
    return 1 if failed else 0


def train_and_score(
    settings: Settings,
    tenants: list[str],
    days: list[str],
    workers: int | None,
    stages: Stages,
) -> bool:
    """Train, validate and register every tenant's detectors, then score the given partitions.

    Returns whether anything failed.
    """
    from monitoring_pipelines.warehouse import Warehouse

    prepare_mlflow(settings)
    with stages.stage("training"):
        failures = _train(settings, tenants, workers)
    trained = [t for t in tenants if not any(f.startswith(f"training {t}:") for f in failures)]
    with stages.stage("scoring"):
        failures += [
            f"scoring {key}: {failure}"
            for key, _, failure, _ in run_all(
                "scoring_job",
                backfill_ranges([d for d in days if d.split("|", 1)[1] in trained]),
                workers,
            )
            if failure
        ]
    warehouse = Warehouse(settings.warehouse_url)
    print("models (validated on the last week, thresholds fitted on the week before):")
    for tenant in tenants:
        _, policy = warehouse.read_thresholds(tenant)
        if not policy:
            print(f"  {tenant}: no alert policy (training failed)")
            continue
        versions = ", ".join(f"{k} v{v}" for k, v in sorted(policy["model_versions"].items()))
        ensemble = policy["validation"]["ensemble"]
        print(
            f"  {tenant}: {versions}; ensemble event F1 {ensemble['event_f1']:.2f}, "
            f"{ensemble['false_alarms_per_series_week']:.2f} false alarms per series-week"
        )
    points = warehouse.count("anomaly_scores")
    flagged = warehouse.count("anomaly_scores", is_anomaly=True)
    warehouse.dispose()
    print(f"scores: {points:,} points scored, {flagged:,} flagged anomalous")
    print(
        f"mlflow: {redact_url(settings.mlflow_tracking_uri)} (artifacts in "
        f"{settings.home / 'mlartifacts'})"
    )
    for line in failures:
        print(f"  failed: {line}")
    return bool(failures)


# Slowest kinds first, so the last runs on the pool are short ones and both cores stay busy.
_FIT_ORDER = ("lstm", "prophet", "isolation_forest", "zscore", "pca")


def _train(settings: Settings, tenants: list[str], workers: int | None) -> list[str]:
    """``training_job`` on every tenant as one run per tenant and detector kind (the slowest
    kinds first), and each tenant's alert policy on the same pool once its kinds are trained:
    five tenants' runs of every kind keep both cores busy to the end, where one run per tenant
    left one core idle for the last tenant. Returns the failures, ``training <tenant>: <why>``."""
    from monitoring_pipelines.ml.catalogue import CATALOGUE, KINDS

    kinds = settings.detectors or KINDS
    order = [k for k in _FIT_ORDER if k in kinds] + [k for k in kinds if k not in _FIT_ORDER]
    fits = [(t, (CATALOGUE[k].asset_name,)) for k in order for t in tenants]
    waiting = {t: len(order) for t in tenants}
    failed: set[str] = set()

    def then(outcome) -> list:
        tenant, _, failure, _ = outcome
        if failure:
            failed.add(tenant)
        waiting[tenant] -= 1
        if waiting[tenant] or tenant in failed:
            return []
        return [(tenant, ("detection_policy",))]

    return [
        f"training {key}: {failure}"
        for key, _, failure, _ in run_all("training_job", fits, workers, then)
        if failure
    ]


def raise_and_deliver(
    settings: Settings,
    days: list[str],
    blocked: list[str],
    workers: int | None,
    stages: Stages,
) -> bool:
    """Raise the scored partitions' incidents and the blocked partitions' data-quality incidents
    (what the sensors do when the daemon runs), then deliver the outbox once. Returns whether
    anything failed."""
    from monitoring_pipelines.alerting import outbox, store
    from monitoring_pipelines.alerting.policy import PolicyError, load_policy
    from monitoring_pipelines.sensors import raise_failure_incidents
    from monitoring_pipelines.warehouse import Warehouse

    try:
        policy = load_policy(settings.alerting_file, home=settings.home)
    except PolicyError as exc:
        raise CliError(str(exc)) from None
    with stages.stage("alerting"):
        failures = [
            f"alerting {key}: {failure}"
            for key, _, failure, _ in run_all("alerting_job", backfill_ranges(days), workers)
            if failure
        ]
    warehouse = Warehouse(settings.warehouse_url)
    with stages.stage("delivery"):
        for key in blocked:
            run = failed_ingest_run(key)
            if run is not None:
                raise_failure_incidents(
                    dagster_instance(),
                    run,
                    "blocked by a quality check",
                    warehouse,
                    policy,
                    settings.dagster_url,
                )
        result = job_def("delivery_job").execute_in_process(
            run_config=QUIET,
            instance=dagster_instance(),
            raise_on_error=False,
            tags={"monitoring/trigger": "cli"},
        )
        if not result.success:
            failures.append(f"delivery: {failure_reason(result, None)}")
        incidents = store.read_incidents(warehouse)
        notes = outbox.read_notifications(warehouse, limit=None)
        warehouse.dispose()
    print_alerts(incidents, notes, policy)
    for line in failures:
        print(f"  failed: {line}")
    return bool(failures)


def register(sub) -> None:
    """Add this module's commands to the ``monitoring-pipelines`` parser."""
    demo = sub.add_parser(
        "demo",
        help="generate the demo platform's metrics and run the pipeline on them",
        description="Generate seeded demo metrics with labelled incidents, then ingest and "
        "quality-check them through the same jobs the sensors run.",
    )
    demo.add_argument("--tenants", type=int, default=5, help="how many tenants (default 5)")
    demo.add_argument(
        "--days",
        type=int,
        help="days of history (default 35): from --start, or back from --end (default yesterday)",
    )
    demo.add_argument(
        "--start",
        type=date.fromisoformat,
        help="first day (YYYY-MM-DD, UTC); pins a reproducible period with --end or --days",
    )
    demo.add_argument(
        "--end", type=date.fromisoformat, help="last day (YYYY-MM-DD, UTC; default yesterday)"
    )
    demo.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    demo.add_argument(
        "--services",
        metavar="A,B",
        help="only these services' metrics (default: every demo service); fewer is faster",
    )
    demo.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    demo.add_argument("--force", action="store_true", help="re-stage files even if unchanged")
    demo.add_argument("--workers", type=int, help="parallel partition runs (default: cores)")
    demo.add_argument(
        "--skip-models", action="store_true", help="only generate, ingest and check the data"
    )
    demo.set_defaults(func=cmd_demo)
