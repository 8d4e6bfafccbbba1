"""A built report as files: one self-contained HTML page (inline SVG charts, inline CSS, no script,
no external request), a JSON file with every figure, and a Markdown summary (the Dagster
materialization shows it). All text is in the report's locale; every name that comes from the
data (tenant, service, metric, reasons) is escaped for the format it lands in.
"""

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2
from markupsafe import Markup

from monitoring_pipelines.reports import svg
from monitoring_pipelines.reports.i18n import Translator
from monitoring_pipelines.templating import template_environment

TEMPLATE_DIR = Path(__file__).parent / "templates"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

COUNT, MINUTES, RATIO, AVAILABILITY = "count", "minutes", "ratio", "availability"
# How each headline figure is written and which way is good (+1 up is good, -1 up is bad).
FIGURES: dict[str, tuple[str, int]] = {
    "incidents": (COUNT, -1),
    "critical": (COUNT, -1),
    "pages": (COUNT, -1),
    "off_hours_pages": (COUNT, -1),
    "mtta_median_minutes": (MINUTES, -1),
    "mttr_median_minutes": (MINUTES, -1),
    "still_open": (COUNT, -1),
    "false_positives": (COUNT, -1),
    "services": (COUNT, 0),
    "services_meeting_slo": (COUNT, 1),
    "worst_availability": (AVAILABILITY, 1),
    "lowest_budget_left": (RATIO, 1),
    "precision_feedback": (RATIO, 1),
    "label_recall": (RATIO, 1),
    "label_precision": (RATIO, 1),
    "all_members_agree": (RATIO, 1),
    "flagged_points": (COUNT, -1),
    "rows_in": (COUNT, 0),
    "accepted": (COUNT, 0),
    "quarantined": (COUNT, -1),
    "blocked_partitions": (COUNT, -1),
    "completeness": (RATIO, 1),
    "retrains": (COUNT, 0),
    "promotions": (COUNT, 0),
    "rejections": (COUNT, 0),
    "rollbacks": (COUNT, -1),
    "series_forecast": (COUNT, 0),
    "capacity_crossings": (COUNT, -1),
    "possible_crossings": (COUNT, -1),
}
HEADLINES = (
    ("operations", "incidents"),
    ("operations", "critical"),
    ("operations", "pages"),
    ("operations", "off_hours_pages"),
    ("operations", "mttr_median_minutes"),
    ("operations", "still_open"),
    ("health", "worst_availability"),
    ("health", "services_meeting_slo"),
    ("detection", "precision_feedback"),
    ("detection", "label_recall"),
    ("data_quality", "completeness"),
    ("data_quality", "quarantined"),
)


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    value: str
    change: str
    trend: str  # "good", "bad" or "flat"


def _value(t: Translator, kind: str, value) -> str:
    if kind == MINUTES:
        return t.minutes(value)
    if kind == AVAILABILITY:
        return t.percent(value, 2)
    if kind == RATIO:
        return t.percent(value, 1)
    return t.number(value)


def _change(t: Translator, kind: str, delta) -> str:
    if delta is None:
        return ""
    if kind in (RATIO, AVAILABILITY):
        digits = 3 if kind == AVAILABILITY else 1
        points = round(abs(delta) * 100, digits)
        if points == 0:
            return "±0 pp"
        return f"{'+' if delta > 0 else '−'}{t.number(points, digits)} pp"
    if kind == MINUTES:
        return "±0" if delta == 0 else ("+" if delta > 0 else "−") + t.minutes(abs(delta))
    return t.signed(delta)


def _shown_as_zero(kind: str, delta: float) -> bool:
    if kind == AVAILABILITY:
        return round(abs(delta) * 100, 3) == 0
    if kind == RATIO:
        return round(abs(delta) * 100, 1) == 0
    return delta == 0


