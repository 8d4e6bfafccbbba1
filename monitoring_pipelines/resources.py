"""Dagster resources: thin, configurable handles on the warehouse and the pipeline settings."""

import os
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from monitoring_pipelines.warehouse import Warehouse

if TYPE_CHECKING:
    from monitoring_pipelines.ml.registry import ModelRegistry


@cache
def _warehouse(url: str) -> Warehouse:
    # One engine (and connection pool) per process and URL, shared by every op in the run.
    return Warehouse(url)


class WarehouseResource(dg.ConfigurableResource):
    """The warehouse database: SQLite under MONITORING_HOME by default, PostgreSQL by URL."""

    url: str

    def get(self) -> Warehouse:
        return _warehouse(self.url)


class PipelineSettingsResource(dg.ConfigurableResource):
    """Where files land and how metrics are gridded and gated."""

    home: str
    drop_dir: str
    start_date: str
    tenants: list[str] = Field(default_factory=list)
    resolution_seconds: int = 300
    # Fraction of a partition's rows that may be quarantined before its checks block it.
    quality_tolerance: float = 0.01
    # Live days a retrained challenger is scored in shadow before its promotion check.
    shadow_days: int = 1
    # Where the UI's links to the home's files point (served by `monitoring-pipelines ui`).
    files_url: str = "http://127.0.0.1:3002"

    @property
    def labels_file(self) -> Path:
        """Label windows ``{series: [[start, end], ...]}`` used to validate models."""
        return Path(self.home) / "labels.json"

    @property
    def sources_file(self) -> Path:
        return Path(self.home) / "sources.yaml"

    @property
    def quality_dir(self) -> Path:
        return Path(self.home) / "quality"

    @property
    def earliest(self) -> datetime:
        return datetime.fromisoformat(self.start_date).replace(tzinfo=UTC)


@cache
def _registry(tracking_uri: str, artifact_root: str) -> "ModelRegistry":
    # One per process and store, so detectors loaded by alias are reused by every op of the run.
    from monitoring_pipelines.ml.registry import ModelRegistry

    return ModelRegistry(tracking_uri, Path(artifact_root))


class MlflowResource(dg.ConfigurableResource):
    """The MLflow tracking server or store and where artifacts land."""

    tracking_uri: str
    artifact_root: str

    def registry(self) -> "ModelRegistry":
        """The model registry on this store: log, promote, roll back and load detectors."""
        # Download progress bars are noise in run logs.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        return _registry(self.tracking_uri, self.artifact_root)


class AlertingResource(dg.ConfigurableResource):
    """The alerting policy (routing, silences, receivers) and where alert links point.

    Receiver secrets are not here: the policy names environment variables, read when sending."""

    home: str
    # Empty: MONITORING_HOME/alerting.yaml if it exists, else the embedded default policy.
    policy_file: str = ""
    dagster_url: str = "http://127.0.0.1:3000"

    def policy(self):
        from monitoring_pipelines.alerting.policy import load_policy

        return load_policy(self.policy_file or None, home=Path(self.home))
