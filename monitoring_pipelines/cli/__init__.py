"""The ``monitoring-pipelines`` command: one module per command group, one runner, one output.

Every command runs the same Dagster jobs the sensors and schedules run (:mod:`.runner`), against the
instance in ``DAGSTER_HOME``, so what a command did shows up as runs in the Dagster UI. A command
group is a module with ``cmd_*`` functions and a ``register(sub)`` that adds its parsers; adding
one is a module and a line in :data:`COMMAND_GROUPS`.
"""

import argparse
import sys

from monitoring_pipelines.cli import admin, alerts, demo, exporter, ingest, models, reports, ui
from monitoring_pipelines.cli.common import CliError
from monitoring_pipelines.cli.runner import backfill_ranges, quiet_libraries

COMMAND_GROUPS = (demo, ingest, models, alerts, reports, ui, admin, exporter)
__all__ = ["CliError", "backfill_ranges", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitoring-pipelines",
        description="Ingest, check, model and alert on streaming-platform metrics.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from monitoring_pipelines.sources.files import InputFileError

    quiet_libraries()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CliError, InputFileError) as exc:
        print(f"monitoring-pipelines: error: {exc}", file=sys.stderr)
        return 2
