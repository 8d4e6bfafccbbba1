"""The ``mlflow.pyfunc`` face of a logged detector, and the loader references it relies on.

The logged model is a :class:`DetectorPyfunc` wrapping the directory the detector's own ``save()``
wrote. The pipeline does not go through pyfunc (loading rebuilds the real detector with its
loader); other consumers turn a wide frame into the pyfunc's input with :func:`pyfunc_frame`.

Stored names, do not change them: every logged model pickles the wrapper class by reference as
``monitoring_pipelines.ml.registry.DetectorPyfunc`` (:data:`PYFUNC_CLASS_MODULE`, resolved by the
package's ``__getattr__``), and every version names its loader ``module:qualname`` in its
``detector.loader`` tag and pyfunc config (:func:`import_path`, :func:`resolve`).
"""

import functools
import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from monitoring_pipelines.ml.registry.versions import DETECTOR_ARTIFACT

TS_COLUMN = "ts"
# Rebuilds a detector from the directory its save() wrote.
LoadFn = Callable[[Path], Any]
# Where models logged so far find the wrapper class (this package, once one module).
PYFUNC_CLASS_MODULE = "monitoring_pipelines.ml.registry"


@functools.cache
def pyfunc_class() -> type:
    """The wrapper class, built on first use because it subclasses mlflow's ``PythonModel``.

    Cached, so cloudpickle finds the very same class under its stored name and pickles it by
    reference (a few bytes naming the module) instead of by value.
    """
    import mlflow

    class DetectorPyfunc(mlflow.pyfunc.PythonModel):
        """Scores a frame with the detector saved in the model's ``detector`` artifact.

        Input: a ``ts`` column (UTC, timezone-naive as MLflow's schema requires), the group columns
        if the model was logged with some, and one column per metric. Output: the same rows in the
        same order, each metric column replaced by its calibrated score in [0, 1].
        """

        def load_context(self, context) -> None:
            config = context.model_config
            self.group_columns = tuple(config.get("group_columns") or ())
            self.detector = resolve(config["loader"])(Path(context.artifacts[DETECTOR_ARTIFACT]))

        def predict(
            self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None
        ) -> pd.DataFrame:
            return pyfunc_predict(self.detector, model_input, self.group_columns)

    DetectorPyfunc.__module__ = PYFUNC_CLASS_MODULE
    DetectorPyfunc.__qualname__ = "DetectorPyfunc"
    return DetectorPyfunc


def pyfunc_frame(frame: pd.DataFrame, group_columns: Sequence[str] = ()) -> pd.DataFrame:
    """A wide frame (UTC index or ``ts`` column) in the shape the pyfunc model takes and returns.

    ``ts`` becomes timezone-naive UTC (MLflow's schema refuses aware timestamps), group columns
    text, metric columns floats.
    """
    if TS_COLUMN in frame.columns:
        ts = pd.to_datetime(frame[TS_COLUMN], utc=True)
        rest = frame.drop(columns=[TS_COLUMN])
    elif isinstance(frame.index, pd.DatetimeIndex):
        ts = pd.Series(frame.index, index=frame.index)
        ts = ts.dt.tz_localize("UTC") if frame.index.tz is None else ts.dt.tz_convert("UTC")
        rest = frame
    else:
        raise ValueError(f"frame needs a '{TS_COLUMN}' column or a DatetimeIndex")
    missing = [c for c in group_columns if c not in rest.columns]
    if missing:
        raise ValueError(f"frame lacks the group columns {missing}")
    rest = rest.reset_index(drop=True)
    metrics = [c for c in rest.columns if c not in group_columns]
    out = pd.DataFrame({TS_COLUMN: ts.dt.tz_localize(None).astype("datetime64[ns]").to_numpy()})
    for column in group_columns:
        out[column] = rest[column].astype(str).to_numpy()
    for column in metrics:
        out[str(column)] = rest[column].astype("float64").to_numpy()
    return out


def pyfunc_predict(
    model: Any, frame: pd.DataFrame, group_columns: Sequence[str] = ()
) -> pd.DataFrame:
    """Score pyfunc-shaped rows with ``model`` and return them with scores in the metric columns."""
    if TS_COLUMN not in frame.columns:
        raise ValueError(f"input needs a '{TS_COLUMN}' column of UTC timestamps")
    frame = pyfunc_frame(frame, group_columns)
    metrics = [c for c in frame.columns if c != TS_COLUMN and c not in group_columns]
    if not group_columns:
        scores = model.score(_wide(frame, metrics))
        out = frame.copy()
        out[metrics] = scores.reindex(columns=metrics).to_numpy()
        return out
    positions = frame.groupby(list(group_columns), sort=False).indices
    groups = {
        tuple(str(k) for k in (key if isinstance(key, tuple) else (key,))): rows
        for key, rows in positions.items()
    }
    scores = model.score({key: _wide(frame.iloc[rows], metrics) for key, rows in groups.items()})
    out = frame.copy()
    # Groups the model has no detector for keep NaN scores rather than failing the batch.
    out[metrics] = np.nan
    for key, group_scores in scores.items():
        rows = groups[tuple(key)]
        out.iloc[rows, out.columns.get_indexer(metrics)] = group_scores.reindex(
            columns=metrics
        ).to_numpy()
    return out


def _wide(rows: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Rows with a ``ts`` column (naive means UTC) -> the detectors' wide frame."""
    wide = rows[list(metrics)].astype("float64")
    wide.index = pd.DatetimeIndex(pd.to_datetime(rows[TS_COLUMN], utc=True), name=None)
    return wide


# -- loader references -----------------------------------------------------------------------------


def import_path(fn: Callable[..., Any]) -> str:
    """``module:qualname`` of an importable function, class or classmethod."""
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, type):
        ref = f"{owner.__module__}:{owner.__qualname__}.{fn.__name__}"
    else:
        ref = f"{getattr(fn, '__module__', '')}:{getattr(fn, '__qualname__', '')}"
    if "<" in ref or ref.startswith(":") or ref.endswith(":"):
        raise ValueError(f"loader {fn!r} must be importable by name (module-level)")
    return ref


def loader_key(fn: Callable[..., Any]) -> str:
    """:func:`import_path` where there is one, else a name good enough to key a cache."""
    try:
        return import_path(fn)
    except ValueError:
        return repr(fn)


def resolve(ref: str) -> LoadFn:
    """The object an :func:`import_path` reference names."""
    module_name, _, qualname = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj
