"""Metric files (CSV or Parquet) read into record frames: streamed, and never trusted.

Two layouts are accepted:

* record files with the columns ``tenant, service, metric, ts, value`` and optional tags, either a
  ``tags`` column holding a JSON object or any other columns, which are merged into the tags (an
  extra column wins over a key of the same name in ``tags``; blank extra values are left out);
* single-series files with ``timestamp, value`` (or ``ts, value``), whose tenant, service and
  metric come from the path: ``<root>/<tenant>/<service>/<metric>.csv``, where missing leading
  folders default to ``default``.

Column names are matched without regard to case or surrounding blanks. Fields are stripped of
surrounding whitespace before they are parsed.

A problem with one row sends that row to ``rejected`` with a one-line reason and never stops the
file: a truncated or overlong row, a blank key field, a tenant, service or metric that is not a
valid name, a timestamp that cannot be read or lies outside 1677-2262, a value that is not a
number, tags that are not a JSON object. NaN, infinite and blank values are kept (as float NaN or
inf): bounds are the quality gate's job, and so are duplicates and ordering.

Timestamps are ISO-8601 (``YYYY-MM-DD...``); an offset is converted to UTC, a naive time is read
as UTC. A purely numeric timestamp is epoch seconds, or epoch milliseconds from 1e11 on.

A problem with the file as a whole raises :class:`InputFileError` with one line naming it. It can
be raised after some chunks were yielded (a file cut inside its gzip stream, say), so a caller must
treat a file as all or nothing.
"""

import hashlib
from collections.abc import Iterator
from pathlib import Path

from monitoring_pipelines.sources.files.csv_reader import read_csv
from monitoring_pipelines.sources.files.layout import (
    DEFAULT_NAME,
    NAME_ROLES,
    file_format,
    source_name,
)
from monitoring_pipelines.sources.files.parquet_reader import read_parquet
from monitoring_pipelines.sources.files.rows import REJECTED_COLUMNS, ParsedChunk
from monitoring_pipelines.sources.files.text import InputFileError, os_problem

__all__ = [
    "DEFAULT_NAME",
    "NAME_ROLES",
    "REJECTED_COLUMNS",
    "InputFileError",
    "ParsedChunk",
    "file_fingerprint",
    "read_metric_file",
    "source_name",
]

_HASH_BLOCK = 1024 * 1024


def file_fingerprint(path: Path) -> str:
    """SHA-256 of the file's content: a touched but unchanged file keeps its fingerprint."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while block := fh.read(_HASH_BLOCK):
                digest.update(block)
    except OSError as exc:
        raise InputFileError(source_name(path, None), os_problem(exc)) from None
    return digest.hexdigest()


def read_metric_file(
    path: Path,
    *,
    root: Path | None = None,
    layout_root: Path | None = None,
    chunk_rows: int = 200_000,
) -> Iterator[ParsedChunk]:
    """Parse a metric file in chunks of at most ``chunk_rows`` rows.

    The source is named by the path relative to ``root``; a single-series file takes its names
    from its path below ``layout_root`` (``root`` when not given).

    Memory is bounded by the chunk size (for Parquet, by the row group size) whatever the size of
    the file. A file with a header and no rows yields nothing.
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    path = Path(path)
    source = source_name(path, root)
    kind = file_format(path, source)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputFileError(source, os_problem(exc)) from None
    if not path.is_file():
        raise InputFileError(source, "not a regular file")
    if size == 0:
        raise InputFileError(source, "empty file (0 bytes)")
    names_root = root if layout_root is None else layout_root
    if kind == "csv":
        yield from read_csv(path, source, names_root, chunk_rows)
    else:
        yield from read_parquet(path, source, names_root, chunk_rows)
