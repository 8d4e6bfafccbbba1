"""Drift: has a tenant's data, or its score stream, moved away from what its models were trained on?

Two questions, per series, each a plain function on arrays:

- **Values** (:func:`value_drift`): the recent window's distribution against the same weekdays and
  hours of the training window (a Saturday is compared with the training Saturdays, a morning still
  arriving with the training mornings: daily and weekly seasonality are not drift), by the
  two-sample Kolmogorov-Smirnov test (scipy) and the population stability index on the training
  window's deciles. A series drifts when both say so: the KS p-value is below ``ks_pvalue`` with a
  statistic of at least ``ks_statistic`` (a quarter or more of the distribution moved, not a
  two-hour incident or a slow growth trend) *and* the PSI is at least ``psi``. KS alone flags tiny
  shifts on thousands of points; PSI alone has no notion of sample size.
- **Scores** (:func:`page_hinkley`): a Page-Hinkley test for a sustained rise of the ensemble score
  over its reference mean: the cumulative excess ``sum(x - mean - delta)`` above its running
  minimum must exceed ``ph_lambda``. A short incident adds a few points' excess and stays below
  it; a detector whose scores sit higher for hours crosses it.

Thresholds come from :class:`DriftConfig`, whose defaults the environment can override
(``MONITORING_DRIFT_PSI``, ``MONITORING_DRIFT_KS_PVALUE``, ``MONITORING_DRIFT_PH_DELTA``,
``MONITORING_DRIFT_PH_LAMBDA``, ``MONITORING_DRIFT_MIN_POINTS``,
``MONITORING_DRIFT_KS_STATISTIC``). :func:`values_drift` and
:func:`scores_drift` run them on a tenant's warehouse rows; the asset checks on ``clean_metrics``
and ``anomaly_scores`` call those. Nothing here knows Dagster.
"""

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from monitoring_pipelines.ml.training import TrainingPlan
from monitoring_pipelines.warehouse import Warehouse


@dataclass(frozen=True)
class DriftConfig:
    # Population stability index at or above which a distribution has shifted (0.25 is the
    # usual "significant shift" line; 0.1 to 0.25 is "some").
    psi: float = 0.25
    # Kolmogorov-Smirnov p-value below which the two windows differ.
    ks_pvalue: float = 0.01
    # ... with at least this KS statistic (largest gap between the two CDFs). On the demo's
    # ordinary weekdays it stays below 0.23; a 20% level shift of a series gives 0.77.
    ks_statistic: float = 0.3
    # Page-Hinkley: slack per point, and cumulative excess that signals a sustained rise.
    ph_delta: float = 0.05
    ph_lambda: float = 30.0
    # Fewer points than this in either window: the series is not judged.
    min_points: int = 48

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "DriftConfig":
        env = os.environ if environ is None else environ
        values = {}
        for name, cast in (
            ("psi", float),
            ("ks_pvalue", float),
            ("ks_statistic", float),
            ("ph_delta", float),
            ("ph_lambda", float),
            ("min_points", int),
        ):
            raw = env.get(f"MONITORING_DRIFT_{name.upper()}")
            if raw:
                try:
                    values[name] = cast(raw)
                except ValueError:
                    raise ValueError(
                        f"MONITORING_DRIFT_{name.upper()}={raw!r}: not a {cast.__name__}"
                    ) from None
        return cls(**values)


def psi(reference: np.ndarray, recent: np.ndarray, bins: int = 10) -> float:
    """Population stability index of ``recent`` against ``reference``, on the reference's
    quantile bins (open-ended at both ends); empty bins count as half a point."""
    reference, recent = np.asarray(reference, float), np.asarray(recent, float)
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    expected = np.bincount(
        np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1
    )
    actual = np.bincount(np.searchsorted(edges, recent, side="right"), minlength=len(edges) + 1)
    e = np.maximum(expected, 0.5) / len(reference)
    a = np.maximum(actual, 0.5) / len(recent)
    return float(np.sum((a - e) * np.log(a / e)))


