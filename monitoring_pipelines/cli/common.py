"""What every command shares: the one-line error, quiet run config, and preparing the home."""

import os

from monitoring_pipelines.settings import Settings

# Runs are fully logged in the Dagster instance; the terminal only gets the summary.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


class CliError(Exception):
    """A one-line reason for a non-zero exit."""


def prepare_home(settings: Settings) -> None:
    settings.ensure_dirs()
    os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home))
    dagster_yaml = settings.dagster_home / "dagster.yaml"
    if not dagster_yaml.exists():
        dagster_yaml.write_text("telemetry:\n  enabled: false\n")


def prepare_mlflow(settings: Settings) -> None:
    """Create the MLflow store once, before worker processes train in parallel.

    Opening a new embedded store runs its schema migrations; two processes doing that at the same
    moment collide ("duplicate column"), so the parent does it first.
    """
    import mlflow

    mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri).search_experiments(max_results=1)
