"""What every section gets and returns.

A section is one module with ``build(ctx, period) -> dict``. The dict is JSON-safe and holds
``figures``: the section's headline numbers (flat ``{name: number or None}``), which the report
compares with the previous period when the section's catalogue row says so.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from monitoring_pipelines.reports.config import ReportConfig
from monitoring_pipelines.reports.data import Scope
from monitoring_pipelines.reports.periods import Period
from monitoring_pipelines.warehouse import Warehouse


@dataclass
class Context:
    warehouse: Warehouse
    scope: Scope
    config: ReportConfig
    labels_path: Path
    # Reads the MLflow registry (see reports.registry); None: the models and forecast sections
    # say the registry was not read and the forecast is fitted from the metrics.
    registry: Any = None
    # Reads shared by sections within one build (e.g. the period's incidents).
    cache: dict = field(default_factory=dict)

    def cached(self, key, compute):
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]


def day_starts(period: Period) -> list[datetime]:
    """Midnights in the report timezone from the period's start to its end, both included."""
    return [period.start + timedelta(days=i) for i in range(period.days + 1)]


def local_times(values: pd.Series, period: Period) -> pd.Series:
    return pd.to_datetime(values, utc=True).dt.tz_convert(period.timezone)


def stats(minutes: list[float]) -> dict:
    """mean, median and p90 of durations in minutes (None without any)."""
    if not minutes:
        return {"count": 0, "mean": None, "median": None, "p90": None}
    arr = np.asarray(minutes, dtype="float64")
    return {
        "count": int(arr.size),
        "mean": round(float(arr.mean()), 1),
        "median": round(float(np.median(arr)), 1),
        "p90": round(float(np.percentile(arr, 90)), 1),
    }


def number(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if not np.isfinite(value) else value


def iso(value) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or pd.isna(value):
        return None
    return pd.Timestamp(value).isoformat()
