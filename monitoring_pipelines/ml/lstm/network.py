"""The Keras network: building it, training it (reusing compiled trainers), saving and loading it
as an MLflow model, and its forward pass in NumPy for scoring.

tensorflow, keras and mlflow are imported inside the functions that need them: the Dagster code
location imports the detector and must load without them.
"""

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from monitoring_pipelines.ml.lstm.config import LstmConfig

MODEL_DIR = "keras"
_TIME_FEATURES = 2  # sine and cosine of the UTC time of day


def train(
    cfg: LstmConfig,
    training: tuple[np.ndarray, np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray, np.ndarray],
    columns: int,
) -> tuple[Any, dict[str, Any]]:
    """A network trained on ``training`` (inputs, targets, weights) with early stopping on
    ``validation`` when it holds any weighted target (else on the training loss), and a summary of
    the training: epochs, best epoch, monitored loss, sequence counts."""
    x, y, w = training
    tf, keras = tensorflow_modules(cfg.threads)
    # Process-wide (TensorFlow offers no narrower switch); on CPU it costs little here.
    tf.config.experimental.enable_op_determinism()
    features = x.shape[2]
    trainer = _trainer(keras, features, columns, cfg)
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
    model = _build_model(keras, features, columns, cfg.units)
    model.set_weights(trainer.layers[0].get_weights())
    losses = history.history[monitor]
    summary = {
        "epochs": len(losses),
        "best_epoch": int(np.argmin(losses)) + 1,
        "monitor": monitor,
        "best_loss": float(np.min(losses)),
        "train_sequences": len(x),
        "validation_sequences": len(validation[0]),
    }
    return model, summary


def save_model(model: Any, directory: Path, columns: int, threads: int) -> None:
    """``model`` as an MLflow Keras model under ``directory / MODEL_DIR``."""
    # MLflow 3.17 has a Keras 3 flavor, mlflow.keras (keras_version and backend in MLmodel,
    # loads with keras.saving). mlflow.tensorflow would also take the model, but it goes through
    # tf.keras and records a legacy "tf" save format, so the Keras 3 flavor is the right one.
    import mlflow.keras
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    tf, keras = tensorflow_modules(threads)
    target = Path(directory) / MODEL_DIR
    if target.exists():
        shutil.rmtree(target)
    features = columns + columns + _TIME_FEATURES
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, features), "inputs")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, columns))]),
    )
    mlflow.keras.save_model(
        model,
        str(target),
        signature=signature,
        # Explicit, because inferring them makes MLflow load the model in a subprocess, which
        # imports TensorFlow again (~10 s).
        pip_requirements=[f"keras=={keras.__version__}", f"tensorflow-cpu=={tf.__version__}"],
    )


def load_model(directory: Path, threads: int) -> Any:
    """The model :func:`save_model` wrote under ``directory``."""
    import mlflow.keras

    tensorflow_modules(threads)
    return mlflow.keras.load_model(str(Path(directory) / MODEL_DIR))


def tensorflow_modules(threads: int) -> tuple[Any, Any]:
    """``tensorflow`` and ``keras``, imported now, with TensorFlow on ``threads`` threads."""
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


def numpy_forecaster(weights: list[np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
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
