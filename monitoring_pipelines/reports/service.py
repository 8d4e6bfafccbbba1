"""Build and write reports, then queue their delivery: what the Dagster assets, the CLI and the
demo call.

Reports land in ``MONITORING_HOME/reports/<weekly|monthly>/<period start>/all/`` (every tenant)
and ``.../tenants/<tenant>/``, each as ``report.html``, ``report.json`` and ``summary.md``.

:func:`queue_delivery` hands the written reports to the alerting outbox, to the receivers the
policy's ``reports:`` section names (none without it). Each carries its headline figures in the
report's locale, its Markdown summary, its files' paths and, when ``MONITORING_REPORTS_URL`` is
set (the address the reports folder is served at), a link to its HTML page.
"""

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from monitoring_pipelines.reports.build import build_report
from monitoring_pipelines.reports.config import load_config
from monitoring_pipelines.reports.data import Scope, metric_names
from monitoring_pipelines.reports.i18n import Translator, normalize_locale
from monitoring_pipelines.reports.periods import REPORT_NAMES, Period
from monitoring_pipelines.settings import Settings
from monitoring_pipelines.warehouse import Warehouse

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# The address ``MONITORING_HOME/reports`` (or ``--out``) is served at, for links in messages.
REPORTS_URL_ENV = "MONITORING_REPORTS_URL"


@dataclass(frozen=True)
class WrittenReport:
    tenant: str | None
    paths: dict[str, Path]
    summary: str
    figures: dict
    has_data: bool
    # What its notifications carry (see :func:`delivery`).
    delivery: dict = field(default_factory=dict)


def tenant_dir(tenant: str) -> str:
    """A folder name for the tenant: itself when plain, else a stable hash (names are data)."""
    if _SAFE.match(tenant):
        return tenant
    return "t-" + hashlib.sha256(tenant.encode()).hexdigest()[:16]


def report_dir(base: Path, period: Period, tenant: str | None) -> Path:
    root = base / REPORT_NAMES[period.kind] / period.key
    return root / "all" if tenant is None else root / "tenants" / tenant_dir(tenant)


def locales(settings: Settings):
    """tenant -> locale from the alerting policy (``tenants.<t>.locale``, else the default)."""
    from monitoring_pipelines.alerting.policy import load_policy

    policy = load_policy(settings.alerting_file, home=settings.home)
    return lambda tenant: normalize_locale(
        policy.defaults.locale if tenant is None else policy.settings(tenant).locale
    )


def report_tenants(settings: Settings, warehouse: Warehouse, period: Period) -> list[str]:
    """The configured tenants and every tenant with rows in the period."""
    found = set(metric_names(warehouse, Scope(None), period.start, period.end)["tenant"])
    return sorted(set(settings.tenants) | found)


def write_reports(
    settings: Settings,
    period: Period,
    *,
    tenants: list[str] | None = None,
    include_all: bool = True,
    out_dir: Path | None = None,
    registry=None,
    warehouse: Warehouse | None = None,
) -> list[WrittenReport]:
    """Build and write the period's reports: one across all tenants (``include_all``) and one
    per tenant (``tenants``; None: every known tenant)."""
    from monitoring_pipelines.reports.render import render_markdown, write_report

    own = warehouse is None
    wh = warehouse or Warehouse(settings.warehouse_url)
    try:
        config = load_config(settings.reports_file)
        locale_of = locales(settings)
        chosen = report_tenants(settings, wh, period) if tenants is None else list(tenants)
        scopes: list[str | None] = ([None] if include_all else []) + chosen
        out = []
        for tenant in scopes:
            report = build_report(
                wh,
                period,
                tenant=tenant,
                config=config,
                labels_path=settings.home / "labels.json",
                registry=registry,
                locale=locale_of(tenant),
            )
            base = out_dir or settings.reports_dir
            paths = write_report(report, report_dir(base, period, tenant))
            summary = render_markdown(report)
            out.append(
                WrittenReport(
                    tenant=tenant,
                    paths=paths,
                    summary=summary,
                    figures={k: v.get("figures", {}) for k, v in report["sections"].items()},
                    has_data=report["has_data"],
                    delivery=delivery(report, summary, paths, base),
                )
            )
        return out
    finally:
        if own:
            wh.dispose()


