"""Prophet as an anomaly detector (see :mod:`.detector`); the catalogue imports the class here."""

from monitoring_pipelines.ml.prophet_model.config import ProphetConfig
from monitoring_pipelines.ml.prophet_model.detector import ProphetDetector
from monitoring_pipelines.ml.prophet_model.forecast import FORECAST_COLUMNS
from monitoring_pipelines.ml.prophet_model.persistence import FORECAST_FILE, MODELS_DIR

__all__ = ["FORECAST_COLUMNS", "FORECAST_FILE", "MODELS_DIR", "ProphetConfig", "ProphetDetector"]
