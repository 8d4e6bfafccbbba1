"""The chaos test's steps that have no CLI command of their own, run as separate processes
(``python -m tests.chaos.steps STEP ...``) so the test can kill them: training one tenant's
z-score detector and alert policy, scoring a range of days, raising a range of days' incidents,
and delivering the outbox with a short lease (so a killed delivery's rows come back quickly)."""

import sys

import dagster as dg

from monitoring_pipelines.cli.common import prepare_home
from monitoring_pipelines.cli.runner import run_partition
from monitoring_pipelines.settings import load_settings


def train(tenant: str) -> None:
    from monitoring_pipelines.assets.scoring import detection_policy
    from monitoring_pipelines.assets.training import MODEL_ASSETS
    from monitoring_pipelines.definitions import build_defs

    defs = build_defs()
    result = dg.materialize(
        [MODEL_ASSETS["zscore"], detection_policy],
        partition_key=tenant,
        instance=dg.DagsterInstance.get(),
        resources=defs.resources,
        raise_on_error=False,
    )
    if not result.success:
        raise SystemExit(f"training {tenant} failed")


def run(job: str, key: str) -> None:
    _, _, failure, _ = run_partition((job, key))
    if failure:
        raise SystemExit(f"{job} {key}: {failure}")


def score(first: str, last: str, tenant: str) -> None:
    """One ranged run, as a backfill scores a tenant's days."""
    run("scoring_job", f"{first}|{tenant}...{last}|{tenant}")


def alert(first: str, last: str, tenant: str) -> None:
    """One run per day, as the alerting asset takes one tenant-day."""
    import pandas as pd

    for day in pd.date_range(first, last, freq="D"):
        run("alerting_job", f"{day:%Y-%m-%d}|{tenant}")


def deliver() -> None:
    from monitoring_pipelines.alerting.policy import load_policy
    from monitoring_pipelines.alerting.service import deliver as deliver_outbox
    from monitoring_pipelines.warehouse import Warehouse

    settings = load_settings()
    policy = load_policy(settings.alerting_file, home=settings.home)
    warehouse = Warehouse(settings.warehouse_url)
    report = deliver_outbox(warehouse, policy, lease_seconds=2.0)
    warehouse.dispose()
    print(f"sent {report.sent}")


if __name__ == "__main__":
    prepare_home(load_settings())
    step, *args = sys.argv[1:]
    {"train": train, "score": score, "alert": alert, "deliver": deliver}[step](*args)
