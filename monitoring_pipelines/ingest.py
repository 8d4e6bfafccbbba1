"""Stage a dropped file into the landing table, the first step of every file ingest.

Staging streams the file (memory bounded by the chunk size) and, in ONE transaction, writes its
parsed rows to ``landing`` and its unreadable rows to ``quarantine`` (both replacing whatever the
same source wrote before), bumps the version of every partition it touches now or touched
before, and records the ingest as "staged" with its fingerprint. A crash while staging leaves
the previous state whole. The quality gate then runs over those partitions in the
``raw_metrics`` asset; only when each of them is gated (and gridded, or recorded as blocked) is
the ingest marked "ingested", and only "ingested" content is skipped as unchanged.
Invariant: ``rows_in == staged + quarantined``. Personal tag values are pseudonymised
(:mod:`.sources.pseudonyms`) before any row is written.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from monitoring_pipelines.faults import crash_point
from monitoring_pipelines.sources import pseudonyms
from monitoring_pipelines.sources.files import (
    InputFileError,
    file_fingerprint,
    read_metric_file,
    source_name,
)
from monitoring_pipelines.sources.records import empty_quarantine
from monitoring_pipelines.warehouse import FAILED, INGESTED, STAGED, IngestRecord, Warehouse

# Rows this far ahead of the clock are a producer's clock bug, not data.
FUTURE_TOLERANCE = timedelta(days=1)


@dataclass(frozen=True)
class StageResult:
    source: str
    fingerprint: str
    rows_in: int
    staged: int
    quarantined: int
    # (date "YYYY-MM-DD", tenant) pairs that received rows, sorted.
    partitions: tuple[tuple[str, str], ...]
    skipped: bool = False
    tenants: tuple[str, ...] = field(default=())
    # Partitions to gate: those touched now and those the previous content touched.
    pending: tuple[tuple[str, str], ...] = field(default=())
    # The content was staged before but its partitions were never all gated (a crash): staging
    # is not repeated, the gate is.
    resumed: bool = False
    # Rows whose timestamp had sub-microsecond digits, stored cut to the microsecond.
    ts_truncated: int = 0


def partition_key(date: str, tenant: str) -> str:
    """Dagster's key for a (date, tenant) multi-partition: dimensions sorted by name."""
    return f"{date}|{tenant}"


def _split(keys) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(tuple(k.split("|", 1)) for k in keys))


