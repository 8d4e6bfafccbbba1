"""Model decisions in the audit trail: each training decision and challenger review (actor
``pipeline``) and each rollback (the person who asked for it)."""

from collections.abc import Mapping
from typing import Any

from monitoring_pipelines.warehouse import Warehouse, audit


def record_training(warehouse: Warehouse, tenant: str, outcome: Any) -> None:
    """A :class:`~.train_and_promote.TrainingOutcome`: promoted, champion kept, or challenger."""
    audit.record(
        warehouse.engine,
        actor=audit.PIPELINE,
        action=outcome.action,
        tenant=tenant,
        target=f"{outcome.registered_name} v{outcome.version}",
        before={"champion": outcome.previous_champion},
        after={
            "champion": outcome.version if outcome.promoted else outcome.previous_champion,
            "candidate": outcome.version,
            "metrics": outcome.metrics,
            "reasons": outcome.reasons,
        },
        reason="; ".join(outcome.reasons),
    )


def record_review(
    warehouse: Warehouse,
    tenant: str,
    kind: str,
    champion: int,
    challenger: int,
    decision: Any,
    feedback: Mapping[str, Any],
) -> None:
    """A challenger's promotion check after its shadow days."""
    audit.record(
        warehouse.engine,
        actor=audit.PIPELINE,
        action=audit.PROMOTE if decision.promoted else audit.KEEP_CHAMPION,
        tenant=tenant,
        target=f"{kind} v{challenger} (challenger)",
        before={"champion": champion, "challenger": challenger},
        after={"champion": challenger if decision.promoted else champion, "feedback": feedback},
        reason="; ".join(decision.reasons),
    )


def rollback_champion(
    warehouse: Warehouse,
    models: Any,
    kind: str,
    tenant: str,
    to_version: int | None = None,
    *,
    by: str,
    reason: str,
) -> tuple[int, int]:
    """Put an earlier ``champion`` back (:func:`~.registry.rollback.rollback`) and record who did
    it and why in the audit trail; returns ``(from_version, to_version)``."""
    before, after = models.rollback(kind, tenant, to_version, reason=reason)
    audit.record(
        warehouse.engine,
        actor=by,
        action=audit.ROLLBACK,
        tenant=tenant,
        target=f"{kind} champion",
        before={"champion": before},
        after={"champion": after},
        reason=reason,
    )
    return before, after
