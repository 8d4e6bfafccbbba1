"""The Dagster UI serving this code location, checked in a real headless Chromium."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

CHROMIUM = "/usr/bin/chromium"
# Without these, Chromium keeps dialling hosts this machine cannot reach.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def webserver(tmp_path_factory):
    home = tmp_path_factory.mktemp("ui-home")
    env = {
        **os.environ,
        "MONITORING_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
    }
    (home / "dagster").mkdir(parents=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "monitoring_pipelines.cli",
            "demo",
            "--tenants",
            "1",
            "--days",
            "2",
            "--workers",
            "1",
            "--skip-models",
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    port = _free_port()
    binary = Path(sys.executable).parent / "dagster-webserver"
    proc = subprocess.Popen(
        [str(binary), "-m", "monitoring_pipelines.definitions", "-h", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/server_info", timeout=2).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("dagster-webserver did not answer within 90 s")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_code_location_serves_assets_checks_sensors_and_schedule(webserver):
    query = """{
      assetNodes { assetKey { path } groupName isPartitioned
                   assetChecksOrError { ... on AssetChecks { checks { name blocking } } } }
      repositoriesOrError { ... on RepositoryConnection { nodes {
          sensors { name sensorState { status } } schedules { name } } } }
    }"""
    data = requests.post(f"{webserver}/graphql", json={"query": query}, timeout=30).json()["data"]
    nodes = {n["assetKey"]["path"][-1]: n for n in data["assetNodes"]}
    assert set(nodes) >= {"raw_metrics", "clean_metrics", "lstm_model", "anomaly_scores"}
    assert all(n["isPartitioned"] for n in nodes.values())
    checks = {
        c["name"]: c["blocking"] for c in nodes["raw_metrics"]["assetChecksOrError"]["checks"]
    }
    assert checks["values_in_range"] is True and checks["freshness"] is False
    repo = data["repositoriesOrError"]["nodes"][0]
    sensors = {s["name"]: s["sensorState"]["status"] for s in repo["sensors"]}
    assert sensors == {
        "file_drop_sensor": "RUNNING",
        "staged_file_sensor": "RUNNING",
        "automation_condition_sensor": "RUNNING",
        "outbox_sensor": "RUNNING",
        "run_failure_alert_sensor": "RUNNING",
    }
    assert sorted(s["name"] for s in repo["schedules"]) == [
        "ingest_schedule",
        "monthly_report_schedule",
        "weekly_report_schedule",
    ]


def _dismiss_welcome(page) -> None:
    """Dagster greets a first visit with a newsletter dialog that covers the page."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(timeout=5_000)
        skip.click()
    except Exception:
        return


def test_asset_page_shows_the_gated_partitions_in_a_browser(webserver, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{webserver}/assets/raw_metrics?view=partitions", timeout=60_000)
        _dismiss_welcome(page)
        page.get_by_text("Materialized (2)").first.wait_for(timeout=60_000)
        page.screenshot(path=str(tmp_path / "raw_metrics.png"))
        page.goto(f"{webserver}/assets/raw_metrics?view=checks", timeout=60_000)
        _dismiss_welcome(page)
        page.get_by_text("Checks (8)").first.wait_for(timeout=60_000)
        page.get_by_text("values_in_range").first.wait_for(timeout=60_000)
        browser.close()
    assert (tmp_path / "raw_metrics.png").stat().st_size > 10_000
