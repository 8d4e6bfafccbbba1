"""The alerting policy: loading, one-line errors, routing, and the notifications it plans."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from monitoring_pipelines.alerting import types
from monitoring_pipelines.alerting.pipeline_incidents import (
    data_quality_incident,
    pipeline_failure_incident,
)
from monitoring_pipelines.alerting.planning import plan_notifications
from monitoring_pipelines.alerting.policy import PolicyError, load_policy, loads_policy
from monitoring_pipelines.alerting.types import Incident, MetricEvidence, Severity

NOW = datetime(2026, 10, 6, 9, 0, tzinfo=UTC)
DAGSTER = "http://localhost:3000"

# NOW is the day after the incidents: a lookback of two days keeps them live (paged), which is
# what these routing, silence and rate-limit tests are about; history has tests of its own.
POLICY = """
defaults:
  repeat_interval: 1h
  page_lookback: 2d
  rate_limit: {max: 2, per: 1h}
tenants:
  acme:
    locale: fr
    routes:
      - matchers: [service=playback]
        receiver: acme-slack
receivers:
  files: {type: file, path: notifications}
  oncall: {type: slack, url_env: ONCALL_SLACK_URL}
  pager: {type: pagerduty, routing_key_env: PD_ROUTING_KEY}
  acme-slack: {type: slack, url_env: ACME_SLACK_URL}
  data-team: {type: file, path: data-team}
  ops: {type: file, path: ops}
route:
  receiver: files
  routes:
    - matchers: ['severity=~critical|high']
      receiver: oncall
      continue: true
      escalation: {after: 15m, to: pager}
    - matchers: [metric=error_rate]
      receiver: files
silences:
  - matchers: [tenant=globex, service=recommendations]
    starts: 2026-10-05T00:00:00Z
    ends: 2026-10-05T06:00:00Z
    comment: planned migration
  - matchers: [service=playback]
    weekly: {days: [sat], start: '23:00', end: '01:00', timezone: Europe/Paris}
inhibit_rules:
  - source_matchers: [severity=critical]
    target_matchers: ['severity!=critical']
    equal: [tenant, service]
