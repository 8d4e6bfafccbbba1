"""Shared fixtures: a private MONITORING_HOME per test and warehouses on SQLite and PostgreSQL.

PostgreSQL tests run against the real server on 127.0.0.1:5432 (started here if it is down), each
session in a database of its own that is dropped at the end.
"""

from pathlib import Path

import pytest
import sqlalchemy as sa

from monitoring_pipelines.devservices import ServiceUnavailable, temporary_database


@pytest.fixture(autouse=True)
def _no_closed_dagster_instance_behind():
    """A Dagster instance registers its definitions-state storage in a context variable that it
    leaves set when it is not closed; a later test that loads definitions would then reach a
    garbage-collected instance ("Attempted to resolve undefined DagsterInstance weakref") or one
    that belongs to another test. Each test starts without one."""
    from dagster._core.storage.defs_state import base

    base._current_storage.set(None)
    yield


@pytest.fixture(scope="session")
def pg_url():
    """URL of a fresh PostgreSQL database for this test session, dropped afterwards."""
    try:
        with temporary_database() as url:
            yield url
    except ServiceUnavailable as exc:
        pytest.fail(str(exc))


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A private MONITORING_HOME; nothing a test writes lands outside it."""
    home = tmp_path / "home"
    monkeypatch.setenv("MONITORING_HOME", str(home))
    for var in ("MONITORING_WAREHOUSE_URL", "MLFLOW_TRACKING_URI", "DAGSTER_HOME"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        # A bare postgresql:// URL, as users write it: SQLAlchemy 2.1 picks psycopg 3 for it.
        pytest.param("postgresql-bare", marks=pytest.mark.postgres),
    ]
)
def warehouse_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'warehouse.db'}"
    url = request.getfixturevalue("pg_url")
    if request.param == "postgresql-bare":
        url = url.replace("postgresql+psycopg2://", "postgresql://")
    engine = sa.create_engine(url)
    from monitoring_pipelines.warehouse import metadata

    metadata.drop_all(engine)
    engine.dispose()
    return url


@pytest.fixture
def warehouse(warehouse_url):
    from monitoring_pipelines.warehouse import Warehouse

    wh = Warehouse(warehouse_url)
    yield wh
    wh.dispose()
