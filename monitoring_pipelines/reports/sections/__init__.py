"""The report sections, one module each, and their catalogue: adding a section is one module and
one row here (plus its template block and catalog keys)."""

from collections.abc import Callable
from dataclasses import dataclass

from monitoring_pipelines.reports.sections import (
    charts,
    data_quality,
    detection,
    forecast,
    health,
    models,
    operations,
)


@dataclass(frozen=True)
class SectionSpec:
    name: str
    build: Callable
    # Whether its figures are compared with the previous period's.
    compare: bool


SECTIONS: tuple[SectionSpec, ...] = (
    SectionSpec("operations", operations.build, True),
    SectionSpec("health", health.build, True),
    SectionSpec("detection", detection.build, True),
    SectionSpec("data_quality", data_quality.build, True),
    SectionSpec("models", models.build, True),
    SectionSpec("forecast", forecast.build, False),
    SectionSpec("charts", charts.build, False),
)
