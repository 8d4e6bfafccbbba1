"""Event-level evaluation of alerts against label windows, plus point-wise PR-AUC.

Operators judge a detector by its alerts: did the first alert of an incident come, how early, and
how many alerts were spurious. So the unit is the *alert event* (the start of an alert, see
:func:`monitoring_pipelines.ml.thresholds.flags`) and the *label window*:

- A window ``[start, end]`` (closed, UTC) is **detected** when an alert event starts inside
  ``[start - early_slack, end + late_slack]``. Defaults: no early slack (an alert before the
  incident began is a false alarm as far as anyone can tell), a late slack of 3 steps (15 min at
  5-minute steps): the calibrated score averages the last few raw scores, and an alert that lands
  right after a short spike ended still points the operator at it.
- **Detection delay** of a detected window: its first such alert minus its start.
- An alert event is **true** when it falls in the slacked range of some window, else **false**.
  Precision = true alert events / all alert events; recall = detected windows / windows;
  F1 from the two. ``redundant`` counts true alerts beyond the first of a window (the policy
  should keep it at zero).
- **False alarms per series-week** = false alerts / (evaluated series-days / 7);
  **per day** = false alerts / (evaluated series-days / series), i.e. per calendar day for the
  whole set of series evaluated together.
- **PR-AUC**: scikit-learn's average precision of the score against "inside a window" point
  labels, over evaluated points with a score.

Only part of a series may be evaluated (the test weeks of a backtest): windows count when they
start inside the evaluated period; alerts count when they start inside it; an alert inside a
window that started before the period is neither true nor false. ``overall`` is the micro sum over
all series.
"""

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

Window = tuple[pd.Timestamp, pd.Timestamp]
SUMMARY_COLUMNS = (
    "series",
    "windows",
    "detected",
    "alerts",
    "true_alerts",
    "false_alerts",
    "redundant",
    "precision",
    "recall",
    "f1",
    "delay_median_minutes",
    "false_alarms_per_day",
    "false_alarms_per_series_week",
    "pr_auc",
    "points",
    "series_days",
)


@dataclass(frozen=True)
class EvaluationConfig:
    early_slack_steps: int = 0
    late_slack_steps: int = 3


def _utc(value) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def parse_windows(labels: Mapping[str, Iterable]) -> dict[str, list[Window]]:
    """``{series: [[start, end], ...]}`` with ISO strings (naive = UTC) to sorted Timestamps."""
    parsed = {}
    for name, windows in labels.items():
        pairs = []
        for window in windows:
            start, end = window
            start, end = _utc(start), _utc(end)
            if end < start:
                raise ValueError(f"{name}: label window ends before it starts: {window}")
            pairs.append((start, end))
        parsed[str(name)] = sorted(pairs)
    return parsed


def load_labels(path: Path | str) -> dict[str, list[Window]]:
    return parse_windows(json.loads(Path(path).read_text()))


@dataclass
class SeriesEvaluation:
    series: str
    windows: int = 0
    detected: int = 0
    alerts: int = 0
    true_alerts: int = 0
    false_alerts: int = 0
    redundant: int = 0
    points: int = 0
    series_days: float = 0.0
    delays_minutes: list[float] = field(default_factory=list)
    # Kept for micro PR-AUC over all series.
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool), repr=False)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)


def in_windows(index: pd.DatetimeIndex, windows: list[Window]) -> np.ndarray:
    inside = np.zeros(len(index), dtype=bool)
    for start, end in windows:
        inside |= (index >= start) & (index <= end)
    return inside


def evaluate_series(
    name: str,
    index: pd.DatetimeIndex,
    scores: np.ndarray,
    alerts: np.ndarray,
    windows: list[Window],
    *,
    step: pd.Timedelta,
    evaluated: np.ndarray | None = None,
    config: EvaluationConfig | None = None,
) -> SeriesEvaluation:
    """Evaluate one series on a regular grid: ``scores`` and ``alerts`` (event starts) per step.

    ``evaluated`` marks the steps that count (default: all).
    """
    cfg = config or EvaluationConfig()
    index = pd.DatetimeIndex(index)
    scores = np.asarray(scores, dtype="float64")
    alerts = np.asarray(alerts, dtype=bool)
    evaluated = np.ones(len(index), dtype=bool) if evaluated is None else np.asarray(evaluated)
    result = SeriesEvaluation(series=name)
    if not evaluated.any():
        return result
    period_start = index[evaluated].min()
    period_end = index[evaluated].max()
    early, late = cfg.early_slack_steps * step, cfg.late_slack_steps * step
    alert_times = index[alerts & evaluated]
    counted = [(s, e) for s, e in windows if period_start <= s <= period_end]
    earlier = [(s, e) for s, e in windows if s < period_start]
    hit_counted = np.zeros(len(alert_times), dtype=bool)
    for start, end in counted:
        inside = (alert_times >= start - early) & (alert_times <= end + late)
        if inside.any():
            result.detected += 1
            result.delays_minutes.append((alert_times[inside][0] - start) / pd.Timedelta(minutes=1))
            result.redundant += int(inside.sum()) - 1
        hit_counted |= inside
    hit_earlier = np.zeros(len(alert_times), dtype=bool)
    for start, end in earlier:
        hit_earlier |= (alert_times >= start - early) & (alert_times <= end + late)
    ignored = hit_earlier & ~hit_counted
    result.windows = len(counted)
    result.alerts = int((~ignored).sum())
    result.true_alerts = int(hit_counted.sum())
    result.false_alerts = result.alerts - result.true_alerts
    result.points = int(evaluated.sum())
    result.series_days = result.points * step / pd.Timedelta(days=1)
    have = evaluated & np.isfinite(scores)
    result.labels = in_windows(index[have], windows)
    result.scores = scores[have]
    return result


