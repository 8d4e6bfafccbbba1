"""Data quality per tenant: rows in, accepted and quarantined (by reason), blocked partitions,
completeness and freshness.

Rows in = accepted + quarantined, counted on the period's days. A tenant-day is blocked when a
blocking quality check raised a data-quality incident for it, or when it has accepted rows but was
never put on the grid (nothing downstream ran). Completeness = grid steps with a value over the
steps the tenant's series should have had in the period (blocked days count as missing).
Freshness = how far the newest accepted point lags behind the end of the period.
"""

import re

import pandas as pd

from monitoring_pipelines.reports import data
from monitoring_pipelines.reports.periods import Period
from monitoring_pipelines.reports.sections.base import Context, day_starts
from monitoring_pipelines.reports.sections.operations import in_period, incidents

DATA_QUALITY = "data_quality"
DEFAULT_STEP_SECONDS = 300


_NOISE = re.compile(r"\([^)]*\)|\[[^\]]*\)|\[[^\]]*\]|[-+]?\d[\d.,e+-]*")
_CUT = re.compile(r"\b(for|of|by|in|at|from)\b|[;,]")
_NAMES = {"outside": "out of range", "duplicate": "duplicate"}


def reason_name(field: str | None, reason: str) -> str:
    """A quarantine reason without its particulars (values, rows, sources): ``value: not
    finite``, ``value: out of range``, ``key: duplicate``, so reasons group into a few kinds."""
    text = reason or ""
    prefix = f"{field}:" if field else ""
    if prefix and text.startswith(prefix):
        text = text[len(prefix) :]
    text = _CUT.split(_NOISE.sub(" ", text), maxsplit=1)[0]
    words = " ".join(text.split()[:4]).strip(" .:") or "other"
    words = _NAMES.get(words, words)
    return f"{field}: {words}" if field else words


def build(ctx: Context, period: Period, step_seconds: int = DEFAULT_STEP_SECONDS) -> dict:
    wh = ctx.warehouse
    days = day_starts(period)
    day_keys = [d.date().isoformat() for d in days[:-1]]
    known = ctx.cached("known_tenants", lambda: data.known_tenants(wh, ctx.scope))
    dq = in_period(incidents(ctx, period), period)
    read = {
        "accepted": data.accepted_per_day(wh, known, days),
        "gridded": data.gridded_per_day(wh, known, days),
        "steps": data.grid_steps_per_day(wh, known, days),
        "quarantined": data.read_quarantine(wh, ctx.scope, day_keys),
        "series": data.metric_names(wh, ctx.scope, period.start, period.end),
        "newest": data.newest_metric(wh, ctx.scope, period.end),
        "dq": dq[dq["kind"] == DATA_QUALITY],
        "day_keys": day_keys,
        "per_day_steps": 86400 // step_seconds,
        "end": data.utc(period.end),
    }
    tenants = sorted(
        set(read["accepted"]["tenant"])
        | set(read["quarantined"]["tenant"].dropna())
        | set(read["series"]["tenant"])
    )
    if ctx.scope.tenant is not None:
        tenants = [t for t in tenants if t == ctx.scope.tenant]
    rows = [_tenant_row(tenant, read) for tenant in tenants]
    frame = pd.DataFrame(rows)
    figures = {
        "rows_in": int(frame["rows_in"].sum()) if rows else 0,
        "accepted": int(frame["accepted"].sum()) if rows else 0,
        "quarantined": int(frame["quarantined"].sum()) if rows else 0,
        "blocked_partitions": int(sum(len(r["blocked_partitions"]) for r in rows)),
        "completeness": (
            round(float(frame["completeness"].dropna().mean()), 4)
            if rows and frame["completeness"].notna().any()
            else None
        ),
    }
    return {"figures": figures, "tenants": rows}


def _tenant_row(tenant: str, read: dict) -> dict:
    """One tenant's row: rows in, accepted and quarantined (by reason), the days blocked (a data
    quality incident, or accepted rows never gridded), completeness of its grid and freshness."""
    day_keys = read["day_keys"]
    acc = read["accepted"][read["accepted"]["tenant"] == tenant]
    quar = read["quarantined"][read["quarantined"]["tenant"] == tenant]
    steps = read["steps"]
    grid_days = set(steps.loc[(steps["tenant"] == tenant) & (steps["rows"] > 0), "day"])
    dq = read["dq"]
    blocked = {
        (pk or "").split("|")[0]
        for pk in dq.loc[dq["tenant"] == tenant, "partition_key"]
        if (pk or "").split("|")[0] in day_keys
    }
    blocked |= {d for d in acc.loc[acc["rows"] > 0, "day"] if d not in grid_days}
    n_series = int((read["series"]["tenant"] == tenant).sum())
    expected = n_series * read["per_day_steps"] * len(day_keys)
    gridded = read["gridded"]
    valued = int(gridded.loc[gridded["tenant"] == tenant, "rows"].sum())
    fresh = read["newest"].get(tenant)
    lag_hours = round((read["end"] - fresh).total_seconds() / 3600, 1) if fresh else None
    reasons = pd.Series(
        [reason_name(f, r) for f, r in zip(quar["field"], quar["reason"], strict=True)],
        dtype=object,
    ).value_counts()
    return {
        "tenant": tenant,
        "rows_in": int(acc["rows"].sum()) + len(quar),
        "accepted": int(acc["rows"].sum()),
        "quarantined": len(quar),
        "quarantined_by_reason": {
            k: int(v) for k, v in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
        },
        "blocked_partitions": sorted(blocked),
        "series": n_series,
        "completeness": round(valued / expected, 4) if expected else None,
        "newest_point": fresh.isoformat() if fresh is not None else None,
        "freshness_lag_hours": lag_hours,
    }