def page_hinkley(scores: np.ndarray, reference_mean: float, delta: float) -> tuple[float, int]:
    """The Page-Hinkley statistic for a rise of ``scores`` over ``reference_mean`` (the largest
    cumulative excess above its running minimum) and the index where it peaks."""
    excess = np.cumsum(np.asarray(scores, float) - reference_mean - delta)
    running_min = np.minimum.accumulate(np.concatenate([[0.0], excess]))[1:]
    statistic = excess - running_min
    at = int(np.argmax(statistic)) if len(statistic) else 0
    return (float(statistic[at]) if len(statistic) else 0.0), at


def value_drift(reference: np.ndarray, recent: np.ndarray, config: DriftConfig) -> dict | None:
    """KS and PSI of one series' recent values against its training values; None when either
    window has fewer than ``config.min_points`` values."""
    from scipy.stats import ks_2samp

    reference = np.asarray(reference, float)
    recent = np.asarray(recent, float)
    reference, recent = reference[np.isfinite(reference)], recent[np.isfinite(recent)]
    if min(len(reference), len(recent)) < config.min_points:
        return None
    test = ks_2samp(reference, recent)
    index = psi(reference, recent)
    return {
        "ks_statistic": round(float(test.statistic), 4),
        "ks_pvalue": float(f"{test.pvalue:.3g}"),
        "psi": round(index, 4),
        "reference_points": len(reference),
        "recent_points": len(recent),
        "drifted": bool(
            test.pvalue < config.ks_pvalue
            and test.statistic >= config.ks_statistic
            and index >= config.psi
        ),
    }


def score_drift(reference: np.ndarray, recent: np.ndarray, config: DriftConfig) -> dict | None:
    """Page-Hinkley on one series' recent ensemble scores against its reference mean."""
    reference = np.asarray(reference, float)
    recent = np.asarray(recent, float)
    reference, recent = reference[np.isfinite(reference)], recent[np.isfinite(recent)]
    if min(len(reference), len(recent)) < config.min_points:
        return None
    mean = float(reference.mean())
    statistic, at = page_hinkley(recent, mean, config.ph_delta)
    return {
        "page_hinkley": round(statistic, 3),
        "reference_mean": round(mean, 4),
        "recent_mean": round(float(recent.mean()), 4),
        "peak_index": at,
        "drifted": bool(statistic > config.ph_lambda),
    }


