"""Member scores on the seeded demo data, the input of the demo's measurement.

:func:`~monitoring_pipelines.ml.demo_evaluation.evaluate_on_demo` judges what this computes:
the demo's records as the quality gate lets them through, each detector kind fitted per (tenant,
service) on the training weeks (and again before the test week), its scores over the whole period,
and the scoring rates of the members and of the chosen ensemble.
"""

import sys
import time
from collections.abc import Mapping

import numpy as np
import pandas as pd

from monitoring_pipelines.ml.ensemble import CombinerConfig, combine_arrays
from monitoring_pipelines.ml.frames import GroupKey
from monitoring_pipelines.ml.model_set import DetectorSet, map_threads


def demo_records(data) -> pd.DataFrame:
    """The demo's records as the quality gate would let them through.

    Non-finite and out-of-range values are dropped, duplicates keep the last row received, and the
    broken tenant-day (blocked by the gate) is dropped whole, so detectors see gaps there.
    """
    from monitoring_pipelines.sources.records import metric_kind

    records = data.records
    values = records["value"].to_numpy(dtype="float64")
    keep = np.isfinite(values)
    for metric in records["metric"].unique():
        kind = metric_kind(metric)
        rows = (records["metric"] == metric).to_numpy()
        if kind.lower is not None:
            keep &= ~rows | (values >= kind.lower)
        if kind.upper is not None:
            keep &= ~rows | (values <= kind.upper)
    if data.broken_partition is not None:
        tenant, day = data.broken_partition
        keep &= ~(
            (records["tenant"] == tenant) & (records["ts"].dt.strftime("%Y-%m-%d") == day)
        ).to_numpy()
    clean = records.loc[keep]
    return clean.drop_duplicates(["tenant", "service", "metric", "ts"], keep="last")


def ensemble_throughput(
    model_sets: Mapping[str, DetectorSet],
    frames: Mapping[GroupKey, pd.DataFrame],
    combiner: CombinerConfig,
) -> float:
    """The chosen ensemble's scoring rate over every group, in points per second."""
    from monitoring_pipelines.ml.features import clear_cache

    points = _points(frames)
    clear_cache()
    began = time.perf_counter()
    _score_ensemble(model_sets, frames, combiner)
    return points / (time.perf_counter() - began)


def _points(frames: Mapping[GroupKey, pd.DataFrame]) -> int:
    """How many values the frames hold (missing ones not counted)."""
    return sum(int(f.notna().to_numpy().sum()) for f in frames.values())


def fit_members(specs, frames, train, before_test, val_end, progress: bool):
    """Each kind's scores over the whole period (refitted before the test week when
    ``before_test`` is given), its fitted set, and its scoring rate in points per second."""
    from tqdm.auto import tqdm

    from monitoring_pipelines.ml.features import clear_cache

    model_sets: dict[str, DetectorSet] = {}
    member_scores: dict[str, dict[GroupKey, pd.DataFrame]] = {}
    throughput: dict[str, float] = {}
    points = _points(frames)
    for spec in tqdm(specs, desc="demo", unit="detector", file=sys.stderr, disable=not progress):
        model_set = DetectorSet.fit_groups(spec, None, train)
        clear_cache()
        began = time.perf_counter()
        scores = model_set.score(frames)
        throughput[model_set.kind] = points / (time.perf_counter() - began)
        if before_test is not None:
            model_set = DetectorSet.fit_groups(spec, None, before_test)
            later = model_set.score(frames)
            scores = {key: _splice(frame, later.get(key), val_end) for key, frame in scores.items()}
        member_scores[model_set.kind] = scores
        model_sets[model_set.kind] = model_set
    return member_scores, model_sets, throughput


def _splice(first: pd.DataFrame, later: pd.DataFrame | None, at: pd.Timestamp) -> pd.DataFrame:
    """``first`` before ``at``, ``later`` from ``at`` on (all NaN there if ``later`` is missing)."""
    later = (later if later is not None else first * np.nan).reindex_like(first)
    before = np.broadcast_to((first.index < at)[:, None], first.shape)
    return first.where(before, later)


def _score_ensemble(
    model_sets: Mapping[str, DetectorSet],
    frames: Mapping[GroupKey, pd.DataFrame],
    combiner: CombinerConfig,
) -> dict[GroupKey, pd.DataFrame]:
    """Ensemble scores group by group, members inside, so members share each group's features;
    groups on up to two threads."""

    def one(item: tuple[GroupKey, pd.DataFrame]) -> pd.DataFrame | None:
        key, frame = item
        members = {
            kind: model_set.detectors[key].score(frame).to_numpy(dtype="float64")
            for kind, model_set in model_sets.items()
            if key in model_set.detectors
        }
        if not members:
            return None
        return pd.DataFrame(
            combine_arrays(members, combiner), index=frame.index, columns=frame.columns
        )

    items = list(frames.items())
    scored = map_threads(one, items)
    return {key: frame for (key, _), frame in zip(items, scored, strict=True) if frame is not None}
