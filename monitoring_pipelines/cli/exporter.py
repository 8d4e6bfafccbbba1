"""``exporter``: the pipeline's own health on ``/metrics`` for Prometheus to scrape.

Every scrape reads the warehouse, the MLflow registry and the Dagster instance afresh (see
:mod:`monitoring_pipelines.health`); a source that cannot be read is reported as down in the
metrics and in one log line, and the exporter keeps serving.
"""

import argparse
import logging
import os
import signal
import threading

import sqlalchemy as sa

from monitoring_pipelines.cli.common import CliError, prepare_home
from monitoring_pipelines.settings import load_settings, redact_url

DEFAULT_PORT = 9464


def cmd_exporter(args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server
    from prometheus_client.registry import CollectorRegistry

    from monitoring_pipelines.health import PipelineHealthCollector

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s exporter: %(message)s"))
    log = logging.getLogger("monitoring_pipelines.health")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    # An MLflow server that does not answer must not hold a scrape past Prometheus' timeout
    # (10 s by default): one short try per scrape, the next scrape tries again.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    settings = load_settings()
    prepare_home(settings)
    try:
        collector = PipelineHealthCollector(settings)
    except (sa.exc.ArgumentError, ValueError):
        # Not the error's text: it can quote the whole URL, password included.
        url = redact_url(settings.warehouse_url)
        raise CliError(f"MONITORING_WAREHOUSE_URL: {url} is not a database URL to open") from None
    # A first read before serving: the libraries are imported and a source that cannot be read
    # is named in the log right away, not at the first scrape.
    list(collector.collect())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    try:
        server, _ = start_http_server(args.port, addr=args.host, registry=registry)
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(
        f"exporter: http://{args.host}:{server.server_port}/metrics "
        f"(warehouse {redact_url(settings.warehouse_url)}, "
        f"mlflow {redact_url(settings.mlflow_tracking_uri)}, dagster {settings.dagster_home}; "
        "Ctrl-C stops it)",
        flush=True,
    )
    stop.wait()
    server.shutdown()
    server.server_close()
    collector.close()
    return 0


def register(sub) -> None:
    """Add this module's commands to the ``monitoring-pipelines`` parser."""
    exporter = sub.add_parser(
        "exporter",
        help="serve the pipeline's health on /metrics for Prometheus (read at every scrape)",
    )
    exporter.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0 picks a free one"
    )
    exporter.add_argument("--host", default="127.0.0.1", help="address to listen on")
    exporter.set_defaults(func=cmd_exporter)
