"""Alerting policy changes in the audit trail.

Each time the alerting steps load the policy (:mod:`.service`), its content hash is compared with
the last one recorded; when it differs, one ``policy.change`` entry is appended, with the hashes
before and after, each section's hash, and which sections changed. The hash is over the parsed
policy (what it does), not the file's bytes, so reformatting the YAML or adding a comment is not a
change, and the embedded default policy is audited like a file.
"""

import dataclasses
import hashlib
import json
from typing import Any

from monitoring_pipelines.alerting.policy import AlertingPolicy
from monitoring_pipelines.warehouse import Warehouse, audit

TARGET = "alerting policy"
# Not part of what the policy does: where it was read from and the home it was loaded in.
_IGNORED = ("source", "home")


def _canonical(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_canonical(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, set | frozenset) else items
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint(policy: AlertingPolicy) -> dict[str, Any]:
    """``{"hash": ..., "sections": {section: hash}, "source": file name}`` of a policy."""
    sections = {
        f.name: _digest(_canonical(getattr(policy, f.name)))
        for f in dataclasses.fields(policy)
        if f.name not in _IGNORED
    }
    return {"hash": _digest(sections), "sections": sections, "source": policy.source}


def note_policy(warehouse: Warehouse, policy: AlertingPolicy, actor: str = audit.PIPELINE) -> bool:
    """Append a ``policy.change`` entry when ``policy`` differs from the last one recorded (the
    first policy ever seen is recorded too); True when an entry was written."""
    after = fingerprint(policy)
    previous = audit.last(warehouse.engine, audit.POLICY_CHANGE, TARGET)
    before = previous.after if previous is not None else None
    if before is not None and before.get("hash") == after["hash"]:
        return False
    old_sections = (before or {}).get("sections", {})
    changed = sorted(
        name for name, digest in after["sections"].items() if old_sections.get(name) != digest
    )
    summary = (
        f"first policy recorded ({after['source']})"
        if before is None
        else f"changed: {', '.join(changed) or 'unknown'} ({after['source']})"
    )
    audit.record(
        warehouse.engine,
        actor=actor,
        action=audit.POLICY_CHANGE,
        target=TARGET,
        before=before,
        after={**after, "changed": changed},
        reason=summary,
    )
    return True