def figures(t: Translator, section: dict, names=None, skip=frozenset()) -> list[Figure]:
    out = []
    change = section.get("change") or {}
    for key, value in section.get("figures", {}).items():
        if (names is not None and key not in names) or key in skip:
            continue
        kind, good = FIGURES.get(key, (COUNT, 0))
        delta = change.get(key)
        trend = "flat"
        if delta and good and not _shown_as_zero(kind, delta):
            trend = "good" if delta * good > 0 else "bad"
        out.append(
            Figure(key, t(f"figure.{key}"), _value(t, kind, value), _change(t, kind, delta), trend)
        )
    return out


# -- Markdown escaping -----------------------------------------------------------------------------

# Names sit inside lines and table cells, never at a line start, so list and heading markers
# need no escape; emphasis, code, links, tables and HTML do.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]#|>~<&])")


def md(text: object) -> str:
    """Text safe in Markdown: its specials backslash-escaped and HTML's angle brackets and
    ampersands written as entities (renderers that allow inline HTML must not see a tag)."""
    value = str(text).replace("\r", " ").replace("\n", " ")
    value = _MD_SPECIAL.sub(r"\\\1", value)
    return value.replace("\\<", "&lt;").replace("\\>", "&gt;").replace("\\&", "&amp;")


# -- charts ----------------------------------------------------------------------------------------


