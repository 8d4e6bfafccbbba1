"""Erasing a tenant: every row, file, run, partition and model of one tenant, nothing of another.

:func:`purge_tenant` first finds everything of the tenant (a dry run stops there and says what it
found), then removes it store by store and appends one ``tenant.purge`` entry with the counts
per store to the audit trail (the audit trail itself is kept: it is the record that the erasure
happened). Every match is exact: a column equal to the tenant, the tenant part of a partition key
(``date|tenant``) equal to it, a folder whose decoded name is it, a registered model named
``anomaly-<kind>-<tenant>``; never a prefix or a LIKE pattern, so purging ``acme`` leaves
``acme2`` and ``acme-eu`` whole.

Stores: warehouse tables with a ``tenant`` column, partition states and ingests (a file of only
this tenant's partitions is forgotten and, when it lies in the drop folder, deleted; a file that
also holds other tenants is kept and listed under ``mixed_files``); quality pages, reports, file
receivers' JSON lines and label windows; in Dagster the tenant's dynamic partition, its runs
and the asset materializations of its partitions; in MLflow its registered models (with
their versions), its training runs and their artifacts, and the downloaded model cache.
"""

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from monitoring_pipelines.settings import Settings
from monitoring_pipelines.warehouse import (
    Warehouse,
    audit,
    ingests,
    metadata,
    partition_states,
    quarantine,
)


@dataclass
class PurgeReport:
    tenant: str
    dry_run: bool
    counts: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    mixed_files: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        verb = "would remove" if self.dry_run else "removed"
        out = [f"{self.tenant}: {verb}:"]
        out += [f"  {name}: {n}" for name, n in sorted(self.counts.items()) if n]
        if not any(self.counts.values()):
            out.append("  nothing (no data of this tenant found)")
        out += [f"  kept, also holds other tenants: {s}" for s in self.mixed_files]
        return out


def _of_tenant(key: str, tenant: str) -> bool:
    """A partition key ``date|tenant`` (or a bare tenant key) belongs to ``tenant``."""
    return key.split("|", 1)[-1] == tenant


def _warehouse(wh: Warehouse, tenant: str, report: PurgeReport, drop_dir: Path) -> None:
    tables = [t for t in metadata.sorted_tables if "tenant" in t.c and t.name != "audit"]
    with wh.transaction() as conn:
        for table in tables:
            where = table.c.tenant == tenant
            n = conn.execute(sa.select(sa.func.count()).select_from(table).where(where)).scalar()
            report.counts[f"warehouse.{table.name}"] = int(n)
            if not report.dry_run:
                conn.execute(table.delete().where(where))
        keys = [
            k
            for k in conn.execute(sa.select(partition_states.c.partition_key)).scalars()
            if _of_tenant(k, tenant)
        ]
        report.counts["warehouse.partition_states"] = len(keys)
        if not report.dry_run:
            for i in range(0, len(keys), 500):
                conn.execute(
                    partition_states.delete().where(
                        partition_states.c.partition_key.in_(keys[i : i + 500])
                    )
                )
        _ingests(conn, tenant, report, drop_dir)


def _ingests(conn: sa.Connection, tenant: str, report: PurgeReport, drop_dir: Path) -> None:
    """Ingests of only this tenant's partitions are forgotten (their file in the drop folder
    deleted); those that also touched other tenants lose this tenant's partition keys."""
    forgotten = files = 0
    for row in conn.execute(sa.select(ingests)).all():
        parts = json.loads(row.partitions or "[]")
        pending = json.loads(row.pending) if row.pending else None
        mine = [k for k in parts + (pending or []) if _of_tenant(k, tenant)]
        if not mine:
            continue
        others = [k for k in parts + (pending or []) if not _of_tenant(k, tenant)]
        if others:
            report.mixed_files.append(row.source)
            if not report.dry_run:
                conn.execute(
                    ingests.update()
                    .where(ingests.c.source == row.source)
                    .values(
                        partitions=json.dumps([k for k in parts if not _of_tenant(k, tenant)]),
                        pending=None
                        if pending is None
                        else json.dumps([k for k in pending if not _of_tenant(k, tenant)]),
                    )
                )
            continue
        forgotten += 1
        # Rows refused while reading the file may carry no tenant: they go with their file.
        orphans = (quarantine.c.source == row.source) & quarantine.c.tenant.is_(None)
        n = conn.execute(sa.select(sa.func.count()).select_from(quarantine).where(orphans))
        report.counts["warehouse.quarantine"] += int(n.scalar())
        if not report.dry_run:
            conn.execute(quarantine.delete().where(orphans))
        path = (drop_dir / row.source).resolve()
        if path.is_file() and path.is_relative_to(drop_dir.resolve()):
            report.files.append(path)
            files += 1
        if not report.dry_run:
            conn.execute(ingests.delete().where(ingests.c.source == row.source))
    report.counts["warehouse.ingests"] = forgotten
    report.counts["files.drop"] = files


