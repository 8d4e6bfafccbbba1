"""LSTM forecaster as an anomaly detector (see :mod:`.detector`); the catalogue imports the class
here."""

from monitoring_pipelines.ml.lstm.config import LstmConfig
from monitoring_pipelines.ml.lstm.detector import LstmDetector
from monitoring_pipelines.ml.lstm.network import MODEL_DIR

__all__ = ["MODEL_DIR", "LstmConfig", "LstmDetector"]
