"""LSTM forecaster: predicts the next step of every metric of a group from its recent past.

The raw score of a point is its forecast error, normalised per column by the typical error on a
validation period held out in time; the base class calibrates it causally.

Scoring runs the LSTM once per *block* of ``block`` consecutive points instead of once per point:
each block's sequence starts ``lookback`` steps before the block, so every point is forecast from
between ``lookback`` and ``lookback + block - 1`` steps of its own past. That costs about 2 LSTM
steps per point instead of ``lookback`` for one window per point (~8x faster at the defaults),
stays causal (a point's forecast only reads rows before it) and gives a prefix exactly the scores
the whole frame gave it. Blocks are aligned to absolute time, not to the start of the frame, so a
point gets the same score whichever frame it is scored in, as long as its block's context is inside
that frame; points without that context (the first ``lookback`` to ``lookback + block - 1`` rows of
a frame) get NaN.

tensorflow, keras and mlflow are imported inside the methods that need them: the Dagster code
location imports this module and must load without them.
"""

import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from monitoring_pipelines.ml.base import Detector, DetectorConfig
from monitoring_pipelines.ml.frames import grid_step

MODEL_DIR = "keras"
_TIME_FEATURES = 2  # sine and cosine of the UTC time of day
# Fewer held-out errors than this give a noisy scale; the whole training frame is used instead.
_MIN_HELD_OUT_ERRORS = 50


@dataclass(frozen=True)
class LstmConfig(DetectorConfig):
    # Shortest history a point is forecast from (36 x 5 minutes = 3 hours).
    lookback: int = 36
    # Points scored per sequence pass; every point sees lookback .. lookback + block - 1 steps.
    block: int = 36
    units: int = 32
    # Short training: a backtest fits one model per series. On SKAB's sensors one by one
    # (NAB-style, every 4th experiment; 170 training rows each) 12 epochs of batches of 64 with
    # early stopping score 37.9 (z-score 50.5, reference baseline 27.0, random 16.8).
    epochs: int = 12
    batch_size: int = 64
    patience: int = 3
    learning_rate: float = 3e-3
    # The last part of the training frame, by time: early stopping and the error scale use it.
    validation_split: float = 0.2
    # Training sequences are spread evenly over the frame up to this many (each carries ``block``
    # targets per metric, and neighbours overlap by most of their length). 256 instead of 768
    # halves a fit on 750 rows of one series (1.7 s instead of 3.1 s of CPU, 12 epochs).
    max_train_sequences: int = 256
    # Squared loss up to this many typical one-step changes, linear beyond, so incidents inside
    # the training data do not dominate the fit.
    huber_delta: float = 2.0
    # Normalised inputs are clipped so an extreme value cannot saturate the LSTM for hours; the
    # error of that point is computed unclipped.
    input_clip: float = 10.0
    min_error_scale: float = 1e-3
    # Blocks per model call when scoring: large batches amortise the per-call overhead.
    score_batch_blocks: int = 4096
    threads: int = 2

    def __post_init__(self) -> None:
        if self.lookback < 1 or self.block < 1:
            raise ValueError("lookback and block must be at least 1")
        if not 0.0 < self.validation_split < 0.5:
            raise ValueError("validation_split must be in (0, 0.5)")


