"""Registered models and their versions: names, aliases, what a version carries and how it reads.

Shared by logging, promotion and loading. Everything written on a version goes through
:func:`scrub`, so a URL with a password (a warehouse URL in a tag, say) is never stored as is.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION = "champion"
CHALLENGER = "challenger"
LOADER_TAG = "detector.loader"
DETECTOR_ARTIFACT = "detector"

_NAME_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@\s/]*@")


class ModelNotFound(LookupError):
    """No registered model, version or alias by that name; the message is one line for the CLI."""


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: int
    run_id: str | None
    aliases: tuple[str, ...]
    tags: dict[str, str]
    description: str

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def registered_model_name(kind: str, scope: str) -> str:
    """``anomaly-<kind>-<scope>``: one registered model per detector kind and tenant.

    ``kind`` is the detector's ``kind`` (``isolation_forest``, ``lstm``, ``prophet``, ``zscore``)
    and ``scope`` the tenant. Both must be plain identifiers (letters, digits, ``_``, ``.``, ``-``)
    so the name reads well in the UI and in ``models:/`` URIs.
    """
    for label, value in (("kind", kind), ("scope", scope)):
        if not isinstance(value, str) or not _NAME_PART.match(value):
            raise ValueError(f"detector {label} {value!r} must be letters, digits, '_', '.' or '-'")
    return f"anomaly-{kind}-{scope}"


# -- reading ---------------------------------------------------------------------------------------


def registered_model(client: "MlflowClient", name: str):
    """The registered model, or ``None`` if there is none by that name."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def alias_version(client: "MlflowClient", name: str, alias: str) -> int | None:
    model = registered_model(client, name)
    if model is None or alias not in (model.aliases or {}):
        return None
    return int(model.aliases[alias])


def version_info(client: "MlflowClient", name: str, version: int) -> VersionInfo:
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise ModelNotFound(f"{name} has no version {version}") from exc
    return VersionInfo(
        name=name,
        version=int(mv.version),
        run_id=mv.run_id,
        aliases=tuple(mv.aliases or ()),
        tags=dict(mv.tags or {}),
        description=mv.description or "",
    )


def exists(client: "MlflowClient", name: str, version: int) -> bool:
    try:
        version_info(client, name, version)
    except ModelNotFound:
        return False
    return True


# -- writing ---------------------------------------------------------------------------------------


def set_version_tags(client: "MlflowClient", name: str, version: int, tags: dict) -> None:
    for key, value in scrub_dict(tags).items():
        client.set_model_version_tag(name, str(version), key, value)


def append_description(client: "MlflowClient", name: str, version: int, paragraph: str) -> None:
    current = client.get_model_version(name, str(version)).description or ""
    text = f"{current.rstrip()}\n\n{scrub(paragraph)}" if current.strip() else scrub(paragraph)
    client.update_model_version(name, str(version), description=text)


# -- text ------------------------------------------------------------------------------------------


def scrub(text: str) -> str:
    """Mask the password of any URL in ``text`` (``user:***@``), as redact_url does."""
    return _URL_PASSWORD.sub(r"\g<head>:***@", text)


def scrub_dict(values: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): scrub(str(v)) for k, v in values.items()}


def iso(value: Any) -> str:
    """A timestamp as UTC ISO-8601 with ``Z`` (naive means UTC)."""
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.isoformat().replace("+00:00", "Z")


def utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
