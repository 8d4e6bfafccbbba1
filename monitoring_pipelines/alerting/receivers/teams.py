"""Microsoft Teams through a workflow webhook: a message with one Adaptive Card (for a report: its
headline figures and where the full report is). The workflow URL is the credential: the spec
names its environment variable in ``url_env``."""

from dataclasses import dataclass
from typing import ClassVar

from monitoring_pipelines.alerting import types
from monitoring_pipelines.alerting.message import Message
from monitoring_pipelines.alerting.receivers.http import SecretUrlReceiver
from monitoring_pipelines.alerting.types import Notification


@dataclass
class TeamsReceiver(SecretUrlReceiver):
    """Microsoft Teams through a Power Automate "post to a channel when a webhook request is
    received" workflow: a message with one Adaptive Card 1.4 attachment."""

    type: ClassVar[str] = "teams"
    url_what: ClassVar[str] = "teams workflow URL"

    def build(self, notification: Notification, message: Message) -> dict:
        card = {
            "type": "AdaptiveCard",
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "version": "1.4",
            "msteams": {"width": "Full"},
            "body": _card_body(message),
            "actions": [
                {"type": "Action.OpenUrl", "title": label, "url": url}
                for label, url in message.links
            ],
        }
        return {
            "type": "message",
            "summary": message.title,
            "attachments": [
                {
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": None,
                    "content": card,
                }
            ],
        }


def _card_body(message: Message) -> list[dict]:
    """The card's blocks: title, intro, facts, metrics, next step and footer (for a report: its
    headline figures as facts and where the full report is as the next step)."""
    if message.event in (types.REPORT, types.DIGEST):
        color = "Accent"
    elif message.event == types.RESOLVE:
        color = "Good"
    else:
        color = "Attention" if message.severity in ("critical", "high") else "Warning"
    body: list[dict] = [
        {
            "type": "TextBlock",
            "text": message.title,
            "weight": "Bolder",
            "size": "Medium",
            "color": color,
            "wrap": True,
            "style": "heading",
        },
        {"type": "TextBlock", "text": message.intro, "wrap": True},
        {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in message.facts]},
    ]
    if message.metrics:
        h = message.metric_header
        body.append(
            {
                "type": "FactSet",
                "separator": True,
                "facts": [
                    {
                        "title": m.metric,
                        "value": f"{h[1]} {m.value} · {h[2]} {m.score} / {h[3]} {m.threshold}",
                    }
                    for m in message.metrics
                ],
            }
        )
    body.append({"type": "TextBlock", "text": message.next_step, "wrap": True, "separator": True})
    body.append(
        {
            "type": "TextBlock",
            "text": message.footer,
            "wrap": True,
            "isSubtle": True,
            "size": "Small",
        }
    )
    return body
