"""Detection quality: precision from operator feedback (per member detector and for the
ensemble), how often the members agree on flagged points, and incidents against label windows.

A member "found" an incident when its calibrated score reached 0.5 (the default level of every
calibrated score) on a point the ensemble flagged in that incident's service and window. Precision
from feedback counts an incident as real unless an operator marked it false positive.
"""

import pandas as pd

from monitoring_pipelines.reports import data
from monitoring_pipelines.reports.periods import Period
from monitoring_pipelines.reports.sections.base import Context
from monitoring_pipelines.reports.sections.operations import FALSE_POSITIVE, in_period, incidents

MEMBER_LEVEL = 0.5
ANOMALY = "anomaly"


def _precision(real: int, total: int) -> float | None:
    return round(real / total, 3) if total else None


def feedback_precision(incidents: int, false_positives: int, reviewed: int) -> float | None:
    """Share of incidents not marked false positive; None until an operator reviewed any."""
    return _precision(incidents - false_positives, incidents) if reviewed else None


def member_agreement(flagged: pd.DataFrame) -> dict:
    """Per member: share of the ensemble's flagged points where it was at MEMBER_LEVEL or more;
    and the share where every member that scored the point agreed."""
    out: dict = {"points": len(flagged), "members": {}, "all_agree": None}
    if flagged.empty:
        return out
    over = {}
    for member in data.MEMBERS:
        scores = flagged[f"{member}_score"]
        if scores.notna().any():
            over[member] = (scores >= MEMBER_LEVEL) | scores.isna()
            out["members"][member] = round(float((scores >= MEMBER_LEVEL).mean()), 3)
    if over:
        every = pd.concat(over, axis=1).all(axis=1)
        out["all_agree"] = round(float(every.mean()), 3)
    return out


def found_by(frame: pd.DataFrame, flagged: pd.DataFrame) -> dict[str, set[str]]:
    """member -> fingerprints of incidents it found."""
    out: dict[str, set[str]] = {m: set() for m in data.MEMBERS}
    if flagged.empty:
        return out
    groups = {key: g for key, g in flagged.groupby(["tenant", "service"], sort=False)}
    for inc in frame.itertuples():
        own = groups.get((inc.tenant, inc.service))
        if own is None:
            continue
        end = inc.resolved_at if pd.notna(inc.resolved_at) else inc.last_seen_at
        names = {m["metric"] for m in inc.metrics}
        rows = own[
            (own["ts"] >= inc.started_at)
            & (own["ts"] <= end)
            & (own["metric"].isin(names) if names else True)
        ]
        for member in data.MEMBERS:
            if (rows[f"{member}_score"] >= MEMBER_LEVEL).any():
                out[member].add(inc.fingerprint)
    return out


def label_match(frame: pd.DataFrame, labels: list[dict], period: Period) -> dict:
    """Label windows that overlap the period, found when an incident of the same tenant and
    service overlaps them; incidents that overlap some label window."""
    start, end = data.utc(period.start), data.utc(period.end)
    windows = [w for w in labels if w["start"] < end and w["end"] > start]
    # A multi-metric label is one event per service and window.
    events = sorted({(w["tenant"], w["service"], w["start"], w["end"]) for w in windows})
    if not events:
        return {
            "labelled": 0,
            "found": 0,
            "incidents_matching": None,
            "recall": None,
            "precision": None,
        }

    def overlaps(inc, ev) -> bool:
        inc_end = inc.resolved_at if pd.notna(inc.resolved_at) else inc.last_seen_at
        return (
            inc.tenant == ev[0]
            and inc.service == ev[1]
            and inc.started_at < ev[3]
            and inc_end > ev[2]
        )

    rows = list(frame.itertuples())
    found = sum(1 for ev in events if any(overlaps(i, ev) for i in rows))
    matching = sum(1 for i in rows if any(overlaps(i, ev) for ev in events))
    return {
        "labelled": len(events),
        "found": found,
        "incidents_matching": matching,
        "recall": _precision(found, len(events)),
        "precision": _precision(matching, len(rows)),
    }


def build(ctx: Context, period: Period) -> dict:
    frame = in_period(incidents(ctx, period), period)
    frame = frame[frame["kind"] == ANOMALY]
    flagged = data.read_flagged_scores(ctx.warehouse, ctx.scope, period.start, period.end)
    fp = set(frame.loc[frame["feedback"] == FALSE_POSITIVE, "fingerprint"])
    reviewed = int(frame["feedback"].notna().sum())
    members = []
    for member, fps in found_by(frame, flagged).items():
        if f"{member}_score" not in flagged or not flagged[f"{member}_score"].notna().any():
            continue
        members.append(
            {
                "detector": member,
                "incidents": len(fps),
                "false_positives": len(fps & fp),
                "precision": feedback_precision(len(fps), len(fps & fp), reviewed),
            }
        )
    ensemble = {
        "detector": "ensemble",
        "incidents": len(frame),
        "false_positives": len(fp),
        "precision": feedback_precision(len(frame), len(fp), reviewed),
    }
    labels = label_match(frame, data.read_labels(ctx.labels_path, ctx.scope), period)
    agreement = member_agreement(flagged)
    figures = {
        "precision_feedback": ensemble["precision"],
        "label_recall": labels["recall"],
        "label_precision": labels["precision"],
        "all_members_agree": agreement["all_agree"],
        "flagged_points": len(flagged),
    }
    return {
        "figures": figures,
        "reviewed": reviewed,
        "detectors": [*members, ensemble],
        "agreement": agreement,
        "labels": labels,
    }
