"""Planning: incidents and reports become the notifications the outbox will deliver.

:func:`plan_notifications` is pure (no I/O, no clock: ``now`` is passed in), so the same inputs
always plan the same notifications with the same idempotency keys. It asks :mod:`routing` who is
told, then :mod:`silences`, :mod:`inhibition` and :mod:`rate_limits` what is kept quiet.
:func:`plan_report_notifications` does the same for weekly and monthly reports, routed by the
policy's ``reports:`` section (:mod:`report_routes`); nothing silences or rate-limits a report.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from monitoring_pipelines.alerting import types
from monitoring_pipelines.alerting.inhibition import Inhibitor
from monitoring_pipelines.alerting.policy import AlertingPolicy
from monitoring_pipelines.alerting.policy_reader import format_duration
from monitoring_pipelines.alerting.rate_limits import RateLimiter, rate_limited
from monitoring_pipelines.alerting.silences import silence_reason
from monitoring_pipelines.alerting.types import (
    PENDING,
    SUPPRESSED,
    Incident,
    Notification,
    Severity,
)


@dataclass
class _Candidate:
    incident: Incident
    receiver: str
    event: str
    sequence: int
    at: datetime  # data time the event is about (what silences and rate limits look at)
    not_before: datetime | None = None
    extra: dict = field(default_factory=dict)
    status: str = PENDING
    reason: str | None = None

    def suppress(self, reason: str | None) -> None:
        if reason is not None:
            self.status, self.reason = SUPPRESSED, reason


def _previous_view(state) -> tuple[Incident | None, bool]:
    """(previous incident, acknowledged) from a stored state, an Incident or None."""
    if state is None:
        return None, False
    incident = getattr(state, "incident", state)
    acked = incident.status == types.ACKNOWLEDGED or bool(getattr(state, "acknowledged_by", None))
    return incident, acked


def _repeats(incident: Incident, interval: timedelta) -> int:
    if interval <= timedelta(0):
        return 0
    return int((incident.last_seen_at - incident.started_at) / interval)


def plan_notifications(
    incidents: Iterable[Incident],
    previous: Mapping[str, object],
    policy: AlertingPolicy,
    now: datetime,
    dagster_url: str,
) -> list[Notification]:
    """Who is told what about these incidents, given what was known before.

    ``previous`` maps fingerprints to the stored state read *before* this run's incidents were
    written (``store.load_states``; an :class:`Incident` works too). Per incident and receiver:

    - TRIGGER when the incident is new, or to receivers it newly routes to (e.g. it became
      critical); a new incident that already ended also gets its RESOLVE.
    - REPEAT number *n* when ``n = (last_seen_at - started_at) // repeat_interval`` grew since the
      previous state, while firing and unacknowledged: data time, so re-runs plan the same repeats.
    - ESCALATE to the route's escalation receiver when a firing, unacknowledged incident becomes
      critical on a route with ``escalation``; ``not_before = now + after``, and the dispatcher
      must drop it if the incident was acknowledged or resolved by then.
    - RESOLVE when a firing incident became resolved, to every receiver that was triggered.

    Then, in this order, notifications become ``suppressed`` with a reason (never dropped):
    silences active at the event's data time (all events); inhibition by another incident of
    this batch that matches a rule's source, shares its ``equal`` labels and is active at that
    time (not for RESOLVE); the tenant's rate limit, a sliding window over the pending TRIGGER and
    REPEAT events of this batch in data time (critical incidents are never rate limited).
    """
    incidents = sorted(incidents, key=lambda i: (i.started_at, i.fingerprint))
    candidates: list[_Candidate] = []
    for incident in incidents:
        prev, acked = _previous_view(previous.get(incident.fingerprint))
        candidates.extend(_events(incident, prev, acked, policy, now))
    _suppress(candidates, incidents, policy)
    candidates.sort(
        key=lambda c: (c.at, c.incident.fingerprint, types.EVENT_ORDER[c.event], c.receiver)
    )
    return _notifications(candidates, policy, dagster_url)


def _events(
    incident: Incident, prev: Incident | None, acked: bool, policy: AlertingPolicy, now: datetime
) -> list[_Candidate]:
    """One incident's events (see :func:`plan_notifications`), before anything is suppressed."""
    routed = policy.receivers_for(incident)
    firing = incident.status != types.RESOLVED
    critical = incident.severity >= Severity.CRITICAL
    resolved_at = incident.resolved_at or incident.last_seen_at
    out: list[_Candidate] = []
    if prev is None:
        for receiver, _ in routed:
            out.append(_Candidate(incident, receiver, types.TRIGGER, 0, incident.started_at))
        if not firing:
            for receiver, _ in routed:
                out.append(_Candidate(incident, receiver, types.RESOLVE, 0, resolved_at))
        escalate = firing and critical
    elif prev.status == types.RESOLVED:
        # Over already (or resolved by hand): a re-run seeing less of it says nothing new.
        return out
    else:
        before = {r for r, _ in policy.receivers_for(prev)}
        escalate = firing and critical and not acked and prev.severity < Severity.CRITICAL
        if firing:
            for receiver, _ in routed:
                if receiver not in before:
                    out.append(
                        _Candidate(incident, receiver, types.TRIGGER, 0, incident.last_seen_at)
                    )
            if not acked:
                out.extend(_repeat_events(incident, prev, before, routed, policy))
        else:
            targets = list(dict.fromkeys([*sorted(before), *(r for r, _ in routed)]))
            for receiver in targets:
                out.append(_Candidate(incident, receiver, types.RESOLVE, 0, resolved_at))
    if escalate:
        for receiver, esc in routed:
            if esc is not None:
                extra = {"escalated_from": receiver, "after": format_duration(esc.after)}
                out.append(
                    _Candidate(
                        incident,
                        esc.to,
                        types.ESCALATE,
                        0,
                        incident.last_seen_at,
                        not_before=now + esc.after,
                        extra=extra,
                    )
                )
    return out


