"""Notification text in the receiver's language: one payload becomes a :class:`.message.Message`,
a title, a plain-text body, an HTML body and the structured pieces (facts, metric rows, links,
next step) that Slack, Teams and PagerDuty lay out in their own formats.

Translations live in ``locales/<locale>.yaml`` (English is the reference catalog) and the bodies in
Jinja2 templates under ``templates/`` (HTML autoescaped). A key missing from a catalog never shows
up raw in a message: the English text is used, and the test suite fails on any catalog that does
not have exactly the English keys and placeholders.

A history digest (event ``digest``: the incidents of a tenant found in past data and not paged,
see ``history.fold_history``) is laid out like an incident, by the same function and templates,
with its counts by severity as facts (:func:`render_digest`).

A weekly or monthly report (event ``report``) renders differently (:func:`render_report`): its
title, headline figures and summary come already written in the report's locale (by
``reports.service``), the plain text is the report's Markdown summary and where the full report
is, and the HTML is the report's own self-contained HTML file.
"""

import functools
from dataclasses import replace
from pathlib import Path

from monitoring_pipelines.alerting import types
from monitoring_pipelines.alerting.message import Message, MetricRow
from monitoring_pipelines.alerting.wording import (
    LOCALE_DIR,
    REPORT_COLOR,
    REPORT_SEVERITY,
    RESOLVED_COLOR,
    SEVERITY_COLORS,
    Translator,
    catalog,
    format_time,
    next_step_key,
)
from monitoring_pipelines.i18n import DEFAULT_LOCALE
from monitoring_pipelines.templating import template_environment

EVENTS = (types.TRIGGER, types.REPEAT, types.ESCALATE, types.RESOLVE)

TEMPLATE_DIR = LOCALE_DIR.parent / "templates"


@functools.cache
def _labels(t) -> dict[str, str]:
    """The message templates' fixed words in the notification's locale."""
    return {
        "locale": t.locale,
        "label_summary": t("label.summary"),
        "label_metrics": t("label.metrics"),
        "label_next_step": t("label.next_step"),
        "label_links": t("label.links"),
        "label_points": t("label.points"),
        "colon": t("colon"),
    }


@functools.cache
def _environment():
    return template_environment(TEMPLATE_DIR)


def render(
    payload: dict, locale: str = DEFAULT_LOCALE, *, event: str | None = None, strict: bool = False
) -> Message:
    """Render a notification payload (see ``types.notification_payload``) in ``locale``.

    ``strict`` raises :class:`~monitoring_pipelines.i18n.MissingTranslation` instead of falling
    back to English; the tests render every event and kind in every locale that way.

    Longer than most functions here on purpose: it is one flat list of the message's parts, each
    a line or two, and cutting it further would only pass its dozen translated texts around.
    """
    event = event or payload.get("event") or types.TRIGGER
    if event == types.REPORT:
        return render_report(payload, locale, strict=strict)
    if event == types.DIGEST:
        return render_digest(payload, locale, strict=strict)
    t = Translator(locale, strict=strict)
    if event not in EVENTS:
        raise ValueError(f"unknown notification event {event!r}")
    incident = payload["incident"]
    severity = str(incident.get("severity") or "medium")
    tenant, service = incident["tenant"], incident["service"]
    kind = incident.get("kind") or types.ANOMALY
    started = format_time(incident.get("started_at"))
    resolved = format_time(incident.get("resolved_at") or incident.get("last_seen_at"))
    metric_names = [m["metric"] for m in incident.get("metrics") or []]
    # Without metrics (a failed run, a blocked partition) the title names what was hit instead.
    metrics_text = (
        ", ".join(metric_names)
        if metric_names
        else incident.get("partition_key") or incident.get("run_id") or service
    )

    severity_text = t(f"severity.{severity}")
    event_text = t(f"event.{event}")
    kind_text = t(f"kind.{kind}")
    fields = {
        "severity": severity_text,
        "event": event_text,
        "kind": kind_text,
        "tenant": tenant,
        "service": service,
        "metrics": metrics_text,
        "started": started,
        "resolved": resolved,
        "fingerprint": incident.get("fingerprint", ""),
    }
    title = t(f"title.{event}", **fields)
    intro = t(f"intro.{event}", **fields)
    next_step = t(next_step_key(incident, event), **fields)

    versions = incident.get("model_versions") or {}
    models_text = (
        ", ".join(f"{name} v{version}" for name, version in sorted(versions.items()))
        if versions
        else t("label.none")
    )
    facts = _facts(t, incident, event, severity_text, started, resolved, models_text)
    header, rows = _metric_table(t, incident)
    links = tuple(
        (t(f"link.{name}") if f"link.{name}" in catalog(DEFAULT_LOCALE) else t("link.other"), url)
        for name, url in (payload.get("links") or {}).items()
        if url
    )
    color = RESOLVED_COLOR if event == types.RESOLVE else SEVERITY_COLORS.get(severity, "757575")
    footer = t("footer", **fields)
    return _laid_out(
        t,
        summary=incident.get("summary") or "",
        event=event,
        severity=severity,
        title=title,
        intro=intro,
        next_step=next_step,
        facts=tuple(facts),
        links=links,
        color=color,
        footer=footer,
        labels=dict(incident.get("labels") or {}),
        event_text=event_text,
        severity_text=severity_text,
        kind_text=kind_text,
        metric_header=header,
        metrics=rows,
        models=models_text,
    )