def materialization(written: list[WrittenReport]) -> dict:
    """What the asset shows: the all-tenants summary, headline figures and every file's path."""
    everyone = next((w for w in written if w.tenant is None), written[0] if written else None)
    paths = {
        (w.tenant if w.tenant is not None else "all"): {k: str(p) for k, p in w.paths.items()}
        for w in written
    }
    return {
        "summary": everyone.summary if everyone else "",
        "html": str(everyone.paths["html"]) if everyone else "",
        "paths": paths,
        "reports": len(written),
        "has_data": bool(everyone and everyone.has_data),
        "incidents": (everyone.figures.get("operations", {}).get("incidents") if everyone else 0),
    }


def report_url(path: Path, base: Path, environ=None) -> str | None:
    """The link to a report file: ``MONITORING_REPORTS_URL`` joined with the file's path under
    the reports folder it was written to (None without the setting, or outside that folder)."""
    root = (os.environ if environ is None else environ).get(REPORTS_URL_ENV, "").strip()
    if not root:
        return None
    try:
        relative = Path(path).resolve().relative_to(Path(base).resolve())
    except ValueError:
        return None
    return f"{root.rstrip('/')}/{quote(relative.as_posix())}"


def delivery(report: dict, summary: str, paths: dict[str, Path], base: Path) -> dict:
    """What a report's notifications carry, written in the report's locale: its kind, tenant
    and period, its title, the headline figures (label, value, change against the previous
    period), the Markdown summary, the files' paths and the link to the HTML page."""
    from monitoring_pipelines.reports.render import HEADLINES, figures

    t = Translator(report["locale"])
    period, tenant, kind = report["period"], report["tenant"], report["report"]
    headlines = [
        {"key": f.key, "label": f.label, "value": f.value, "change": f.change, "trend": f.trend}
        for section, name in HEADLINES
        for f in figures(t, report["sections"][section], {name})
    ]
    return {
        "kind": kind,
        "tenant": tenant,
        "locale": t.locale,
        "period": period,
        "title": t(f"report.{kind}"),
        "scope": t("report.all_tenants") if tenant is None else t("report.tenant", tenant=tenant),
        "period_text": t(
            "report.period",
            start=t.day(period["start"]),
            end=t.day(period["last_day"]),
            timezone=period["timezone"],
        ),
        "versus": t("report.versus_week" if period["kind"] == "week" else "report.versus_month"),
        "has_data": report["has_data"],
        "no_data_text": t("report.no_data"),
        "headlines": headlines,
        "summary": summary,
        "paths": {name: str(path) for name, path in paths.items()},
        "url": report_url(paths["html"], base),
    }


def queue_delivery(
    settings: Settings,
    written: list[WrittenReport],
    *,
    warehouse: Warehouse | None = None,
    policy=None,
    now=None,
):
    """Queue the written reports in the alerting outbox for the receivers the policy's
    ``reports:`` section routes them to (a ``ReportQueueOutcome``: what was queued now and what
    an earlier run had queued already). Without the section nothing is queued; the dispatcher
    (``alerts deliver``, the outbox sensor) does the sending, with its retries."""
    from monitoring_pipelines.alerting.policy import load_policy
    from monitoring_pipelines.alerting.service import ReportQueueOutcome, queue_reports

    if policy is None:
        policy = load_policy(settings.alerting_file, home=settings.home)
    reports = [w.delivery for w in written if w.delivery]
    if not policy.report_routes or not reports:
        return ReportQueueOutcome()
    own = warehouse is None
    wh = warehouse or Warehouse(settings.warehouse_url)
    try:
        return queue_reports(wh, policy, reports, now=now)
    finally:
        if own:
            wh.dispose()


def describe_queued(note) -> str:
    """``mail <- acme weekly 2026-10-19`` for a queued report notification."""
    report = note.payload.get("report") or {}
    scope = "all tenants" if report.get("tenant") is None else report["tenant"]
    return f"{note.receiver} <- {scope} {report.get('kind')} {report.get('period', {}).get('key')}"
