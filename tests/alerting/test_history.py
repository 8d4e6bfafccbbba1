"""History never pages: incidents found while scoring the past (a backfill, a new tenant, the demo)
are recorded, their notifications held back as ``history``, and one digest per tenant and receiver
summarises them, delivered to real local servers; only incidents still firing within the tenant's
``page_lookback`` page, and a resolve goes only where a trigger went."""

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from monitoring_pipelines import i18n
from monitoring_pipelines.alerting import history, outbox, service, store, templates, types, wording
from monitoring_pipelines.alerting.planning import plan_notifications
from monitoring_pipelines.alerting.policy import PolicyError, loads_policy
from monitoring_pipelines.alerting.types import Incident, Severity
from tests.alerting.conftest import score_frame
from tests.alerting.servers import PagerDutyChecker, WebhookChecker
from tests.alerting.test_policy import incident as anomaly_incident

# The demo's days (2026-09-28 to 2026-11-01) alerted in December, as `make demo` does.
FIRST_DAY = pd.Timestamp("2026-09-28", tz="UTC")
DAYS = [FIRST_DAY + pd.Timedelta(days=i) for i in range(35)]
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
SECRET = "whsec-history-test"
PD_KEY = "R0UT1NGKEY0123456789abcdef012345"
DAGSTER = "http://dagster.local:3000"

POLICY = """
defaults:
  repeat_interval: 1h
tenants:
  globex: {page_lookback: 3d, locale: fr}
receivers:
  hook: {type: webhook, url_env: HISTORY_HOOK_URL, secret_env: HISTORY_HOOK_SECRET}
  pager: {type: pagerduty, routing_key_env: HISTORY_PD_KEY, url: "PAGER_URL"}
route:
  receiver: hook
  routes:
    - matchers: [severity=critical]
      receiver: pager
      continue: true
      escalation: {after: 15m, to: pager}
    - receiver: hook
"""


def _policy(pager_url: str = "http://127.0.0.1:9/"):
    return loads_policy(POLICY.replace("PAGER_URL", pager_url))


@pytest.fixture
def receivers(server, monkeypatch):
    """A signed webhook and a PagerDuty endpoint on local servers, and the policy naming them."""
    hook = server(WebhookChecker(SECRET))
    pager = server(PagerDutyChecker(PD_KEY), ok_status=202)
    monkeypatch.setenv("HISTORY_HOOK_URL", hook.url)
    monkeypatch.setenv("HISTORY_HOOK_SECRET", SECRET)
    monkeypatch.setenv("HISTORY_PD_KEY", PD_KEY)
    return hook, pager, _policy(pager.url)


def _day_scores(day: pd.Timestamp, tenant: str, severe: bool = False) -> pd.DataFrame:
    """A day with one hour-long anomaly of the api: its error rate when ``severe`` (critical),
    else its memory use (medium)."""
    first, last = day + pd.Timedelta(hours=10), day + pd.Timedelta(hours=11)
    metric = "error_rate" if severe else "memory_percent"
    return score_frame({("api", metric): [(first, last, 0.9)]}, tenant=tenant, start=day)


def _raise(wh, policy, tenant, day, now):
    return service.raise_incidents(
        wh,
        policy,
        tenant,
        day,
        day + pd.Timedelta(days=1),
        run_id=f"alerts-{day:%Y-%m-%d}",
        partition_key=f"{day:%Y-%m-%d}|{tenant}",
        dagster_url=DAGSTER,
        now=now,
    )


def test_page_lookback_is_read_per_tenant_and_checked_with_one_line(home):
    policy = _policy()
    assert policy.settings("acme").page_lookback == timedelta(hours=2)
    assert policy.settings("globex").page_lookback == timedelta(days=3)
    for text, message in (
        (
            "defaults: {page_lookback: soon}",
            "alerting.yaml: defaults.page_lookback: bad duration 'soon'",
        ),
        (
            "tenants: {acme: {page_lookback: 0m}}",
            "alerting.yaml: tenants.acme.page_lookback: must be positive, got '0m'",
        ),
    ):
        bad = (
            POLICY.replace("PAGER_URL", "http://127.0.0.1:9/")
            .replace("defaults:\n  repeat_interval: 1h", text)
            .replace("tenants:\n  globex: {page_lookback: 3d, locale: fr}", "")
        )
        with pytest.raises(PolicyError) as exc:
            loads_policy(bad)
        assert str(exc.value).startswith(message)
        assert "\n" not in str(exc.value)


