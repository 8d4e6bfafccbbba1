"""Operations: incidents, pages, time to acknowledge and resolve, open incidents, noisy series."""

import pandas as pd

from monitoring_pipelines.reports import data
from monitoring_pipelines.reports.periods import Period
from monitoring_pipelines.reports.sections.base import Context, local_times, stats

SEVERITIES = ("critical", "high", "medium", "low")
FALSE_POSITIVE = "false_positive"
# Notification events that reach a person about a problem (a resolve is good news, not a page).
PAGE_EVENTS = ("trigger", "repeat", "escalate")


def incidents(ctx: Context, period: Period) -> pd.DataFrame:
    """The scope's incidents read once per period (several sections use them)."""
    return ctx.cached(
        ("incidents", period.key),
        lambda: data.read_incidents(ctx.warehouse, ctx.scope, period.start, period.end),
    )


def in_period(frame: pd.DataFrame, period: Period) -> pd.DataFrame:
    start, end = data.utc(period.start), data.utc(period.end)
    return frame[(frame["started_at"] >= start) & (frame["started_at"] < end)]


def _series_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (incident, metric involved)."""
    rows = [
        {
            "fingerprint": inc.fingerprint,
            "series": f"{inc.tenant}/{inc.service}/{m['metric']}",
            "started_at": inc.started_at,
            "ended_at": inc.resolved_at if pd.notna(inc.resolved_at) else inc.last_seen_at,
            "false_positive": inc.feedback == FALSE_POSITIVE,
        }
        for inc in frame.itertuples()
        for m in inc.metrics
    ]
    return pd.DataFrame(
        rows, columns=["fingerprint", "series", "started_at", "ended_at", "false_positive"]
    )


def noisiest(frame: pd.DataFrame, flap_minutes: int, top: int) -> list[dict]:
    """Series by incidents; a flap is an incident starting within ``flap_minutes`` of the end of
    the series' previous one."""
    rows = _series_rows(frame)
    out = []
    for series, group in rows.groupby("series", sort=True):
        group = group.sort_values("started_at")
        gaps = group["started_at"].iloc[1:].to_numpy() - group["ended_at"].iloc[:-1].to_numpy()
        flaps = int((gaps <= pd.Timedelta(minutes=flap_minutes).to_timedelta64()).sum())
        n = len(group)
        out.append(
            {
                "series": series,
                "incidents": n,
                "flaps": flaps,
                "false_positive_share": round(float(group["false_positive"].mean()), 3),
            }
        )
    out.sort(key=lambda r: (-r["incidents"], -r["flaps"], r["series"]))
    return out[:top]


def build(ctx: Context, period: Period) -> dict:
    everything = incidents(ctx, period)
    frame = in_period(everything, period)
    end = data.utc(period.end)
    still_open = everything[everything["resolved_at"].isna() | (everything["resolved_at"] >= end)]
    mtta = _minutes_since_start(frame[frame["acknowledged_at"].notna()], "acknowledged_at")
    resolved = frame[frame["resolved_at"].notna() & (frame["resolved_at"] < end)]
    mttr = _minutes_since_start(resolved, "resolved_at")
    notes = data.read_notifications(ctx.warehouse, frame["fingerprint"])
    pages = notes[notes["event"].isin(PAGE_EVENTS) & (notes["status"] == "sent")]
    local = local_times(frame["started_at"], period)
    off = pd.Series(
        [ctx.config.off_hours(t.weekday(), t.hour) for t in local], index=frame.index, dtype=bool
    )
    off_fps = set(frame.loc[off, "fingerprint"])
    by_status = notes["status"].value_counts().sort_index()
    by_service = frame.groupby(["tenant", "service"]).size().sort_index()
    fp = int((frame["feedback"] == FALSE_POSITIVE).sum())
    figures = {
        "incidents": len(frame),
        "critical": int((frame["severity"] == "critical").sum()),
        "pages": len(pages),
        "off_hours_pages": int(pages["fingerprint"].isin(off_fps).sum()),
        "mtta_median_minutes": mtta["median"],
        "mttr_median_minutes": mttr["median"],
        "still_open": len(still_open),
        "false_positives": fp,
    }
    return {
        "figures": figures,
        "by_severity": {s: int((frame["severity"] == s).sum()) for s in SEVERITIES},
        "by_kind": {k: int(v) for k, v in frame["kind"].value_counts().sort_index().items()},
        "by_service": [
            {"tenant": t, "service": s, "incidents": int(n)} for (t, s), n in by_service.items()
        ],
        "notifications_by_status": {k: int(v) for k, v in by_status.items()},
        "mtta_minutes": mtta,
        "mttr_minutes": mttr,
        "still_open": [
            {
                "fingerprint": r.fingerprint,
                "tenant": r.tenant,
                "service": r.service,
                "severity": r.severity,
                "started_at": r.started_at.isoformat(),
            }
            for r in still_open.itertuples()
        ][:20],
        "noisiest_series": noisiest(
            frame[frame["kind"] == "anomaly"], ctx.config.flap_minutes, ctx.config.top_series
        ),
    }


def _minutes_since_start(frame: pd.DataFrame, column: str) -> dict:
    """The statistics of the minutes from each incident's start to ``column`` (MTTA, MTTR)."""
    return stats(
        [
            (t - s).total_seconds() / 60
            for t, s in zip(frame[column], frame["started_at"], strict=True)
        ]
    )