@dataclass
class DriftReport:
    """One check's verdict over the tenant-days of a run: every judged series' figures, keyed
    ``tenant/service/metric``, and the drifted ones by tenant."""

    statistic: str
    series: dict[str, dict] = field(default_factory=dict)
    windows: dict[str, dict[str, str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def drifted(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, figures in sorted(self.series.items()):
            if figures["drifted"]:
                tenant, rest = name.split("/", 1)
                out.setdefault(tenant, []).append(rest)
        return out

    @property
    def passed(self) -> bool:
        return not self.drifted


def _recent_windows(partition_keys: Iterable[str], days: int) -> dict[str, tuple]:
    """Per tenant, the last ``days`` UTC days among ``date|tenant`` keys, ``[start, end)``."""
    newest: dict[str, pd.Timestamp] = {}
    for key in partition_keys:
        date, tenant = str(key).split("|", 1)
        day = pd.Timestamp(date, tz="UTC")
        newest[tenant] = max(newest.get(tenant, day), day)
    one = pd.Timedelta(days=1)
    return {t: (d + one - days * one, d + one) for t, d in sorted(newest.items())}


def _training_window(wh: Warehouse, tenant: str) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """The training weeks of the tenant's current alert policy (fitted with its champions)."""
    _, policy = wh.read_thresholds(tenant)
    if "train_window" in policy:
        start, end = policy["train_window"]
        return pd.Timestamp(start), pd.Timestamp(end)
    if "validation_window" in policy:
        plan = TrainingPlan.ending(pd.Timestamp(policy["validation_window"][1]))
        return plan.train_start, plan.train_end
    return None


def _series_values(frame: pd.DataFrame, column: str) -> dict[str, np.ndarray]:
    if frame.empty:
        return {}
    names = frame["tenant"] + "/" + frame["service"] + "/" + frame["metric"]
    return {name: rows[column].to_numpy(float) for name, rows in frame.groupby(names)}


def _seconds_of_day(stamps: pd.DatetimeIndex) -> np.ndarray:
    return (stamps - stamps.floor("D")).total_seconds().to_numpy()


def comparable_reference(reference: pd.DataFrame, recent: pd.DataFrame) -> pd.DataFrame:
    """The reference rows ``recent`` can be compared with: on its weekdays and within the hours of
    the day it covers. A day still arriving (the morning of today) is compared with the same
    hours of the training days, not with whole days whose evenings and nights differ."""
    if recent.empty:
        return reference.iloc[:0]
    new = pd.DatetimeIndex(recent["ts"])
    when = pd.DatetimeIndex(reference["ts"])
    seconds, span = _seconds_of_day(when), _seconds_of_day(new)
    keep = when.day_of_week.isin(set(new.day_of_week)) & (
        (seconds >= span.min()) & (seconds <= span.max())
    )
    return reference[keep]


def values_drift(
    wh: Warehouse, partition_keys: Iterable[str], config: DriftConfig, recent_days: int = 1
) -> DriftReport:
    """KS + PSI per series of each tenant: its newest ``recent_days`` clean days among
    ``partition_keys`` against the same weekdays and hours of the day
    (:func:`comparable_reference`) of the training window of its current models (that of its
    alert policy, fitted with its champions). A tenant with no trained models yet is skipped
    (nothing to drift from)."""
    report = DriftReport("ks+psi")
    for tenant, (start, end) in _recent_windows(partition_keys, recent_days).items():
        window = _training_window(wh, tenant)
        if window is None:
            report.skipped[tenant] = "no trained models yet"
            continue
        columns = ("tenant", "service", "metric", "ts", "value", "is_gap")
        recent = wh.read_records(
            "clean_metrics", tenant=tenant, start=start, end=end, columns=columns
        )
        reference = wh.read_records(
            "clean_metrics", tenant=tenant, start=window[0], end=window[1], columns=columns
        )
        report.windows[tenant] = _window_text(window, (start, end))
        recent = recent[~recent["is_gap"].astype(bool)]
        reference = comparable_reference(reference[~reference["is_gap"].astype(bool)], recent)
        ref = _series_values(reference, "value")
        new = _series_values(recent, "value")
        for name in sorted(set(ref) & set(new)):
            figures = value_drift(ref[name], new[name], config)
            if figures is not None:
                report.series[name] = figures
    return report


def scores_drift(
    wh: Warehouse, partition_keys: Iterable[str], config: DriftConfig, recent_days: int = 1
) -> DriftReport:
    """Page-Hinkley per series of each tenant on its newest ``recent_days`` scored days among
    ``partition_keys``, against the mean ensemble score of the days scored before them since
    its models' training window began."""
    report = DriftReport("page-hinkley")
    for tenant, (start, end) in _recent_windows(partition_keys, recent_days).items():
        window = _training_window(wh, tenant)
        if window is None:
            report.skipped[tenant] = "no trained models yet"
            continue
        columns = ("tenant", "service", "metric", "ts", "ensemble_score")
        scores = wh.read_records(
            "anomaly_scores", tenant=tenant, start=window[0], end=end, columns=columns
        )
        before, recent = scores[scores["ts"] < start], scores[scores["ts"] >= start]
        report.windows[tenant] = _window_text((window[0], start), (start, end))
        ref = _series_values(before, "ensemble_score")
        new = _series_values(recent.sort_values("ts"), "ensemble_score")
        for name in sorted(set(ref) & set(new)):
            figures = score_drift(ref[name], new[name], config)
            if figures is not None:
                report.series[name] = figures
    return report


def _window_text(reference: tuple, recent: tuple) -> dict[str, str]:
    return {
        "reference": f"{reference[0].isoformat()} to {reference[1].isoformat()}",
        "recent": f"{recent[0].isoformat()} to {recent[1].isoformat()}",
    }