def test_a_day_by_day_backfill_pages_nobody_and_sends_one_summary_per_tenant(
    warehouse, home, receivers
):
    hook, pager, policy = receivers
    for tenant in ("acme", "globex"):
        for i, day in enumerate(DAYS):
            scores = _day_scores(day, tenant, severe=i % 7 == 0)
            warehouse.replace_partition(
                "anomaly_scores", tenant, day, day + pd.Timedelta(days=1), scores
            )
    # One alerting run per tenant-day, a minute apart, as a backfill drains.
    at = NOW
    for day in DAYS:
        for tenant in ("acme", "globex"):
            outcome = _raise(warehouse, policy, tenant, day, at)
            assert outcome.queued == 0 and outcome.history == outcome.suppressed > 0
            at += timedelta(minutes=1)
            # The outbox sensor sees nothing due while history keeps arriving.
            assert outbox.pending_count(warehouse, now=at) == 0
    incidents = store.read_incidents(warehouse)
    assert len(incidents) == 70  # recorded: reports and `alerts list` read them
    held = outbox.read_notifications(warehouse, status=outbox.SUPPRESSED, limit=None)
    assert {n["reason"] for n in held} == {types.HISTORY}
    assert {n["event"] for n in held} == {types.TRIGGER, types.RESOLVE}
    # Once history stopped arriving for the settle time, one digest per tenant is due.
    assert outbox.pending_count(warehouse, now=at + history.DIGEST_SETTLE) == 2

    report = service.deliver(warehouse, policy, now=at + history.DIGEST_SETTLE)
    assert report.sent == 2 and report.dead == 0
    assert hook.errors == [] and pager.requests == []  # a summary is not a page
    bodies = {r.json["tenant"]: r.json for r in hook.requests}
    assert set(bodies) == {"acme", "globex"}
    acme = bodies["acme"]
    assert acme["event"] == types.DIGEST
    assert acme["digest"]["count"] == 35
    assert acme["digest"]["by_severity"] == {"critical": 5, "medium": 30}
    assert acme["digest"]["first_started_at"].startswith("2026-09-28T10:00")
    assert acme["digest"]["last_seen_at"].startswith("2026-11-01T11:00")
    assert acme["digest"]["page_lookback"] == "2h"
    assert acme["links"] == {"alerts": f"{DAGSTER}/assets/alerts"}
    assert "35" in acme["title"] and "alerts list --tenant acme --since 2026-09-28" in acme["text"]
    assert bodies["globex"]["locale"] == "fr" and "Historique" in bodies["globex"]["title"]
    triggers = [n for n in held if n["event"] == types.TRIGGER and n["receiver"] == "hook"]
    assert {n["reason"] for n in outbox.read_notifications(warehouse, limit=None)} >= {
        f"history, summarised in {r.json['idempotency_key']}" for r in hook.requests
    }
    assert len(triggers) == 70

    # Re-running the whole backfill queues nothing, and nothing more is sent.
    for day in DAYS:
        for tenant in ("acme", "globex"):
            again = _raise(warehouse, policy, tenant, day, at)
            assert again.queued == again.written["inserted"] == 0
    assert service.deliver(warehouse, policy, now=at + timedelta(hours=1)).claimed == 0
    assert len(hook.requests) == 2


def test_a_delivery_during_the_backfill_takes_the_waiting_summary_along(warehouse, home, receivers):
    """`make demo` alerts every day, then delivers at once: the summary goes out with it."""
    hook, _, policy = receivers
    for day in DAYS[:3]:
        warehouse.replace_partition(
            "anomaly_scores", "acme", day, day + pd.Timedelta(days=1), _day_scores(day, "acme")
        )
        _raise(warehouse, policy, "acme", day, NOW)
    assert outbox.pending_count(warehouse, now=NOW) == 0
    assert service.deliver(warehouse, policy, now=NOW).sent == 1
    assert hook.requests[0].json["digest"]["count"] == 3


