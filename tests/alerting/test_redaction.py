"""Secrets are redacted wherever they appear: every secret a receiver loads from the environment
(and the user-info of any URL) is planted in server responses, SMTP replies, exceptions and logs,
then looked for in every warehouse table and every file under MONITORING_HOME."""

import logging
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
import requests
import sqlalchemy as sa

from monitoring_pipelines.alerting import outbox, redaction, service, store
from monitoring_pipelines.alerting.policy import load_policy
from monitoring_pipelines.settings import load_settings
from monitoring_pipelines.warehouse import Warehouse, metadata
from tests.alerting.servers import SMTPSink, sample_notification

T0 = datetime(2026, 10, 5, 15, 0, tzinfo=UTC)

# Each value is a secret the process loads; the receivers echo them back in every way they can.
HOOK_USER, HOOK_PASSWORD = "hookuser-7q", "hookP4ss-9f8e7d"
HOOK_TOKEN = "tok3nABCDEF123456"
HOOK_SECRET = "whsec-Z9y8X7w6v5"
SLACK_TOKEN = "slackS3cretT0ken99"
TEAMS_SIG = "teamsSig0123456789abcdef"
ROUTING_KEY = "R0UTINGkey0123456789abcdefABCDEF"
SMTP_USER, SMTP_PASSWORD = "smtp-user-4k", "smtpP4ssw0rd-x1"
PLAIN_PASSWORD = "plainP4ss-in-policy"

POLICY = """
defaults: {{receiver_failing_after: 1h}}
receivers:
  hook: {{type: webhook, url_env: HOOK_URL, secret_env: HOOK_SECRET, read_timeout: 2}}
  plain: {{type: webhook, url: '{plain_url}', secret_env: HOOK_SECRET, read_timeout: 2}}
  slack: {{type: slack, url_env: SLACK_URL, read_timeout: 2}}
  teams: {{type: teams, url_env: TEAMS_URL, read_timeout: 2}}
  pager: {{type: pagerduty, routing_key_env: PD_KEY, url: '{pd_url}', read_timeout: 2}}
  mail: {{type: email, host: 127.0.0.1, port: {smtp_port}, from: alerts@example.org,
         to: [sre@example.org], username_env: SMTP_USER, password_env: SMTP_PASSWORD, timeout: 2}}
  files: {{type: file, path: notifications}}
route:
  receiver: files
  routes:
    - {{receiver: hook, continue: true}}
    - {{receiver: plain, continue: true}}
    - {{receiver: slack, continue: true}}
    - {{receiver: teams, continue: true}}
    - {{receiver: pager, continue: true}}
    - {{receiver: mail, continue: true}}
operations: files
"""

ECHO = (
    f"denied {{path}} for {HOOK_USER}:{HOOK_PASSWORD} ({quote(HOOK_PASSWORD)}) token {HOOK_TOKEN} "
    f"secret {HOOK_SECRET} slack {SLACK_TOKEN} teams {TEAMS_SIG} key {ROUTING_KEY} "
    f"plain {PLAIN_PASSWORD}"
).encode()


def _secrets(urls: dict[str, str]) -> list[str]:
    values = [
        HOOK_USER,
        HOOK_PASSWORD,
        HOOK_TOKEN,
        HOOK_SECRET,
        SLACK_TOKEN,
        TEAMS_SIG,
        ROUTING_KEY,
        SMTP_USER,
        SMTP_PASSWORD,
        PLAIN_PASSWORD,
        *urls.values(),
    ]
    return values + [quote(v, safe="") for v in values]


def _leaks(home, warehouse: Warehouse, text: str, secrets: list[str]) -> list[str]:
    found = []
    with warehouse.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(sa.select(table)):
                cells = " ".join(str(v) for v in row)
                found += [f"{table.name}: {s}" for s in secrets if s in cells]
    for path in home.rglob("*"):
        # The policy is the user's own text (it holds the plain URL with its user-info).
        if path.is_file() and path.name != "alerting.yaml":
            data = path.read_bytes()
            found += [f"{path.name}: {s}" for s in secrets if s.encode() in data]
    found += [f"log: {s}" for s in secrets if s in text]
    return found


