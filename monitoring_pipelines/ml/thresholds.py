"""From calibrated scores to alerts: the alert policy and per-series thresholds.

Scores are never decisions (they come from :meth:`Detector.score` in [0, 1]); this module decides.

**Policy** (:func:`flags`). A point is *anomalous* when its score reaches the series' threshold. An
*alert* is raised at the first anomalous point while the series is *armed*; raising it disarms the
series, and only a quiet stretch re-arms it: ``cooldown_steps`` consecutive points below the re-arm
level (``rearm_ratio`` x threshold). Operators value the first alert of an incident and punish
repeats: a score that wobbles around the threshold inside one incident gives one
alert, not ten. Gaps (NaN) are neither anomalous nor quiet.

**Thresholds** (:func:`fit_thresholds`). Per series, the lowest level, never below the default
level, whose alert rate on calibration scores *outside* label windows stays at or below
``target_false_alarms_per_week``: a margin above the calibration week's largest normal excursion
where that excursion reaches the default level, the default level elsewhere, and never above
``max_series_threshold`` (every threshold is on the calibrated scale, and one above what a real
fault reaches would silence the series).

Why a floor and not a level fitted from data alone: calibrated scores mean the same on every series
(0.5 is a one-in-10^4 event, see :mod:`~monitoring_pipelines.ml.calibration`), while one calibration
week of one tenant's couple of dozen series cannot tell a lower level is safe. Pooling that week
over the tenant's series (shrinking each series' rate towards the pooled rate, ``prior_weeks``)
set levels from 0.43 to 0.73 on the demo, so week 5 got both the false alarms of the low ones and
the misses of the high ones: event F1 0.844 over six seeds' 30 tenant-weeks, against 0.936 with
the floor and each series' own week (figures in :mod:`~monitoring_pipelines.ml.ensemble`). With
``floor_at_default=False`` and ``prior_weeks > 0`` the pooled behaviour is still available.
"""

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from monitoring_pipelines.ml.frames import DEFAULT_STEP, grid_step

# The level every threshold starts from, for series without calibration data too (and the
# backtest's "global" level): a one-in-10^4 event on the soft calibrated scale. Measured with
# evaluate_on_demo: the pooled validation level of the default ensemble at the default target
# ranged 0.46-0.54 over six demo seeds (median 0.495).
DEFAULT_THRESHOLD = 0.5
# A member judged alone whose score sits elsewhere: the z-score member calibrates its own parts
# (method "identity"), so its ordinary weekly peaks run higher. Measured like DEFAULT_THRESHOLD,
# the pooled calibration-week level of the member alone over six design seeds: z-score 0.52-0.61
# (median 0.575); Isolation Forest 0.49-0.52 and Prophet 0.38-0.61 are at the default.
MEMBER_LEVELS: dict[str, float] = {"zscore": 0.575}
# An ensemble whose rule lets any one member raise it sits higher than its members: a noisy-OR of
# two members at 0.5 each is 0.75. Measured on the demo's held-out week (evaluate_on_demo, acme
# and globex, noisy-OR of z-score 1 and PCA 0.5): event F1 0.774 at 0.6, 0.828 at 0.65, 0.889 at
# 0.7 (0.042 false alarms per series-week), 0.870 at 0.8; on SKAB (every experiment one service)
# 0.7 gives point F1 0.58 at a false-alarm rate of 15%.
RULE_LEVELS: dict[str, float] = {"noisy_or": 0.7}
# The backtest's one level for all single series (its default, ``thresholds="global"``), on the
# ensemble score after :func:`~monitoring_pipelines.ml.ensemble.refractory`: a user's history
# judged like a benchmark of single metrics (early detection paid, every flagged point outside an
# incident charged). Measured on SKAB's 272 sensors one by one (NAB-style, 150 refractory steps):
# 0.35 71.8, 0.4 68.5, 0.45 58.9, 0.5 45.5, 0.6 25.6, 0.7 14.6; with NAB's window layout (10% of
# each series around the onsets) 0.35 31.5, 0.4 33.1, 0.45 28.6, 0.5 21.6, 0.7 4.9. The demo's
# pipeline level (RULE_LEVELS) stays 0.7: its tenants want about one false alarm a year per series.
# Records (a tenant's services) keep the pipeline's level in the backtest too: on SKAB's machines
# the ensemble's event F1 was 0.557 at 0.7 and 0.273 at 0.4.
BACKTEST_RULE_LEVELS: dict[str, float] = {"noisy_or": 0.4}
# No per-series threshold goes above this: labelled faults must still reach it. On SKAB's sensors
# one by one, 90% of labelled windows peak below 0.80 on the ensemble (median 0.52); a threshold
# fitted above that region (0.94 against a member whose outages top out near 0.96) never flags.
MAX_SERIES_THRESHOLD = 0.85


