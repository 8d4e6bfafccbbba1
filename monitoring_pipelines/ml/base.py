"""One interface for every detector.

A detector works on a *group*: a wide frame of one tenant's service (or a single series) on the
regular grid: a UTC ``DatetimeIndex`` at a fixed step, one column per metric, NaN for gaps.

- ``fit(frame)`` trains on history.
- ``raw_scores(frame)`` gives, per point, a raw "unusualness" (higher is worse). It must be causal:
  the score at ``t`` depends only on rows up to ``t``, so scoring a prefix gives exactly the scores
  that scoring the whole frame gave for that prefix.
- ``score(frame)`` turns raw scores into calibrated scores in [0, 1] with the base class's
  :class:`~monitoring_pipelines.ml.calibration.LikelihoodCalibrator` (causal, per column), so
  subclasses only train and score. Scores are never decisions: thresholds live in
  :mod:`monitoring_pipelines.ml.thresholds`.

Subclasses set ``kind`` and ``config_class`` and implement ``_fit``, ``raw_scores``,
``_save_native(dir)`` and ``_load_native(dir)`` (the model in its own format, for the MLflow
flavor); ``history_steps`` says how much context a frame to score should carry.
"""

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from monitoring_pipelines.ml.calibration import CalibrationConfig, LikelihoodCalibrator
from monitoring_pipelines.ml.frames import grid_step

STATE_FILE = "detector.json"


@dataclass(frozen=True)
class DetectorConfig:
    """Settings every detector has; subclasses add their own fields."""

    seed: int = 42
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return _dataclass_from_dict(cls, data)


def _dataclass_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a (frozen) config dataclass from its ``asdict`` form, nested configs included.

    Unknown keys are dropped so a config saved by a newer version still loads; JSON lists come
    back as tuples.
    """
    known = {f.name: f for f in fields(cls)}
    values = {k: v for k, v in data.items() if k in known}
    defaults = cls()
    for name, value in values.items():
        default = getattr(defaults, name)
        if isinstance(value, dict) and is_dataclass(default):
            values[name] = _dataclass_from_dict(type(default), value)
        elif isinstance(value, list):
            values[name] = tuple(value)
    return cls(**values)


def check_frame(frame: pd.DataFrame) -> None:
    """Raise a one-line ValueError unless ``frame`` is a wide frame on a regular UTC grid."""
    if not isinstance(frame.index, pd.DatetimeIndex) or frame.index.tz is None:
        raise ValueError("detector input needs a timezone-aware DatetimeIndex")
    if len(frame) > 1 and not frame.index.is_monotonic_increasing:
        raise ValueError("detector input must be sorted by time")
    if frame.shape[1] == 0:
        raise ValueError("detector input has no columns")


class Detector(ABC):
    kind: ClassVar[str]
    config_class: ClassVar[type[DetectorConfig]] = DetectorConfig

    def __init__(self, config: DetectorConfig | None = None):
        self.config = config or self.config_class()
        self.columns: list[str] = []
        self.step: pd.Timedelta | None = None
        self.calibrator = LikelihoodCalibrator(self.config.calibration)
        self.trained_on: dict[str, Any] = {}

    # -- what subclasses implement -----------------------------------------------------------------

    @abstractmethod
    def _fit(self, frame: pd.DataFrame) -> None: ...

    @abstractmethod
    def raw_scores(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Per point, per column raw unusualness (>= 0, higher is worse); NaN where undefined."""

    @abstractmethod
    def _save_native(self, directory: Path) -> None: ...

    @abstractmethod
    def _load_native(self, directory: Path) -> None: ...

    def _state(self) -> dict[str, Any]:
        """Extra JSON-serialisable state of a subclass (scalers, residual scales...)."""
        return {}

    def _set_state(self, state: dict[str, Any]) -> None:
        return None

    def history_steps(self) -> int:
        """Grid steps of history a frame should carry before the first point that matters.

        Scores of the first rows of a frame are computed from less history than the detector
        wants (trailing windows, seasonal lags); give ``score`` this many earlier steps and drop
        their scores. 0 means the detector needs no context.
        """
        return 0

    # -- the interface -----------------------------------------------------------------------------

    def fit(self, frame: pd.DataFrame) -> Self:
        check_frame(frame)
        self.columns = list(frame.columns)
        self.step = grid_step(frame.index)
        self._fit(frame)
        self.calibrator.fit(self.raw_scores(frame))
        self.trained_on = {
            "start": frame.index.min().isoformat(),
            "end": frame.index.max().isoformat(),
            "points": int(frame.notna().to_numpy().sum()),
            "columns": self.columns,
        }
        return self

    def score(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Calibrated scores in [0, 1], same shape as ``frame``; NaN where the input is a gap."""
        check_frame(frame)
        # A column the detector was trained on but that sent nothing in this window is all gaps;
        # columns it never saw get no score.
        frame = frame.reindex(columns=self.columns)
        raw = self.raw_scores(frame)
        scores = self.calibrator.transform(raw)
        return scores.where(frame.notna())

    def save(self, directory: Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_native(directory)
        state = {
            "kind": self.kind,
            "config": self.config.to_dict(),
            "columns": self.columns,
            "step_seconds": None if self.step is None else self.step.total_seconds(),
            "calibrator": self.calibrator.to_dict(),
            "trained_on": self.trained_on,
            "state": self._state(),
        }
        (directory / STATE_FILE).write_text(json.dumps(state, indent=2, default=_json_default))
        return directory

    @classmethod
    def load(cls, directory: Path) -> Self:
        directory = Path(directory)
        state = json.loads((directory / STATE_FILE).read_text())
        if state["kind"] != cls.kind:
            raise ValueError(f"{directory}: holds a {state['kind']} detector, not {cls.kind}")
        detector = cls(cls.config_class.from_dict(state["config"]))
        detector.columns = list(state["columns"])
        if state["step_seconds"] is not None:
            detector.step = pd.Timedelta(seconds=state["step_seconds"])
        detector.calibrator = LikelihoodCalibrator.from_dict(state["calibrator"])
        detector.trained_on = state["trained_on"]
        detector._set_state(state["state"])
        detector._load_native(directory)
        return detector


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
