"""Stage a dropped file into the landing table, the first step of every file ingest.

Staging streams the file (memory bounded by the chunk size), writes its parsed rows to ``landing``
and its unreadable rows to ``quarantine``, both replacing whatever the same source wrote before, and
records the ingest with its fingerprint. The quality gate then runs per partition (day x tenant)
in the ``raw_metrics`` asset. Invariant: ``rows_in == staged + quarantined``.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from monitoring_pipelines.sources.files import (
    InputFileError,
    file_fingerprint,
    read_metric_file,
    source_name,
)
from monitoring_pipelines.sources.records import empty_quarantine
from monitoring_pipelines.warehouse import IngestRecord, Warehouse

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


def partition_key(date: str, tenant: str) -> str:
    """Dagster's key for a (date, tenant) multi-partition: dimensions sorted by name."""
    return f"{date}|{tenant}"


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
    """
    path = Path(path)
    source = source_name(path, root)
    now = now or datetime.now(UTC)
    try:
        fingerprint = file_fingerprint(path)
    except InputFileError as exc:
        warehouse.record_ingest(
            IngestRecord(source, "", "failed", 0, 0, 0, (), error=str(exc), run_id=run_id)
        )
        raise
    previous = warehouse.read_ingest(source)
    if (
        previous
        and previous.fingerprint == fingerprint
        and previous.status == "staged"
        and not force
    ):
        return StageResult(
            source=source,
            fingerprint=fingerprint,
            rows_in=previous.rows_in,
            staged=previous.staged,
            quarantined=previous.quarantined,
            partitions=tuple(tuple(p.split("|", 1)) for p in previous.partitions),
            skipped=True,
        )

    rejected: list[pd.DataFrame] = []
    partitions: set[tuple[str, str]] = set()
    counts = {"rows_in": 0}
    lower = pd.Timestamp(earliest)
    upper = pd.Timestamp(now) + FUTURE_TOLERANCE

    def accepted_chunks() -> Iterator[pd.DataFrame]:
        for chunk in read_metric_file(path, root=root, layout_root=layout_root):
            records = chunk.records
            counts["rows_in"] += len(records) + len(chunk.rejected)
            if len(chunk.rejected):
                rejected.append(chunk.rejected)
            outside = (records["ts"] < lower) | (records["ts"] >= upper)
            if outside.any():
                rejected.append(_out_of_window(records[outside], lower, upper))
                records = records[~outside]
            dates = records["ts"].dt.strftime("%Y-%m-%d")
            partitions.update(zip(dates, records["tenant"], strict=True))
            yield records

    try:
        staged = warehouse.replace_source_stream("landing", source, accepted_chunks())
    except InputFileError as exc:
        warehouse.record_ingest(
            IngestRecord(source, fingerprint, "failed", 0, 0, 0, (), error=str(exc), run_id=run_id)
        )
        raise
    quarantined = pd.concat(rejected, ignore_index=True) if rejected else empty_quarantine()
    warehouse.replace_quarantine(quarantined, stage="parse", source=source)
    keys = tuple(sorted(partitions))
    warehouse.record_ingest(
        IngestRecord(
            source=source,
            fingerprint=fingerprint,
            status="staged",
            rows_in=counts["rows_in"],
            staged=staged,
            quarantined=len(quarantined),
            partitions=tuple(partition_key(d, t) for d, t in keys),
            run_id=run_id,
        )
    )
    return StageResult(
        source=source,
        fingerprint=fingerprint,
        rows_in=counts["rows_in"],
        staged=staged,
        quarantined=len(quarantined),
        partitions=keys,
        tenants=tuple(sorted({t for _, t in keys})),
    )


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