data_owner: data-team
operations: ops
"""


def incident(
    tenant="acme",
    service="api",
    severity=Severity.HIGH,
    started="2026-10-05T10:00",
    last_seen="2026-10-05T10:30",
    status=types.FIRING,
    metrics=("error_rate",),
) -> Incident:
    start = datetime.fromisoformat(started).replace(tzinfo=UTC)
    seen = datetime.fromisoformat(last_seen).replace(tzinfo=UTC)
    return Incident(
        fingerprint=types.fingerprint(tenant, service, types.ANOMALY, start),
        tenant=tenant,
        service=service,
        kind=types.ANOMALY,
        severity=severity,
        status=status,
        started_at=start,
        last_seen_at=seen,
        resolved_at=seen + timedelta(minutes=5) if status == types.RESOLVED else None,
        score=0.9,
        metrics=tuple(MetricEvidence(m, 0.9, 1.0, 0.5, start, seen, 3) for m in metrics),
        run_id="run-1",
        partition_key="2026-10-05|" + tenant,
    )


def plan(incidents, previous=None, policy=None):
    return plan_notifications(
        incidents, previous or {}, policy or loads_policy(POLICY), NOW, DAGSTER
    )


def brief(notifications):
    return [(n.receiver, n.event, n.status) for n in notifications]


# -- loading and errors ---------------------------------------------------------------------------


def test_without_a_policy_file_everything_goes_to_the_file_receiver(home):
    policy = load_policy()
    assert policy.source == "default_policy.yaml"
    assert policy.receivers["files"]["type"] == "file"
    failure = pipeline_failure_incident("scoring_job", "r1", "boom", None, at=NOW)
    for inc in (incident(), incident(severity=Severity.CRITICAL), failure):
        assert [r for r, _ in policy.receivers_for(inc)] == ["files"]

    home.mkdir(parents=True)
    (home / "alerting.yaml").write_text(POLICY)
    assert load_policy().source == "alerting.yaml"
    assert load_policy().settings("acme").locale == "fr"


@pytest.mark.parametrize(
    ("fragment", "message"),
    [
        (
            "tenants: {acme: {routes: [{receiver: files}, {receiver: files},"
            " {receiver: files, matchers: ['severity=>high']}]}}",
            "alerting.yaml: tenants.acme.routes[2].matchers[0]: bad matcher 'severity=>high' "
            "(expected label=value, label!=value, label=~regex or label!~regex)",
        ),
        (
            "silences: [{matchers: ['colour=red'], starts: 2026-10-05T00:00:00Z,"
            " ends: 2026-10-06T00:00:00Z}]",
            "alerting.yaml: silences[0].matchers[0]: bad matcher 'colour=red': unknown label "
            "'colour' (expected one of tenant, service, metric, severity, kind)",
        ),
        (
            "defaults: {resolve_after: soon}",
            "alerting.yaml: defaults.resolve_after: bad duration 'soon' (expected a number and a "
            "unit: 90s, 10m, 4h, 1d, 1w)",
        ),
        (
            "tenants: {acme: {locale: pt}}",
            "alerting.yaml: tenants.acme.locale: unsupported locale 'pt' (expected one of en, fr, "
            "de, es, it)",
        ),
        (
            "inhibit_rules: [{source_matchers: [severity=critical], target_matchers: [kind=x],"
            " equal: [team]}]",
            "alerting.yaml: inhibit_rules[0].equal[0]: unknown label 'team' (expected one of "
            "tenant, service, metric, severity, kind)",
        ),
        (
            "data_owner: nobody",
            "alerting.yaml: data_owner: unknown receiver 'nobody' (receivers: files)",
        ),
        (
            "rout: {}",
            "alerting.yaml: rout: unknown key 'rout' (expected one of defaults, "
            "tenants, receivers, route, silences, inhibit_rules, data_owner, operations, reports)",
        ),
    ],
)
def test_mistakes_are_one_line_naming_file_key_and_problem(fragment, message):
    text = "receivers: {files: {type: file, path: n}}\nroute: {receiver: files}\n" + fragment
    with pytest.raises(PolicyError) as caught:
        loads_policy(text)
    assert str(caught.value) == message


def test_literal_secrets_are_refused_with_a_pointer_to_the_env_variable():
    text = "receivers: {s: {type: slack, url: 'https://hooks.slack.com/T0/B0/x'}}\n"
    with pytest.raises(PolicyError) as caught:
        loads_policy(text + "route: {receiver: s}")
    message = str(caught.value)
    assert message.startswith("alerting.yaml: receivers.s.url: ")
    assert "url_env" in message
    assert "hooks.slack.com" not in message
    assert "\n" not in message


def test_a_broken_file_names_the_file_and_line(tmp_path):
    path = tmp_path / "alerting.yaml"
    path.write_text("receivers:\n  files: {type: file\nroute: x\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(caught.value).startswith("alerting.yaml: line ")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"receivers:\n  hook: {type: webhook, url: 'https://x\xff\xfe', secret_env: S}\n",
            "alerting.yaml: receivers.hook.url: not UTF-8 text (byte 0xff at line 2, column 40); "
            "save the policy as UTF-8 YAML",
        ),
        (
            b"receivers:\n  files:\n    type: file\n    path: \x00\x01out\n",
            "alerting.yaml: receivers.files.path: not valid YAML: unacceptable character #x0000: "
            "special characters are not allowed",
        ),
        (
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
            "alerting.yaml: line 1: not UTF-8 text (byte 0x89 at line 1, column 1); "
            "save the policy as UTF-8 YAML",
        ),
    ],
)
def test_a_binary_file_is_one_line_naming_the_file_and_key(tmp_path, content, message):
    path = tmp_path / "alerting.yaml"
    path.write_bytes(content)
    with pytest.raises(PolicyError) as caught:
        load_policy(path, home=tmp_path)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "target", ["/etc/monitoring", "../outside", "notifications/../../outside.jsonl", "link/x"]
)
def test_a_file_receiver_may_not_write_outside_the_home(tmp_path, target):
    home = tmp_path / "home"
    (home).mkdir()
    (home / "link").symlink_to(tmp_path, target_is_directory=True)
    text = f"receivers: {{files: {{type: file, path: '{target}'}}}}\nroute: {{receiver: files}}\n"
    with pytest.raises(PolicyError) as caught:
        loads_policy(text, home=home)
    assert str(caught.value) == (
        f"alerting.yaml: receivers.files.path: must stay inside MONITORING_HOME "
        f"({home.resolve()}), got {target!r}"
    )
    inside = loads_policy(text.replace(target, "notifications"), home=home)
    assert inside.receivers["files"]["path"] == "notifications"
    absolute = loads_policy(text.replace(target, str(home / "out.jsonl")), home=home)
    assert absolute.receivers["files"]["path"] == str(home / "out.jsonl")


def test_clock_times_stay_times_and_durations_parse():
    policy = loads_policy(POLICY)
    weekly = policy.silences[1].weekly
    assert (weekly.start.hour, weekly.end.hour) == (23, 1)
    assert policy.defaults.repeat_interval == timedelta(hours=1)
    assert policy.route.routes[0].escalation.after == timedelta(minutes=15)


# -- routing --------------------------------------------------------------------------------------


def test_routes_match_in_order_with_continue_and_tenant_routes_first():
    policy = loads_policy(POLICY)

    def receivers(inc):
        return [r for r, _ in policy.receivers_for(inc)]

    assert receivers(incident(severity=Severity.HIGH)) == ["oncall", "files"]
    assert receivers(incident(severity=Severity.LOW, metrics=("cpu_percent",))) == ["files"]
    assert receivers(incident(service="playback", severity=Severity.CRITICAL)) == ["acme-slack"]
    # Tenant routes apply to their tenant only.
    assert receivers(incident(tenant="globex", service="playback")) == ["oncall", "files"]
    # A metric matcher matches any metric of the incident.
    both = incident(severity=Severity.LOW, metrics=("latency_p95_ms", "error_rate"))
    assert receivers(both) == ["files"]
    dq = data_quality_incident("acme", "2026-10-05|acme", "not_null", "nulls", "r1")
    assert receivers(dq) == ["data-team"]
    failure = pipeline_failure_incident("scoring_job", "r1", "boom", None, at=NOW)
    assert receivers(failure) == ["ops"]


# -- planning -------------------------------------------------------------------------------------


def test_a_new_incident_triggers_its_receivers_in_the_tenant_locale():
    inc = incident()
    out = plan([inc])
    assert brief(out) == [("files", "trigger", "pending"), ("oncall", "trigger", "pending")]
    first = out[0]
    assert first.locale == "fr"
    assert first.idempotency_key == types.fingerprint(inc.fingerprint, "files", "trigger", 0)
    assert first.payload["incident"]["fingerprint"] == inc.fingerprint
    assert first.payload["links"]["run"] == f"{DAGSTER}/runs/run-1"
    # Planning is pure: the same inputs give the same notifications.
    assert plan([inc]) == out


def test_an_incident_that_ended_resolves_the_receivers_that_were_triggered():
    firing = incident()
    resolved = replace(firing, status=types.RESOLVED, resolved_at=firing.last_seen_at)
    out = plan([resolved], previous={firing.fingerprint: firing})
    assert brief(out) == [("files", "resolve", "pending"), ("oncall", "resolve", "pending")]
    # Seen for the first time already over: both events, trigger first.
    assert [n.event for n in plan([resolved])] == ["trigger", "trigger", "resolve", "resolve"]
    # Already known as resolved: nothing new.
    assert plan([resolved], previous={firing.fingerprint: resolved}) == []


def test_repeats_follow_data_time_and_stop_once_acknowledged():
    before = incident(last_seen="2026-10-05T10:50")
    later = incident(last_seen="2026-10-05T12:10")  # 2h10m firing with repeat_interval 1h
    out = plan([later], previous={before.fingerprint: before})
    assert brief(out) == [("files", "repeat", "pending"), ("oncall", "repeat", "pending")]
    assert out[0].payload["sequence"] == 2
    assert out[0].idempotency_key == types.fingerprint(later.fingerprint, "files", "repeat", 2)
    # Same data again: no new repeat.
    assert plan([later], previous={later.fingerprint: later}) == []
    acked = replace(before, status=types.ACKNOWLEDGED)
    assert plan([later], previous={before.fingerprint: acked}) == []
    by_hand = replace(before, status=types.RESOLVED)
    assert plan([later], previous={before.fingerprint: by_hand}) == []


def test_critical_incidents_escalate_after_the_route_delay():
    inc = incident(severity=Severity.CRITICAL)
    out = plan([inc])
    (escalation,) = [n for n in out if n.event == "escalate"]
    assert escalation.receiver == "pager"
    assert escalation.not_before == NOW + timedelta(minutes=15)
    assert escalation.payload["escalated_from"] == "oncall"
    # A high incident that becomes critical escalates then; an acknowledged one does not.
    high = incident(severity=Severity.HIGH)
    assert [n.receiver for n in plan([inc], {inc.fingerprint: high})] == ["pager"]
    acked = replace(high, status=types.ACKNOWLEDGED)
    assert plan([inc], {inc.fingerprint: acked}) == []


def test_silences_suppress_with_a_reason_at_the_incidents_time():
    during = incident(tenant="globex", service="recommendations", started="2026-10-05T05:00")
    after = incident(tenant="globex", service="recommendations", started="2026-10-05T07:00")
    out = plan([during, after])
    assert {n.status for n in out if n.fingerprint == during.fingerprint} == {"suppressed"}
    assert {n.status for n in out if n.fingerprint == after.fingerprint} == {"pending"}
    reason = next(n.reason for n in out if n.fingerprint == during.fingerprint)
    assert reason == "silenced by silences[0] (planned migration)"


def test_weekly_maintenance_windows_use_their_timezone():
    # Saturday 23:30 in Paris is 21:30 UTC (CEST); Sunday 00:30 Paris is still in the window.
    inside = incident(tenant="globex", service="playback", started="2026-10-10T21:30")
    late = incident(tenant="globex", service="playback", started="2026-10-10T22:30")
    outside = incident(tenant="globex", service="playback", started="2026-10-10T20:30")
    out = plan([inside, late, outside])
    status = {n.fingerprint: n.status for n in out}
    assert status[inside.fingerprint] == status[late.fingerprint] == "suppressed"
    assert status[outside.fingerprint] == "pending"


def test_a_critical_incident_inhibits_lesser_ones_of_the_same_service():
    critical = incident(severity=Severity.CRITICAL, started="2026-10-05T10:00")
    lesser = incident(severity=Severity.MEDIUM, started="2026-10-05T10:10")
    elsewhere = incident(service="playback", severity=Severity.MEDIUM, started="2026-10-05T10:10")
    out = plan([critical, lesser, elsewhere])
    lesser_out = [n for n in out if n.fingerprint == lesser.fingerprint]
    assert {n.status for n in lesser_out} == {"suppressed"}
    assert lesser_out[0].reason.startswith(f"inhibited by critical incident {critical.fingerprint}")
    assert {n.status for n in out if n.fingerprint == elsewhere.fingerprint} == {"pending"}


def test_the_rate_limit_suppresses_extra_notifications_but_never_critical_ones():
    lows = [
        incident(
            service=f"svc{i}",
            severity=Severity.LOW,
            metrics=("cpu_percent",),
            started=f"2026-10-05T10:{10 * i:02d}",
        )
        for i in range(4)
    ]
    critical = incident(service="db", severity=Severity.CRITICAL, started="2026-10-05T10:45")
    out = plan([*lows, critical])
    low_status = [n.status for n in out if n.fingerprint in {i.fingerprint for i in lows}]
    assert low_status == ["pending", "pending", "suppressed", "suppressed"]
    suppressed = next(n for n in out if n.status == "suppressed")
    assert suppressed.reason == "rate limited: tenant acme already has 2 notifications within 1h"
    assert {n.status for n in out if n.fingerprint == critical.fingerprint} == {"pending"}
    # An hour later the window has room again.
    next_hour = incident(
        service="svc9", severity=Severity.LOW, metrics=("cpu_percent",), started="2026-10-05T11:15"
    )
    out = plan([*lows, next_hour])
    assert [n.status for n in out if n.fingerprint == next_hour.fingerprint] == ["pending"]


def test_data_quality_goes_to_the_data_owner_and_failures_to_operations():
    dq = data_quality_incident("acme", "2026-10-05|acme", "not_null", "nulls", "r1")
    failure = pipeline_failure_incident("scoring_job", "r1", "boom", "2026-10-05|acme", at=NOW)
    out = plan([dq, failure])
    assert sorted(brief(out)) == [
        ("data-team", "trigger", "pending"),
        ("ops", "trigger", "pending"),
    ]


def test_the_default_policy_adds_receivers_configured_in_the_environment():
    from monitoring_pipelines.alerting.policy import default_policy

    assert set(default_policy({}).receivers) == {"files"}
    policy = default_policy(
        {
            "MONITORING_PAGERDUTY_ROUTING_KEY": "R0UTING",
            "MONITORING_SMTP_HOST": "smtp.example.org",
            "MONITORING_SMTP_PORT": "2525",
            "MONITORING_ALERT_EMAIL_TO": "oncall@example.org, sre@example.org",
        }
    )
    assert set(policy.receivers) == {"files", "pagerduty", "email"}
    assert policy.receivers["email"]["to"] == ["oncall@example.org", "sre@example.org"]
    assert "R0UTING" not in repr(policy.receivers)  # only the variable's name is kept
    start = datetime(2026, 10, 1, tzinfo=UTC)
    medium = Incident(
        "f1", "acme", "api", types.ANOMALY, Severity.MEDIUM, types.FIRING, start, start, None, 0.8
    )
    critical = replace(medium, fingerprint="f2", severity=Severity.CRITICAL)
    assert [r for r, _ in policy.receivers_for(medium)] == ["email", "files"]
    assert [r for r, _ in policy.receivers_for(critical)] == ["pagerduty", "email", "files"]
