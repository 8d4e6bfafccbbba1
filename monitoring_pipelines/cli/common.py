"""What every command shares: the one-line error, quiet run config, and preparing the home."""

import os

from monitoring_pipelines.settings import Settings

# Runs are fully logged in the Dagster instance; the terminal only gets the summary.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


class CliError(Exception):
    """A one-line reason for a non-zero exit."""


# Dagster's run monitoring (the daemon) marks a run whose worker died as failed instead of
# leaving it STARTED forever; the CLI's in-process runs are checked by runner.fail_dead_runs.
# Runs the daemon launches wait in a queue: at most two at once (one per core of a small machine;
# raise it on a bigger one) and one training run at a time, so a backlog drains in order instead
# of starting every run together.
DAGSTER_YAML = """telemetry:
  enabled: false
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  max_resume_run_attempts: 0
  poll_interval_seconds: 60
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 2
    dequeue_interval_seconds: 2
    tag_concurrency_limits:
      - key: pipeline
        value: training
        limit: 1
"""
# Files this command wrote before: replaced by the current one (a file edited by hand is kept).
_OLD_DAGSTER_YAMLS = (
    "telemetry:\n  enabled: false\n",
    DAGSTER_YAML[: DAGSTER_YAML.index("run_coordinator:")],
)
# Which process runs a CLI run: a run left STARTED by a process that is gone is failed.
PROCESS_TAG = "monitoring/process"


def prepare_home(settings: Settings) -> None:
    settings.ensure_dirs()
    os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home))
    dagster_yaml = settings.dagster_home / "dagster.yaml"
    if not dagster_yaml.exists() or dagster_yaml.read_text() in _OLD_DAGSTER_YAMLS:
        dagster_yaml.write_text(DAGSTER_YAML)


def prepare_mlflow(settings: Settings) -> None:
    """Create the MLflow store once, before worker processes train in parallel.

    Opening a new embedded store runs its schema migrations; two processes doing that at the same
    moment collide ("duplicate column"), so the parent does it first.
    """
    import mlflow

    mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri).search_experiments(max_results=1)
