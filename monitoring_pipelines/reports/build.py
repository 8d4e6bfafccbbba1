"""Build a report: every section's figures for a period and scope, with the previous period's
figures and the change between them. Plain data (JSON-safe), no Dagster, no rendering.

The result depends only on the warehouse rows, the label windows and the registry's versions in
the period, so re-building a past period gives the same report. It carries no build time.
"""

from pathlib import Path

from monitoring_pipelines.reports.config import ReportConfig
from monitoring_pipelines.reports.data import Scope
from monitoring_pipelines.reports.periods import Period
from monitoring_pipelines.reports.sections import SECTIONS
from monitoring_pipelines.reports.sections.base import Context
from monitoring_pipelines.warehouse import Warehouse

SCHEMA_VERSION = 1


def _change(current: dict, previous: dict) -> dict:
    out = {}
    for name, value in current.items():
        before = previous.get(name)
        if isinstance(value, int | float) and isinstance(before, int | float):
            out[name] = round(value - before, 6)
        else:
            out[name] = None
    return out


def build_report(
    warehouse: Warehouse,
    period: Period,
    *,
    tenant: str | None = None,
    config: ReportConfig | None = None,
    labels_path: Path | None = None,
    registry=None,
    locale: str = "en",
) -> dict:
    """The report of ``period`` for ``tenant`` (None: every tenant)."""
    ctx = Context(
        warehouse=warehouse,
        scope=Scope(tenant),
        config=config or ReportConfig(),
        labels_path=labels_path or Path("/nonexistent/labels.json"),
        registry=registry,
    )
    previous = period.previous()
    sections = {}
    for spec in SECTIONS:
        section = spec.build(ctx, period)
        if spec.compare:
            before = spec.build(ctx, previous).get("figures", {})
            section["previous"] = before
            section["change"] = _change(section["figures"], before)
        sections[spec.name] = section
    has_data = bool(
        sections["data_quality"]["figures"]["rows_in"]
        or sections["operations"]["figures"]["incidents"]
    )
    return {
        "schema_version": SCHEMA_VERSION,
        "report": {"week": "weekly", "month": "monthly"}[period.kind],
        "tenant": tenant,
        "locale": locale,
        "period": period.to_dict(),
        "previous_period": previous.to_dict(),
        "has_data": has_data,
        "settings": ctx.config.to_dict(),
        "sections": sections,
    }