def _laid_out(t: Translator, summary: str, **parts) -> Message:
    """The message of ``parts`` (the fields of :class:`Message` but its locale and bodies), its
    plain-text and HTML bodies laid out by the message templates with ``summary`` above the facts
    when there is one. Incidents and history digests both go through here."""
    bare = Message(locale=t.locale, text="", html="", **parts)
    context = {**vars(bare), "summary": summary, **_labels(t)}
    env = _environment()
    return replace(
        bare,
        text=env.get_template("message.txt").render(context),
        html=env.get_template("message.html").render(context),
    )


def _facts(t, incident, event, severity_text, started, resolved, models_text) -> list:
    """The (label, value) pairs every message lists, in the receiver's language."""
    status = incident.get("status") or types.FIRING
    facts = [
        (t("label.tenant"), incident["tenant"]),
        (t("label.service"), incident["service"]),
        (t("label.severity"), severity_text),
        (t("label.status"), t(f"status.{status}") if status in model_statuses() else status),
        (t("label.started"), started),
    ]
    if event == types.RESOLVE:
        facts.append((t("label.resolved"), resolved))
    else:
        facts.append((t("label.last_seen"), format_time(incident.get("last_seen_at"))))
    facts.append((t("label.score"), t.number(incident.get("score"))))
    facts.append((t("label.models"), models_text))
    if incident.get("partition_key"):
        facts.append((t("label.partition"), incident["partition_key"]))
    if incident.get("run_id"):
        facts.append((t("label.run"), incident["run_id"]))
    return facts


def _metric_table(t, incident) -> tuple[tuple[str, ...], tuple[MetricRow, ...]]:
    """The metrics table: its header and one row per metric of the incident."""
    rows = tuple(
        MetricRow(
            metric=m["metric"],
            value=t.number(m.get("peak_value")),
            score=t.number(m.get("peak_score")),
            threshold=t.number(m.get("threshold")),
            window=f"{format_time(m.get('first_ts'))} → {format_time(m.get('last_ts'))}",
            points=int(m.get("points") or 0),
        )
        for m in incident.get("metrics") or []
    )
    header = (
        t("label.metric"),
        t("label.value"),
        t("label.score"),
        t("label.threshold"),
        t("label.window"),
    )
    return header, rows


def model_statuses() -> tuple[str, ...]:
    return (types.FIRING, types.ACKNOWLEDGED, types.RESOLVED)