def _repeat_events(incident, prev, before, routed, policy: AlertingPolicy) -> list[_Candidate]:
    """REPEAT *n* to the receivers already told, when *n* grew since ``prev``."""
    interval = policy.settings(incident.tenant).repeat_interval
    n = _repeats(incident, interval)
    if n < 1 or n <= _repeats(prev, interval):
        return []
    at = incident.started_at + n * interval
    return [
        _Candidate(incident, receiver, types.REPEAT, n, at, extra={"sequence": n})
        for receiver, _ in routed
        if receiver in before
    ]


def _suppress(
    candidates: list[_Candidate], incidents: list[Incident], policy: AlertingPolicy
) -> None:
    """Silences, then inhibition, then rate limits (see :func:`plan_notifications`)."""
    for c in candidates:
        c.suppress(silence_reason(policy.silences, c.incident, c.at))
    inhibitor = Inhibitor(policy.inhibit_rules, incidents)
    for c in candidates:
        if c.status == PENDING:
            c.suppress(inhibitor.reason(c.incident, c.event, c.at))
    limiter = RateLimiter(lambda tenant: policy.settings(tenant).rate_limit)
    limited = [c for c in candidates if c.status == PENDING and rate_limited(c.incident, c.event)]
    limited.sort(key=lambda c: (c.at, c.incident.fingerprint, c.receiver))
    for c in limited:
        c.suppress(limiter.reason(c.incident.tenant, c.at))


def _notifications(
    candidates: list[_Candidate], policy: AlertingPolicy, dagster_url: str
) -> list[Notification]:
    """The candidates as notifications, each idempotency key once."""
    out = []
    seen = set()
    for c in candidates:
        key = types.fingerprint(c.incident.fingerprint, c.receiver, c.event, c.sequence)
        if key in seen:
            continue
        seen.add(key)
        payload = types.notification_payload(c.incident, c.event, dagster_url)
        payload.update(receiver=c.receiver, **c.extra)
        out.append(
            Notification(
                idempotency_key=key,
                fingerprint=c.incident.fingerprint,
                tenant=c.incident.tenant,
                receiver=c.receiver,
                event=c.event,
                locale=policy.settings(c.incident.tenant).locale,
                payload=payload,
                not_before=c.not_before,
                status=c.status,
                reason=c.reason,
            )
        )
    return out


def plan_report_notifications(
    reports: Iterable[dict], policy: AlertingPolicy
) -> list[Notification]:
    """One ``report`` notification per written report and receiver the policy's ``reports:``
    section routes it to.

    Each report is a dict (built by ``reports.service``) with at least ``kind`` (``weekly`` or
    ``monthly``), ``tenant`` (None: all tenants), ``period.key`` (its first day) and ``locale``;
    the rest (title, headline figures, summary, paths, url) is carried for the templates. The
    idempotency key depends only on (receiver, kind, period start, tenant or all tenants), so
    re-writing a period's reports plans the same keys and the outbox stores them once.
    """
    out: list[Notification] = []
    seen: set[str] = set()
    for report in reports:
        kind, tenant = report["kind"], report.get("tenant")
        fp = types.report_fingerprint(kind, report["period"]["key"], tenant)
        for receiver in policy.receivers_for_report(kind, tenant):
            key = types.fingerprint(fp, receiver, types.REPORT, 0)
            if key in seen:
                continue
            seen.add(key)
            out.append(
                Notification(
                    idempotency_key=key,
                    fingerprint=fp,
                    tenant=types.ALL_TENANTS if tenant is None else tenant,
                    receiver=receiver,
                    event=types.REPORT,
                    locale=report.get("locale") or policy.report_locale(tenant),
                    payload=types.report_payload(report, receiver),
                )
            )
    return out
