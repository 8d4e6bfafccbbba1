"""``backtest`` and ``models``: judge detectors on labelled history; list or roll back champions."""

import argparse
import os
import sys
from pathlib import Path

from monitoring_pipelines.cli.common import CliError, prepare_home
from monitoring_pipelines.ml.catalogue import KINDS
from monitoring_pipelines.settings import load_settings


def cmd_backtest(args: argparse.Namespace) -> int:
    import pandas as pd

    from monitoring_pipelines.ml.backtest import run_backtest
    from monitoring_pipelines.ml.backtest_io import (
        BacktestInputError,
        read_inputs,
        read_labels,
        unmatched_labels,
        write_series,
    )
    from monitoring_pipelines.ml.catalogue import detector_class, parse_kinds

    try:
        kinds = parse_kinds(args.detectors) if args.detectors else list(KINDS)
    except ValueError as exc:
        raise CliError(f"--detectors: {exc}") from None
    try:
        inputs = read_inputs(Path(args.data))
        labels = read_labels(Path(args.labels)) if args.labels else {}
    except BacktestInputError as exc:
        raise CliError(str(exc).splitlines()[0]) from None
    unmatched = unmatched_labels(labels, inputs.series_names())
    if unmatched:
        print(unmatched, file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    detectors = [detector_class(k) for k in kinds]
    options = {
        "train_fraction": args.train_fraction,
        "max_train_points": args.max_train_points,
        "detectors": detectors,
        "refit_every": args.refit_every,
        "progress": not args.quiet,
    }
    from monitoring_pipelines.ml.evaluation import summarise

    evaluations = []
    for batch in (b for b in (inputs.series or None, inputs.records_frame) if b is not None):
        result = run_backtest(batch, labels, **options)
        for name, frame in result.series.items():
            write_series(out, name, frame, result.detectors)
        evaluations += result.evaluations
    summary = summarise(evaluations)
    summary.to_csv(out / "summary.csv", index=False)
    shown = [
        "series",
        "windows",
        "detected",
        "alerts",
        "precision",
        "recall",
        "f1",
        "delay_median_minutes",
        "false_alarms_per_day",
    ]
    with pd.option_context("display.width", 160, "display.max_rows", 60):
        print(summary[shown].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"per-series scores and summary.csv written to {out}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from monitoring_pipelines.ml.registry import ModelNotFound, ModelRegistry, registered_model_name

    settings = load_settings()
    prepare_home(settings)
    models = ModelRegistry(settings.mlflow_tracking_uri, settings.home / "mlartifacts")
    if args.action == "list":
        for tenant in args.tenant or settings.tenants:
            versions = models.champion_versions(tenant)
            shown = ", ".join(f"{k} v{versions[k]}" for k in KINDS if k in versions)
            print(f"{tenant}: {shown or 'no champion yet'}")
            for kind, info in models.alias_infos(tenant, "challenger").items():
                if info.version != versions.get(kind):
                    print(f"  {kind} challenger v{info.version}: {_challenger_state(info.tags)}")
        return 0
    if not args.kind or not args.tenant:
        raise CliError("models rollback needs --kind and --tenant")
    from monitoring_pipelines.ml.model_audit import rollback_champion
    from monitoring_pipelines.warehouse import Warehouse

    warehouse = Warehouse(settings.warehouse_url)
    try:
        before, after = rollback_champion(
            warehouse,
            models,
            args.kind,
            args.tenant[0],
            args.to_version,
            by=args.by or os.environ.get("USER") or "cli",
            reason=args.reason,
        )
    except ModelNotFound as exc:
        raise CliError(str(exc)) from None
    finally:
        warehouse.dispose()
    name = registered_model_name(args.kind, args.tenant[0])
    print(f"{name}: champion v{before} -> v{after}")
    return 0


def _challenger_state(tags: dict[str, str]) -> str:
    """Where a challenger stands: shadowing, or the promotion check's decision and reasons."""
    decision = tags.get("promotion.decision")
    if decision:
        return f"{decision} ({tags.get('promotion.reasons', '')})"
    if "challenger.live_from" in tags:
        return (
            f"in shadow since {tags['challenger.live_from']}, judged after "
            f"{tags.get('challenger.shadow_days_required', '?')} live day(s)"
        )
    return "newest candidate, not registered for shadow scoring"


def register(sub) -> None:
    """Add this module's commands to the ``monitoring-pipelines`` parser."""
    backtest = sub.add_parser(
        "backtest",
        help="judge the detectors on your own labelled history",
        description="Fit each series on its first points, score the rest causally, and report "
        "event-level precision, recall, F1 and detection delay against the label windows.",
    )
    backtest.add_argument("--data", required=True, help="a CSV/Parquet file or a folder of them")
    backtest.add_argument("--labels", help="label windows JSON {series: [[start, end], ...]}")
    backtest.add_argument("--train-fraction", type=float, default=0.15)
    backtest.add_argument("--max-train-points", type=int)
    backtest.add_argument("--refit-every", type=int, help="refit on past data every N points")
    backtest.add_argument(
        "--detectors",
        help=f"comma-separated kinds to run (default: every kind, {','.join(KINDS)}, and the "
        "pipeline's ensemble of them)",
    )
    backtest.add_argument("--out", required=True, help="folder for per-series CSVs and summary")
    backtest.add_argument("--quiet", action="store_true", help="no progress bar")
    backtest.set_defaults(func=cmd_backtest)

    models = sub.add_parser(
        "models", help="list champions and challengers (with their decision), or roll back"
    )
    models.add_argument("action", choices=["list", "rollback"])
    models.add_argument("--kind", choices=KINDS)
    models.add_argument("--tenant", action="append", help="tenant (repeat for list)")
    models.add_argument("--to-version", type=int, help="default: the previous champion")
    models.add_argument("--reason", default="manual rollback from the command line")
    models.add_argument("--by", help="who rolls back (default: $USER); in the audit trail")
    models.set_defaults(func=cmd_models)