def test_only_incidents_firing_within_the_lookback_page(warehouse, home, receivers):
    hook, pager, policy = receivers
    today = pd.Timestamp(NOW.date(), tz="UTC")
    # Critical since 10:00 and still firing at the last point scored (11:55), five minutes ago.
    scores = score_frame(
        {
            ("api", "error_rate"): [
                (today + pd.Timedelta(hours=10), today + pd.Timedelta(hours=12), 5.0)
            ]
        },
        start=today,
        periods=144,
    )
    warehouse.replace_partition(
        "anomaly_scores", "acme", today, today + pd.Timedelta(days=1), scores
    )
    outcome = _raise(warehouse, policy, "acme", today, NOW)
    assert outcome.history == 0 and outcome.queued == 3  # hook, pager, and the escalation
    report = service.deliver(warehouse, policy, now=NOW)
    assert report.sent == 2 and hook.errors == pager.errors == []
    assert [r.json["event"] for r in hook.requests] == [types.TRIGGER]
    assert [r.json["event_action"] for r in pager.requests] == ["trigger"]


def _incident(last_seen: datetime, status=types.FIRING, severity=Severity.HIGH) -> Incident:
    """acme's api incident that started 2026-10-05 10:00, last seen at ``last_seen``."""
    return anomaly_incident(last_seen=last_seen.isoformat(), status=status, severity=severity)


def _brief(notes):
    return [(n.receiver, n.event, n.status, n.reason) for n in notes]


def test_history_that_fires_again_live_is_paged_under_keys_of_its_own(home):
    policy = _policy()
    now = datetime(2026, 10, 8, 12, 0, tzinfo=UTC)
    old = _incident(datetime(2026, 10, 5, 11, 0, tzinfo=UTC), severity=Severity.CRITICAL)
    held = plan_notifications([old], {}, policy, now, DAGSTER)
    assert sorted(_brief(held)) == [
        ("hook", "trigger", "suppressed", "history"),
        ("pager", "escalate", "suppressed", "history"),
        ("pager", "trigger", "suppressed", "history"),
    ]
    # Still history on the next run (nobody paged): its repeats are held too.
    longer = _incident(datetime(2026, 10, 6, 9, 0, tzinfo=UTC), severity=Severity.CRITICAL)
    again = plan_notifications([longer], {old.fingerprint: old}, policy, now, DAGSTER, paged={})
    assert again == []  # repeats go to receivers paged, and there are none
    # It fires again, now live: paged as a new incident, triggers and escalation.
    live = _incident(now - timedelta(minutes=5), severity=Severity.CRITICAL)
    paged = plan_notifications([live], {old.fingerprint: longer}, policy, now, DAGSTER, paged={})
    assert sorted(_brief(paged)) == [
        ("hook", "trigger", "pending", None),
        ("pager", "escalate", "pending", None),
        ("pager", "trigger", "pending", None),
    ]
    hook_trigger = next(n for n in paged if n.receiver == "hook")
    assert hook_trigger.idempotency_key == types.fingerprint(old.fingerprint, "hook", "trigger", 1)
    assert hook_trigger.idempotency_key != held[0].idempotency_key


def test_a_resolve_goes_only_to_receivers_that_were_paged(home):
    policy = _policy()
    now = datetime(2026, 10, 8, 12, 0, tzinfo=UTC)
    firing = _incident(now - timedelta(hours=5), severity=Severity.CRITICAL)
    ended = replace(firing, status=types.RESOLVED, resolved_at=firing.last_seen_at)
    # Paged live earlier (to the pager only); the end is seen late, after the lookback: the
    # resolve still goes, to the pager alone.
    out = plan_notifications(
        [ended], {firing.fingerprint: firing}, policy, now, DAGSTER, {firing.fingerprint: {"pager"}}
    )
    assert _brief(out) == [("pager", "resolve", "pending", None)]
    # Never paged (history): no resolve at all.
    assert plan_notifications([ended], {firing.fingerprint: firing}, policy, now, DAGSTER, {}) == []
    # Seen for the first time already over, long ago: trigger and resolve both held.
    first = plan_notifications([ended], {}, policy, now, DAGSTER)
    assert {n.reason for n in first} == {types.HISTORY}
    assert {n.event for n in first} == {types.TRIGGER, types.RESOLVE}


