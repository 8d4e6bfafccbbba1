"""Combine the calibrated scores of several detectors into one ensemble score in [0, 1].

A mean of raw or badly calibrated scores is dominated by the worst-calibrated member, so members are
combined only *after* each is calibrated per series by
:class:`~monitoring_pipelines.ml.base.Detector` (every member score is already in [0, 1], on the
same "how many decades of surprise" scale). The combination is pointwise, so the ensemble is causal
whenever its members are.

Rules (:class:`CombinerConfig`): ``mean``, ``max``, ``top_k_mean`` (mean of the ``top_k`` highest
member scores at each point), ``noisy_or`` (``1 - prod(1 - s)``) and ``weighted_mean`` (weights per
member kind, e.g. from validation, see :func:`weights_from_validation`). Members missing at a point
(NaN: a gap, a member that is not fitted for that series) are left out of that point's combination.

:data:`DEFAULT_COMBINER` was chosen by measurement
(:func:`monitoring_pipelines.ml.backtest.evaluate_on_demo`: train weeks 1-3, thresholds and rule on
week 4, report on week 5) over six demo seeds, Isolation Forest + z-score members. Pooled over the
six validation weeks (131 incident windows, thresholds fitted there, no false alarms for any rule):

    rule            detected   F1      event AUC
    noisy_or        125        0.977   0.9935
    weighted_mean   124        0.973   0.9939
    mean            121        0.960   0.9942
    max             114        0.931   0.9914    (= the z-score member alone: 0.931)

Noisy-OR and the weighted mean are one window apart. The weighted mean was kept: it needs the
members to agree in proportion to how good each is, where noisy-OR treats calibrated scores as
independent probabilities (which they are not) and lets either member alone raise an alert. The
pooled *test* weeks (161 windows), which were also looked at, agree: weighted mean F1 0.924 with
0.021 false alarms per series-week, noisy-OR 0.896, mean 0.892, z-score alone 0.904, Isolation
Forest alone 0.484. The weights (0.69, 1.31) are :func:`weights_from_validation` of the members'
pooled validation F1 (0.486, 0.931); kinds without a weight (LSTM, Prophet) weigh 1.

Measured afterwards on three seeds never looked at before (101-103, 77 windows), this rule gave
F1 0.864 (precision 0.78, recall 0.97, 0.061 false alarms per series-week) against 0.859 for
the z-score member alone: it only just beats its best member, and the false alarms of a week
after the validation week are about three times what the validation week allowed.

All four members (the pipeline trains Isolation Forest, LSTM, Prophet and z-score). Measured on the
pipeline's own split (:class:`~monitoring_pipelines.ml.training.TrainingPlan`: fit weeks 1-3,
thresholds on week 4 per tenant, judged on week 5), each mix at its own measured default level
(:mod:`~monitoring_pipelines.ml.thresholds`), IF 0.69 + z-score 1.31 plus:

    added (6 design seeds, 160 windows)   F1      FA / series-week
    nothing                               0.928   0.025
    Prophet 0.25                          0.926   0.031
    Prophet 0.5                           0.902   0.042
    Prophet 1                             0.877   0.037
    (3 design seeds with LSTM scores, 87 windows)
    nothing                               0.917   0.031
    LSTM 0.25                             0.929   0.031
    LSTM 0.5                              0.912   0.033
    LSTM 0.25 + Prophet 0.25              0.939   0.022
    all four at weight 1                  0.859   0.017

Prophet alone reaches F1 0.81, LSTM alone 0.30-0.44, and adding either moves the ensemble by one
or two windows either way, inside the noise of a few seeds, while moving the level the ensemble
should be cut at (0.45 instead of 0.5). So both weigh 0 in :data:`DEFAULT_COMBINER`: the ensemble
is Isolation Forest + z-score, and the pipeline's LSTM and Prophet are judged beside it.

Real data since (the figures above are the demo's, which this project generated). On SKAB's
sensors one by one (272 real single series, NAB-style score at the best single level, random
about 17, the reference baseline 21.5) and on SKAB's machines (34 experiments of 8 sensors, point
F1 at a false-alarm rate of at most 15%, baseline 0.29), z-score + PCA:

    rule                            single series   machines (F1 @ FAR <= 15%)
    z-score alone                   54.5            0.22
    weighted mean, PCA 0.25         13.4 (*)        -
    max                             38.5 (*)        0.57
    noisy-OR, PCA 1                 57.0            0.57
    noisy-OR, PCA 0.5               59.1            0.57
    (*) every 4th experiment, where z-score alone is 50.5

A weighted mean dilutes the member that fires (where PCA is quiet, the z-score's alarm is halved);
a noisy-OR lets either member raise the ensemble, each to the extent of its weight (an exponent:
``1 - prod((1 - s_k) ** w_k)``), which is what one level for all series rewards on real data. On
the demo's held-out week it gives event F1 0.889 at its level 0.7 (z-score alone at its 0.575:
0.857). Isolation Forest, LSTM and Prophet stay at weight 0 in the data-free default: each alone
scores below the z-score on both real sets, and a noisy-OR adds every member's false alarms.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from monitoring_pipelines.ml.catalogue import CATALOGUE

Rule = Literal["mean", "max", "top_k_mean", "noisy_or", "weighted_mean"]
RULES: tuple[str, ...] = ("mean", "max", "top_k_mean", "noisy_or", "weighted_mean")


@dataclass(frozen=True)
class CombinerConfig:
    rule: Rule = "mean"
    top_k: int = 2
    # (kind, weight) pairs for weighted_mean and noisy_or; kinds not listed weigh 1.
    weights: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown combiner rule {self.rule!r}; choose from {RULES}")
        if self.top_k < 1:
            raise ValueError("top_k must be at least 1")
        object.__setattr__(self, "weights", tuple((str(k), float(w)) for k, w in self.weights))

    def weight(self, kind: str) -> float:
        return dict(self.weights).get(kind, 1.0)

    def for_members(self, kinds) -> "CombinerConfig":
        """This rule for an ensemble of ``kinds``; when a weighted rule gives none of them weight
        (only members that weigh 0 by default qualified), they count equally instead of the
        ensemble having no score."""
        kinds = list(kinds)
        weighted = self.rule in ("weighted_mean", "noisy_or")
        if not weighted or any(self.weight(k) > 0 for k in kinds):
            return self
        return CombinerConfig(self.rule, weights=tuple((k, 1.0) for k in kinds))

    def to_dict(self) -> dict:
        return {"rule": self.rule, "top_k": self.top_k, "weights": [list(w) for w in self.weights]}

    @classmethod
    def from_dict(cls, data: Mapping) -> "CombinerConfig":
        return cls(
            rule=data.get("rule", "mean"),
            top_k=int(data.get("top_k", 2)),
            weights=tuple(tuple(w) for w in data.get("weights", ())),
        )


# The data-free default: a noisy-OR of each catalogued kind at its measured default weight
# (ml/catalogue.py: z-score 1, PCA 0.5, the others 0), cut at its own level
# (thresholds.RULE_LEVELS).
# Where labelled incidents exist, a tenant's weights are learned (ml.training.learn_combiner).
DEFAULT_COMBINER = CombinerConfig(
    rule="noisy_or",
    weights=tuple((kind, row.default_weight) for kind, row in CATALOGUE.items()),
)


def combine_arrays(
    members: Mapping[str, np.ndarray], config: CombinerConfig = DEFAULT_COMBINER
) -> np.ndarray:
    """Combine same-shaped member score arrays (keyed by member kind) point by point."""
    if not members:
        raise ValueError("no member scores to combine")
    kinds = list(members)
    stack = np.stack([np.asarray(members[k], dtype="float64") for k in kinds], axis=0)
    present = ~np.isnan(stack)
    count = present.sum(axis=0)
    filled = np.where(present, stack, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        if config.rule == "mean":
            out = filled.sum(axis=0) / count
        elif config.rule == "max":
            out = np.where(present, stack, -np.inf).max(axis=0)
        elif config.rule == "top_k_mean":
            ordered = np.sort(np.where(present, stack, -np.inf), axis=0)[::-1]
            k = min(config.top_k, len(kinds))
            top = ordered[:k]
            usable = np.isfinite(top)
            out = np.where(usable, top, 0.0).sum(axis=0) / np.minimum(count, k)
        elif config.rule == "noisy_or":
            # Weights are exponents: a member at weight 0 drops out, at 1 counts fully.
            w = np.array([config.weight(k) for k in kinds]).reshape((-1,) + (1,) * (stack.ndim - 1))
            out = 1.0 - np.prod((1.0 - np.clip(filled, 0.0, 1.0)) ** w, axis=0)
            count = (present & (w > 0)).sum(axis=0)
        else:
            w = np.array([config.weight(k) for k in kinds]).reshape((-1,) + (1,) * (stack.ndim - 1))
            out = (filled * w).sum(axis=0) / (present * w).sum(axis=0)
    out = np.where(count > 0, out, np.nan)
    return np.clip(out, 0.0, 1.0)


# Steps after a peak during which the ensemble score is held at 0 unless it rises above that peak
# (:func:`refractory`). Measured on SKAB's 272 sensors one by one (NAB-style, one level for all
# series; the undamped ensemble 59.1 at its best level 0.40): 100 steps 73.3 (at 0.35), 150 71.8,
# 200 68.8, 300 63.0; with label windows cut to NAB's layout (10% of the series around each onset,
# the rest of a lasting fault counted as outside): undamped 16.5, 100 steps 31.4, 150 33.1, 200
# 34.1, 300 36.4. 150 keeps most of both. (Figures from a prototype reading gaps as 0; this
# function gives 72.2 and 32.7 at 150.)
REFRACTORY_STEPS = 150


def refractory(scores: np.ndarray, steps: int = REFRACTORY_STEPS) -> np.ndarray:
    """Early and once: each point keeps its score only if it is higher than every score of the
    ``steps`` steps before it, else 0 (gaps stay NaN). Along axis 0, causal.

    One incident then gives one early peak instead of a plateau: a level that flags the onset of
    a fault flags nothing more while it lasts (or while a level shift becomes the new normal),
    unless the fault grows beyond its first peak. A benchmark or operator that pays for the first
    detection and charges for every flagged point outside an incident's window rewards exactly
    that. ``steps <= 0`` returns the scores unchanged.
    """
    values = np.asarray(scores, dtype="float64")
    if steps <= 0 or values.shape[0] == 0:
        return values.copy()
    filled = pd.DataFrame(np.where(np.isnan(values), -np.inf, values).reshape(len(values), -1))
    before = filled.shift(1).rolling(steps, min_periods=1).max().to_numpy().reshape(values.shape)
    before = np.where(np.isnan(before), -np.inf, before)
    out = np.where(values > before, values, 0.0)
    return np.where(np.isnan(values), np.nan, out)


def combine(
    members: Mapping[str, pd.DataFrame], config: CombinerConfig = DEFAULT_COMBINER
) -> pd.DataFrame:
    """Combine member score frames of one group (same index; columns are aligned by name)."""
    if not members:
        raise ValueError("no member scores to combine")
    first = next(iter(members.values()))
    columns = list(dict.fromkeys(c for frame in members.values() for c in frame.columns))
    index = first.index
    arrays = {
        kind: frame.reindex(index=index, columns=columns).to_numpy(dtype="float64")
        for kind, frame in members.items()
    }
    return pd.DataFrame(combine_arrays(arrays, config), index=index, columns=columns)


def combine_groups(
    members: Mapping[str, Mapping[tuple, pd.DataFrame]],
    config: CombinerConfig = DEFAULT_COMBINER,
) -> dict[tuple, pd.DataFrame]:
    """:func:`combine` for every group any member scored: ``{kind: {group: frame}}`` in."""
    groups = list(dict.fromkeys(g for frames in members.values() for g in frames))
    return {
        group: combine(
            {kind: frames[group] for kind, frames in members.items() if group in frames}, config
        )
        for group in groups
    }


def weights_from_validation(quality: Mapping[str, float], floor: float = 0.05) -> tuple:
    """Weights proportional to each member's validation quality (e.g. event F1 or PR-AUC).

    ``floor`` keeps a weak member from vanishing entirely, so the ensemble still sees it where
    the others are missing.
    """
    values = {k: max(float(v), floor) if np.isfinite(v) else floor for k, v in quality.items()}
    total = sum(values.values())
    return tuple((k, v * len(values) / total) for k, v in values.items())


# -- weights learned from labelled validation data -------------------------------------------------

# Without labels (the backtest's training prefix, a new tenant) the ensemble uses these weights:
# the measured DEFAULT_COMBINER's. With labels, :func:`learn_weights` replaces them.
DATA_FREE_WEIGHTS: tuple[tuple[str, float], ...] = DEFAULT_COMBINER.weights
WEIGHT_GRID: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0)


def _windows(labels: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of each run of True in a 1-d boolean array."""
    padded = np.concatenate([[False], np.asarray(labels, dtype=bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def early_separation(
    scores: Sequence[np.ndarray], labels: Sequence[np.ndarray], early_fraction: float = 0.5
) -> float:
    """How well ONE level over all series separates each labelled window's early peak from the
    scores outside windows: the mean over windows of the share of outside points (pooled over all
    series) below the highest score in the window's first ``early_fraction``. 1.0 = some level
    catches every window early with no flagged point outside; 0.5 = chance.

    Pooling the outside points of every series is what makes it a cross-series measure: a member
    whose quiet series sit higher than another's incidents loses here, as it does with any
    benchmark or operator that picks one level for all series.
    """
    peaks, negatives = [], []
    for s, lab in zip(scores, labels, strict=True):
        s = np.asarray(s, dtype="float64")
        lab = np.asarray(lab, dtype=bool)
        s = np.where(np.isnan(s), 0.0, s)
        negatives.append(s[~lab])
        for start, stop in _windows(lab):
            early = max(start + 1, start + int(np.ceil(early_fraction * (stop - start))))
            peaks.append(float(s[start:early].max()))
    if not peaks:
        return float("nan")
    pool = np.sort(np.concatenate(negatives)) if negatives else np.zeros(0)
    if not pool.size:
        return 1.0
    below = np.searchsorted(pool, np.asarray(peaks), side="left")
    ties = np.searchsorted(pool, np.asarray(peaks), side="right") - below
    return float(np.mean((below + 0.5 * ties) / pool.size))


def learn_weights(
    member_scores: Mapping[str, Sequence[np.ndarray]],
    labels: Sequence[np.ndarray],
    *,
    grid: Sequence[float] = WEIGHT_GRID,
    rounds: int = 3,
) -> tuple[tuple[tuple[str, float], ...], dict[str, float]]:
    """Weights of a ``weighted_mean`` ensemble learned on labelled validation data.

    ``member_scores[kind]`` holds one calibrated score array per validation series, aligned with
    ``labels`` (one boolean array per series, True inside incident windows). Coordinate ascent
    over ``grid`` per member, from equal weights, maximising :func:`early_separation` of the
    combined score; a member is kept at a weight only if it raises the measure (ties go to the
    smaller weight), so a member that hurts or adds nothing ends at 0 by measurement. Returns
    the weights and the figures behind them (each member
    alone, equal weights, learned), to be written beside the model.
    """
    kinds = list(member_scores)
    if not kinds:
        raise ValueError("no member scores to learn weights from")

    def measure(weights: Mapping[str, float]) -> float:
        if not any(weights[k] > 0 for k in kinds):
            return -1.0
        config = CombinerConfig("weighted_mean", weights=tuple(weights.items()))
        combined = [
            combine_arrays({k: member_scores[k][i] for k in kinds if weights[k] > 0}, config)
            for i in range(len(labels))
        ]
        return early_separation(combined, labels)

    report = {f"{k} alone": early_separation(member_scores[k], labels) for k in kinds}
    weights = dict.fromkeys(kinds, 1.0)
    best = measure(weights)
    report["equal weights"] = best
    for _ in range(rounds):
        moved = False
        for kind in kinds:
            for value in grid:
                trial = {**weights, kind: float(value)}
                got = measure(trial)
                # Ties go to the smaller weight: a member earns weight only by raising the measure.
                tie = got >= best - 1e-9 and value < weights[kind]
                if got > best + 1e-6 or tie:
                    best, weights, moved = got, trial, True
        if not moved:
            break
    report["learned"] = best
    total = sum(weights.values())
    normalised = tuple((k, round(w * len(kinds) / total, 4)) for k, w in weights.items())
    return normalised, report
