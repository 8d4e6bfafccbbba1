"""Failed runs per job from the Dagster instance's run storage, read at scrape time.

One grouped count over the run storage's runs table (SQLite, PostgreSQL and MySQL run storages
are all SQL), so the cost does not grow with the number of jobs. dagster is imported here only
when a scrape reads the instance.
"""

from pathlib import Path


def read_run_failures(dagster_home: Path) -> dict[str, int]:
    """``{job name: failed runs}`` of the instance in ``dagster_home``."""
    import dagster as dg
    import sqlalchemy as sa
    from dagster._core.storage.runs.schema import RunsTable

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        storage = instance.run_storage
        query = (
            sa.select(RunsTable.c.pipeline_name, sa.func.count())
            .where(RunsTable.c.status == dg.DagsterRunStatus.FAILURE.value)
            .group_by(RunsTable.c.pipeline_name)
        )
        with storage.connect() as conn:
            return {job: int(n) for job, n in conn.execute(query)}