class LstmDetector(Detector):
    kind = "lstm"
    config_class = LstmConfig
    config: LstmConfig

    def __init__(self, config: LstmConfig | None = None):
        super().__init__(config)
        self.model: Any = None
        self._predict_fn: Any = None
        # Per column, in the order of self.columns; all in the units of the raw column except
        # diff_scale and error_scale, which are in normalised units.
        self.median = np.zeros(0)
        self.scale = np.ones(0)
        self.diff_scale = np.ones(0)
        self.error_scale = np.ones(0)
        self.training: dict[str, Any] = {}
        # Our own step: the base class's ``step`` reads the index's integers as nanoseconds, which
        # is wrong for the microsecond indexes pandas 3 builds by default.
        self.step_ns: int | None = None

    # -- training ----------------------------------------------------------------------------------

    def _fit(self, frame: pd.DataFrame) -> None:
        cfg = self.config
        self.step_ns = _median_step_ns(frame.index)
        frame = _regular(frame, pd.Timedelta(self.step_ns, unit="ns"))
        values = _values(frame)
        self.median, self.scale = _level_scales(values)
        z = (values - self.median) / self.scale
        self.diff_scale = _diff_scales(z)

        data = self._arrays(frame)
        n = len(frame)
        split = round(n * (1.0 - cfg.validation_split))
        length = cfg.lookback + cfg.block - 1
        # A sequence starting at row a reads rows a .. a+length-1 and forecasts rows a+1 ..
        # a+length; training targets stay before the split, validation targets after it.
        train = _spread(0, split - length - 1, cfg.max_train_sequences)
        valid = _spread(
            max(0, split - cfg.lookback), n - length - 1, max(1, cfg.max_train_sequences // 4)
        )
        x, y, w = self._sequences(data, train)
        if not len(x) or not w.any():
            needed = math.ceil((length + 2) / (1.0 - cfg.validation_split))
            raise ValueError(f"lstm: {n} rows are too few to train on; it needs at least {needed}")
        validation = self._sequences(data, valid)

        tf, keras = _tensorflow(cfg.threads)
        # Process-wide (TensorFlow offers no narrower switch); on CPU it costs little here.
        tf.config.experimental.enable_op_determinism()
        features = data.inputs.shape[1]
        trainer = _trainer(keras, features, len(self.columns), cfg)
        has_validation = bool(len(validation[0])) and bool(validation[2].any())
        monitor = "val_loss" if has_validation else "loss"
        history = trainer.fit(
            x,
            y[..., None],
            sample_weight=w,
            validation_data=(validation[0], validation[1][..., None], validation[2])
            if has_validation
            else None,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            shuffle=True,
            verbose=0,
            callbacks=[
                keras.callbacks.EarlyStopping(
                    monitor=monitor, patience=cfg.patience, restore_best_weights=True
                )
            ],
        )
        # The detector keeps its own copy: the trainer is reused by the next fit of this shape.
        self.model = _build_model(keras, features, len(self.columns), cfg.units)
        self.model.set_weights(trainer.layers[0].get_weights())
        self._predict_fn = None

        # The error scale comes from the validation period: errors inside the period the model
        # was fitted on are smaller than what it will meet later.
        errors = self._errors(frame)
        held_out = errors[split:]
        # The median, not the mean: the training frame may hold incidents of its own.
        scale = np.where(
            np.isfinite(held_out).sum(axis=0) >= _MIN_HELD_OUT_ERRORS,
            _nan_median_abs(held_out),
            _nan_median_abs(errors),
        )
        self.error_scale = np.maximum(np.nan_to_num(scale, nan=1.0), cfg.min_error_scale)
        losses = history.history[monitor]
        self.training = {
            "epochs": len(losses),
            "best_epoch": int(np.argmin(losses)) + 1,
            "monitor": monitor,
            "best_loss": float(np.min(losses)),
            "train_sequences": len(x),
            "validation_sequences": len(validation[0]),
        }

    # -- scoring -----------------------------------------------------------------------------------

    def raw_scores(self, frame: pd.DataFrame) -> pd.DataFrame:
        if self.model is None:
            raise ValueError("lstm: fit or load the detector before scoring")
        errors = self._errors(frame[self.columns])
        raw = np.abs(errors) / self.error_scale
        return pd.DataFrame(raw, index=frame.index, columns=frame[self.columns].columns)

    def _errors(self, frame: pd.DataFrame) -> np.ndarray:
        """Forecast error per row and column in normalised units; NaN where not scored."""
        grid = _regular(frame, self._step_of_index(frame.index))
        data = self._arrays(grid)
        forecast = self._forecast(data, grid.index)
        errors = data.z - forecast
        if grid is frame:
            return errors
        return pd.DataFrame(errors, index=grid.index).reindex(frame.index).to_numpy()

    def _forecast(self, data: "_Arrays", index: pd.DatetimeIndex) -> np.ndarray:
        """Forecast of every row from the rows before it, NaN where it lacks the context."""
        cfg = self.config
        n, columns = data.z.shape
        forecast = np.full((n, columns), np.nan)
        if n == 0:
            return forecast
        step_ns = int(self._step_of_index(index).value)
        # Blocks sit on absolute time so a row's context does not depend on where the frame starts.
        offset = int(index[0].value // step_ns) % cfg.block
        first = -offset + math.ceil((cfg.lookback + offset) / cfg.block) * cfg.block
        starts = np.arange(first, n, cfg.block)
        if not len(starts):
            return forecast
        length = cfg.lookback + cfg.block - 1
        # Padding after the end only feeds outputs that are thrown away: the LSTM runs forward.
        padded = np.concatenate(
            [data.inputs, np.zeros((cfg.block, data.inputs.shape[1]), dtype=np.float32)]
        )
        windows = np.lib.stride_tricks.sliding_window_view(padded, length, axis=0)
        deltas = []
        for chunk in range(0, len(starts), cfg.score_batch_blocks):
            begin = starts[chunk : chunk + cfg.score_batch_blocks] - cfg.lookback
            batch = np.ascontiguousarray(windows[begin].transpose(0, 2, 1))
            out = self._predict(batch)
            deltas.append(out[:, cfg.lookback - 1 :, :].reshape(-1, columns))
        rows = np.arange(first, first + len(starts) * cfg.block)
        delta = np.concatenate(deltas)[rows < n]
        rows = rows[rows < n]
        forecast[rows] = data.last[rows - 1] + delta * self.diff_scale
        return forecast

    def _predict(self, batch: np.ndarray) -> np.ndarray:
        """The model's output for ``batch`` (blocks, steps, features), computed in NumPy from its
        weights: the same LSTM and Dense layer, without tracing a TensorFlow graph per model
        (seconds each, and a backtest scores a new model per series)."""
        if self._predict_fn is None:
            self._predict_fn = _numpy_forecaster(self.model.get_weights())
        return self._predict_fn(batch)

    # -- arrays ------------------------------------------------------------------------------------

    def _arrays(self, frame: pd.DataFrame) -> "_Arrays":
        z = (_values(frame) - self.median) / self.scale
        observed = np.isfinite(z)
        last = _ffill(z)
        clip = self.config.input_clip
        seconds = (frame.index.as_unit("ns").asi8 // 1_000_000_000) % 86400
        angle = 2.0 * np.pi * seconds / 86400.0
        inputs = np.concatenate(
            [
                np.clip(last, -clip, clip),
                observed.astype(np.float64),
                np.sin(angle)[:, None],
                np.cos(angle)[:, None],
            ],
            axis=1,
        ).astype(np.float32)
        return _Arrays(inputs=inputs, z=z, last=last)

    def _sequences(
        self, data: "_Arrays", starts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Inputs, targets (next-step change in typical changes) and weights for ``starts``."""
        cfg = self.config
        length = cfg.lookback + cfg.block - 1
        columns = data.z.shape[1]
        if not len(starts):
            empty = np.zeros((0, length, columns), dtype=np.float32)
            return np.zeros((0, length, data.inputs.shape[1]), np.float32), empty, empty
        target = np.full_like(data.z, np.nan)
        target[1:] = (data.z[1:] - data.last[:-1]) / self.diff_scale
        windows = np.lib.stride_tricks.sliding_window_view(data.inputs, length, axis=0)
        x = np.ascontiguousarray(windows[starts].transpose(0, 2, 1))
        # Output step p of a sequence starting at a forecasts row a + p + 1.
        rows = starts[:, None] + np.arange(1, length + 1)[None, :]
        y = target[rows]
        w = np.isfinite(y) & (np.arange(length) >= cfg.lookback - 1)[None, :, None]
        return x, np.nan_to_num(y).astype(np.float32), w.astype(np.float32)

    def _step_of_index(self, index: pd.DatetimeIndex) -> pd.Timedelta:
        step_ns = self.step_ns if self.step_ns is not None else _median_step_ns(index)
        return pd.Timedelta(step_ns, unit="ns")

    # -- persistence -------------------------------------------------------------------------------

    def _save_native(self, directory: Path) -> None:
        # MLflow 3.17 has a Keras 3 flavor, mlflow.keras (keras_version and backend in MLmodel,
        # loads with keras.saving). mlflow.tensorflow would also take the model, but it goes through
        # tf.keras and records a legacy "tf" save format, so the Keras 3 flavor is the right one.
        import mlflow.keras
        from mlflow.models import ModelSignature
        from mlflow.types.schema import Schema, TensorSpec

        tf, keras = _tensorflow(self.config.threads)
        target = Path(directory) / MODEL_DIR
        if target.exists():
            shutil.rmtree(target)
        features = len(self.columns) + len(self.columns) + _TIME_FEATURES
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, features), "inputs")]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, len(self.columns)))]),
        )
        mlflow.keras.save_model(
            self.model,
            str(target),
            signature=signature,
            # Explicit, because inferring them makes MLflow load the model in a subprocess, which
            # imports TensorFlow again (~10 s).
            pip_requirements=[f"keras=={keras.__version__}", f"tensorflow-cpu=={tf.__version__}"],
        )

    def _load_native(self, directory: Path) -> None:
        import mlflow.keras

        _tensorflow(self.config.threads)
        self.model = mlflow.keras.load_model(str(Path(directory) / MODEL_DIR))
        self._predict_fn = None

    def _state(self) -> dict[str, Any]:
        return {
            "median": self.median.tolist(),
            "scale": self.scale.tolist(),
            "diff_scale": self.diff_scale.tolist(),
            "error_scale": self.error_scale.tolist(),
            "step_ns": self.step_ns,
            "training": self.training,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self.median = np.asarray(state["median"], dtype=np.float64)
        self.scale = np.asarray(state["scale"], dtype=np.float64)
        self.diff_scale = np.asarray(state["diff_scale"], dtype=np.float64)
        self.error_scale = np.asarray(state["error_scale"], dtype=np.float64)
        self.step_ns = state["step_ns"]
        self.training = dict(state.get("training", {}))


@dataclass(frozen=True)
class _Arrays:
    inputs: np.ndarray  # (rows, 2 * columns + time features) float32: what the LSTM reads
    z: np.ndarray  # (rows, columns) normalised values, NaN at gaps: what is forecast
    last: np.ndarray  # (rows, columns) last observed normalised value up to each row, 0 before any


def _tensorflow(threads: int) -> tuple[Any, Any]:
    # Only TensorFlow's C++ logging reads this; setdefault keeps an operator's own choice.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        # One op at a time: the graph is a chain, and parallel ops would oversubscribe 2 cores.
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        # The runtime is already running (threads can only be set before); keep its settings.
        pass
    return tf, keras


# Compiled trainers by shape and training settings. Building and tracing a Keras trainer costs
# seconds (about 9 s of a 10 s fit on a one-second SKAB sensor with 170 training rows), the
# training steps themselves a fraction of that; a backtest fits one model per series, so each
# fit of a known shape reuses its trainer with freshly seeded weights and a reset optimizer.
_TRAINERS: dict[tuple, tuple[Any, list[np.ndarray]]] = {}


def _trainer(keras: Any, features: int, columns: int, cfg: LstmConfig) -> Any:
    """A compiled trainer for this shape, its weights as a fresh model seeded with ``cfg.seed``
    gets them and its optimizer as new: training is reproducible run to run and fit to fit."""
    key = (features, columns, cfg.units, cfg.learning_rate, cfg.huber_delta)
    # Same seed, same initial weights and same shuffles.
    keras.utils.set_random_seed(cfg.seed)
    fresh = _build_model(keras, features, columns, cfg.units)
    if key not in _TRAINERS:
        # The loss needs one weight per (step, metric), gaps and short-context steps weighing
        # 0; Keras weights a loss per element when that element is its own last axis.
        trainer = keras.Sequential(
            [
                keras.Input((None, features)),
                _build_model(keras, features, columns, cfg.units),
                keras.layers.Reshape((-1, columns, 1)),
            ]
        )
        trainer.compile(
            optimizer=keras.optimizers.Adam(learning_rate=cfg.learning_rate, clipnorm=1.0),
            loss=keras.losses.Huber(delta=cfg.huber_delta),
        )
        trainer.optimizer.build(trainer.trainable_variables)
        _TRAINERS[key] = (trainer, [v.numpy() for v in trainer.optimizer.variables])
    trainer, optimizer_start = _TRAINERS[key]
    trainer.layers[0].set_weights(fresh.get_weights())
    for variable, value in zip(trainer.optimizer.variables, optimizer_start, strict=True):
        variable.assign(value)
    keras.utils.set_random_seed(cfg.seed)
    return trainer


def _build_model(keras: Any, features: int, columns: int, units: int) -> Any:
    inputs = keras.Input((None, features), name="inputs")
    hidden = keras.layers.LSTM(units, return_sequences=True, name="lstm")(inputs)
    # The change from the last observed value, in typical one-step changes: predicting "no
    # change" is then the zero output, a sensible start for any metric.
    change = keras.layers.Dense(columns, name="change")(hidden)
    return keras.Model(inputs, change, name="lstm_forecaster")


def _numpy_forecaster(weights: list[np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """The forward pass of :func:`_build_model`'s network from its weights: Keras' LSTM (gates
    input, forget, cell, output; sigmoid gates, tanh cell and output) then the Dense layer."""
    kernel, recurrent, bias, dense, dense_bias = (np.asarray(w, np.float32) for w in weights)
    units = recurrent.shape[0]

    def forward(batch: np.ndarray) -> np.ndarray:
        blocks, steps, _ = batch.shape
        projected = batch.astype(np.float32) @ kernel + bias  # (blocks, steps, 4 units)
        h = np.zeros((blocks, units), np.float32)
        c = np.zeros((blocks, units), np.float32)
        hidden = np.empty((blocks, steps, units), np.float32)
        for t in range(steps):
            gates = projected[:, t] + h @ recurrent
            i, f, g, o = np.split(gates, 4, axis=1)
            c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
            h = _sigmoid(o) * np.tanh(c)
            hidden[:, t] = h
        return hidden @ dense + dense_bias

    return forward


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


def _values(frame: pd.DataFrame) -> np.ndarray:
    # A copy: pandas hands out read-only views of its data.
    values = np.array(frame.to_numpy(dtype=np.float64, na_value=np.nan))
    values[~np.isfinite(values)] = np.nan
    return values


def _level_scales(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and robust spread (IQR / 1.349, else std, else 1) per column."""
    columns = values.shape[1]
    median = np.zeros(columns)
    scale = np.ones(columns)
    for c in range(columns):
        col = values[:, c][np.isfinite(values[:, c])]
        if not col.size:
            continue
        median[c] = float(np.median(col))
        q75, q25 = np.percentile(col, [75, 25])
        scale[c] = _first_positive((q75 - q25) / 1.349, float(np.std(col)))
    return median, scale


def _diff_scales(z: np.ndarray) -> np.ndarray:
    """Robust spread of one-step changes (MAD, else std, else 1) per column, normalised units."""
    diffs = np.diff(z, axis=0)
    scale = np.ones(z.shape[1])
    for c in range(z.shape[1]):
        d = diffs[:, c][np.isfinite(diffs[:, c])]
        if d.size:
            mad = 1.4826 * float(np.median(np.abs(d - np.median(d))))
            scale[c] = _first_positive(mad, float(np.std(d)))
    return np.maximum(scale, 1e-3)


def _first_positive(*candidates: float) -> float:
    for value in candidates:
        if np.isfinite(value) and value > 1e-12:
            return float(value)
    return 1.0


def _nan_median_abs(errors: np.ndarray) -> np.ndarray:
    result = np.full(errors.shape[1], np.nan)
    for c in range(errors.shape[1]):
        col = np.abs(errors[:, c][np.isfinite(errors[:, c])])
        if col.size:
            result[c] = float(np.median(col))
    return result


def _ffill(z: np.ndarray) -> np.ndarray:
    """Last observed value up to each row (causal), 0 (the training median) before the first."""
    n = z.shape[0]
    position = np.where(np.isfinite(z), np.arange(n)[:, None], -1)
    position = np.maximum.accumulate(position, axis=0) if n else position
    filled = np.take_along_axis(z, np.maximum(position, 0), axis=0)
    return np.where(position >= 0, filled, 0.0)


def _spread(low: int, high: int, count: int) -> np.ndarray:
    """Up to ``count`` evenly spaced integers in [low, high]."""
    if high < low:
        return np.zeros(0, dtype=np.int64)
    if high - low + 1 <= count:
        return np.arange(low, high + 1)
    return np.unique(np.linspace(low, high, count).round().astype(np.int64))


def _median_step_ns(index: pd.DatetimeIndex) -> int:
    step = grid_step(index)
    if step is None:
        raise ValueError("lstm: cannot tell the step of a frame with fewer than two rows")
    return step.value


def _regular(frame: pd.DataFrame, step: pd.Timedelta) -> pd.DataFrame:
    """``frame`` on its full grid: missing rows would otherwise shift every window in time."""
    if len(frame) < 2:
        return frame
    if (np.diff(frame.index.as_unit("ns").asi8) == int(step.value)).all():
        return frame
    grid = pd.date_range(frame.index[0], frame.index[-1], freq=step)
    return frame.reindex(grid)