@dataclass(frozen=True)
class AlertPolicy:
    # Re-arm only after the score has been below rearm_ratio x threshold for cooldown_steps points.
    rearm_ratio: float = 0.5
    cooldown_steps: int = 12
    # Consecutive anomalous points before an alert: 1 alerts on the first.
    min_duration: int = 1


@dataclass(frozen=True)
class ThresholdConfig:
    # Per series: 0.02 a week is one a year per series, ~2 a week over the demo's 120 series. With
    # ~0.2 incidents per series-week, event precision needs false alarms this rare; 0.5 a week
    # per series would mean five false alarms for every incident.
    target_false_alarms_per_week: float = 0.02
    # Pseudo-weeks of the pooled rate (all series fitted together) added to each series' own.
    prior_weeks: float = 0.0
    # No series goes below default_threshold; series without calibration data get it. Off: the
    # default is the pooled level, and series may go below it.
    floor_at_default: bool = True
    policy: AlertPolicy = AlertPolicy()
    # Candidate levels; a series that alerts too often even at the top one gets the top one.
    min_threshold: float = 0.05
    max_threshold: float = 1.0
    grid_points: int = 96
    # Points after the end of a label window still excluded from the false-alarm count: the
    # calibrated score decays over a few steps after an incident ends.
    window_margin_steps: int = 12
    default_threshold: float = DEFAULT_THRESHOLD
    # The highest per-series threshold (never below default_threshold).
    max_series_threshold: float = MAX_SERIES_THRESHOLD

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ThresholdConfig":
        values = dict(data)
        if isinstance(values.get("policy"), Mapping):
            values["policy"] = AlertPolicy(**values["policy"])
        return cls(**values)


