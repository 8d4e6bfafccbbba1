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
    first_line = _first_line(reason, "no reason given")
    return _pipeline_incident(
        types.fingerprint(tenant, check_name, types.DATA_QUALITY, partition_key),
        tenant,
        "data",
        types.DATA_QUALITY,
        started=started,
        seen=max(seen, started),
        run_id=run_id,
        partition_key=partition_key,
        summary=f"{tenant}: partition {partition_key} blocked by {check_name}: {first_line}",
        check=check_name,
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
    first_line = _first_line(error, "no error message")
    identity = identity or (partition_key if partition_key else run_id)
    where = f" for partition {partition_key}" if partition_key else ""
    return _pipeline_incident(
        types.fingerprint(PLATFORM, job_name, types.PIPELINE_FAILURE, identity),
        PLATFORM,
        job_name,
        types.PIPELINE_FAILURE,
        started=when,
        seen=when,
        run_id=run_id,
        partition_key=partition_key,
        summary=f"{job_name} failed{where}: {first_line}",
    )


def _first_line(text: str | None, default: str) -> str:
    """The first line of an error or reason, at most 500 characters, for an incident's summary."""
    return (text or "").strip().splitlines()[0][:500] if text else default


def _pipeline_incident(
    fingerprint: str,
    tenant: str,
    service: str,
    kind: str,
    *,
    started: datetime,
    seen: datetime,
    run_id: str | None,
    partition_key: str | None,
    summary: str,
    **extra_labels: str,
) -> Incident:
    """A firing, high-severity incident of a pipeline event, labelled with its tenant, service,
    kind and severity, then ``extra_labels``."""
    return Incident(
        fingerprint=fingerprint,
        tenant=tenant,
        service=service,
        kind=kind,
        severity=Severity.HIGH,
        status=types.FIRING,
        started_at=started,
        last_seen_at=seen,
        resolved_at=None,
        score=1.0,
        run_id=run_id,
        partition_key=partition_key,
        summary=summary,
        labels={
            "tenant": tenant,
            "service": service,
            "kind": kind,
            "severity": Severity.HIGH.label,
            **extra_labels,
        },
    )
