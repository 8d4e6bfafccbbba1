"""The Dagster UI serving this code location, checked in a real headless Chromium."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.browser import launch_chromium


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def webserver(tmp_path_factory):
    home = tmp_path_factory.mktemp("ui-home")
    files_port = _free_port()
    env = {
        **os.environ,
        "MONITORING_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "MONITORING_FILES_URL": f"http://127.0.0.1:{files_port}",
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
    from monitoring_pipelines.cli.ui import serve_home_files

    files = serve_home_files(home, "127.0.0.1", files_port)
    yield url
    files.shutdown()
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
        "drift_retrain_sensor": "RUNNING",
    }
    assert sorted(s["name"] for s in repo["schedules"]) == [
        "ingest_schedule",
        "monthly_report_schedule",
        "retention_schedule",
        "retrain_schedule",
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
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{webserver}/assets/raw_metrics?view=partitions", timeout=60_000)
        _dismiss_welcome(page)
        # The demo's two days: the first passed its checks, the second (its broken partition)
        # was stopped by a blocking check; today has no data yet.
        page.get_by_text("Materialized (1)").first.wait_for(timeout=60_000)
        page.get_by_text("Failed (1)").first.wait_for(timeout=60_000)
        page.screenshot(path=str(tmp_path / "raw_metrics.png"))
        page.goto(f"{webserver}/assets/raw_metrics?view=checks", timeout=60_000)
        _dismiss_welcome(page)
        page.get_by_text("Checks (8)").first.wait_for(timeout=60_000)
        page.get_by_text("values_in_range").first.wait_for(timeout=60_000)
        browser.close()
    assert (tmp_path / "raw_metrics.png").stat().st_size > 10_000


def _graphql(url: str, query: str, **variables) -> dict:
    answer = requests.post(
        f"{url}/graphql", json={"query": query, "variables": variables}, timeout=60
    ).json()
    assert "errors" not in answer, answer["errors"]
    return answer["data"]


def _days(offset_from_today: int) -> str:
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC).date() + timedelta(days=offset_from_today)).isoformat()


def test_partitions_run_from_the_demos_first_day_to_today_and_the_blocked_day_is_failed(webserver):
    query = """query ($asset: String!) {
      assetNodeOrError(assetKey: {path: [$asset]}) { ... on AssetNode {
        partitionKeysByDimension { name partitionKeys }
        assetPartitionStatuses { ... on MultiPartitionStatuses { ranges {
          primaryDimStartKey primaryDimEndKey
          secondaryDim { ... on DefaultPartitionStatuses {
            materializedPartitions failedPartitions unmaterializedPartitions } } } } } } }
    }"""
    first, blocked, today = _days(-2), _days(-1), _days(0)
    for asset in ("raw_metrics", "clean_metrics"):
        node = _graphql(webserver, query, asset=asset)["assetNodeOrError"]
        dims = {d["name"]: d["partitionKeys"] for d in node["partitionKeysByDimension"]}
        # The demo ended yesterday: its two days and today, no run of empty days after them.
        assert dims["date"] == [first, blocked, today], asset
        status = {}
        for r in node["assetPartitionStatuses"]["ranges"]:
            assert r["primaryDimStartKey"] == r["primaryDimEndKey"]  # one range per day here
            tenants = r["secondaryDim"]
            for kind in ("materializedPartitions", "failedPartitions"):
                for tenant in tenants[kind]:
                    status[f"{r['primaryDimStartKey']}|{tenant}"] = kind
        assert status == {
            f"{first}|acme": "materializedPartitions",
            f"{blocked}|acme": "failedPartitions",
        }, asset

    checks = """{ assetCheckExecutions(assetKey: {path: ["raw_metrics"]},
                                       checkName: "values_in_range", limit: 10) {
        status evaluation { partition success severity description } } }"""
    executions = _graphql(webserver, checks)["assetCheckExecutions"]
    evaluations = [e["evaluation"] for e in executions if e["evaluation"]]
    failed = [e for e in evaluations if e["partition"] == f"{blocked}|acme"]
    assert failed and not failed[0]["success"] and failed[0]["severity"] == "ERROR"


def test_the_gx_report_link_of_a_partition_opens_its_page(webserver):
    query = """{ assetNodeOrError(assetKey: {path: ["raw_metrics"]}) { ... on AssetNode {
        assetMaterializations(limit: 10) { partition metadataEntries {
          label ... on UrlMetadataEntry { url } } } } } }"""
    node = _graphql(webserver, query)["assetNodeOrError"]
    links = {
        (m["partition"], e["label"]): e["url"]
        for m in node["assetMaterializations"]
        for e in m["metadataEntries"]
        if "url" in e
    }
    first = f"{_days(-2)}|acme"
    page = requests.get(links[(first, "gx_report")], timeout=10)
    assert page.status_code == 200 and first in page.text
    rows = requests.get(links[(first, "quarantine_rows")], timeout=10)
    assert rows.status_code == 200 and "reason" in rows.text.splitlines()[0]
    assert (
        requests.get(links[(first, "gx_validation")], timeout=10).json()["gate"]["partition_key"]
        == first
    )
    # Only the quality pages and reports are served, never the databases beside them.
    base = links[(first, "gx_report")].split("/quality/")[0]
    for path in ("/warehouse.db", "/dagster/dagster.yaml", "/quality/../warehouse.db", "/"):
        assert requests.get(base + path, timeout=10).status_code == 404, path


def test_a_data_quality_alerts_partition_link_opens_that_partition_in_a_browser(
    webserver, tmp_path
):
    from playwright.sync_api import sync_playwright

    from monitoring_pipelines.alerting import types
    from monitoring_pipelines.alerting.pipeline_incidents import data_quality_incident

    blocked = f"{_days(-1)}|acme"
    incident = data_quality_incident("acme", blocked, "values_in_range", "out of range", None)
    link = types.incident_links(incident, webserver)["checked_partition"]
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(link, timeout=60_000)
        _dismiss_welcome(page)
        # The link opens the partition itself: its key as the title, and why it is failed.
        page.get_by_text("failed, and did not materialize this asset").wait_for(timeout=60_000)
        page.get_by_text(blocked, exact=True).first.wait_for(timeout=60_000)
        # Its events name the checks that stopped it, with the links to its evidence.
        page.get_by_text("View all historical events (1)").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text("Observation").wait_for(timeout=60_000)
        dialog.get_by_text(blocked, exact=True).click()
        dialog.get_by_text("Stopped by values_in_range").wait_for(timeout=60_000)
        dialog.get_by_text("/quality/").first.wait_for(timeout=60_000)
        page.screenshot(path=str(tmp_path / "blocked_partition.png"))
        browser.close()
    assert (tmp_path / "blocked_partition.png").stat().st_size > 10_000
