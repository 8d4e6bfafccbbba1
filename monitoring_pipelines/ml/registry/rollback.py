"""Rollback and the champions' history: putting an earlier ``champion`` back.

The champions so far are kept, oldest first, as JSON in the registered model's
``champion.history`` tag (:data:`HISTORY_TAG`): each promotion pushes on it (:func:`push_history`)
and :func:`rollback` reads it to know where to go back to.
"""

import json
import logging
from typing import TYPE_CHECKING

from monitoring_pipelines.ml.registry import tracking
from monitoring_pipelines.ml.registry.tracking import Store
from monitoring_pipelines.ml.registry.versions import (
    CHAMPION,
    ModelNotFound,
    alias_version,
    append_description,
    exists,
    registered_model,
    registered_model_name,
    scrub,
    set_version_tags,
    utc_now,
    version_info,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

HISTORY_TAG = "champion.history"
_HISTORY_KEEP = 100


def rollback(
    registry: Store,
    kind: str,
    scope: str,
    to_version: int | None = None,
    *,
    reason: str = "manual rollback",
) -> tuple[int, int]:
    """Put an earlier version back as ``champion``; returns ``(from_version, to_version)``.

    By default the version that was champion before the current one (from the registered model's
    ``champion.history``). The current champion leaves the history, so rolling back twice goes two
    steps back rather than flipping between two versions. Both versions get ``rollback.*`` tags and
    the restored one a description paragraph with the reason.
    """
    name = registered_model_name(kind, scope)
    now = utc_now()
    reason = scrub(reason)
    with registry.activate() as target:
        client = tracking.client(target)
        current = alias_version(client, name, CHAMPION)
        if current is None:
            raise ModelNotFound(f"{name} has no champion to roll back")
        to_version, remaining = _rollback_plan(client, name, current, to_version)
        client.set_registered_model_alias(name, CHAMPION, str(to_version))
        _write_history(client, name, remaining)
        _record_rollback(client, name, current, to_version, reason, now)
    logger.warning(
        "%s: champion rolled back from v%d to v%d (%s)", name, current, to_version, reason
    )
    return current, to_version


def _rollback_plan(
    client: "MlflowClient", name: str, current: int, to_version: int | None
) -> tuple[int, list[int]]:
    """The version to restore and the history as it will be once it is champion again."""
    history = _history(client, name)
    if not history or history[-1] != current:
        # The alias was moved by hand (UI, API): the alias is the truth.
        history.append(current)
    remaining = history[:-1]
    if to_version is None:
        to_version = next(
            (v for v in reversed(remaining) if v != current and exists(client, name, v)), None
        )
        if to_version is None:
            raise ModelNotFound(f"{name} has no earlier champion than v{current}")
    to_version = int(to_version)
    if to_version == current:
        raise ValueError(f"{name} v{to_version} is already champion")
    version_info(client, name, to_version)
    if to_version in remaining:
        cut = len(remaining) - remaining[::-1].index(to_version)
        remaining = remaining[:cut]
    else:
        remaining.append(to_version)
    return to_version, remaining


def _record_rollback(
    client: "MlflowClient", name: str, current: int, to_version: int, reason: str, now: str
) -> None:
    """``rollback.*`` tags and a description paragraph on both versions."""
    set_version_tags(
        client,
        name,
        current,
        {
            "rollback.rolled_back_at": now,
            "rollback.replaced_by": str(to_version),
            "rollback.reason": reason,
        },
    )
    set_version_tags(
        client,
        name,
        to_version,
        {
            "rollback.restored_at": now,
            "rollback.restored_from": str(current),
            "rollback.reason": reason,
        },
    )
    restored = f"**Rollback {now}**: champion again in place of v{current}. Reason: {reason}"
    replaced = f"**Rollback {now}**: no longer champion, v{to_version} restored. Reason: {reason}"
    append_description(client, name, to_version, restored)
    append_description(client, name, current, replaced)


def _history(client: "MlflowClient", name: str) -> list[int]:
    model = registered_model(client, name)
    raw = (model.tags or {}).get(HISTORY_TAG) if model is not None else None
    try:
        return [int(v) for v in json.loads(raw)] if raw else []
    except (ValueError, TypeError):
        logger.warning("%s: unreadable %s tag %r, starting a new history", name, HISTORY_TAG, raw)
        return []


def push_history(client: "MlflowClient", name: str, previous: int | None, new: int) -> None:
    history = _history(client, name)
    if previous is not None and (not history or history[-1] != previous):
        history.append(previous)
    history.append(new)
    _write_history(client, name, history)


def _write_history(client: "MlflowClient", name: str, history: list[int]) -> None:
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-_HISTORY_KEEP:]))
