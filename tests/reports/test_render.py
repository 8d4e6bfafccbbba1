"""The report files as a reader gets them: every locale complete, one tenant's files free of the
other's names, hostile names escaped, and the HTML opened in a real headless Chromium."""

import json
from pathlib import Path

import pytest

from monitoring_pipelines.reports import i18n
from monitoring_pipelines.reports.build import build_report
from monitoring_pipelines.reports.render import md, render_html, render_markdown
from monitoring_pipelines.reports.service import report_dir, write_reports
from monitoring_pipelines.settings import load_settings
from monitoring_pipelines.warehouse import Warehouse
from tests.browser import launch_chromium
from tests.reports.seed import TENANTS, seed_tenant

HOSTILE_TENANT = "<script>alert('t')</script>"
HOSTILE_SERVICE = '"><img src=x onerror=alert(1)>'
HOSTILE_METRIC = "*bold*_[x](javascript:alert(2))|<b>"


@pytest.mark.parametrize("locale", i18n.LOCALES)
def test_every_locale_has_the_english_keys_and_placeholders(locale):
    english, other = i18n.catalog("en"), i18n.catalog(locale)
    assert set(other) == set(english), set(other) ^ set(english)
    for key, text in english.items():
        assert i18n.placeholders(other[key]) == i18n.placeholders(text), key


def _settings(monkeypatch, home: Path, warehouse: Warehouse, tenants):
    monkeypatch.setenv("MONITORING_WAREHOUSE_URL", warehouse.url)
    monkeypatch.setenv("MONITORING_TENANTS", ",".join(tenants))
    return load_settings()


def test_each_tenant_report_holds_only_its_own_names(seeded, week, home, monkeypatch):
    settings = _settings(monkeypatch, home, seeded.warehouse, TENANTS)
    (home / "alerting.yaml").parent.mkdir(parents=True, exist_ok=True)
    (home / "alerting.yaml").write_text(
        "receivers: {files: {type: file, path: notifications}}\n"
        "route: {receiver: files}\n"
        "tenants: {quillbank: {locale: de}}\n"
    )
    written = write_reports(settings, week)
    assert [w.tenant for w in written] == [None, *sorted(TENANTS)]
    by_tenant = {w.tenant: w for w in written}
    for tenant in TENANTS:
        other = next(t for t in TENANTS if t != tenant)
        paths = by_tenant[tenant].paths
        assert (
            paths["html"]
            == home / "reports" / "weekly" / week.key / "tenants" / tenant / "report.html"
        )
        for path in paths.values():
            text = path.read_text(encoding="utf-8")
            assert tenant in text
            assert other not in text, f"{other} appears in {path}"
    everyone = by_tenant[None].paths["html"].read_text(encoding="utf-8")
    assert all(t in everyone for t in TENANTS)
    # The tenant's locale comes from the alerting policy.
    german = by_tenant["quillbank"].paths["html"].read_text(encoding="utf-8")
    assert '<html lang="de">' in german and "Wochenbericht" in german
    data = json.loads(by_tenant["zephyrcorp"].paths["json"].read_text(encoding="utf-8"))
    assert data["sections"]["operations"]["figures"]["incidents"] == 6
    assert "| Incidents | 6 | +5 |" in by_tenant["zephyrcorp"].summary


@pytest.mark.parametrize("locale", i18n.LOCALES)
def test_every_locale_renders(seeded, week, locale):
    report = build_report(seeded.warehouse, week, tenant=TENANTS[0], locale=locale)
    html = render_html(report)
    assert f'<html lang="{locale}">' in html
    assert i18n.catalog(locale)["report.weekly"].replace("'", "&#39;") in html
    assert render_markdown(report).startswith("### ")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    wh = Warehouse(f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'warehouse.db'}")
    seed_tenant(
        wh,
        HOSTILE_TENANT,
        0,
        blocked=True,
        services=("api", HOSTILE_SERVICE),
        incident_metric=HOSTILE_METRIC,
    )
    yield wh
    wh.dispose()


def test_hostile_names_are_escaped_in_html_markdown_and_charts(hostile, week):
    report = build_report(hostile, week, tenant=HOSTILE_TENANT)
    html = render_html(report)
    for raw in (HOSTILE_TENANT, HOSTILE_SERVICE, "<b>", "<img", "<script"):
        assert raw not in html
    assert "&lt;script&gt;alert(&#39;t&#39;)&lt;/script&gt;" in html
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    markdown = render_markdown(report)
    assert "<" not in markdown.replace("&lt;", "")
    assert "\\[x\\](javascript" in markdown  # not a link
    assert md(HOSTILE_METRIC) == "\\*bold\\*\\_\\[x\\](javascript:alert(2))\\|&lt;b&gt;"
    # A name that is not a plain identifier never becomes a path.
    folder = report_dir(Path("/r"), week, HOSTILE_TENANT)
    assert folder.parent == Path("/r/weekly/2026-10-19/tenants") and folder.name.startswith("t-")


def test_report_opens_offline_in_chromium_without_errors(seeded, week, tmp_path):
    from playwright.sync_api import sync_playwright

    report = build_report(seeded.warehouse, week, tenant=TENANTS[0], labels_path=seeded.labels_path)
    page_file = tmp_path / "report.html"
    page_file.write_text(render_html(report), encoding="utf-8")
    requests, failed, errors = [], [], []
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1100, "height": 1400})
        page.on("request", lambda r: requests.append(r.url))
        page.on("requestfailed", lambda r: failed.append(r.url))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_file.as_uri(), wait_until="load")
        assert page.locator("h1").inner_text() == "Weekly report"
        assert page.locator("svg").count() >= 6
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert requests == [page_file.as_uri()]
    assert failed == [] and errors == []
    assert (tmp_path / "report.png").stat().st_size > 50_000
