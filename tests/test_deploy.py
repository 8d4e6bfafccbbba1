"""The production configuration in deploy/: the profile, the executor choice and the files the
stack starts from. The stack itself runs in tests/test_distributed.py (celery workers) and with
``make prod-up``."""

import re

import dagster as dg
import pytest
import yaml

from monitoring_pipelines.cli.common import prepare_home
from monitoring_pipelines.devservices import temporary_database
from monitoring_pipelines.settings import DEPLOY_DIR, load_settings

HEAVY = {"ingest_job", "training_job", "scoring_job"}


def test_the_prod_profile_fills_what_is_unset_from_deploy_prod_env():
    settings = load_settings(
        {"MONITORING_PROFILE": "prod", "MONITORING_WAREHOUSE_URL": "sqlite:////tmp/mine.db"}
    )
    checkout = DEPLOY_DIR.parent
    assert settings.executor == "celery"
    assert settings.celery_broker_url.startswith("pyamqp://")
    assert settings.mlflow_tracking_uri.startswith("http://")
    # Relative paths in the file are the checkout's, wherever the command runs from.
    assert settings.home == checkout / ".monitoring/prod/home"
    assert settings.dagster_home == checkout / ".monitoring/prod/dagster"
    # What the environment sets wins.
    assert settings.warehouse_url == "sqlite:////tmp/mine.db"
    assert load_settings({}).executor == "in_process"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"MONITORING_PROFILE": "staging"}, "MONITORING_PROFILE: unknown profile 'staging'"),
        ({"MONITORING_EXECUTOR": "dask"}, "MONITORING_EXECUTOR: 'dask' is not one of"),
    ],
)
def test_an_unknown_profile_or_executor_is_a_one_line_error(env, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_settings(env)


def test_celery_runs_the_heavy_jobs_and_the_sensor_starts_that_same_ingest_job(home, monkeypatch):
    from monitoring_pipelines.definitions import build_defs, celery_executor_config

    monkeypatch.setenv("MONITORING_EXECUTOR", "celery")
    monkeypatch.setenv("MONITORING_CELERY_BROKER_URL", "pyamqp://guest:secret@broker//")
    repo = build_defs().get_repository_def()
    executors = {job.name: job.executor_def.name for job in repo.get_all_jobs()}
    assert {name for name, kind in executors.items() if kind == "celery"} == HEAVY
    assert executors["stage_file_job"] == executors["delivery_job"] == "in_process"
    assert repo.get_sensor_def("staged_file_sensor").job_name == "ingest_job"
    assert repo.get_schedule_def("ingest_schedule").job_name == "ingest_job"
    # The broker's password stays in the environment: the job's config names the variable.
    config = celery_executor_config(load_settings())
    assert config["broker"] == {"env": "MONITORING_CELERY_BROKER_URL"}
    assert "secret" not in str(config)

    monkeypatch.delenv("MONITORING_EXECUTOR")
    repo = build_defs().get_repository_def()
    assert {job.executor_def.name for job in repo.get_all_jobs()} == {"in_process"}


def test_the_workers_config_is_the_executors():
    from monitoring_pipelines.definitions import CELERY_CONFIG_SOURCE

    workers = yaml.safe_load((DEPLOY_DIR / "celery.yaml").read_text())["execution"]["config"]
    assert workers["config_source"] == CELERY_CONFIG_SOURCE
    assert workers["broker"] == {"env": "MONITORING_CELERY_BROKER_URL"}
    assert workers["backend"] == "rpc://"


def test_the_procfile_starts_webserver_daemon_worker_mlflow_and_exporter():
    names = [
        line.split(":", 1)[0]
        for line in (DEPLOY_DIR / "Procfile").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert names == ["webserver", "daemon", "worker", "mlflow", "exporter"]


@pytest.mark.postgres
def test_the_deploy_dagster_yaml_is_an_instance_on_postgresql_the_cli_leaves_alone(
    tmp_path, monkeypatch
):
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").symlink_to(DEPLOY_DIR / "dagster.yaml")
    with temporary_database(prefix="mp_deploy") as url:
        monkeypatch.setenv("DAGSTER_PG_URL", url)
        monkeypatch.setenv("DAGSTER_STORAGE_DIR", str(tmp_path / "storage"))
        monkeypatch.setenv("DAGSTER_COMPUTE_LOGS_DIR", str(tmp_path / "logs"))
        monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
        monkeypatch.setenv("MONITORING_HOME", str(tmp_path / "home"))
        prepare_home(load_settings())
        assert (dagster_home / "dagster.yaml").is_symlink()
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
            assert instance.storage_directory() == str(tmp_path / "storage" / "storage")