def _home_files(settings: Settings, tenant: str, report: PurgeReport) -> None:
    """Quality pages, reports and cached models of the tenant (exact folder names)."""
    from monitoring_pipelines.ml.catalogue import KINDS
    from monitoring_pipelines.ml.registry import registered_model_name
    from monitoring_pipelines.quality.report import folder_name
    from monitoring_pipelines.reports.service import tenant_dir

    found = {"quality": [], "reports": [], "model_cache": []}
    if settings.quality_dir.is_dir():
        for folder in settings.quality_dir.iterdir():
            day = folder.name.split("_", 1)[0]
            if folder.name == folder_name(f"{day}|{tenant}"):
                found["quality"].append(folder)
    found["reports"] = sorted(settings.reports_dir.glob(f"*/*/tenants/{tenant_dir(tenant)}"))
    names = {registered_model_name(kind, tenant) for kind in KINDS}
    cache = settings.home / "model-cache"
    if cache.is_dir():
        found["model_cache"] = sorted(p for p in cache.glob("*/*") if p.name in names)
    for store, paths in found.items():
        report.counts[f"files.{store}"] = len(paths)
        report.files.extend(paths)


def _remove_files(report: PurgeReport) -> None:
    for path in report.files:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _json_lines(path: Path, tenant: str, report: PurgeReport, store: str) -> None:
    """Drop the lines of a JSON-lines file whose ``tenant`` is the tenant."""
    if not path.is_file():
        return
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        try:
            mine = json.loads(line).get("tenant") == tenant
        except (ValueError, AttributeError):
            mine = False
        dropped += mine
        if not mine:
            kept.append(line)
    report.counts[store] = report.counts.get(store, 0) + dropped
    if dropped and not report.dry_run:
        temporary = path.with_suffix(path.suffix + ".purge")
        temporary.write_text("".join(kept), encoding="utf-8")
        temporary.replace(path)


def _notification_files_and_labels(settings: Settings, tenant: str, report: PurgeReport) -> None:
    from monitoring_pipelines.alerting.policy import load_policy
    from monitoring_pipelines.alerting.receivers.file import FileReceiver
    from monitoring_pipelines.alerting.service import receivers

    policy = load_policy(settings.alerting_file, home=settings.home)
    for receiver in receivers(policy).values():
        if isinstance(receiver, FileReceiver):
            _json_lines(receiver.target, tenant, report, "files.notification_lines")
    labels_file = settings.home / "labels.json"
    report.counts["files.label_series"] = 0
    if labels_file.is_file():
        labels = json.loads(labels_file.read_text())
        mine = [k for k in labels if k.split("/", 1)[0] == tenant]
        report.counts["files.label_series"] = len(mine)
        if mine and not report.dry_run:
            kept = {k: v for k, v in labels.items() if k not in mine}
            labels_file.write_text(json.dumps(kept, indent=2) + "\n")


def _dagster(tenant: str, report: PurgeReport) -> None:
    """The tenant's dynamic partition, its runs (by partition tags) and the materializations
    of its partitions, in the instance of ``DAGSTER_HOME``."""
    import dagster as dg
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_START_TAG

    from monitoring_pipelines.partitions import TENANTS

    instance = dg.DagsterInstance.get()
    try:
        known = tenant in instance.get_dynamic_partitions(TENANTS)
        report.counts["dagster.tenant_partition"] = int(known)
        runs = [
            r.run_id
            for r in instance.get_runs()
            if any(
                _of_tenant(r.tags.get(tag, ""), tenant) and r.tags.get(tag)
                for tag in ("dagster/partition", "dagster/partition/tenant")
            )
            or _of_tenant(r.tags.get(ASSET_PARTITION_RANGE_START_TAG, "|"), tenant)
        ]
        report.counts["dagster.runs"] = len(runs)
        wiped = {}
        for key in instance.get_asset_keys():
            mine = [k for k in instance.get_materialized_partitions(key) if _of_tenant(k, tenant)]
            if mine:
                wiped[key] = mine
        report.counts["dagster.materialized_partitions"] = sum(len(v) for v in wiped.values())
        if report.dry_run:
            return
        for run_id in runs:  # their events, materializations included, go with them
            instance.delete_run(run_id)
        for key in wiped:
            left = [k for k in instance.get_materialized_partitions(key) if _of_tenant(k, tenant)]
            if left:
                _wipe_partitions(instance, key, left)
        if known:
            instance.delete_dynamic_partition(TENANTS, tenant)
    finally:
        instance.dispose()


