"""Saving and loading the Prophet models (one MLflow model per series) and the forecast cache.

``mlflow`` is imported inside the functions that use it: importing this module must stay cheap.
"""

import re
import shutil
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from monitoring_pipelines.ml.prophet_model.fitting import quiet_stan
from monitoring_pipelines.ml.prophet_model.forecast import CACHE_KEYS

MODELS_DIR = "prophet"
FORECAST_FILE = "forecast.parquet"


def dir_name(column: str, taken: set[str]) -> str:
    """A readable, unique, filesystem-safe directory name for ``column``'s MLflow model."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", str(column)).strip("_")[:80] or "column"
    if name != column or name in taken:
        name = f"{name}-{zlib.crc32(str(column).encode()):08x}"
    return name


def save(
    directory: Path,
    models: dict[str, Any],
    model_dirs: dict[str, str],
    columns: list[str],
    cache: dict[str, np.ndarray],
    start_ns: int,
    step_ns: int,
) -> None:
    """Each model under ``MODELS_DIR/<its dir name>`` and the cache as one long parquet file."""
    import mlflow.prophet

    root = Path(directory) / MODELS_DIR
    # mlflow refuses to save into a non-empty directory; this folder is ours alone.
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for col, name in model_dirs.items():
        mlflow.prophet.save_model(models[col], str(root / name))
    rows = len(cache["yhat"])
    frame = pd.DataFrame(
        {
            "ts": np.tile(start_ns + np.arange(rows) * step_ns, len(columns)),
            "column": np.repeat(np.asarray(columns, dtype=object), rows),
            **{key: array.ravel(order="F") for key, array in cache.items()},
        }
    )
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    frame.to_parquet(root / FORECAST_FILE, index=False)


def load(
    directory: Path, model_dirs: dict[str, str], columns: list[str]
) -> tuple[dict[str, Any], dict[str, np.ndarray], int]:
    """The models, the forecast cache and its first timestamp (ns) that :func:`save` wrote."""
    import mlflow.prophet

    quiet_stan()
    root = Path(directory) / MODELS_DIR
    models = {col: mlflow.prophet.load_model(str(root / name)) for col, name in model_dirs.items()}
    frame = pd.read_parquet(root / FORECAST_FILE)
    rows = len(frame) // max(len(columns), 1)
    cache = {
        key: frame[key].to_numpy(dtype="float64").reshape((rows, len(columns)), order="F")
        for key in CACHE_KEYS
    }
    start_ns = int(frame["ts"].iloc[0].value) if rows else 0
    return models, cache, start_ns
