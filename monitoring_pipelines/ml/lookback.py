"""The past values a tenant's next scoring run needs, carried from the run before it.

The detectors' features look back up to ~37 days of values (seasonal lags, then a week of
"usual size at this time of day"), so a daily run used to read 38 days of ``clean_metrics`` to
score one. A run now saves, beside the detectors' states, the tail of each group's frame the next
day's features need (:func:`lookback_start`), stamped with the gridded version of every
tenant-day it holds (``partition_states``). The next run reads only its own days from the
warehouse when those values end exactly where it starts and no day in them was gridded again
since (late data); otherwise (none saved yet, another position, a re-gridded day, a longer
look-back needed after a retrain) it reads the look-back as before, and says why.

Stored in ``score_states`` under the kind ``lookback``, version 0, the newest two positions per
tenant; the payload is a JSON header and the values as float64, exact, no pickle.
:func:`score_carried` is a tenant's scoring run on top of both: the detectors' stored states
(:mod:`monitoring_pipelines.ml.incremental`) and the carried look-back.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from monitoring_pipelines.ml.incremental import (
    SetStates,
    WarehouseStateStore,
    pack,
    raw_context_steps,
    score_sets_since,
    state_start,
    unpack,
)

KIND = "lookback"
_VERSION = 0


@dataclass
class Lookback:
    """Each group's values on ``[first, end)`` and the gridded version of each tenant-day."""

    first: pd.Timestamp
    end: pd.Timestamp
    frames: dict[tuple, pd.DataFrame]
    versions: dict[str, int]


def encode(lookback: Lookback) -> bytes:
    groups, arrays = [], []
    for group, frame in sorted(lookback.frames.items()):
        index = pd.DatetimeIndex(frame.index).as_unit("ns").asi8
        groups.append([list(group), [str(c) for c in frame.columns], index.tolist()])
        arrays.append(np.ascontiguousarray(frame.to_numpy(dtype="float64"), dtype="<f8").ravel())
    header = {
        "first": int(lookback.first.value),
        "end": int(lookback.end.value),
        "versions": lookback.versions,
        "groups": groups,
    }
    return pack(header, arrays)


def decode(payload: bytes) -> Lookback:
    header, values = unpack(payload)
    frames, offset = {}, 0
    for group, columns, index in header["groups"]:
        count = len(index) * len(columns)
        block = values[offset : offset + count].reshape(len(index), len(columns)).copy()
        offset += count
        frames[tuple(group)] = pd.DataFrame(
            block,
            index=pd.DatetimeIndex(np.asarray(index, dtype="int64"), tz="UTC"),
            columns=columns,
        )
    return Lookback(
        first=pd.Timestamp(header["first"], tz="UTC"),
        end=pd.Timestamp(header["end"], tz="UTC"),
        frames=frames,
        versions={str(k): int(v) for k, v in header["versions"].items()},
    )


def joined(
    carried: dict[tuple, pd.DataFrame], new: dict[tuple, pd.DataFrame], step: pd.Timedelta
) -> dict[tuple, pd.DataFrame]:
    """Carried frames followed by the new ones, each on one regular grid from its first to its
    last row (what reading the whole span from the warehouse gives)."""
    out = {}
    for group in sorted(set(carried) | set(new)):
        parts = [f for f in (carried.get(group), new.get(group)) if f is not None and len(f)]
        if not parts:
            continue
        frame = pd.concat(parts) if len(parts) > 1 else parts[0]
        index = pd.DatetimeIndex(frame.index)
        out[group] = frame.reindex(pd.date_range(index[0], index[-1], freq=step))
    return out


class LookbackStore:
    """Carried look-back values in the warehouse's ``score_states`` table."""

    def __init__(self, warehouse, keep: int = 2):
        self.warehouse = warehouse
        self.keep = keep

    def versions(self, tenant: str, first: pd.Timestamp, end: pd.Timestamp) -> dict[str, int]:
        """The gridded version of each of the tenant's days in ``[first, end)`` that has one."""
        days = pd.date_range(first.floor("D"), end, freq="D", inclusive="left")
        keys = [f"{day:%Y-%m-%d}|{tenant}" for day in days]
        return {k: s.gridded_version for k, s in self.warehouse.partition_states(keys).items()}

    def load(
        self, tenant: str, start: pd.Timestamp, read_from: pd.Timestamp
    ) -> tuple[dict[tuple, pd.DataFrame] | None, str]:
        """The carried frames from ``read_from`` to ``start``, or None and why not."""
        found = self.warehouse.read_score_state(tenant, KIND, _VERSION, int(start.value))
        if found is None:
            return None, "no carried look-back before this day"
        if found[0] != int(start.value):
            ends = pd.Timestamp(found[0], tz="UTC")
            return None, f"the carried look-back ends at {ends:%Y-%m-%d %H:%M}, not at this day"
        carried = decode(found[1])
        if carried.first > read_from:
            return None, "the carried look-back is shorter than the detectors now need"
        now = self.versions(tenant, carried.first, start)
        changed = sorted(
            k for k in set(now) | set(carried.versions) if now.get(k) != carried.versions.get(k)
        )
        if changed:
            return None, f"{changed[0].split('|', 1)[0]} was gridded again since (late data)"
        frames = {g: f[f.index >= read_from] for g, f in carried.frames.items()}
        return frames, "carried"

    def save(
        self, tenant: str, frames: dict[tuple, pd.DataFrame], first: pd.Timestamp, end: pd.Timestamp
    ) -> None:
        """Keep each group's values on ``[first, end)`` for the run that starts at ``end``."""
        tails = {}
        for group, frame in frames.items():
            index = pd.DatetimeIndex(frame.index)
            tail = frame.iloc[index.searchsorted(first) : index.searchsorted(end)]
            if len(tail):
                tails[group] = tail
        carried = Lookback(first, end, tails, self.versions(tenant, first, end))
        self.warehouse.write_score_state(
            tenant, KIND, _VERSION, int(end.value), encode(carried), keep=self.keep
        )