def _wipe_partitions(instance, key, partitions: list[str]) -> None:
    """Forget the events of these partitions of an asset that no deleted run held (reported
    without a run, or from a run that also covered other tenants)."""
    try:
        instance.wipe_asset_partitions(key, partitions)
        return
    except NotImplementedError:
        pass
    # Dagster 1.13's SQL event logs (SQLite, PostgreSQL) do not implement the partition wipe:
    # delete the partitions' events from the index (and the run-less shard) directly.
    from dagster._core.instance.utils import RUNLESS_RUN_ID
    from dagster._core.storage.event_log.schema import SqlEventLogStorageTable as events

    storage = instance.event_log_storage
    where = (events.c.asset_key == key.to_string(), events.c.partition.in_(partitions))
    with storage.index_connection() as conn:
        conn.execute(events.delete().where(*where))
    with storage.run_connection(RUNLESS_RUN_ID) as conn:
        conn.execute(events.delete().where(*where))
    storage.wipe_asset_cached_status(key)


def _mlflow(settings: Settings, tenant: str, report: PurgeReport) -> None:
    """The tenant's registered models (every version), its runs and their local artifacts."""
    from mlflow.exceptions import MlflowException

    from monitoring_pipelines.ml.catalogue import KINDS
    from monitoring_pipelines.ml.registry import ModelRegistry, registered_model_name

    client = ModelRegistry(settings.mlflow_tracking_uri, settings.home / "mlartifacts").client()
    models, versions = [], 0
    for kind in KINDS:
        name = registered_model_name(kind, tenant)
        try:
            versions += len(client.search_model_versions(f"name = '{name}'"))
            client.get_registered_model(name)
        except MlflowException:
            continue
        models.append(name)
    experiments = [e.experiment_id for e in client.search_experiments()]
    quoted = tenant.replace("'", "\\'")
    runs = client.search_runs(experiments, f"tags.tenant = '{quoted}'") if experiments else []
    runs = [r for r in runs if r.data.tags.get("tenant") == tenant]
    report.counts["mlflow.registered_models"] = len(models)
    report.counts["mlflow.model_versions"] = versions
    report.counts["mlflow.runs"] = len(runs)
    if report.dry_run:
        return
    for name in models:
        client.delete_registered_model(name)
    run_ids = {r.info.run_id for r in runs}
    logged = client.search_logged_models(experiments) if experiments and run_ids else []
    for model in (m for m in logged if m.source_run_id in run_ids):
        client.delete_logged_model(model.model_id)
        _remove_local(model.artifact_location, model.model_id)
    for run in runs:
        client.delete_run(run.info.run_id)
        _remove_local(run.info.artifact_uri, run.info.run_id)


def _remove_local(artifact_uri: str | None, owner: str) -> None:
    """Delete a run's or logged model's local artifact folder (``.../<id>/artifacts``)."""
    from urllib.parse import unquote, urlparse

    uri = urlparse(artifact_uri or "")
    if uri.scheme not in ("", "file"):
        return
    folder = Path(unquote(uri.path)).parent
    if folder.is_dir() and folder.name == owner:
        shutil.rmtree(folder)


def purge_tenant(
    settings: Settings, tenant: str, *, by: str, dry_run: bool, reason: str | None = None
) -> PurgeReport:
    """Find (``dry_run``) or remove everything of ``tenant``; see the module docstring."""
    if not tenant or not tenant.strip():
        raise ValueError("say which tenant to purge")
    report = PurgeReport(tenant=tenant, dry_run=dry_run)
    warehouse = Warehouse(settings.warehouse_url)
    try:
        _warehouse(warehouse, tenant, report, settings.drop_dir)
        _home_files(settings, tenant, report)
        _notification_files_and_labels(settings, tenant, report)
        _dagster(tenant, report)
        _mlflow(settings, tenant, report)
        if not dry_run:
            _remove_files(report)
            audit.record(
                warehouse.engine,
                actor=by,
                action=audit.TENANT_PURGE,
                tenant=tenant,
                target=f"tenant {tenant}",
                after={"removed": report.counts, "kept_mixed_files": report.mixed_files},
                reason=reason or "tenant erasure",
            )
    finally:
        warehouse.dispose()
    return report