def test_the_dispatcher_cancels_a_resolve_whose_trigger_was_never_sent(warehouse, home, receivers):
    hook, _, policy = receivers
    now = datetime(2026, 10, 5, 12, 0, tzinfo=UTC)
    incident = _incident(now - timedelta(minutes=20))
    [trigger] = plan_notifications([incident], {}, policy, now, DAGSTER)
    ended = replace(incident, status=types.RESOLVED, resolved_at=now)
    [resolve] = plan_notifications([ended], {incident.fingerprint: incident}, policy, now, DAGSTER)
    hook.script.append((400, {}, b"refused"))  # the trigger is refused: dead, never sent
    outbox.enqueue(warehouse, [trigger, resolve], now=now)
    store.upsert_incidents(warehouse, [ended])
    report = service.deliver(warehouse, policy, now=now)
    assert report.dead == 1 and report.cancelled == 1 and report.sent == 0
    rows = {n["event"]: n for n in outbox.read_notifications(warehouse, limit=None)}
    assert rows["resolve"]["status"] == outbox.CANCELLED
    assert rows["resolve"]["reason"] == "resolve cancelled: hook was never sent this incident"
    assert len(hook.requests) == 1


@pytest.mark.parametrize("locale", i18n.LOCALES)
def test_a_digest_renders_in_every_locale(locale):
    payload = {
        "event": types.DIGEST,
        "digest": {
            "tenant": "acme",
            "count": 12,
            "by_severity": {"critical": 2, "medium": 10},
            "first_started_at": "2026-09-28T10:00:00+00:00",
            "last_seen_at": "2026-11-01T11:00:00+00:00",
            "page_lookback": "2h",
            "fingerprints": [],
        },
        "links": {"alerts": f"{DAGSTER}/assets/alerts"},
    }
    message = templates.render(payload, locale, strict=True)
    raw_key = re.compile(r"\b(digest|severity|label|link)\.[a-z_]+\b")
    for text in (message.title, message.text, message.html, message.next_step):
        assert not raw_key.search(text), (locale, text)
    assert "12" in message.title and "acme" in message.title
    assert "2026-09-28 10:00 UTC" in message.text and "2h" in message.intro
    assert dict(message.facts)[wording.Translator(locale)("severity.critical")] == "2"
    assert message.links[0][1] == f"{DAGSTER}/assets/alerts"


