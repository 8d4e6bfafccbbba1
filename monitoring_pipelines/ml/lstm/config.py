"""The LSTM detector's settings."""

from dataclasses import dataclass

from monitoring_pipelines.ml.base import DetectorConfig


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
