"""Report delivery: the policy's ``reports:`` section, report notifications through the outbox,
and what each receiver gets, against the real local HTTP and SMTP servers of ``servers.py``."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from monitoring_pipelines.alerting import outbox, service, types
from monitoring_pipelines.alerting.planning import plan_report_notifications
from monitoring_pipelines.alerting.policy import PolicyError, default_policy, loads_policy
from monitoring_pipelines.alerting.receivers import DeliveryError, receiver_from_spec
from monitoring_pipelines.alerting.templates import render
from tests.alerting.servers import SMTPSink, WebhookChecker, check_slack, check_teams

SECRET = "report-hook-secret-0123456789"
HTML = (
    "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Weekly report</title>"
    "<style>body{font-family:sans-serif}</style></head><body><h1>Weekly report · acme</h1>"
    "<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'><rect width='10' "
    "height='10'/></svg><p>Incidents: 6</p></body></html>\n"
)
SUMMARY = (
    "### Weekly report · Tenant acme\n\n| | | |\n| --- | ---: | ---: |\n| Incidents | 6 | +2 |\n"
)
HEADLINES = [
    {"key": "incidents", "label": "Incidents", "value": "6", "change": "+2", "trend": "bad"},
    {"key": "pages", "label": "Pages sent", "value": "4", "change": "−1", "trend": "good"},
    {"key": "mttr_median_minutes", "label": "MTTR (median)", "value": "42 min", "change": ""},
]

POLICY = """
receivers:
  files: {type: file, path: out}
  mail: {type: email, host: 127.0.0.1, port: 25, from: reports@monitoring.example,
         to: [sre@example.com]}
  chat: {type: slack, url_env: TEST_REPORT_SLACK}
  room: {type: teams, url_env: TEST_REPORT_TEAMS}
  hook: {type: webhook, url: http://127.0.0.1:9/hook, secret_env: TEST_REPORT_SECRET}
  pager: {type: pagerduty, routing_key_env: TEST_REPORT_PD}
route: {receiver: files}
tenants:
  zeta: {locale: fr}
reports:
  - {receivers: [mail], tenants: [acme, all], kinds: [weekly, monthly]}
  - {receivers: [chat, mail], kinds: [weekly]}
"""


def policy_text(reports: str | None = None, **ports) -> str:
    text = POLICY
    for name, url in ports.items():
        text = text.replace(name, url)
    if reports is not None:
        text = text.split("reports:")[0] + reports
    return text


def sample_report(
    folder, *, tenant="acme", kind="weekly", key="2026-10-19", locale="en", url=None, html=True
) -> dict:
    """A written report as ``reports.service.delivery`` describes it, with its files."""
    scope = "all" if tenant is None else f"tenants/{tenant}"
    where = folder / kind / key / scope
    where.mkdir(parents=True, exist_ok=True)
    if html:
        (where / "report.html").write_text(HTML, encoding="utf-8")
    (where / "summary.md").write_text(SUMMARY, encoding="utf-8")
    (where / "report.json").write_text("{}", encoding="utf-8")
    return {
        "kind": kind,
        "tenant": tenant,
        "locale": locale,
        "period": {
            "kind": "week" if kind == "weekly" else "month",
            "key": key,
            "start": f"{key}T00:00:00+00:00",
            "end": "2026-10-26T00:00:00+00:00",
            "last_day": "2026-10-25",
            "timezone": "UTC",
        },
        "title": "Weekly report" if kind == "weekly" else "Monthly report",
        "scope": "All tenants" if tenant is None else f"Tenant {tenant}",
        "period_text": "19 Oct 2026 – 25 Oct 2026 (UTC)",
        "versus": "vs previous week",
        "has_data": True,
        "no_data_text": "No data for this period.",
        "headlines": HEADLINES,
        "summary": SUMMARY,
        "paths": {
            "html": str(where / "report.html"),
            "json": str(where / "report.json"),
            "md": str(where / "summary.md"),
        },
        "url": url,
    }


# -- the policy -----------------------------------------------------------------------------------


def test_the_reports_section_routes_by_tenant_and_kind(tmp_path):
    policy = loads_policy(policy_text(), home=tmp_path)
    assert policy.receivers_for_report("weekly", "acme") == ["mail", "chat"]
    assert policy.receivers_for_report("monthly", "acme") == ["mail"]
    # Tenants omitted: every tenant's own report, not the all-tenants one.
    assert policy.receivers_for_report("weekly", "globex") == ["chat", "mail"]
    assert policy.receivers_for_report("monthly", "globex") == []
    assert policy.receivers_for_report("weekly", None) == ["mail"]
    assert policy.receivers_for_report("monthly", None) == ["mail"]
    assert policy.report_locale("zeta") == "fr" and policy.report_locale(None) == "en"


def test_without_a_reports_section_no_report_is_sent(tmp_path):
    for policy in (
        default_policy(environ={}, home=tmp_path),
        loads_policy(policy_text(reports=""), home=tmp_path),
    ):
        assert policy.report_routes == ()
        assert plan_report_notifications([sample_report(tmp_path)], policy) == []


@pytest.mark.parametrize(
    ("reports", "where", "words"),
    [
        ("reports: {receivers: [mail]}", "reports", "expected a list"),
        ("reports:\n  - {tenants: [acme]}", "reports[0].receivers", "missing"),
        ("reports:\n  - {receivers: mail}", "reports[0].receivers", "expected a list of names"),
        ("reports:\n  - {receivers: []}", "reports[0].receivers", "empty list"),
        ("reports:\n  - {receivers: [nobody]}", "reports[0].receivers[0]", "unknown receiver"),
        ("reports:\n  - {receivers: [files, pager]}", "reports[0].receivers[1]", "pagerduty"),
        (
            "reports:\n  - {receivers: [mail], kinds: [daily]}",
            "reports[0].kinds[0]",
            "unknown report kind 'daily' (expected weekly or monthly)",
        ),
        ("reports:\n  - {receivers: [mail], tenants: []}", "reports[0].tenants", "empty list"),
        ("reports:\n  - {receivers: [mail], when: monday}", "reports[0].when", "unknown key"),
        ("reports:\n  -", "reports[0]", "empty rule"),
    ],
)
def test_a_bad_reports_section_stops_with_one_line(tmp_path, reports, where, words):
    with pytest.raises(PolicyError) as caught:
        loads_policy(policy_text(reports=reports), "alerting.yaml", home=tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"alerting.yaml: {where}: ")
    assert words in message


# -- planning -------------------------------------------------------------------------------------


def test_report_keys_depend_only_on_receiver_kind_period_and_scope(tmp_path):
    policy = loads_policy(policy_text(), home=tmp_path)
    acme = sample_report(tmp_path / "a")
    first = plan_report_notifications([acme], policy)
    # Written again elsewhere, with other figures: the same keys.
    again = dict(sample_report(tmp_path / "b"), headlines=[], summary="changed")
    assert [n.idempotency_key for n in plan_report_notifications([again], policy)] == [
        n.idempotency_key for n in first
    ]
    assert [(n.receiver, n.event, n.tenant) for n in first] == [
        ("mail", "report", "acme"),
        ("chat", "report", "acme"),
    ]
    keys = {n.idempotency_key for n in first}
    others = [
        sample_report(tmp_path / "c", key="2026-10-26"),
        sample_report(tmp_path / "d", kind="monthly", key="2026-10-01"),
        sample_report(tmp_path / "e", tenant=None),
        # A tenant called "all" is not the all-tenants report.
        dict(sample_report(tmp_path / "f", tenant="all")),
    ]
    policy_all = loads_policy(
        policy_text(reports="reports:\n  - {receivers: [mail], tenants: [all]}"), home=tmp_path
    )
    everyone = plan_report_notifications([others[2]], policy_all)
    named_all = plan_report_notifications([others[3]], policy_all)
    assert everyone[0].tenant == "all" and named_all[0].tenant == "all"
    assert everyone[0].idempotency_key != named_all[0].idempotency_key
    for other in others[:2]:
        assert not keys & {n.idempotency_key for n in plan_report_notifications([other], policy)}


# -- delivery through the outbox ------------------------------------------------------------------


@pytest.fixture
def smtp():
    sink = SMTPSink()
    yield sink
    sink.close()


def part(mail, subtype: str) -> str:
    """A part of a received email as sent (SMTP carries CRLF line ends)."""
    return mail.get_body((subtype,)).get_content().replace("\r\n", "\n")


def delivery_policy(home, smtp, hook_url, reports):
    text = policy_text(reports=reports).replace("port: 25", f"port: {smtp.port}")
    return loads_policy(text.replace("http://127.0.0.1:9/hook", hook_url), home=home)


def test_each_receiver_gets_its_shape_once_however_often_the_period_is_rerun(
    warehouse, server, smtp, tmp_path, monkeypatch
):
    slack, teams, hook = server(check_slack), server(check_teams), server(WebhookChecker(SECRET))
    monkeypatch.setenv("TEST_REPORT_SLACK", slack.url)
    monkeypatch.setenv("TEST_REPORT_TEAMS", teams.url)
    monkeypatch.setenv("TEST_REPORT_SECRET", SECRET)
    home = tmp_path / "home"
    home.mkdir()
    policy = delivery_policy(
        home,
        smtp,
        hook.url,
        "reports:\n  - {receivers: [mail, chat, room, hook, files], tenants: [acme]}",
    )
    link = "https://reports.example.org/weekly/2026-10-19/tenants/acme/report.html"
    report = sample_report(tmp_path / "reports", url=link)

    first = service.queue_reports(warehouse, policy, [report])
    assert [n.receiver for n in first.queued] == ["mail", "chat", "room", "hook", "files"]
    result = service.deliver(warehouse, policy)
    assert (result.sent, result.retried, result.dead) == (5, 0, 0), result.errors
    assert slack.errors == teams.errors == hook.errors == []

    # Email: the report's HTML file as the HTML part, the Markdown summary as the text part.
    (mail,) = smtp.messages
    assert mail.get_content_type() == "multipart/alternative"
    assert mail["Subject"] == "Weekly report · Tenant acme · 19 Oct 2026 – 25 Oct 2026 (UTC)"
    assert mail["X-Monitoring-Event"] == "report"
    assert first.queued[0].idempotency_key in mail["Message-ID"]
    assert part(mail, "html") == HTML
    text = part(mail, "plain")
    assert text.startswith(SUMMARY.rstrip())
    assert f"Full report: {report['paths']['html']}" in text and link in text

    # Slack: Block Kit with the headline figures, where the report is and a button to it.
    (post,) = slack.deliveries
    blocks = post.json["blocks"]
    assert post.json["text"].startswith("Weekly report · Tenant acme")
    fields = [f["text"] for b in blocks for f in b.get("fields", [])]
    assert fields == ["*Incidents*\n6 (+2)", "*Pages sent*\n4 (−1)", "*MTTR (median)*\n42 min"]
    assert any(report["paths"]["html"] in b.get("text", {}).get("text", "") for b in blocks)
    buttons = [e for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert [(b["text"]["text"], b["url"]) for b in buttons] == [("Open the full report", link)]

    # Teams: an Adaptive Card with the figures as facts and an OpenUrl action.
    (card_post,) = teams.deliveries
    card = card_post.json["attachments"][0]["content"]
    facts = [f for e in card["body"] if e["type"] == "FactSet" for f in e["facts"]]
    assert {"title": "Incidents", "value": "6 (+2)"} in facts
    assert any(report["paths"]["html"] in e.get("text", "") for e in card["body"])
    assert card["actions"] == [
        {"type": "Action.OpenUrl", "title": "Open the full report", "url": link}
    ]

    # Webhook: signed JSON (checked by the server) with the summary and the paths.
    (hooked,) = hook.deliveries
    body = hooked.json
    assert body["event"] == "report" and "incident" not in body
    assert body["report"]["summary"] == SUMMARY
    assert body["report"]["paths"] == report["paths"]
    assert body["report"]["headlines"][0]["value"] == "6"
    assert body["report"]["url"] == link and body["links"] == {"report": link}

    # File: one JSON line.
    lines = (home / "out" / "notifications.jsonl").read_text().splitlines()
    (line,) = [json.loads(x) for x in lines]
    assert line["event"] == "report" and line["tenant"] == "acme"
    assert line["report"]["paths"]["html"] == report["paths"]["html"]

    # The period re-run: nothing new is queued, nothing is sent again.
    again = service.queue_reports(warehouse, policy, [sample_report(tmp_path / "reports")])
    assert again.queued == [] and len(again.already) == 5
    assert service.deliver(warehouse, policy).claimed == 0
    assert len(smtp.messages) == 1
    assert [len(s.requests) for s in (slack, teams, hook)] == [1, 1, 1]
    assert len((home / "out" / "notifications.jsonl").read_text().splitlines()) == 1


def test_a_500_is_retried_and_the_report_still_arrives_once(
    warehouse, server, smtp, tmp_path, monkeypatch
):
    slack = server(check_slack)
    slack.script = [500]
    monkeypatch.setenv("TEST_REPORT_SLACK", slack.url)
    policy = delivery_policy(
        tmp_path, smtp, "http://127.0.0.1:9/hook", "reports:\n  - {receivers: [chat]}"
    )
    service.queue_reports(warehouse, policy, [sample_report(tmp_path / "r")])
    now = datetime.now(UTC)
    first = service.deliver(warehouse, policy, now=now)
    assert (first.sent, first.retried) == (0, 1)
    (row,) = outbox.read_notifications(warehouse)
    assert row["status"] == "pending" and row["last_error"].startswith("HTTP 500")
    # Nothing is due before the backoff; then the retry delivers.
    later = service.deliver(warehouse, policy, now=now + timedelta(hours=2))
    assert later.sent == 1
    assert outbox.read_notifications(warehouse)[0]["attempts"] == 2
    assert len(slack.requests) == 2 and len(slack.deliveries) == 1
    assert service.deliver(warehouse, policy, now=now + timedelta(hours=3)).claimed == 0


def test_email_waits_for_a_missing_report_file(warehouse, smtp, tmp_path):
    policy = delivery_policy(
        tmp_path, smtp, "http://127.0.0.1:9/hook", "reports:\n  - {receivers: [mail]}"
    )
    report = sample_report(tmp_path / "r", html=False)
    service.queue_reports(warehouse, policy, [report])
    now = datetime.now(UTC)
    first = service.deliver(warehouse, policy, now=now)
    assert first.retried == 1 and smtp.messages == []
    assert "cannot read the report" in outbox.read_notifications(warehouse)[0]["last_error"]
    # Re-writing the period brings the file back; the next retry sends it.
    sample_report(tmp_path / "r")
    assert service.deliver(warehouse, policy, now=now + timedelta(hours=2)).sent == 1
    assert part(smtp.messages[0], "html") == HTML


def test_a_report_is_in_the_tenants_language(tmp_path):
    policy = loads_policy(policy_text(), home=tmp_path)
    report = dict(sample_report(tmp_path, tenant="zeta", locale="fr"), url="https://r.example/x")
    (note, *_) = plan_report_notifications([report], policy)
    assert note.locale == "fr"
    message = render(note.payload, note.locale, event=note.event, strict=True)
    assert message.next_step.startswith("Rapport complet : ")
    assert message.links == (("Ouvrir le rapport complet", "https://r.example/x"),)
    assert message.text.rstrip().endswith("Envoyé par monitoring-pipelines · rapport 2026-10-19")


def test_pagerduty_never_sends_a_report(tmp_path):
    policy = loads_policy(policy_text(reports="reports:\n  - {receivers: [mail]}"), home=tmp_path)
    (note,) = plan_report_notifications([sample_report(tmp_path)], policy)
    pager = receiver_from_spec("pager", {"type": "pagerduty", "routing_key_env": "X"})
    with pytest.raises(DeliveryError) as caught:
        pager.send(note, render(note.payload, "en", event=types.REPORT))
    assert not caught.value.retryable
