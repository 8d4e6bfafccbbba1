"""Incidents from pipeline events rather than scores: a partition blocked by a quality check (for
the data owner) and a failed pipeline run (for operations). Each has a data-only identity, so a
re-run that fails again updates the same incident.
"""

import re
from datetime import UTC, datetime

from monitoring_pipelines.alerting import types
from monitoring_pipelines.alerting.types import Incident, Severity

# Stands for the platform itself in incidents that belong to no tenant (pipeline failures).
PLATFORM = "_platform"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _partition_start(partition_key: str | None) -> datetime | None:
    found = _DATE.search(partition_key or "")
    if not found:
        return None
    return datetime.fromisoformat(found.group()).replace(tzinfo=UTC)


def data_quality_incident(
    tenant: str,
    partition_key: str,
    check_name: str,
    reason: str,
    run_id: str | None,
    *,
    at: datetime | None = None,
) -> Incident:
    """A partition blocked by a quality check: for the data owner (``policy.data_owner``), not
    the tenant's on-call. One incident per tenant, partition and check, however often it is re-run;
    it starts at the partition's day (or ``at``/now when the key carries no date)."""
    started = _partition_start(partition_key) or at or datetime.now(UTC)
    seen = at or datetime.now(UTC)
    first_line = (reason or "").strip().splitlines()[0][:500] if reason else "no reason given"
    return Incident(
        fingerprint=types.fingerprint(tenant, check_name, types.DATA_QUALITY, partition_key),
        tenant=tenant,
        service="data",
        kind=types.DATA_QUALITY,
        severity=Severity.HIGH,
        status=types.FIRING,
        started_at=started,
        last_seen_at=max(seen, started),
        resolved_at=None,
        score=1.0,
        run_id=run_id,
        partition_key=partition_key,
        summary=f"{tenant}: partition {partition_key} blocked by {check_name}: {first_line}",
        labels={
            "tenant": tenant,
            "service": "data",
            "kind": types.DATA_QUALITY,
            "severity": Severity.HIGH.label,
            "check": check_name,
        },
    )


def pipeline_failure_incident(
    job_name: str,
    run_id: str | None,
    error: str,
    partition_key: str | None,
    *,
    at: datetime | None = None,
    identity: str | None = None,
) -> Incident:
    """A failed pipeline run, for operations (``policy.operations``). Failures of the same job and
    partition are one incident (re-runs that fail again update it); without a partition, one per
    run (or per ``identity``, when given). The tenant is ``_platform``."""
    when = at or datetime.now(UTC)
    first_line = (error or "").strip().splitlines()[0][:500] if error else "no error message"
    identity = identity or (partition_key if partition_key else run_id)
    where = f" for partition {partition_key}" if partition_key else ""
    return Incident(
        fingerprint=types.fingerprint(PLATFORM, job_name, types.PIPELINE_FAILURE, identity),
        tenant=PLATFORM,
        service=job_name,
        kind=types.PIPELINE_FAILURE,
        severity=Severity.HIGH,
        status=types.FIRING,
        started_at=when,
        last_seen_at=when,
        resolved_at=None,
        score=1.0,
        run_id=run_id,
        partition_key=partition_key,
        summary=f"{job_name} failed{where}: {first_line}",
        labels={
            "tenant": PLATFORM,
            "service": job_name,
            "kind": types.PIPELINE_FAILURE,
            "severity": Severity.HIGH.label,
        },
    )
