"""Where each ingested source and each day x tenant partition stands: the records that make an
ingest crash-safe (see ``STAGED``/``INGESTED`` in :mod:`.schema`)."""

import json
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from monitoring_pipelines.warehouse.rows import utc_now
from monitoring_pipelines.warehouse.schema import INGESTED, STAGED, ingests, partition_states


@dataclass(frozen=True)
class IngestRecord:
    source: str
    fingerprint: str
    status: str
    rows_in: int
    staged: int
    quarantined: int
    partitions: tuple[str, ...]
    error: str | None = None
    run_id: str | None = None
    # Partitions to see gated before the ingest is done (defaults to ``partitions``).
    pending: tuple[str, ...] | None = None


@dataclass(frozen=True)
class PartitionState:
    version: int
    gated_version: int
    gridded_version: int
    blocked: bool

    @property
    def gated(self) -> bool:
        return self.gated_version >= self.version

    @property
    def settled(self) -> bool:
        return self.gated and (self.blocked or self.gridded_version >= self.version)


class IngestStates:
    """The ``ingests`` and ``partition_states`` tables (a part of :class:`Warehouse`)."""

    def record_ingest(self, record: IngestRecord, *, conn: sa.Connection | None = None) -> None:
        values = {
            "source": record.source,
            "fingerprint": record.fingerprint,
            "status": record.status,
            "rows_in": record.rows_in,
            "staged": record.staged,
            "quarantined": record.quarantined,
            "partitions": json.dumps(sorted(record.partitions)),
            "error": record.error,
            "run_id": record.run_id,
            "ingested_at": utc_now(),
            "pending": json.dumps(
                sorted(record.partitions if record.pending is None else record.pending)
            ),
        }
        with self._begin(conn) as conn:
            conn.execute(ingests.delete().where(ingests.c.source == record.source))
            conn.execute(ingests.insert(), [values])

    def mark_ingested(self, source: str, *, conn: sa.Connection | None = None) -> None:
        with self._begin(conn) as conn:
            conn.execute(
                ingests.update()
                .where(ingests.c.source == source, ingests.c.status == STAGED)
                .values(status=INGESTED)
            )

    # -- partition states --------------------------------------------------------------------

    def bump_partitions(self, keys: Iterable[str], *, conn: sa.Connection | None = None) -> None:
        """New rows landed for (or left) these partitions: they need gating and gridding again."""
        keys = sorted(set(keys))
        if not keys:
            return
        with self._begin(conn) as conn:
            known = {
                row[0]
                for row in conn.execute(
                    sa.select(partition_states.c.partition_key).where(
                        partition_states.c.partition_key.in_(keys)
                    )
                )
            }
            if known:
                conn.execute(
                    partition_states.update()
                    .where(partition_states.c.partition_key.in_(sorted(known)))
                    .values(version=partition_states.c.version + 1, updated_at=utc_now())
                )
            new = [k for k in keys if k not in known]
            if new:
                conn.execute(
                    partition_states.insert(),
                    [
                        {
                            "partition_key": k,
                            "version": 1,
                            "gated_version": 0,
                            "gridded_version": 0,
                            "blocked": False,
                            "updated_at": utc_now(),
                        }
                        for k in new
                    ],
                )

    def partition_states(
        self, keys: Iterable[str], *, conn: sa.Connection | None = None
    ) -> dict[str, PartitionState]:
        keys = sorted(set(keys))
        out: dict[str, PartitionState] = {}
        with self._begin(conn) as conn:
            for i in range(0, len(keys), 500):
                query = sa.select(partition_states).where(
                    partition_states.c.partition_key.in_(keys[i : i + 500])
                )
                for row in conn.execute(query):
                    out[row.partition_key] = PartitionState(
                        int(row.version),
                        int(row.gated_version),
                        int(row.gridded_version),
                        bool(row.blocked),
                    )
        return out

    def record_gated(
        self, key: str, version: int, blocked: bool, *, conn: sa.Connection | None = None
    ) -> None:
        """The gate judged ``key`` at ``version``; a version staged since stays pending."""
        self._record_state(key, gated_version=version, blocked=blocked, conn=conn)

    def record_gridded(self, key: str, version: int, *, conn: sa.Connection | None = None) -> None:
        self._record_state(key, gridded_version=version, conn=conn)

    def _record_state(self, key: str, *, conn: sa.Connection | None, **values: object) -> None:
        with self._begin(conn) as conn:
            updated = conn.execute(
                partition_states.update()
                .where(partition_states.c.partition_key == key)
                .values(**values, updated_at=utc_now())
            )
            if updated.rowcount == 0:
                # A partition gated without staging (a configured source's pull, a test).
                row = {"version": 0, "gated_version": 0, "gridded_version": 0, "blocked": False}
                conn.execute(
                    partition_states.insert(),
                    [{**row, **values, "partition_key": key, "updated_at": utc_now()}],
                )

    def settle_ingests(self, sources: Iterable[str] | None = None) -> list[str]:
        """Mark "ingested" every staged ingest whose pending partitions are all settled; return
        their sources. Safe to call from any process at any time."""
        query = sa.select(ingests.c.source, ingests.c.pending, ingests.c.partitions).where(
            ingests.c.status == STAGED
        )
        if sources is not None:
            query = query.where(ingests.c.source.in_(sorted(set(sources))))
        with self.engine.connect() as conn:
            staged = [
                (r.source, json.loads(r.pending or r.partitions)) for r in conn.execute(query)
            ]
        settled = []
        for source, pending in staged:
            states = self.partition_states(pending)
            if all(k in states and states[k].settled for k in pending):
                self.mark_ingested(source)
                settled.append(source)
        return settled

    # -- reads -----------------------------------------------------------------------------------

    def read_ingest(self, source: str) -> IngestRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(ingests).where(ingests.c.source == source)).first()
        if row is None:
            return None
        return IngestRecord(
            source=row.source,
            fingerprint=row.fingerprint,
            status=row.status,
            rows_in=row.rows_in,
            staged=row.staged,
            quarantined=row.quarantined,
            partitions=tuple(json.loads(row.partitions)),
            error=row.error,
            run_id=row.run_id,
            pending=tuple(json.loads(row.pending)) if row.pending else None,
        )
