"""Where notifications go: Slack, Microsoft Teams, PagerDuty, email, signed webhooks and files.

One module per integration owns its spec validation, its payload and its send; :mod:`.base` and
:mod:`.http` hold what they share. :data:`RECEIVERS` is the catalogue of receiver types: adding
one is one module and one row here. :func:`receiver_from_spec` builds a receiver from its policy
spec, validating it without touching the network or reading a secret.

``Receiver.send(notification, message)`` delivers one rendered notification or raises
:class:`DeliveryError`, which says whether trying again later can help (``retryable``: 5xx, 408,
429, timeouts, refused connections) or not (other 4xx, bad configuration). Error texts are
redacted: they never contain a webhook URL, a routing key, a password or a signing secret.

Every HTTP receiver sends an ``Idempotency-Key`` header (the notification's key), so endpoints that
honour it deliver a retried notification once; the email receiver derives the ``Message-ID`` from
the same key, and the file receiver never writes a key twice.
"""

from monitoring_pipelines.alerting.receivers.base import (
    DeliveryError,
    Receiver,
    ReceiverConfigError,
    SpecReader,
)
from monitoring_pipelines.alerting.receivers.email import EmailReceiver
from monitoring_pipelines.alerting.receivers.file import FileReceiver
from monitoring_pipelines.alerting.receivers.http import sign, verify_signature
from monitoring_pipelines.alerting.receivers.pagerduty import PagerDutyReceiver
from monitoring_pipelines.alerting.receivers.slack import SlackReceiver
from monitoring_pipelines.alerting.receivers.teams import TeamsReceiver
from monitoring_pipelines.alerting.receivers.webhook import WebhookReceiver
from monitoring_pipelines.alerting.redaction import redact
from monitoring_pipelines.i18n import LOCALES

__all__ = [
    "RECEIVERS",
    "RECEIVER_TYPES",
    "DeliveryError",
    "Receiver",
    "ReceiverConfigError",
    "build_receivers",
    "receiver_from_spec",
    "redact",
    "sign",
    "verify_signature",
]

# The receiver types a policy can name, by their ``type``, in the order errors list them.
RECEIVERS: dict[str, type[Receiver]] = {
    cls.type: cls
    for cls in (
        SlackReceiver,
        TeamsReceiver,
        PagerDutyReceiver,
        EmailReceiver,
        WebhookReceiver,
        FileReceiver,
    )
}
RECEIVER_TYPES = tuple(RECEIVERS)
_ALIASES = {"msteams": "teams"}


def receiver_from_spec(name: str, spec: dict, *, home=None) -> Receiver:
    """Build a receiver from its policy spec, validating types and keys (no network, no secrets).

    Common keys: ``type`` (one of :data:`RECEIVER_TYPES`), ``locale`` (default ``en``), and for
    HTTP receivers ``connect_timeout`` / ``read_timeout`` in seconds. Per type:

    - ``slack``, ``teams``: ``url_env`` (the webhook or workflow URL is a secret);
    - ``pagerduty``: ``routing_key_env``, optional ``url`` (default the Events API v2 endpoint);
    - ``email``: ``host``, ``port``, ``starttls`` / ``ssl``, ``username_env`` + ``password_env``,
      ``from``, ``to`` (a list), ``timeout``;
    - ``webhook``: ``url`` or ``url_env``, and ``secret_env`` (the HMAC signing secret);
    - ``file``: ``path`` (relative to ``MONITORING_HOME``; without a suffix, a directory that
      gets ``notifications.jsonl``); with ``home`` given (a policy's), a path outside it is
      refused.

    Unknown keys are refused with the key named in the :class:`ReceiverConfigError`.
    """
    if not isinstance(spec, dict):
        raise ReceiverConfigError("type", "a receiver spec must be a mapping", name)
    kind = spec.get("type")
    kind = _ALIASES.get(kind, kind) if isinstance(kind, str) else kind
    if kind not in RECEIVERS:
        raise ReceiverConfigError(
            "type", f"must be one of {', '.join(RECEIVER_TYPES)}, got {kind!r}", name
        )
    locale = spec.get("locale", "en")
    if locale not in LOCALES:
        raise ReceiverConfigError(
            "locale", f"must be one of {', '.join(LOCALES)}, got {locale!r}", name
        )
    cls = RECEIVERS[kind]
    return cls.from_spec(SpecReader(name, spec, cls.spec_keys, cls.spec_hints, home), locale)


def build_receivers(specs: dict[str, dict], home=None) -> dict[str, Receiver]:
    """Every receiver of a policy's ``receivers`` mapping, by name (what ``dispatch`` takes).

    The secrets their environment holds now are registered for redaction, so an error, a log
    line or a stored row of this process never carries one, even before it is sent."""
    built = {name: receiver_from_spec(name, dict(spec), home=home) for name, spec in specs.items()}
    for receiver in built.values():
        receiver.remember_secrets()
    return built
