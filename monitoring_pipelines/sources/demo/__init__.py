"""A seeded, fully deterministic demo of the streaming platform's operational metrics.

The demo has to exercise everything downstream: the quality gate (bad rows and one broken
partition), the warehouse (gaps, duplicates), the detectors and their backtest (labelled incidents
of every kind on top of realistic seasonal, correlated, noisy series). Everything is derived from
``DemoConfig.seed``, so the same config always gives byte-identical files.

Label windows are closed intervals: ``[first, last]`` are the timestamps of the first and the
last sample an incident modified, as UTC ISO-8601 strings. The labels hold every generated series,
with an empty list for the ones no incident touched, so a backtest can tell "labelled normal" from
"unknown".
"""

from monitoring_pipelines.sources.demo.build import generate, write_demo
from monitoring_pipelines.sources.demo.config import (
    BAD_ROW_PROBLEMS,
    DEFAULT_CONFIG,
    INCIDENT_KINDS,
    SERVICE_METRICS,
    TS_FORMAT,
    DemoConfig,
    DemoData,
    demo_period,
)

__all__ = [
    "BAD_ROW_PROBLEMS",
    "DEFAULT_CONFIG",
    "INCIDENT_KINDS",
    "SERVICE_METRICS",
    "TS_FORMAT",
    "DemoConfig",
    "DemoData",
    "demo_period",
    "generate",
    "write_demo",
]
