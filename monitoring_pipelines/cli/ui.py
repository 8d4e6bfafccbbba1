"""``ui``: the Dagster UI and the MLflow UI side by side, and the home's quality pages and
reports, which the UI's and the alerts' links point to (``MONITORING_FILES_URL``)."""

import argparse
import functools
import http.server
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from monitoring_pipelines.cli.common import prepare_home
from monitoring_pipelines.settings import load_settings

# The folders of the home a browser may read; the databases and secrets next to them stay out.
SERVED = ("quality", "reports")


class HomeFilesHandler(http.server.SimpleHTTPRequestHandler):
    """Serves ``<home>/quality/...`` and ``<home>/reports/...`` read-only; anything else is 404."""

    def send_head(self):
        translated = Path(self.translate_path(self.path)).resolve()
        try:
            top = translated.relative_to(Path(self.directory).resolve()).parts[:1]
        except ValueError:
            top = ()
        if not top or top[0] not in SERVED:
            self.send_error(404, "Not served")
            return None
        return super().send_head()

    def log_message(self, format: str, *args) -> None:
        return


def serve_home_files(home: Path, host: str, port: int) -> http.server.ThreadingHTTPServer:
    """Start serving the home's quality pages and reports on ``host:port`` in a thread."""
    handler = functools.partial(HomeFilesHandler, directory=str(home))
    server = http.server.ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, name="home-files", daemon=True).start()
    return server


def cmd_ui(args: argparse.Namespace) -> int:
    settings = load_settings()
    prepare_home(settings)
    files_port = args.files_port or urlsplit(settings.files_url).port or 80
    files = serve_home_files(settings.home, args.host, files_port)
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
        f"MLflow UI: http://{args.host}:{args.mlflow_port}   "
        f"quality pages and reports: http://{args.host}:{files_port}/quality/ and /reports/   "
        "(Ctrl-C stops them)"
    )
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        files.shutdown()
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
    ui.add_argument(
        "--files-port",
        type=int,
        help="port of the quality pages and reports (default: the port of MONITORING_FILES_URL, "
        "3002), where the UI's and the alerts' links point",
    )
    ui.set_defaults(func=cmd_ui)
