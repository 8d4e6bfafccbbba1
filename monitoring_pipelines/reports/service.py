"""Build and write reports: the one function the Dagster assets, the CLI and the demo call.

Reports land in ``MONITORING_HOME/reports/<weekly|monthly>/<period start>/all/`` (every tenant)
and ``.../tenants/<tenant>/``, each as ``report.html``, ``report.json`` and ``summary.md``.
"""

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from monitoring_pipelines.reports.build import build_report
from monitoring_pipelines.reports.config import load_config
from monitoring_pipelines.reports.data import Scope, metric_names
from monitoring_pipelines.reports.i18n import normalize_locale
from monitoring_pipelines.reports.periods import REPORT_NAMES, Period
from monitoring_pipelines.settings import Settings
from monitoring_pipelines.warehouse import Warehouse

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class WrittenReport:
    tenant: str | None
    paths: dict[str, Path]
    summary: str
    figures: dict
    has_data: bool


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
            paths = write_report(
                report, report_dir(out_dir or settings.reports_dir, period, tenant)
            )
            out.append(
                WrittenReport(
                    tenant=tenant,
                    paths=paths,
                    summary=render_markdown(report),
                    figures={k: v.get("figures", {}) for k, v in report["sections"].items()},
                    has_data=report["has_data"],
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
