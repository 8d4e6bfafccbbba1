"""The policy document: where the file lives, its bytes decoded and its YAML parsed (every failure
one :class:`PolicyError` line naming the key path where the fault sits), or, without a file, the
embedded ``default_policy.yaml`` plus receivers configured in the environment.

:mod:`policy` turns the document read here into an :class:`~.policy.AlertingPolicy`
(:func:`~.policy.load_policy`, :func:`~.policy.loads_policy`).
"""

import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import yaml

from monitoring_pipelines.alerting.policy_reader import PolicyError, join, load_yaml

POLICY_FILE = "alerting.yaml"


def policy_path(home: Path | None = None) -> Path:
    """``MONITORING_HOME/alerting.yaml`` (``home`` default: the settings' home)."""
    if home is None:
        from monitoring_pipelines.settings import load_settings

        home = load_settings().home
    return Path(home) / POLICY_FILE


def read_policy_text(path: Path) -> str:
    """The text of the policy file ``path``; an unreadable or non-UTF-8 file is a
    :class:`PolicyError`."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError(str(path), "", f"cannot read the policy ({exc.strerror})") from None
    return decode_policy(raw, path.name)


def decode_policy(raw: bytes, source: str = POLICY_FILE) -> str:
    """The policy file's text; a file that is not UTF-8 (a binary file, another encoding) is a
    :class:`PolicyError` naming the key where the bad byte sits (else its line) and the byte."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start].decode("utf-8", errors="replace")
        line, column = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        key = key_at(raw.decode("utf-8", errors="replace"), line, column)
        raise PolicyError(
            source,
            key or f"line {line}",
            f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at line {line}, column {column}); "
            "save the policy as UTF-8 YAML",
        ) from None


def parse_policy_text(text: str, source: str = POLICY_FILE):
    """The YAML document in ``text``; invalid YAML or an empty document is a :class:`PolicyError`
    naming the key (else the line) where the parser stopped."""
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, 1)
        if isinstance(exc, yaml.reader.ReaderError):  # a control character, e.g. a NUL byte
            before = text[: exc.position]
            line, column = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        key = key_at(text, line, column) if line else None
        where = key or (f"line {line}" if line else "")
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PolicyError(source, where, f"not valid YAML: {problem}") from None
    if data is None:
        raise PolicyError(source, "", "the policy is empty")
    return data


def default_policy_text() -> str:
    return (
        resources.files("monitoring_pipelines.alerting")
        .joinpath("default_policy.yaml")
        .read_text(encoding="utf-8")
    )


# Receivers the embedded default adds when their environment variables are set, so a demo or a
# first deployment can page a real channel without writing a policy. Each gets every incident
# (PagerDuty only critical and high ones) besides the file receiver.
ENVIRONMENT_RECEIVERS = {
    "slack": ("MONITORING_SLACK_WEBHOOK_URL", {"type": "slack", "url_env": "{var}"}),
    "teams": ("MONITORING_TEAMS_WEBHOOK_URL", {"type": "teams", "url_env": "{var}"}),
    "pagerduty": (
        "MONITORING_PAGERDUTY_ROUTING_KEY",
        {"type": "pagerduty", "routing_key_env": "{var}"},
    ),
    "webhook": (
        "MONITORING_WEBHOOK_URL",
        {"type": "webhook", "url_env": "{var}", "secret_env": "MONITORING_WEBHOOK_SECRET"},
    ),
    "email": ("MONITORING_SMTP_HOST", {"type": "email"}),
}


def _environment_receivers(environ: Mapping[str, str]) -> dict[str, dict]:
    out = {}
    for name, (variable, template) in ENVIRONMENT_RECEIVERS.items():
        if not environ.get(variable):
            continue
        spec = {k: v.format(var=variable) for k, v in template.items()}
        if name == "email":
            spec.update(
                host=environ[variable],
                port=int(environ.get("MONITORING_SMTP_PORT") or 25),
                starttls=environ.get("MONITORING_SMTP_STARTTLS", "").lower() in ("1", "true"),
                to=[a.strip() for a in environ.get("MONITORING_ALERT_EMAIL_TO", "").split(",")],
            )
            spec["from"] = environ.get("MONITORING_ALERT_EMAIL_FROM") or "alerts@localhost"
            if environ.get("MONITORING_SMTP_USERNAME"):
                spec.update(
                    username_env="MONITORING_SMTP_USERNAME",
                    password_env="MONITORING_SMTP_PASSWORD",
                )
        out[name] = spec
    return out


def default_policy_document(environ: Mapping[str, str] | None = None) -> tuple[dict, str]:
    """The embedded default policy document and its source name, plus a receiver for each
    channel configured in ``environ`` (default: ``os.environ``; see
    :data:`ENVIRONMENT_RECEIVERS`)."""
    import os

    data = load_yaml(default_policy_text())
    extra = _environment_receivers(os.environ if environ is None else environ)
    source = "default_policy.yaml"
    if extra:
        data["receivers"].update(extra)
        routes = [
            {
                "matchers": ["severity=~critical|high"] if name == "pagerduty" else [],
                "receiver": name,
                "continue": True,
            }
            for name in extra
        ]
        # Matching children replace the parent's receiver (as in Alertmanager): keep the files.
        routes.append({"receiver": data["route"]["receiver"], "continue": True})
        data["route"]["routes"] = routes + list(data["route"].get("routes") or [])
        source += f" + {', '.join(extra)} from the environment"
    return data, source


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def key_at(text: str, line: int, column: int = 1) -> str | None:
    """The key path (``receivers.hook.url``) of the deepest entry holding ``line`` and ``column``
    (1-based) of a YAML document, or None when the document cannot be parsed that far."""
    try:
        node = yaml.compose(_CONTROL.sub("?", text), Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    target, path = (line - 1, column - 1), ""
    while isinstance(node, yaml.MappingNode | yaml.SequenceNode) and node.value:
        if isinstance(node, yaml.MappingNode):
            starts = [(_at(k), join(path, str(k.value)), v) for k, v in node.value]
        else:
            starts = [(_at(v), f"{path}[{i}]", v) for i, v in enumerate(node.value)]
        inside = [s for s in starts if s[0] <= target]
        if not inside:
            break
        _, path, node = inside[-1]
    return path or None


def _at(node) -> tuple[int, int]:
    return node.start_mark.line, node.start_mark.column