def test_unit_redact_masks_registered_values_their_url_parts_and_any_user_info():
    redaction.remember("https://u1:pw-abcdef@hooks.example.org/services/T1/B2/XXsecretXXtoken")
    text = (
        "echo: pw-abcdef, u1:pw-abcdef, /services/T1/B2/XXsecretXXtoken, XXsecretXXtoken, "
        "pw%2Dabcdef and ftp://someone:else@host/x"
    )
    out = redaction.redact(text)
    for secret in ("pw-abcdef", "XXsecretXXtoken", "someone:else"):
        assert secret not in out
    assert "ftp://***@host/x" in out
    assert redaction.redact("a short ab and 1234 stay") == "a short ab and 1234 stay"
    assert redaction.redact("x secret-value-9 y", ["secret-value-9"]) == "x *** y"


def test_secrets_never_reach_a_table_a_file_or_a_log(home, server, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    settings = load_settings()
    settings.ensure_dirs()
    hook, plain, slack, teams, pager = (server() for _ in range(5))
    smtp = SMTPSink(credentials=(SMTP_USER, SMTP_PASSWORD))
    try:
        base = hook.url.replace("http://", f"http://{HOOK_USER}:{HOOK_PASSWORD}@")
        urls = {
            "HOOK_URL": f"{base}/{HOOK_TOKEN}",
            "SLACK_URL": f"{slack.url}/services/T0AAA1111/B0BBB2222/{SLACK_TOKEN}",
            "TEAMS_URL": f"{teams.url}?api-version=1&sig={TEAMS_SIG}",
        }
        for name, value in {
            **urls,
            "HOOK_SECRET": HOOK_SECRET,
            "PD_KEY": ROUTING_KEY,
            "SMTP_USER": SMTP_USER,
            "SMTP_PASSWORD": SMTP_PASSWORD,
        }.items():
            monkeypatch.setenv(name, value)
        plain_url = plain.url.replace("http://", f"http://someone:{PLAIN_PASSWORD}@")
        (settings.home / "alerting.yaml").write_text(
            POLICY.format(plain_url=plain_url, pd_url=pager.url, smtp_port=smtp.port)
        )
        policy = load_policy(home=settings.home)
        wh = Warehouse(settings.warehouse_url)
        names = ["hook", "plain", "slack", "teams", "pager", "mail"]
        outbox.enqueue(wh, [sample_notification(r, key=f"k-{r}") for r in names], now=T0)

        # 1. Every receiver answers with an error that echoes every secret (and its own URL).
        for srv in (hook, plain, slack, teams, pager):
            srv.script.extend([(500, {}, ECHO)] * 3)
        smtp.reply = f"451 4.3.0 {SMTP_USER}/{SMTP_PASSWORD} {ROUTING_KEY} rejected"
        report = service.deliver(wh, policy, now=T0)
        assert report.retried == 6 and report.sent == 0
        # 2. Two hours later they still fail: operations get an incident per receiver, whose
        #    summary carries the (redacted) echo, written to the file receiver.
        report = service.deliver(wh, policy, now=T0 + timedelta(hours=2))
        assert sorted(report.failing_receivers) == sorted(names)

        # 3. Exceptions: the HTTP client raises with the URL it was given, a log line names it.
        def broken_post(url, **kwargs):
            logging.getLogger("some.http.library").warning("posting to %s", url)
            raise RuntimeError(f"cannot post to {url} with {kwargs.get('data', b'')[:0]!r}")

        monkeypatch.setattr(requests, "post", broken_post)
        service.deliver(wh, policy, now=T0 + timedelta(hours=4))
        monkeypatch.undo()
        try:
            raise ValueError(f"planted {urls['HOOK_URL']} {ROUTING_KEY}")
        except ValueError:
            logging.getLogger("monitoring_pipelines.alerting").exception("planted failure")
        logging.getLogger("urllib3").debug("GET %s", urls["SLACK_URL"])

        errors = [n["last_error"] for n in outbox.read_notifications(wh, limit=None)]
        assert any(e and e.startswith("RuntimeError: cannot post to ***") for e in errors)
        summaries = [s.incident.summary for s in store.read_incidents(wh)]
        assert len(summaries) == 6 and all("***" in s for s in summaries)
        assert sum("HTTP 500: denied ***" in s for s in summaries) == 5
        secrets = _secrets({**urls, "plain": plain_url})
        assert _leaks(settings.home, wh, caplog.text, secrets) == []
        assert "planted failure" in caplog.text and "posting to ***" in caplog.text
        wh.dispose()
    finally:
        smtp.close()


@pytest.fixture(autouse=True)
def _fresh_registry():
    redaction.forget_all()
    yield
    redaction.forget_all()