def test_the_commands_show_what_history_held_back(home, capsys):
    from monitoring_pipelines import cli
    from monitoring_pipelines.alerting.policy import load_policy
    from monitoring_pipelines.cli.output import print_alerts
    from monitoring_pipelines.settings import load_settings
    from monitoring_pipelines.warehouse import Warehouse

    settings = load_settings()
    settings.ensure_dirs()
    wh = Warehouse(settings.warehouse_url)
    try:
        policy = load_policy(home=settings.home)  # the embedded default: a file receiver
        for day in DAYS[:3]:
            scores = _day_scores(day, "acme")
            wh.replace_partition("anomaly_scores", "acme", day, day + pd.Timedelta(days=1), scores)
            _raise(wh, policy, "acme", day, NOW)
        assert cli.main(["alerts", "list", "--status", "all"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 3 and all("[history, not paged]" in line for line in lines)
        fingerprint = store.read_incidents(wh)[0].fingerprint
        assert cli.main(["alerts", "show", fingerprint]) == 0
        out = capsys.readouterr().out
        assert "trigger  -> files: suppressed (history)" in out
        assert "resolve  -> files: suppressed (history)" in out
        assert cli.main(["alerts", "deliver"]) == 0
        assert capsys.readouterr().out.startswith("delivered 1, ")
        print_alerts(store.read_incidents(wh), outbox.read_notifications(wh, limit=None), policy)
        out = capsys.readouterr().out
        assert (
            "history: 3 incidents older than page_lookback (2h by default) not paged "
            "(6 notifications held); summaries (one per tenant and receiver): 1 (1 sent)"
        ) in out
        [line] = [
            json_line
            for json_line in (settings.home / "notifications" / "notifications.jsonl")
            .read_text()
            .splitlines()
        ]
        assert '"event": "digest"' in line and '"count": 3' in line
    finally:
        wh.dispose()


def test_slack_teams_and_email_get_the_digest_in_their_own_format(
    warehouse, home, server, monkeypatch
):
    from tests.alerting.servers import SMTPSink, check_slack, check_teams

    slack, teams, sink = server(check_slack), server(check_teams), SMTPSink()
    try:
        monkeypatch.setenv("HISTORY_SLACK_URL", slack.url)
        monkeypatch.setenv("HISTORY_TEAMS_URL", teams.url)
        policy = loads_policy(
            f"""
defaults: {{locale: de}}
receivers:
  slack: {{type: slack, url_env: HISTORY_SLACK_URL}}
  teams: {{type: teams, url_env: HISTORY_TEAMS_URL}}
  mail: {{type: email, host: 127.0.0.1, port: {sink.port}, from: alerts@monitoring.example,
          to: [sre@example.com], timeout: 2}}
route:
  receiver: mail
  routes:
    - {{receiver: slack, continue: true}}
    - {{receiver: teams, continue: true}}
    - {{receiver: mail, continue: true}}
"""
        )
        for day in DAYS[:2]:
            scores = _day_scores(day, "acme", severe=True)
            warehouse.replace_partition(
                "anomaly_scores", "acme", day, day + pd.Timedelta(days=1), scores
            )
            _raise(warehouse, policy, "acme", day, NOW)
        report = service.deliver(warehouse, policy, now=NOW)
        assert report.sent == 3 and report.dead == report.retried == 0
        assert slack.errors == teams.errors == []
        [slack_body] = [r.json for r in slack.requests]
        assert slack_body["text"].startswith("[Historie] acme")
        assert "Kritisch" in str(slack_body["blocks"])
        [teams_body] = [r.json for r in teams.requests]
        assert "acme" in str(teams_body)
        [mail] = sink.messages
        assert (
            mail["Subject"].startswith("[Historie] acme") and mail["X-Monitoring-Event"] == "digest"
        )
        html = mail.get_body(("html",)).get_content()
        assert "Kritisch" in html and "2026-09-28 10:00 UTC" in html
    finally:
        sink.close()


def test_history_acknowledged_meanwhile_is_not_paged_when_it_fires_again(home):
    policy = _policy()
    now = datetime(2026, 10, 8, 12, 0, tzinfo=UTC)
    old = _incident(datetime(2026, 10, 5, 11, 0, tzinfo=UTC))
    acked = replace(old, status=types.ACKNOWLEDGED)
    live = _incident(now - timedelta(minutes=5))
    assert plan_notifications([live], {old.fingerprint: acked}, policy, now, DAGSTER, {}) == []


def test_a_page_opened_by_an_escalation_is_resolved_there(warehouse, home, server, monkeypatch):
    hook, pager = server(WebhookChecker(SECRET)), server(PagerDutyChecker(PD_KEY), ok_status=202)
    monkeypatch.setenv("HISTORY_HOOK_URL", hook.url)
    monkeypatch.setenv("HISTORY_HOOK_SECRET", SECRET)
    monkeypatch.setenv("HISTORY_PD_KEY", PD_KEY)
    policy = loads_policy(
        f"""
receivers:
  hook: {{type: webhook, url_env: HISTORY_HOOK_URL, secret_env: HISTORY_HOOK_SECRET}}
  pager: {{type: pagerduty, routing_key_env: HISTORY_PD_KEY, url: "{pager.url}"}}
route:
  receiver: hook
  routes:
    - {{matchers: [severity=critical], receiver: hook, escalation: {{after: 15m, to: pager}}}}
"""
    )
    now = datetime(2026, 10, 5, 12, 0, tzinfo=UTC)
    firing = _incident(now - timedelta(minutes=10), severity=Severity.CRITICAL)
    notes = plan_notifications([firing], {}, policy, now, DAGSTER)
    assert sorted((n.receiver, n.event) for n in notes) == [
        ("hook", "trigger"),
        ("pager", "escalate"),
    ]
    outbox.enqueue(warehouse, notes, now=now)
    store.upsert_incidents(warehouse, [firing])
    # Nobody acknowledges it: the escalation pages PagerDuty after 15 minutes.
    assert service.deliver(warehouse, policy, now=now + timedelta(minutes=16)).sent == 2
    ended = replace(firing, status=types.RESOLVED, resolved_at=now + timedelta(minutes=30))
    paged = history.paged_receivers(warehouse, [firing.fingerprint])
    assert paged == {firing.fingerprint: {"hook", "pager"}}
    resolves = plan_notifications(
        [ended], {firing.fingerprint: firing}, policy, now, DAGSTER, paged
    )
    assert sorted((n.receiver, n.event) for n in resolves) == [
        ("hook", "resolve"),
        ("pager", "resolve"),
    ]
    outbox.enqueue(warehouse, resolves, now=now + timedelta(minutes=31))
    store.upsert_incidents(warehouse, [ended])
    assert service.deliver(warehouse, policy, now=now + timedelta(minutes=32)).sent == 2
    assert pager.errors == []  # the checker refuses a resolve for a key never triggered
    assert [r.json["event_action"] for r in pager.requests] == ["trigger", "resolve"]
