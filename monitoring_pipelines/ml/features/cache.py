"""The public feature functions, over a small cache of recently computed frames' features."""

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import pandas as pd

from monitoring_pipelines.ml.features.compute import _Features
from monitoring_pipelines.ml.features.config import (
    _CACHE_ENTRIES,
    _CACHE_MAX_FRAME_BYTES,
    CONTEXT_FEATURES,
    TIME_FEATURES,
    FeatureConfig,
)

_cache: OrderedDict[tuple, _Features] = OrderedDict()
_cache_lock = threading.Lock()


def clear_cache() -> None:
    """Forget cached features (to time a detector on its own, or to free memory)."""
    with _cache_lock:
        _cache.clear()


def _features_of(frame: pd.DataFrame, cfg: FeatureConfig, start: int = 0) -> _Features:
    values = np.ascontiguousarray(frame.to_numpy(dtype="float64"))
    if values.nbytes > _CACHE_MAX_FRAME_BYTES or len(frame) == 0:
        return _Features(frame, cfg, start)
    index = pd.DatetimeIndex(frame.index)
    key = (
        cfg,
        int(start),
        values.shape,
        int(index[0].value),
        int(index[-1].value),
        tuple(map(str, frame.columns)),
        hashlib.blake2b(values.tobytes(), digest_size=16).digest(),
    )
    with _cache_lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
    features = _Features(frame, cfg, start)
    with _cache_lock:
        # Another thread may have built the same features meanwhile: share one, so the
        # members scoring a group on two threads compute them once.
        features = _cache.setdefault(key, features)
        while len(_cache) > _CACHE_ENTRIES:
            _cache.popitem(last=False)
    return features


def compute_features(
    frame: pd.DataFrame,
    names: Sequence[str],
    config: FeatureConfig | None = None,
    *,
    start: int = 0,
) -> dict[str, np.ndarray]:
    """The named features of ``frame``, each a (rows, metrics) array (shared: do not modify).

    Only rows ``start`` onwards are computed (earlier rows are lookback and get NaN); they equal
    the features of the whole frame there.
    """
    cfg = config or FeatureConfig()
    known = set(cfg.names()) | set(TIME_FEATURES) | set(CONTEXT_FEATURES)
    unknown = [n for n in names if n not in known and not n.startswith(("step_z", "seasonal_z"))]
    if unknown:
        raise ValueError(f"unknown features {unknown}")
    features = _features_of(frame, cfg, start)
    return {name: features.feature(name) for name in names}


def group_features(
    frame: pd.DataFrame,
    config: FeatureConfig | None = None,
    names: Sequence[str] | None = None,
    *,
    start: int = 0,
) -> np.ndarray:
    """Features as a (rows, metrics, features) array, in the order of ``names``.

    ``names`` defaults to ``config.names()``; ``start`` as in :func:`compute_features`.
    """
    cfg = config or FeatureConfig()
    names = list(names or cfg.names())
    computed = compute_features(frame, names, cfg, start=start)
    return np.stack([computed[n] for n in names], axis=2)


def trailing_z(frame: pd.DataFrame, config: FeatureConfig | None = None) -> pd.DataFrame:
    """``z_value`` alone, as a frame shaped like ``frame``."""
    z = compute_features(frame, ["z_value"], config)["z_value"]
    return pd.DataFrame(z, index=frame.index, columns=frame.columns)
