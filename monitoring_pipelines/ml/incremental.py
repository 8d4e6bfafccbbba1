"""Score only the new points of a series, exactly as scoring its whole history would.

A detector's calibrated score at ``t`` is causal but has a long memory: features look back up to
~29 days (a seasonal lag of three weeks, then a week of "usual size at this time of day"), and
each calibrator judges a point against two weeks of earlier raw scores. Scoring a day by
re-scoring a fixed stretch of history before it is therefore both slow and *not* the same as
scoring the whole series: the raw scores at the start of that stretch lack their own history.

This module splits the two kinds of history apart:

- **values**: raw scores of the new points are computed from a frame that carries enough past
  *values* for every feature (:func:`raw_context_steps`); their own scores are not needed;
- **scores**: each calibrator's long-run window (the detector's own, and the z-score detector's
  per-part calibrators) is carried forward in a :class:`SeriesState`: exactly the sample the
  calibrator would hold at that point had it scored the whole span (gaps included, unrounded).

So ``score_since(detector, frame, start, state)`` gives, for the points from ``start``, the scores
``detector.score(whole history)`` gives them (to float rounding), and the state to carry into the
next call. The state of a freshly fitted or loaded detector is its calibrators' training seeds:
rolling it forward from a series' first point reproduces scoring from that point.
"""

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from monitoring_pipelines.ml.base import Detector
from monitoring_pipelines.ml.calibration import LikelihoodCalibrator, _anchor_mask, to_score
from monitoring_pipelines.ml.frames import grid_step

OUTER = "score"
_DAY_SECONDS = 86400


