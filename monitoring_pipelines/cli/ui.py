"""``ui``: the Dagster UI and the MLflow UI side by side."""

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

from monitoring_pipelines.cli.common import prepare_home
from monitoring_pipelines.settings import load_settings


def cmd_ui(args: argparse.Namespace) -> int:
    settings = load_settings()
    prepare_home(settings)
    bin_dir = Path(sys.executable).parent
    artifacts = settings.home / "mlartifacts"
    procs = [
        subprocess.Popen(
            [
                str(bin_dir / "dagster"),
                "dev",
                "-m",
                "monitoring_pipelines.definitions",
                "-h",
                args.host,
                "-p",
                str(args.dagster_port),
            ],
        ),
        subprocess.Popen(
            [
                str(bin_dir / "mlflow"),
                "server",
                "--host",
                args.host,
                "--port",
                str(args.mlflow_port),
                "--backend-store-uri",
                settings.mlflow_tracking_uri,
                "--default-artifact-root",
                str(artifacts),
            ],
        ),
    ]
    print(
        f"Dagster UI: http://{args.host}:{args.dagster_port}   "
        f"MLflow UI: http://{args.host}:{args.mlflow_port}   (Ctrl-C stops both)"
    )
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    return 0


def register(sub) -> None:
    """Add this module's commands to the ``monitoring-pipelines`` parser."""
    ui = sub.add_parser("ui", help="start the Dagster UI and the MLflow UI side by side")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--dagster-port", type=int, default=3000)
    ui.add_argument("--mlflow-port", type=int, default=5000)
    ui.set_defaults(func=cmd_ui)
