"""The reference baseline every member must beat: a plain rolling z-score with anomaly likelihood.

Raw score per point: ``|x - mean| / std`` over the ``window`` steps before it (causal, no
seasonality, nothing learned beyond the calibrator), turned into a calibrated score by the base
class's per-series likelihood like every member. It is the simplest detector that holds up on real
operational series, so it is the bar: the detection benchmark prints it beside the members, and a
first candidate becomes champion only if it is not worse than this baseline on the held-out week.
It is not a catalogued kind: it is never registered and never part of the ensemble.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from monitoring_pipelines.ml.base import Detector, DetectorConfig


@dataclass(frozen=True)
class RollingZScoreConfig(DetectorConfig):
    window: int = 288
    min_periods: int = 24


class RollingZScoreBaseline(Detector):
    kind = "baseline"
    config_class = RollingZScoreConfig

    def _fit(self, frame: pd.DataFrame) -> None:
        return None

    def raw_scores(self, frame: pd.DataFrame) -> pd.DataFrame:
        cfg: RollingZScoreConfig = self.config
        past = frame.astype("float64").shift(1).rolling(cfg.window, min_periods=cfg.min_periods)
        mean, std = past.mean(), past.std()
        floor = np.maximum(mean.abs() * 1e-3, 1e-9)
        z = (frame - mean).abs() / np.maximum(std, floor)
        return z.where(frame.notna())

    def history_steps(self) -> int:
        return self.config.window

    def _save_native(self, directory: Path) -> None:
        return None

    def _load_native(self, directory: Path) -> None:
        return None