def stage_file(
    warehouse: Warehouse,
    path: Path,
    *,
    root: Path | None = None,
    layout_root: Path | None = None,
    earliest: datetime,
    now: datetime | None = None,
    force: bool = False,
    run_id: str | None = None,
) -> StageResult:
    """Stage ``path`` unless the same content was already staged (then ``skipped``).

    ``root`` names the source (the drop folder); a single-series file's tenant, service and
    metric come from its path below ``layout_root`` (``root`` when not given).
    Rows before ``earliest`` (the first day partition) or more than a day in the future are
    quarantined with the reason, so that nothing is silently dropped.
    Raises :class:`InputFileError` (one line) for a file that cannot be read at all; the failure is
    recorded on the ingest so the sensor does not retry the same content forever.

    Longer than our usual functions on purpose: the file is read as a stream that the one
    transaction writing ``landing``, the quarantine, the partitions and the ingest record consumes,
    and the stream's generator counts rows, rejects and partitions into locals that transaction
    then records; cut apart, those counters would travel between functions.
    """
    pseudonymiser = pseudonyms.from_environment()  # refuses before anything is read or written
    path = Path(path)
    source = source_name(path, root)
    now = now or datetime.now(UTC)
    try:
        fingerprint = file_fingerprint(path)
    except InputFileError as exc:
        warehouse.record_ingest(
            IngestRecord(source, "", FAILED, 0, 0, 0, (), error=str(exc), run_id=run_id)
        )
        raise
    previous = warehouse.read_ingest(source)
    same = previous is not None and previous.fingerprint == fingerprint and not force
    if same and previous.status in (STAGED, INGESTED):
        return StageResult(
            source=source,
            fingerprint=fingerprint,
            rows_in=previous.rows_in,
            staged=previous.staged,
            quarantined=previous.quarantined,
            partitions=_split(previous.partitions),
            skipped=previous.status == INGESTED,
            tenants=tuple(sorted({k.split("|", 1)[1] for k in previous.partitions})),
            pending=_split(previous.pending or previous.partitions),
            resumed=previous.status == STAGED,
        )

    rejected: list[pd.DataFrame] = []
    partitions: set[tuple[str, str]] = set()
    counts = {"rows_in": 0, "ts_truncated": 0}
    lower = pd.Timestamp(earliest)
    upper = pd.Timestamp(now) + FUTURE_TOLERANCE

    def accepted_chunks() -> Iterator[pd.DataFrame]:
        for chunk in read_metric_file(path, root=root, layout_root=layout_root):
            records = pseudonyms.apply(pseudonymiser, chunk.records)
            counts["rows_in"] += len(records) + len(chunk.rejected)
            if len(chunk.rejected):
                rejected.append(pseudonyms.apply_rejected(pseudonymiser, chunk.rejected))
            outside = (records["ts"] < lower) | (records["ts"] >= upper)
            if outside.any():
                rejected.append(_out_of_window(records[outside], lower, upper))
                records = records[~outside]
            counts["ts_truncated"] += _sub_microsecond(records["ts"])
            days = records["ts"].to_numpy("datetime64[D]")
            pairs = pd.DataFrame({"d": days, "t": records["tenant"].to_numpy()}).drop_duplicates()
            partitions.update(
                zip(
                    pd.DatetimeIndex(pairs["d"]).strftime("%Y-%m-%d"),
                    pairs["t"],
                    strict=True,
                )
            )
            yield records
            crash_point("stage")

    old_keys = set(previous.pending or previous.partitions) if previous else set()
    try:
        with warehouse.transaction() as conn:
            staged = warehouse.replace_source_stream(
                "landing", source, accepted_chunks(), conn=conn
            )
            quarantined = pd.concat(rejected, ignore_index=True) if rejected else empty_quarantine()
            warehouse.replace_quarantine(quarantined, stage="parse", source=source, conn=conn)
            keys = tuple(sorted(partitions))
            new_keys = {partition_key(d, t) for d, t in keys}
            pending = sorted(new_keys | old_keys)
            warehouse.bump_partitions(pending, conn=conn)
            warehouse.record_ingest(
                IngestRecord(
                    source=source,
                    fingerprint=fingerprint,
                    status=STAGED,
                    rows_in=counts["rows_in"],
                    staged=staged,
                    quarantined=len(quarantined),
                    partitions=tuple(partition_key(d, t) for d, t in keys),
                    run_id=run_id,
                    pending=tuple(pending),
                ),
                conn=conn,
            )
    except InputFileError as exc:
        warehouse.record_ingest(
            IngestRecord(source, fingerprint, FAILED, 0, 0, 0, (), error=str(exc), run_id=run_id)
        )
        raise
    crash_point("staged")
    return StageResult(
        source=source,
        fingerprint=fingerprint,
        rows_in=counts["rows_in"],
        staged=staged,
        quarantined=len(quarantined),
        partitions=keys,
        tenants=tuple(sorted({t for _, t in keys})),
        pending=_split(pending),
        ts_truncated=counts["ts_truncated"],
    )


def _sub_microsecond(ts: pd.Series) -> int:
    """Rows whose instant has nanosecond digits: both warehouses keep microseconds."""
    if not len(ts):
        return 0
    ns = ts.to_numpy("datetime64[ns]").view("int64")
    return int(np.count_nonzero(ns % 1000))


def _out_of_window(records: pd.DataFrame, lower: pd.Timestamp, upper: pd.Timestamp):
    reasons = [
        f"ts: {ts.isoformat()} is before the first partition day {lower.date()}"
        if ts < lower
        else f"ts: {ts.isoformat()} is more than a day in the future"
        for ts in records["ts"]
    ]
    raw = records[["tenant", "service", "metric", "ts", "value", "tags"]].to_json(
        orient="records", lines=True, date_format="iso"
    )
    return pd.DataFrame(
        {
            "source": records["source"].to_numpy(),
            "source_row": records["source_row"].to_numpy(),
            "tenant": records["tenant"].to_numpy(),
            "ts": [ts.isoformat() for ts in records["ts"]],
            "field": "ts",
            "reason": reasons,
            "raw": raw.splitlines(),
        }
    )