# -- a tenant's scoring run: stored states, carried look-back --------------------------------


@dataclass
class Carried:
    """What :func:`score_carried` scored: the frames, each member's scores, and how the look-back
    was found (``carried``, or why it was read from the warehouse)."""

    frames: dict[tuple, pd.DataFrame]
    members: dict[str, dict[tuple, pd.DataFrame]]
    lookback: str


def score_carried(
    store: WarehouseStateStore,
    tenant: str,
    model_sets: dict[str, Any],
    versions: dict[str, int],
    start: pd.Timestamp,
    end: pd.Timestamp,
    step: pd.Timedelta,
    frames_from: Callable[[pd.Timestamp | None, pd.Timestamp], dict[tuple, pd.DataFrame]],
    *,
    n_jobs: int | None = None,
    carry_values: bool = True,
) -> Carried:
    """Each member's scores on ``[start, end)`` from the states ``store`` keeps, and the states
    at ``end`` saved back: ``frames_from(first, end)`` gives the group frames from ``first``
    (None: from the first point). With ``carry_values`` the past values the features need come
    from the previous run (:mod:`monitoring_pipelines.ml.lookback`) when it ended at ``start``,
    so only ``[start, end)`` is read, and the values the next run needs are saved."""
    states, read_from = stored_states(store, tenant, model_sets, versions, start, step)
    values = LookbackStore(store.warehouse) if carry_values else None
    if read_from is None:
        carried, how = None, "read: a detector has no state yet, caught up from the first point"
    elif values is None:
        carried, how = None, "read"
    else:
        carried, why = values.load(tenant, start, read_from)
        how = why if carried is not None else f"read: {why}"
    if carried is not None:
        frames = joined(carried, frames_from(start, end), step)
    else:
        frames = frames_from(read_from, end)
    members, new_states = score_sets_since(model_sets, frames, states, start, end, n_jobs=n_jobs)
    for kind, group_states in new_states.items():
        store.save(tenant, kind, versions[kind], group_states)
    if values is not None and model_sets:
        values.save(tenant, frames, lookback_start(model_sets, step, end), end)
    return Carried(frames, members, how)


def lookback_start(model_sets: dict[str, Any], step: pd.Timedelta, at: pd.Timestamp):
    """Where the frames of a run starting at ``at`` must begin, once every detector has a
    state standing at ``at``."""
    return min(
        (
            state_start(detector, step, at) - raw_context_steps(detector, step) * step
            for model_set in model_sets.values()
            for detector in model_set.detectors.values()
        ),
        default=at,
    )


def stored_states(
    store: WarehouseStateStore,
    tenant: str,
    model_sets: dict[str, Any],
    versions: dict[str, int],
    start: pd.Timestamp,
    step: pd.Timedelta,
) -> tuple[dict[str, SetStates], pd.Timestamp | None]:
    """Each set's newest stored states that can score from ``start``, and where the frames to
    score must begin so their features are exact: None when some group has no state, so scoring
    catches up from the series' first point."""
    states: dict[str, SetStates] = {}
    read_from: pd.Timestamp | None = start
    for kind, model_set in model_sets.items():
        if not len(model_set):
            continue
        needed = state_start(next(iter(model_set.detectors.values())), step, start)
        found = store.latest(tenant, kind, versions[kind], needed) or {}
        states[kind] = found
        if read_from is None or not set(model_set.detectors) <= set(found):
            read_from = None
            continue
        context = max(raw_context_steps(d, step) for d in model_set.detectors.values()) * step
        stands = pd.Timestamp(min(s.as_of for s in found.values()), tz="UTC")
        read_from = min(read_from, stands - context)
    return states, read_from
