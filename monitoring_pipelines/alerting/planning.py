"""Planning: incidents and reports become the notifications the outbox will deliver.

:func:`plan_notifications` is pure (no I/O, no clock: ``now`` is passed in), so the same inputs
always plan the same notifications with the same idempotency keys. It asks :mod:`routing` who is
told, then :mod:`silences`, :mod:`inhibition` and :mod:`rate_limits` what is kept quiet.
:func:`plan_history_digests` plans the one summary per tenant and receiver of what history
held back. :func:`plan_report_notifications` does the same for weekly and monthly reports, routed
by the policy's ``reports:`` section (:mod:`report_routes`); nothing silences or rate-limits a
report.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from monitoring_pipelines.alerting import types
from monitoring_pipelines.alerting.inhibition import Inhibitor
from monitoring_pipelines.alerting.policy import AlertingPolicy
from monitoring_pipelines.alerting.policy_reader import format_duration
from monitoring_pipelines.alerting.rate_limits import RateLimiter, rate_limited
from monitoring_pipelines.alerting.report_routes import NO_REPORTS
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
    paged: Mapping[str, Iterable[str]] | None = None,
) -> list[Notification]:
    """Who is told what about these incidents, given what was known before.

    ``previous`` maps fingerprints to the stored state read *before* this run's incidents were
    written (``store.load_states``; an :class:`Incident` works too). ``paged`` maps fingerprints
    to the receivers that were paged about them (a trigger or escalation queued, not held back as
    history: ``history.paged_receivers``); None counts every receiver the previous state routed
    to as paged. Per incident and receiver:

    - TRIGGER when the incident is new, or to receivers it newly routes to (e.g. it became
      critical); a new incident that already ended also gets its RESOLVE.
    - REPEAT number *n* when ``n = (last_seen_at - started_at) // repeat_interval`` grew since the
      previous state, while firing and unacknowledged, to the receivers paged: data time, so
      re-runs plan the same repeats.
    - ESCALATE to the route's escalation receiver when a firing, unacknowledged incident becomes
      critical on a route with ``escalation``; ``not_before = now + after``, and the dispatcher
      must drop it if the incident was acknowledged or resolved by then.
    - RESOLVE when a firing incident became resolved, to the receivers paged about it (its
      escalation receivers included).

    History: an incident whose last anomalous point is older than ``now - page_lookback`` (the
    tenant's) was found while scoring the past (a backfill, a new tenant, the demo). Its
    notifications are ``suppressed`` with the reason ``history``: stored, never sent; the
    dispatcher sends one digest per tenant and receiver instead (``history.fold_history``). A
    resolve of an incident that was paged live is still sent. An incident nobody was paged about
    (history) that fires again within ``page_lookback``, unacknowledged, is paged as if it were
    new, under keys of its own (sequence 1), since the held ones are stored already.

    Then, in this order, the others become ``suppressed`` with a reason (never dropped):
    silences active at the event's data time (all events); inhibition by another incident of
    this batch that matches a rule's source, shares its ``equal`` labels and is active at that
    time (not for RESOLVE); the tenant's rate limit, a sliding window over the pending TRIGGER and
    REPEAT events of this batch in data time (critical incidents are never rate limited).
    """
    incidents = sorted(incidents, key=lambda i: (i.started_at, i.fingerprint))
    candidates: list[_Candidate] = []
    for incident in incidents:
        prev, acked = _previous_view(previous.get(incident.fingerprint))
        told = None if paged is None else set(paged.get(incident.fingerprint, ()))
        candidates.extend(_events(incident, prev, acked, told, policy, now))
    _suppress(candidates, incidents, policy)
    candidates.sort(
        key=lambda c: (c.at, c.incident.fingerprint, types.EVENT_ORDER[c.event], c.receiver)
    )
    return _notifications(candidates, policy, dagster_url)


def is_history(incident: Incident, policy: AlertingPolicy, now: datetime) -> bool:
    """Whether the incident was found in the past: its last anomalous point is older than the
    tenant's ``page_lookback`` before ``now``."""
    return incident.last_seen_at < now - policy.settings(incident.tenant).page_lookback


def _events(
    incident: Incident,
    prev: Incident | None,
    acked: bool,
    told: set[str] | None,
    policy: AlertingPolicy,
    now: datetime,
) -> list[_Candidate]:
    """One incident's events (see :func:`plan_notifications`), before anything is suppressed."""
    history = is_history(incident, policy, now)
    before = set() if prev is None else {r for r, _ in policy.receivers_for(prev)}
    told = before if told is None else told
    if prev is not None and prev.status == types.RESOLVED:
        # Over already (or resolved by hand): a re-run seeing less of it says nothing new.
        return []
    if prev is None or (not told and not history and not acked):
        out = _first_events(incident, policy, now, sequence=0 if prev is None else 1)
    else:
        out = _follow_ups(incident, prev, acked, before, told, policy, now)
    if history:
        for c in out:
            # A resolve is held only with the trigger it closes (held in this very plan).
            if c.event != types.RESOLVE or prev is None:
                c.suppress(types.HISTORY)
    return out


def _first_events(
    incident: Incident, policy: AlertingPolicy, now: datetime, sequence: int
) -> list[_Candidate]:
    """The first page about an incident: TRIGGER to every receiver it routes to (RESOLVE too
    when it already ended) and ESCALATE when critical on a route with ``escalation``."""
    routed = policy.receivers_for(incident)
    firing = incident.status != types.RESOLVED
    at = incident.started_at if sequence == 0 else incident.last_seen_at
    out = [_Candidate(incident, r, types.TRIGGER, sequence, at) for r, _ in routed]
    if not firing:
        resolved_at = incident.resolved_at or incident.last_seen_at
        out += [_Candidate(incident, r, types.RESOLVE, sequence, resolved_at) for r, _ in routed]
    if firing and incident.severity >= Severity.CRITICAL:
        out += _escalations(incident, routed, now, sequence)
    return out


def _follow_ups(
    incident: Incident,
    prev: Incident,
    acked: bool,
    before: set[str],
    told: set[str],
    policy: AlertingPolicy,
    now: datetime,
) -> list[_Candidate]:
    """What changed since ``prev`` (see :func:`plan_notifications`): triggers to receivers it
    newly routes to, repeats, an escalation when it became critical, resolves to those paged."""
    routed = policy.receivers_for(incident)
    out: list[_Candidate] = []
    if incident.status == types.RESOLVED:
        resolved_at = incident.resolved_at or incident.last_seen_at
        # The escalation receivers too: a page opened by an escalation is closed by the resolve.
        escalated = [e.to for _, e in [*policy.receivers_for(prev), *routed] if e is not None]
        targets = dict.fromkeys([*sorted(before), *(r for r, _ in routed), *escalated])
        return [
            _Candidate(incident, receiver, types.RESOLVE, 0, resolved_at)
            for receiver in targets
            if receiver in told
        ]
    for receiver, _ in routed:
        if receiver not in before:
            out.append(_Candidate(incident, receiver, types.TRIGGER, 0, incident.last_seen_at))
    if not acked:
        out.extend(_repeat_events(incident, prev, told & before, routed, policy))
        if incident.severity >= Severity.CRITICAL and prev.severity < Severity.CRITICAL:
            out.extend(_escalations(incident, routed, now, 0))
    return out


def _escalations(incident: Incident, routed, now: datetime, sequence: int) -> list[_Candidate]:
    """ESCALATE to each escalation receiver of the routes, due ``after`` from ``now``."""
    return [
        _Candidate(
            incident,
            esc.to,
            types.ESCALATE,
            sequence,
            incident.last_seen_at,
            not_before=now + esc.after,
            extra={"escalated_from": receiver, "after": format_duration(esc.after)},
        )
        for receiver, esc in routed
        if esc is not None
    ]


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
    """Silences, then inhibition, then rate limits (see :func:`plan_notifications`), on what
    history did not hold back already."""
    for c in candidates:
        if c.status == PENDING:
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


def plan_history_digests(
    held: Iterable[Notification], policy: AlertingPolicy, dagster_url: str
) -> list[Notification]:
    """One ``digest`` notification per tenant and receiver of these triggers held back as
    history (receivers that take no reports, such as PagerDuty, get none: a summary is not a
    page). Its key depends on the first held trigger, so re-planning the same history plans the
    same digest; the outbox keeps one waiting per tenant and receiver (``history.hold_digests``)
    and the dispatcher fills in the figures when it sends it (``history.fold_history``)."""
    out: dict[tuple[str, str], Notification] = {}
    for note in sorted(held, key=lambda n: n.idempotency_key):
        if note.event != types.TRIGGER or note.reason != types.HISTORY:
            continue
        spec = policy.receivers.get(note.receiver) or {}
        if (note.tenant, note.receiver) in out or spec.get("type") in NO_REPORTS:
            continue
        settings = policy.settings(note.tenant)
        base = dagster_url.rstrip("/")
        out[(note.tenant, note.receiver)] = Notification(
            idempotency_key=types.fingerprint(
                types.DIGEST, note.tenant, note.receiver, note.idempotency_key
            ),
            fingerprint=types.digest_fingerprint(note.tenant),
            tenant=note.tenant,
            receiver=note.receiver,
            event=types.DIGEST,
            locale=settings.locale,
            payload={
                "event": types.DIGEST,
                "receiver": note.receiver,
                "digest": {
                    "tenant": note.tenant,
                    "page_lookback": format_duration(settings.page_lookback),
                },
                "links": {"alerts": f"{base}/assets/alerts"} if base else {},
            },
        )
    return list(out.values())


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
