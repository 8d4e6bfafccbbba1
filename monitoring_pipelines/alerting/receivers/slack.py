"""Slack through an incoming webhook: Block Kit blocks, with the title as the notification
fallback; a report is a short summary (headline figures, where the full report is). The webhook
URL is the credential: the spec names its environment variable in ``url_env``."""

from dataclasses import dataclass
from typing import ClassVar

from monitoring_pipelines.alerting import types
from monitoring_pipelines.alerting.message import Message
from monitoring_pipelines.alerting.receivers.http import SecretUrlReceiver, clip
from monitoring_pipelines.alerting.types import Notification


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass
class SlackReceiver(SecretUrlReceiver):
    """Slack incoming webhook: Block Kit blocks, with the title as the notification fallback."""

    type: ClassVar[str] = "slack"
    url_what: ClassVar[str] = "slack webhook URL"

    def build(self, notification: Notification, message: Message) -> dict:
        if notification.event == types.REPORT:
            return _report(message)
        esc = _escape
        facts = [
            {"type": "mrkdwn", "text": clip(f"*{esc(k)}*\n{esc(v)}", 2000)}
            for k, v in message.facts[:10]
        ]
        blocks: list[dict] = [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": clip(message.title, 150), "emoji": True},
            },
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": clip(esc(message.intro), 3000)},
            },
            {"type": "section", "fields": facts},
        ]
        if message.metrics:
            h = message.metric_header
            lines = [
                f"• `{esc(m.metric)}`: {h[1]} {m.value}, {h[2]} *{m.score}* / {h[3]} {m.threshold}"
                for m in message.metrics
            ]
            blocks.append(
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": clip("\n".join(lines), 3000)},
                }
            )
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": clip(f":point_right: {esc(message.next_step)}", 3000),
                },
            }
        )
        return {"text": message.title, "blocks": blocks + _links_and_footer(message)}


def _report(message: Message) -> dict:
    """A report as Block Kit: its title, period, headline figures (ten fields a section), where
    the full report is (its path, and a button when it has a link) and the footer."""
    esc = _escape
    blocks: list[dict] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": clip(message.title, 150), "emoji": True},
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": clip(esc(message.intro), 3000)}},
    ]
    fields = [
        {"type": "mrkdwn", "text": clip(f"*{esc(k)}*\n{esc(v)}", 2000)} for k, v in message.facts
    ]
    for start in range(0, len(fields), 10):
        blocks.append({"type": "section", "fields": fields[start : start + 10]})
    where = clip(f":page_facing_up: {esc(message.next_step)}", 3000)
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": where}})
    return {"text": message.title, "blocks": blocks + _links_and_footer(message)}


def _links_and_footer(message: Message) -> list[dict]:
    """Up to five link buttons (when the message has links), then the footer line."""
    blocks: list[dict] = []
    if message.links:
        buttons = [
            {
                "type": "button",
                "text": {"type": "plain_text", "text": clip(label, 75)},
                "url": url,
                "action_id": f"link_{i}",
            }
            for i, (label, url) in enumerate(message.links[:5])
        ]
        blocks.append({"type": "actions", "elements": buttons})
    footer = {"type": "mrkdwn", "text": _escape(message.footer)}
    return [*blocks, {"type": "context", "elements": [footer]}]