@dataclass
class Thresholds:
    default: float
    per_series: dict[str, float] = field(default_factory=dict)
    policy: AlertPolicy = AlertPolicy()

    def for_series(self, name: str) -> float:
        return self.per_series.get(name, self.default)

    def to_dict(self) -> dict[str, Any]:
        return {
            "default": self.default,
            "per_series": dict(self.per_series),
            "policy": asdict(self.policy),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Thresholds":
        return cls(
            default=float(data["default"]),
            per_series={k: float(v) for k, v in data.get("per_series", {}).items()},
            policy=AlertPolicy(**data.get("policy", {})),
        )


def default_level(kinds: Iterable[str], combiner=None, backtest: bool = False) -> float:
    """The default level of one member's score judged alone, or of an ensemble of several; an
    ensemble whose ``combiner`` weighs only one of its members is that member's score.
    ``backtest``: the backtest's level of an ensemble (:data:`BACKTEST_RULE_LEVELS`)."""
    kinds = list(kinds)
    if combiner is not None and len(kinds) > 1:
        kinds = [k for k in kinds if combiner.weight(k) > 0] or kinds
    if len(kinds) == 1:
        return MEMBER_LEVELS.get(kinds[0], DEFAULT_THRESHOLD)
    if combiner is not None:
        levels = BACKTEST_RULE_LEVELS if backtest else RULE_LEVELS
        return levels.get(combiner.rule, DEFAULT_THRESHOLD)
    return DEFAULT_THRESHOLD


def config_for(
    kinds: Iterable[str], config: ThresholdConfig | None = None, combiner=None, backtest=False
) -> ThresholdConfig:
    """``config`` as given, or the default configuration at the default level of ``kinds``
    (combined by ``combiner``; ``backtest``: the backtest's level)."""
    if config is not None:
        return config
    level = default_level(kinds, combiner, backtest)
    return replace(ThresholdConfig(), default_threshold=level)


def flags(
    scores: pd.Series | np.ndarray,
    threshold: float,
    policy: AlertPolicy | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(anomalous, alert)`` boolean arrays: points at or above ``threshold``, and alert starts.

    Vectorised: the re-arm moments depend only on the scores, so each alert is the first anomalous
    point after a re-arm moment (or after the start).
    """
    policy = policy or AlertPolicy()
    s = np.asarray(scores, dtype="float64")
    with np.errstate(invalid="ignore"):
        anomalous = s >= threshold
        quiet = s < policy.rearm_ratio * threshold
    alert = np.zeros(s.size, dtype=bool)
    hits = np.flatnonzero(_run_reaches(anomalous, max(1, policy.min_duration)))
    if hits.size == 0:
        return anomalous, alert
    rearm = _run_reaches(quiet, max(1, policy.cooldown_steps))
    segment = np.cumsum(rearm)
    first = np.unique(segment[hits], return_index=True)[1]
    alert[hits[first]] = True
    return anomalous, alert


def _run_reaches(mask: np.ndarray, length: int) -> np.ndarray:
    """True where a run of consecutive True in ``mask`` is at least ``length`` points long."""
    count = np.cumsum(mask)
    # Length of the current run of True: count minus its value at the last False.
    last_false = np.maximum.accumulate(np.where(~mask, count, 0))
    run = count - last_false
    return run >= length


def alert_count(scores: np.ndarray, threshold: float, policy: AlertPolicy) -> int:
    return int(flags(scores, threshold, policy)[1].sum())


def outside_windows(
    index: pd.DatetimeIndex,
    scores: np.ndarray,
    windows: list[tuple[pd.Timestamp, pd.Timestamp]],
    margin: pd.Timedelta,
) -> np.ndarray:
    """``scores`` with every point inside a label window (plus ``margin`` after it) set to NaN."""
    out = np.array(scores, dtype="float64", copy=True)
    for start, end in windows:
        out[(index >= start) & (index <= end + margin)] = np.nan
    return out


def fit_thresholds(
    scores: Mapping[str, pd.Series],
    windows: Mapping[str, list[tuple[pd.Timestamp, pd.Timestamp]]] | None = None,
    config: ThresholdConfig | None = None,
) -> Thresholds:
    """Per-series thresholds from calibration ``scores`` (a Series with a UTC index per series).

    Label windows (parsed, see :func:`monitoring_pipelines.ml.evaluation.parse_windows`) only
    *remove* points from the count: labels never raise or lower a score.
    """
    cfg = config or ThresholdConfig()
    windows = windows or {}
    grid = np.linspace(cfg.min_threshold, cfg.max_threshold, cfg.grid_points)
    counts: dict[str, np.ndarray] = {}
    weeks: dict[str, float] = {}
    for name, series in scores.items():
        index = pd.DatetimeIndex(series.index)
        step = grid_step(index, DEFAULT_STEP)
        values = outside_windows(
            index,
            series.to_numpy(dtype="float64"),
            windows.get(name, []),
            step * cfg.window_margin_steps,
        )
        observed = int(np.isfinite(values).sum())
        if observed == 0:
            continue
        weeks[name] = observed * step / pd.Timedelta(days=7)
        counts[name] = np.array([alert_count(values, t, cfg.policy) for t in grid])
    if not counts:
        return Thresholds(default=cfg.default_threshold, policy=cfg.policy)
    total_weeks = sum(weeks.values())
    pooled_rate = np.sum(list(counts.values()), axis=0) / total_weeks
    if cfg.floor_at_default:
        floor = default = cfg.default_threshold
    else:
        floor, default = -np.inf, _lowest_level(grid, pooled_rate, cfg.target_false_alarms_per_week)
    per_series = {}
    for name, count in counts.items():
        rate = (count + cfg.prior_weeks * pooled_rate) / (weeks[name] + cfg.prior_weeks)
        level = _lowest_level(grid, rate, cfg.target_false_alarms_per_week)
        ceiling = max(cfg.max_series_threshold, cfg.default_threshold)
        per_series[name] = float(min(max(floor, level), ceiling))
    return Thresholds(default=default, per_series=per_series, policy=cfg.policy)


def _lowest_level(grid: np.ndarray, rate: np.ndarray, target: float) -> float:
    """The lowest level from which every higher level also keeps ``rate`` <= ``target``."""
    too_many = np.flatnonzero(rate > target)
    if too_many.size == 0:
        return float(grid[0])
    last = too_many[-1]
    return float(grid[min(last + 1, grid.size - 1)])
