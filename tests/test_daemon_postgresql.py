"""The daemon end to end with the Dagster instance storage and the warehouse on the PostgreSQL
server: the same test as tests/test_daemon.py's SQLite one."""

import pytest

from tests.test_daemon import backend_env
from tests.test_daemon import (
    test_a_dropped_file_pages_with_only_the_daemon_and_history_starts_nothing as page_once,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def backend(tmp_path):
    with backend_env("postgresql", tmp_path) as found:
        yield found


def test_a_dropped_file_pages_with_only_the_daemon_and_history_starts_nothing(backend):
    page_once(backend)
