"""Shared fixtures: a private MONITORING_HOME per test and warehouses on SQLite and PostgreSQL.

PostgreSQL tests run against the real server on 127.0.0.1:5432 (started here if it is down), each
session in a database of its own that is dropped at the end.
"""

import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

PG_ADMIN_URL = os.environ.get(
    "MONITORING_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def ensure_postgres() -> None:
    if _answers("127.0.0.1", 5432):
        return
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions or shutil.which("pg_ctlcluster") is None:
        pytest.fail("PostgreSQL is not answering on 127.0.0.1:5432 and cannot be started here")
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"], check=False
    )
    for _ in range(60):
        if _answers("127.0.0.1", 5432):
            return
        time.sleep(0.5)
    pytest.fail("PostgreSQL did not start on 127.0.0.1:5432")


@pytest.fixture(scope="session")
def pg_url():
    """URL of a fresh PostgreSQL database for this test session, dropped afterwards."""
    ensure_postgres()
    name = f"mp_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A private MONITORING_HOME; nothing a test writes lands outside it."""
    home = tmp_path / "home"
    monkeypatch.setenv("MONITORING_HOME", str(home))
    for var in ("MONITORING_WAREHOUSE_URL", "MLFLOW_TRACKING_URI", "DAGSTER_HOME"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def warehouse_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'warehouse.db'}"
    url = request.getfixturevalue("pg_url")
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