def _day_ticks(stamps: list[str], most: int = 8) -> list[tuple[str, str]]:
    """Midnight ticks labelled ``MM-DD``, at most ``most`` of them."""
    days = sorted({ts for ts in stamps if ts[11:16] == "00:00"})
    if len(days) < 2:
        # A short window (an incident's): every six hours, the hour only.
        hours = sorted({ts for ts in stamps if ts[14:16] == "00" and int(ts[11:13]) % 6 == 0})
        return [(ts, ts[11:16] if ts[11:13] != "00" else ts[5:10]) for ts in hours]
    every = max(1, -(-len(days) // most))
    return [(ts, ts[5:10]) for ts in days[::every]]


def incident_charts(t: Translator, inc: dict) -> list[Markup]:
    out = []
    for panel in inc["panels"]:
        pts = panel["points"]
        if not pts:
            continue
        ticks = _day_ticks([p[0] for p in pts])
        window = (inc["started_at"], inc["ended_at"])
        value = svg.line_chart(
            [{"label": panel["metric"], "points": [(p[0], p[1]) for p in pts], "color": svg.BLUE}],
            title=f"{panel['metric']} — {t('label.value')}",
            width=420,
            height=150,
            window=window,
            x_labels=ticks,
        )
        threshold = next((p[3] for p in reversed(pts) if p[3] is not None), panel["threshold"])
        score = svg.line_chart(
            [
                {
                    "label": t("label.score"),
                    "points": [(p[0], p[2]) for p in pts],
                    "color": svg.ORANGE,
                }
            ],
            title=f"{panel['metric']} — {t('label.score')}",
            width=420,
            height=150,
            window=window,
            hlines=[(float(threshold), t("label.threshold"), svg.RED)] if threshold else [],
            x_labels=ticks,
        )
        out.append(Markup(value) + Markup(score))
    return out


def forecast_chart(t: Translator, item: dict, title: str) -> Markup:
    history = [(ts, v) for ts, v in item["history"]]
    pts = item["points"]
    ticks = _day_ticks([ts for ts, _ in history] + [p[0] for p in pts])
    hlines = []
    if item.get("limit") is not None:
        hlines.append(
            (float(item["limit"]), f"{t('label.capacity')} {t.number(item['limit'])}", svg.RED)
        )
    return Markup(
        svg.line_chart(
            [
                {"label": t("label.last_week"), "points": history, "color": svg.BLUE},
                {
                    "label": t("label.forecast_mean"),
                    "points": [(p[0], p[1]) for p in pts],
                    "color": svg.ORANGE,
                    "dash": True,
                },
            ],
            title=title,
            width=420,
            height=150,
            band=[(p[0], p[2], p[3]) for p in pts],
            hlines=hlines,
            x_labels=ticks,
        )
    )


# -- view model ------------------------------------------------------------------------------------


def view(report: dict) -> dict:
    """Everything the templates show, formatted in the report's locale."""
    t = Translator(report["locale"])
    s = report["sections"]
    period = report["period"]
    kind = report["report"]
    tz = period["timezone"]
    single = report["tenant"] is not None
    scope = t("report.tenant", tenant=report["tenant"]) if single else t("report.all_tenants")
    headline_names = {}
    for sec, name in HEADLINES:
        headline_names.setdefault(sec, set()).add(name)
    return {
        "t": t,
        "lang": t.locale,
        "title": t(f"report.{kind}"),
        "scope": scope,
        "single": single,
        "period_text": t(
            "report.period",
            start=t.day(period["start"]),
            end=t.day(period["last_day"]),
            timezone=tz,
        ),
        "versus": t("report.versus_week" if period["kind"] == "week" else "report.versus_month"),
        "has_data": report["has_data"],
        "headlines": [f for sec, name in HEADLINES for f in figures(t, s[sec], {name})],
        # The headline figures are not repeated in their section.
        "sections": {
            name: figures(t, s[name], skip=headline_names.get(name, frozenset()))
            for name in ("operations", "health", "detection", "data_quality", "models", "forecast")
        },
        "ops": s["operations"],
        "health": s["health"],
        "det": s["detection"],
        "dq": s["data_quality"],
        "models": s["models"],
        "fc": s["forecast"],
        **_chart_views(t, s, single, tz),
        "footer": t("report.generated_by", report=t(f"report.{kind}"), period_key=period["key"]),
        "tz": tz,
    }


def _chart_views(t: Translator, s: dict, single: bool, tz: str) -> dict:
    """The report's pictures: forecasts (every series of one tenant; of all tenants, the first six
    that may cross their limit), the top incidents, the heat map and each tenant's sparklines."""
    charts = s["charts"]
    fc_items = s["forecast"]["series"]
    if not single:
        fc_items = [i for i in fc_items if i["may_cross_at"]][:6]
    return {
        "fc_items": fc_items,
        "fc_charts": [
            forecast_chart(
                t, i, f"{'' if single else i['tenant'] + ' · '}{i['service']} · {i['metric']}"
            )
            for i in fc_items
        ],
        "top": [(inc, incident_charts(t, inc)) for inc in charts["top_incidents"]],
        "heat_map": Markup(
            svg.heat_map(
                charts["heat_map"],
                [t(f"weekday.{d}") for d in WEEKDAYS],
                title=t("section.heat_map", timezone=tz),
            )
        ),
        "sparklines": [
            {
                "tenant": row["tenant"],
                "incidents": sum(row["incidents"]),
                "incident_svg": Markup(
                    svg.sparkline(
                        row["incidents"],
                        bars=True,
                        label=f"{row['tenant']} {t('label.incidents_per_day')}",
                    )
                ),
                "traffic_svg": Markup(
                    svg.sparkline(
                        row["requests_per_second"], label=f"{row['tenant']} {t('label.requests')}"
                    )
                ),
            }
            for row in charts["sparklines"]
        ],
    }


@functools.cache
def _environment() -> jinja2.Environment:
    env = template_environment(TEMPLATE_DIR)
    env.filters["md"] = md
    return env


def render_html(report: dict) -> str:
    return _environment().get_template("report.html").render(view(report))


def render_markdown(report: dict) -> str:
    return _environment().get_template("summary.md").render(view(report))


def render_json(report: dict) -> str:
    return json.dumps(report, indent=1, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def write_report(report: dict, directory: Path) -> dict[str, Path]:
    """Write ``report.html``, ``report.json`` and ``summary.md`` into ``directory``; each file is
    written whole and renamed into place, so a reader never sees half a report."""
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, text in (
        ("report.html", render_html(report)),
        ("report.json", render_json(report)),
        ("summary.md", render_markdown(report)),
    ):
        path = directory / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        out[name.split(".")[-1] if name != "summary.md" else "md"] = path
    return out