@dataclass
class SeriesState:
    """What one detector's calibrators have seen before ``as_of`` (UTC ns), per column.

    ``samples[calibrator][column]`` is that calibrator's long-run sample (raw values for the
    Gaussian method, sampled short means for the tail method), oldest first, gaps as NaN.
    """

    as_of: int | None
    samples: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of,
            "samples": {
                name: {col: values.tolist() for col, values in by_col.items()}
                for name, by_col in self.samples.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SeriesState":
        return cls(
            as_of=data["as_of"],
            samples={
                name: {col: np.asarray(v, dtype="float64") for col, v in by_col.items()}
                for name, by_col in data["samples"].items()
            },
        )


def _calibrators(detector: Detector) -> dict[str, LikelihoodCalibrator]:
    found = {OUTER: detector.calibrator}
    # The z-score detector calibrates each of its parts before taking their maximum.
    for part, calibrator in getattr(detector, "part_calibrators", {}).items():
        found[f"part:{part}"] = calibrator
    return found


def initial_state(detector: Detector) -> SeriesState:
    """The state right after ``fit`` (or ``load``): each calibrator's training seed."""
    samples = {}
    for name, calibrator in _calibrators(detector).items():
        samples[name] = {
            col: np.asarray(values, dtype="float64") for col, values in calibrator.history.items()
        }
    return SeriesState(as_of=None, samples=samples)


def raw_context_steps(detector: Detector, step: pd.Timedelta) -> int:
    """Rows of past *values* a frame needs so the raw scores of its later rows are exact.

    Features: the longest seasonal lag, then a week of "usual size at this time of day" of a
    residual that is itself centred on its trailing day; the LSTM: its block-aligned sequence.
    """
    config = detector.config
    features = getattr(config, "features", None)
    steps = 0
    if features is not None:
        per_day = _DAY_SECONDS / step.total_seconds()
        lag_days = max((*features.seasonal_lags_days, *features.fallback_lags_days))
        # The seasonal residual may be taken net of the service's load, regressed over a
        # trailing window of residuals (each needing its own lags and trailing-day scales).
        load_days = getattr(features, "load_window_days", 0)
        if not getattr(features, "load_metrics", ()):
            load_days = 0
        days = lag_days + load_days + features.time_of_day_days + (2 if load_days else 1)
        steps = math.ceil(days * per_day)
        steps += 3 * features.window + 4 * features.time_of_day_halfwidth + 64
    lookback, block = getattr(config, "lookback", 0), getattr(config, "block", 0)
    # history_steps: Prophet's trailing window of residuals (shifted one row), PCA's lags; a
    # day at least, so a value carried forward over a short gap (PCA) is found.
    steps = max(steps, lookback + 2 * block, detector.history_steps() + 1)
    return max(steps, math.ceil(_DAY_SECONDS / step.total_seconds()))


def _prefix_start(step: pd.Timedelta, start: pd.Timestamp, calibrators) -> pd.Timestamp:
    """Where calibration input must begin so every short mean from ``start`` is complete.

    Tail calibrators sample the short mean at anchor rows; the input begins right after the last
    anchor before ``start``, so the first anchor it holds has its full short window inside it.
    """
    back = 0
    for calibrator in calibrators:
        cfg = calibrator.config
        if cfg.method == "tail" and cfg.short_window > max(1, cfg.stride):
            raise ValueError("incremental scoring needs short_window <= stride")
        back = max(back, max(1, cfg.stride) - 1, cfg.short_window - 1)
    return start - back * step


def _with_seed(calibrator: LikelihoodCalibrator, seed: dict[str, np.ndarray]):
    copy = LikelihoodCalibrator(calibrator.config)
    copy.history = {col: np.asarray(values, dtype="float64") for col, values in seed.items()}
    return copy


def _seed_before(
    calibrator: LikelihoodCalibrator,
    seed: dict[str, np.ndarray],
    raw: pd.DataFrame,
    begin: pd.Timestamp,
) -> dict[str, np.ndarray]:
    """Extend ``seed`` (the sample before ``raw``'s first row) with ``raw``'s rows before
    ``begin``: the sample as it stands just before ``begin``."""
    cfg = calibrator.config
    if cfg.method == "identity":
        return {}
    if cfg.method == "tail" and not cfg.follow:
        # Fixed control limits (PCA of a service): the sample stays the training seed.
        return {str(col): np.asarray(seed.get(str(col), []), dtype="float64") for col in raw}
    part = raw[raw.index < begin]
    if cfg.method == "gaussian":
        keep = cfg.long_window + cfg.short_window
        added = {str(c): part[c].to_numpy(dtype="float64") for c in part.columns}
    else:
        keep = max(1, cfg.long_window // max(1, cfg.stride))
        # Short means need the rows before them: take them from the whole of ``raw``.
        short = calibrator._short(raw.astype("float64"))
        mask = _anchor_mask(pd.DatetimeIndex(raw.index), cfg.stride) & (raw.index < begin)
        added = {str(c): short[c].to_numpy()[mask] for c in raw.columns}
    out = {}
    for col in raw.columns:
        old = np.asarray(seed.get(str(col), []), dtype="float64")
        out[str(col)] = np.concatenate([old, added[str(col)]])[-keep:]
    return out


def _calibrate(
    calibrator: LikelihoodCalibrator,
    seed: dict[str, np.ndarray],
    raw: pd.DataFrame,
    start: pd.Timestamp,
    end_seed_at: pd.Timestamp,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Decades for ``raw``'s rows (``seed`` = the sample before its first row), and the sample
    just before ``end_seed_at``."""
    decades = _with_seed(calibrator, seed).decades(raw)
    return decades[decades.index >= start], _seed_before(calibrator, seed, raw, end_seed_at)


def score_since(
    detector: Detector,
    frame: pd.DataFrame,
    state: SeriesState,
    start: pd.Timestamp,
    *,
    carry_to: pd.Timestamp | None = None,
) -> tuple[pd.DataFrame, SeriesState]:
    """Calibrated scores of ``frame``'s rows from ``start``, and the state to carry on.

    ``state`` describes everything before ``state.as_of`` (None: a fresh detector, ``frame``
    starting at the series' first point). ``frame`` must hold :func:`raw_context_steps` rows of
    values before ``state.as_of`` (or every row there is) and run to where scores are wanted;
    ``start`` >= ``state.as_of``. The returned state stands just before ``carry_to`` (default:
    one step after ``frame``'s last row): pass the next call's ``start`` there.
    """
    frame = frame.reindex(columns=detector.columns)
    index = pd.DatetimeIndex(frame.index)
    step = grid_step(index)
    if carry_to is None:
        carry_to = index[-1] + step
    calibrators = _calibrators(detector)
    begin = index[0] if state.as_of is None else pd.Timestamp(state.as_of, tz="UTC")
    if start < begin or carry_to < begin:
        raise ValueError(f"state stands at {begin}, after {min(start, carry_to)}")
    next_begin = max(_prefix_start(step, carry_to, calibrators.values()), begin)
    new_samples: dict[str, dict[str, np.ndarray]] = {}
    if getattr(detector, "part_calibrators", None):
        raw = _zscore_raw(detector, frame, begin, next_begin, state, new_samples)
    else:
        raw = _raw_from(detector, frame, begin)
    decades, new_samples[OUTER] = _calibrate(
        calibrators[OUTER], state.samples.get(OUTER, {}), raw, start, next_begin
    )
    cfg = calibrators[OUTER].config
    scores = pd.DataFrame(
        to_score(decades.to_numpy(), cfg.decades, cfg.mapping),
        index=decades.index,
        columns=decades.columns,
    )
    scores = scores.where(frame.loc[scores.index].notna())
    return scores, SeriesState(as_of=int(next_begin.value), samples=new_samples)


def state_start(detector: Detector, step: pd.Timedelta, start: pd.Timestamp) -> pd.Timestamp:
    """Where a state carried to ``start`` stands (a few rows before it, see score_since)."""
    return _prefix_start(step, start, _calibrators(detector).values())


def _raw_from(detector: Detector, frame: pd.DataFrame, begin: pd.Timestamp) -> pd.DataFrame:
    """Raw scores of ``frame``'s rows from ``begin``; earlier rows only lend their values."""
    forest = getattr(detector, "forest", None)
    if forest is None or not hasattr(detector, "_features"):
        raw = detector.raw_scores(frame)
        return raw[raw.index >= begin]
    # Isolation Forest: features need the whole frame, the trees only the new rows (most of the
    # cost of scoring a day with a month of context was walking trees over the context).
    from monitoring_pipelines.ml.isolation_forest import _compress

    keep = frame.index >= begin
    feats = detector._features(frame, start=int(frame.index.searchsorted(begin)))[keep]
    present = frame[keep].notna().to_numpy()
    raw = np.full(present.shape, np.nan)
    rows = _compress(np.nan_to_num(feats[present], nan=0.0)).astype(np.float32)
    if rows.shape[0]:
        raw[present] = -forest.score_samples(rows)
    return pd.DataFrame(raw, index=frame.index[keep], columns=frame.columns)


def _zscore_raw(detector, frame, begin, next_begin, state, new_samples) -> pd.DataFrame:
    """The z-score detector's raw score (the largest part surprise) from ``begin``, with each
    part calibrated from its carried sample rather than from the frame's own past."""
    surprise = []
    kept = frame[frame.index >= begin]
    start = int(frame.index.searchsorted(begin))
    for part, values in detector._parts(frame, start=start).items():
        name = f"part:{part}"
        values = values[values.index >= begin]
        decades, new_samples[name] = _calibrate(
            detector.part_calibrators[part],
            state.samples.get(name, {}),
            values,
            begin,
            next_begin,
        )
        surprise.append(decades.to_numpy())
    raw = detector.combine_parts(surprise, frame, start)
    return pd.DataFrame(raw, index=kept.index, columns=kept.columns)


# -- a tenant's detector sets, and where their states are kept ----------------------------------

SetStates = dict[tuple, SeriesState]


def score_sets_since(
    model_sets: dict[str, Any],
    frames: dict[tuple, pd.DataFrame],
    states: dict[str, SetStates],
    start: pd.Timestamp,
    end: pd.Timestamp,
    *,
    n_jobs: int | None = None,
) -> tuple[dict[str, dict[tuple, pd.DataFrame]], dict[str, SetStates]]:
    """Each member's calibrated scores on ``[start, end)`` and every group's state at ``end``.

    ``states[kind][group]`` is where that detector stands (missing: a fresh detector, scored
    from the first row of its frame). Groups are scored on ``n_jobs`` threads (default: up to
    two).
    """
    from monitoring_pipelines.ml.model_set import map_threads

    jobs = []
    for kind, model_set in model_sets.items():
        for group, detector in model_set.detectors.items():
            frame = frames.get(group)
            if frame is None or frame.empty or frame.index[0] >= end:
                continue
            state = states.get(kind, {}).get(group) or initial_state(detector)
            jobs.append((kind, group, detector, frame, state))
    # Group by group: the members of a group share one computation of its features (see the
    # small cache in features.py), which they only find while it is recent.
    jobs.sort(key=lambda job: job[1])

    def run(job):
        _, _, detector, frame, state = job
        frame = frame[frame.index < end]
        if state.as_of is not None:
            step = grid_step(pd.DatetimeIndex(frame.index))
            context = raw_context_steps(detector, step) * step
            frame = frame[frame.index >= pd.Timestamp(state.as_of, tz="UTC") - context]
        scores, new = score_since(detector, frame, state, start, carry_to=end)
        return scores[scores.index < end], new

    results = map_threads(run, jobs, n_jobs)
    members: dict[str, dict[tuple, pd.DataFrame]] = {kind: {} for kind in model_sets}
    carried: dict[str, SetStates] = {kind: {} for kind in model_sets}
    for (kind, group, *_), (scores, new) in zip(jobs, results, strict=True):
        members[kind][group] = scores
        carried[kind][group] = new
    return members, carried


def pack(header: Any, arrays: list[np.ndarray]) -> bytes:
    """The stored-state byte format: the JSON header's length (8 bytes, little-endian), the
    header, then every array's values as little-endian float64, back to back."""
    import json

    text = json.dumps(header).encode()
    body = np.concatenate(arrays).astype("<f8").tobytes() if arrays else b""
    return len(text).to_bytes(8, "little") + text + body


def unpack(payload: bytes) -> tuple[Any, np.ndarray]:
    """:func:`pack`'s header and the float64 values after it, as one flat array."""
    import json

    size = int.from_bytes(payload[:8], "little")
    return json.loads(payload[8 : 8 + size]), np.frombuffer(payload[8 + size :], dtype="<f8")


def encode_states(states: SetStates) -> bytes:
    """A set's states as bytes: a JSON header naming each sample, then the samples as float64.

    Exact (no rounding) and safe to load from a shared database (no pickle).
    """
    entries, arrays = [], []
    for group, state in sorted(states.items()):
        for name, by_col in sorted(state.samples.items()):
            for col, values in sorted(by_col.items()):
                values = np.ascontiguousarray(values, dtype="<f8")
                entries.append([list(group), name, col, int(state.as_of), values.size])
                arrays.append(values)
        if not state.samples:
            entries.append([list(group), None, None, int(state.as_of), 0])
    return pack(entries, arrays)


def decode_states(payload: bytes) -> SetStates:
    entries, values = unpack(payload)
    states: SetStates = {}
    offset = 0
    for group, name, col, as_of, length in entries:
        state = states.setdefault(tuple(group), SeriesState(as_of=as_of))
        if name is not None:
            state.samples.setdefault(name, {})[col] = values[offset : offset + length].copy()
        offset += length
    return states


class WarehouseStateStore:
    """Carried states in the warehouse's ``score_states`` table, the newest few positions per
    tenant and detector version: every machine scoring a tenant sees the same states, re-scoring
    an older day stores an older position without touching newer ones, and losing them costs one
    catch-up scoring from the start of the data, nothing else."""

    def __init__(self, warehouse, keep: int = 3):
        self.warehouse = warehouse
        self.keep = keep

    def latest(
        self, tenant: str, kind: str, version: int, not_after: pd.Timestamp
    ) -> SetStates | None:
        """The newest stored states standing at or before ``not_after``, or None."""
        found = self.warehouse.read_score_state(tenant, kind, version, int(not_after.value))
        return None if found is None else decode_states(found[1])

    def save(self, tenant: str, kind: str, version: int, states: SetStates) -> None:
        positions = {s.as_of for s in states.values()}
        if len(positions) != 1 or None in positions:
            return
        self.warehouse.write_score_state(
            tenant, kind, version, positions.pop(), encode_states(states), keep=self.keep
        )