def report_html(path: str | None) -> str:
    """The text of a report's HTML file, or "" when there is none to read (only ``.html``
    files: the path comes from a stored payload)."""
    if not path or not str(path).endswith(".html"):
        return ""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def render_report(payload: dict, locale: str = DEFAULT_LOCALE, *, strict: bool = False) -> Message:
    """Render a report notification (see ``types.report_payload``): the title, headline figures
    (as facts: label, value and change), the Markdown summary as plain text with where the full
    report is, and the report's HTML file as the HTML ("" when the file cannot be read; the
    email receiver then waits for it)."""
    t = Translator(locale, strict=strict)
    report = payload["report"]
    paths = report.get("paths") or {}
    url = report.get("url") or (payload.get("links") or {}).get("report")
    period = report.get("period") or {}
    parts = (report.get("title"), report.get("scope"), report.get("period_text"))
    title = " · ".join(str(p) for p in parts if p)
    intro = report.get("period_text") or ""
    if report.get("versus"):
        intro = f"{intro} ({report['versus']})"
    if not report.get("has_data", True) and report.get("no_data_text"):
        intro = f"{intro}\n{report['no_data_text']}"
    facts = tuple(
        (str(f["label"]), f"{f['value']} ({f['change']})" if f.get("change") else str(f["value"]))
        for f in report.get("headlines") or []
    )
    where_label = t("report.where")
    path = str(paths.get("html") or "")
    where = f"{where_label}{t('colon')}{path}" if path else where_label
    links = ((t("link.report"), url),) if url else ()
    footer = t("report.footer", period_key=period.get("key", ""))
    context = {
        "summary": str(report.get("summary") or title),
        "where_label": where_label,
        "colon": t("colon"),
        "path": path,
        "url": url,
        "footer": footer,
    }
    return Message(
        locale=t.locale,
        event=types.REPORT,
        severity=REPORT_SEVERITY,
        title=title,
        text=_environment().get_template("report.txt").render(context),
        html=report_html(path),
        intro=intro,
        next_step=where,
        facts=facts,
        links=links,
        color=REPORT_COLOR,
        footer=footer,
        labels={"tenant": report.get("tenant") or types.ALL_TENANTS, "report": report["kind"]},
        event_text=str(report.get("title") or ""),
        kind_text=str(report.get("kind") or ""),
    )


def render_digest(payload: dict, locale: str = DEFAULT_LOCALE, *, strict: bool = False) -> Message:
    """Render a history digest: how many incidents of the tenant were held back as history, by
    severity, the period they span, and where to review them (the alerts list command, and the
    Dagster ``alerts`` asset when the payload links it)."""
    t = Translator(locale, strict=strict)
    digest = payload["digest"]
    fields = _digest_fields(t, digest)
    tenant = fields["tenant"]
    # The digest's title, intro, next step and footer, each its own catalog sentence.
    sentences = {
        part: t(f"digest.{part}", **fields) for part in ("title", "intro", "next_step", "footer")
    }
    facts = [(t("label.tenant"), tenant), (t("digest.incidents"), fields["count"])]
    by_severity = digest.get("by_severity") or {}
    facts += [(t(f"severity.{label}"), t.number(n)) for label, n in by_severity.items()]
    facts.append((t("digest.period"), f"{fields['first']} → {fields['last']}"))
    links = tuple(
        (t(f"link.{name}"), url) for name, url in (payload.get("links") or {}).items() if url
    )
    return _laid_out(
        t,
        summary="",
        event=types.DIGEST,
        severity=REPORT_SEVERITY,
        facts=tuple(facts),
        links=links,
        color=REPORT_COLOR,
        labels={"tenant": tenant, "digest": "history"},
        event_text=t("digest.event"),
        **sentences,
    )


def _digest_fields(t: Translator, digest: dict) -> dict[str, str]:
    """What a digest's sentences fill in: the tenant, how many incidents, the first and last
    times, the page lookback and the day they start."""
    return {
        "tenant": digest["tenant"],
        "count": t.number(int(digest.get("count") or 0)),
        "first": format_time(digest.get("first_started_at")),
        "last": format_time(digest.get("last_seen_at")),
        "lookback": digest.get("page_lookback") or "",
        "since": (digest.get("first_started_at") or "")[:10],
    }