def peaks(
    index: pd.DatetimeIndex,
    scores: np.ndarray,
    windows: list[Window],
    *,
    step: pd.Timedelta,
    evaluated: np.ndarray | None = None,
    config: EvaluationConfig | None = None,
) -> tuple[list[float], list[float]]:
    """(window peaks, normal daily peaks) of one series over the evaluated steps.

    A window's peak is its highest score within its slacked range; a normal daily peak is the
    highest score of a UTC day outside every slacked window. Together they say how well *one*
    level separates incidents from ordinary days, whatever the level: see :func:`event_auc`.
    """
    cfg = config or EvaluationConfig()
    index = pd.DatetimeIndex(index)
    scores = np.asarray(scores, dtype="float64")
    evaluated = np.ones(len(index), dtype=bool) if evaluated is None else np.asarray(evaluated)
    if not evaluated.any():
        return [], []
    start, stop = index[evaluated].min(), index[evaluated].max()
    early, late = cfg.early_slack_steps * step, cfg.late_slack_steps * step
    positive = []
    busy = np.zeros(len(index), dtype=bool)
    for begin, end in windows:
        inside = (index >= begin - early) & (index <= end + late)
        busy |= inside
        if start <= begin <= stop:
            values = scores[inside & evaluated]
            values = values[np.isfinite(values)]
            positive.append(float(values.max()) if values.size else 0.0)
    quiet = evaluated & ~busy & np.isfinite(scores)
    days = pd.Series(scores[quiet], index=index[quiet]).groupby(index[quiet].floor("D")).max()
    return positive, [float(v) for v in days.to_numpy()]


def event_auc(positive: list[float], negative: list[float]) -> float:
    """Probability that an incident's peak beats an ordinary day's peak (ties count half)."""
    if not positive or not negative:
        return float("nan")
    from sklearn.metrics import roc_auc_score

    labels = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    return float(roc_auc_score(labels, np.r_[positive, negative]))


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def _pr_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    if labels.size == 0 or not labels.any():
        return float("nan")
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(labels, scores))


def _row(name: str, parts: list[SeriesEvaluation]) -> dict:
    windows = sum(p.windows for p in parts)
    detected = sum(p.detected for p in parts)
    alerts = sum(p.alerts for p in parts)
    true_alerts = sum(p.true_alerts for p in parts)
    false_alerts = sum(p.false_alerts for p in parts)
    series_days = sum(p.series_days for p in parts)
    precision = _ratio(true_alerts, alerts)
    recall = _ratio(detected, windows)
    if not windows:
        f1 = float("nan")
    elif not detected:
        f1 = 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall)
    delays = [d for p in parts for d in p.delays_minutes]
    calendar_days = series_days / len(parts) if parts else 0.0
    return {
        "series": name,
        "windows": windows,
        "detected": detected,
        "alerts": alerts,
        "true_alerts": true_alerts,
        "false_alerts": false_alerts,
        "redundant": sum(p.redundant for p in parts),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "delay_median_minutes": float(np.median(delays)) if delays else float("nan"),
        "false_alarms_per_day": _ratio(false_alerts, calendar_days),
        "false_alarms_per_series_week": _ratio(false_alerts, series_days / 7.0),
        "pr_auc": _pr_auc(
            np.concatenate([p.labels for p in parts]) if parts else np.zeros(0, dtype=bool),
            np.concatenate([p.scores for p in parts]) if parts else np.zeros(0),
        ),
        "points": sum(p.points for p in parts),
        "series_days": series_days,
    }


def summarise(evaluations: list[SeriesEvaluation], *, overall: str = "overall") -> pd.DataFrame:
    """One row per series plus a last ``overall`` row (micro: sums over all series)."""
    rows = [_row(e.series, [e]) for e in evaluations]
    rows.append(_row(overall, list(evaluations)))
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def overall(summary: pd.DataFrame) -> dict:
    """The ``overall`` row of :func:`summarise` as a plain dict."""
    return summary.iloc[-1].to_dict()


def config_dict(config: EvaluationConfig) -> dict:
    return asdict(config)
