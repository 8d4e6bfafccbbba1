"""A real Prometheus server for tests: the Debian ``prometheus`` binary on a free port with a
temporary configuration and storage, started and stopped by the tests that need it.

Used by the Prometheus pull source's tests (the server scrapes itself) and by the exporter's
(the server scrapes ``monitoring-pipelines exporter``).
"""

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.alerting.servers import free_port

__all__ = ["free_port", "prometheus_binary", "prometheus_server", "query", "scrape_job"]

ENSURE_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ensure-system-packages.sh"


def prometheus_binary(name: str = "prometheus") -> str:
    """The path of ``prometheus`` (or ``promtool``, from the same package), installing the
    package when it is missing and the tests run as root; the test fails when it cannot."""
    found = shutil.which(name) or f"/usr/bin/{name}"
    if not os.access(found, os.X_OK) and os.geteuid() == 0 and ENSURE_SCRIPT.exists():
        subprocess.run(["bash", str(ENSURE_SCRIPT)], check=False)
        found = shutil.which(name) or f"/usr/bin/{name}"
    if not os.access(found, os.X_OK):
        pytest.fail(
            f"the {name} binary is missing: run `make system-packages` "
            "(scripts/ensure-system-packages.sh) or `apt-get install prometheus`"
        )
    return found


def scrape_job(name: str, target: str, labels: dict[str, str] | None = None) -> str:
    """One ``scrape_configs`` entry (YAML) for ``target`` (``host:port``)."""
    extra = ""
    if labels:
        pairs = ", ".join(f"{k}: '{v}'" for k, v in labels.items())
        extra = f"\n        labels: {{{pairs}}}"
    return f"""
  - job_name: {name}
    static_configs:
      - targets: ['{target}']{extra}"""


def config(jobs: list[str], interval: str = "1s", rule_files: tuple[Path, ...] = ()) -> str:
    """A configuration scraping ``jobs`` (from :func:`scrape_job`) every ``interval`` and
    evaluating the rules of ``rule_files`` as often."""
    rules = "".join(f"\n  - '{path}'" for path in rule_files)
    return f"""global:
  scrape_interval: {interval}
  evaluation_interval: {interval}
rule_files:{rules or " []"}
scrape_configs:{"".join(jobs)}
"""


@contextlib.contextmanager
def prometheus_server(
    workdir: Path,
    port: int,
    configuration: str,
    ready: Callable[[str], bool],
    timeout: float = 60,
) -> Iterator[str]:
    """Run Prometheus on ``127.0.0.1:port`` with ``configuration``; yields its URL once it
    answers and ``ready(url)`` is true (say, every job scraped once)."""
    binary = prometheus_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus.yml").write_text(configuration)
    log_path = workdir / "prometheus.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--storage.tsdb.path={workdir / 'data'}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(process, url, ready, log_path, timeout)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def _wait_ready(process, url: str, ready, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            tail = log_path.read_text()[-2000:]
            pytest.fail(f"prometheus exited with {process.returncode}: {tail}")
        if time.monotonic() > deadline:
            pytest.fail(f"prometheus on {url} was not ready within {timeout:.0f} s")
        try:
            if requests.get(f"{url}/-/ready", timeout=1).status_code == 200 and ready(url):
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)


def query(url: str, promql: str) -> list[dict]:
    """The result vector of an instant PromQL query (fails the test on an error answer)."""
    answer = requests.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]
