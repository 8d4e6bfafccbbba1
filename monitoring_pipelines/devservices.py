"""Local services for tests and benchmarks: make sure PostgreSQL answers, and lend a throwaway
database on it. Not used by the pipeline itself."""

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator

import sqlalchemy as sa

PG_ADMIN_URL = os.environ.get(
    "MONITORING_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)


class ServiceUnavailable(RuntimeError):
    pass


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def ensure_postgres(admin_url: str = PG_ADMIN_URL) -> None:
    """Start the machine's PostgreSQL cluster if it does not answer."""
    url = sa.engine.make_url(admin_url)
    host, port = url.host or "127.0.0.1", url.port or 5432
    if answers(host, port):
        return
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions or shutil.which("pg_ctlcluster") is None:
        raise ServiceUnavailable(
            f"PostgreSQL is not answering on {host}:{port} and cannot be started"
        )
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"], check=False
    )
    for _ in range(60):
        if answers(host, port):
            return
        time.sleep(0.5)
    raise ServiceUnavailable(f"PostgreSQL did not start on {host}:{port}")


@contextlib.contextmanager
def temporary_database(admin_url: str = PG_ADMIN_URL, prefix: str = "mp_test") -> Iterator[str]:
    """A fresh PostgreSQL database, dropped on exit; yields its URL."""
    ensure_postgres(admin_url)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def ensure_rabbitmq(host: str = "127.0.0.1", port: int = 5672) -> None:
    """Start the machine's RabbitMQ (``rabbitmq-server -detached``) if it does not answer."""
    if answers(host, port):
        return
    if shutil.which("rabbitmq-server") is None:
        raise ServiceUnavailable(
            f"RabbitMQ is not answering on {host}:{port} and cannot be started"
        )
    subprocess.run(["rabbitmq-server", "-detached"], check=False)
    for _ in range(120):
        if answers(host, port):
            return
        time.sleep(0.5)
    raise ServiceUnavailable(f"RabbitMQ did not start on {host}:{port}")


def ensure_database(url: str, admin_url: str = PG_ADMIN_URL) -> None:
    """Create the database ``url`` names on the admin URL's server if it does not exist."""
    ensure_postgres(admin_url)
    name = sa.engine.make_url(url).database
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            found = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).first()
            if not found:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()


@contextlib.contextmanager
def temporary_vhost(prefix: str = "mp_test", host: str = "127.0.0.1", port: int = 5672):
    """A fresh RabbitMQ virtual host for guest, deleted on exit; yields its broker URL. Workers
    and executors on it see no other test's (or the local production stack's) tasks."""
    ensure_rabbitmq(host, port)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", name], check=True, capture_output=True)
    try:
        subprocess.run(
            ["rabbitmqctl", "-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
            check=True,
            capture_output=True,
        )
        yield f"pyamqp://guest:guest@{host}:{port}/{name}"
    finally:
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_vhost", name], check=False, capture_output=True
        )
