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

import codecs
import csv
import gzip
import hashlib
import io
import json
import os
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from monitoring_pipelines.sources.records import (
    QUARANTINE_COLUMNS,
    broken_name_rule,
    empty_quarantine,
    is_valid_name,
    normalise,
)
from monitoring_pipelines.sources.timestamps import parse_timestamps

_FORMATS = ((".csv.gz", "csv"), (".csv", "csv"), (".parquet", "parquet"), (".pq", "parquet"))
NAME_ROLES = ("tenant", "service", "metric")
REJECTED_COLUMNS = tuple(c for c in QUARANTINE_COLUMNS if c != "stage")
DEFAULT_NAME = "default"

_QUOTE_LIMIT = 60
_RAW_VALUE_LIMIT = 4096
# Quarantine.tenant is VARCHAR(256): a hostile tenant must not fail the quarantine insert.
_TENANT_LIMIT = 256
_PROBE_BYTES = 64 * 1024
_BLOCK_CHARS = 1024 * 1024
# A quote that is never closed swallows the rest of the file into one row: stop before that row
# holds the whole file in memory.
_MAX_RECORD_CHARS = 16 * 1024 * 1024
_HASH_BLOCK = 1024 * 1024

_VALUE_MISSING = ("", "nan", "na", "n/a", "null", "none")

# pandas pads a short CSV row with empty fields, so a row cut after its last comma cannot be told
# from one with blank trailing fields. Every record therefore gets one more field, this marker:
# where the marker lands tells how many fields the row really had.
_SENTINEL = "\x1e"
_MARK = "," + _SENTINEL
_BLANK_MARKED = "\n" + _MARK + "\n"

# CSV records as pandas' tokenizer splits them: a field opening with a quote runs to the closing
# quote (newlines included, "" is a literal quote), anything after the closing quote and quotes
# inside an unquoted field are plain text. Possessive quantifiers keep matching linear.
_FIELD = r'(?:"(?:[^"]++|"")*+"[^,\r\n]*+|[^,"\r\n][^,\r\n]*+)'
_RECORD = rf"(?:{_FIELD}(?:,{_FIELD}?+)*+|(?:,{_FIELD}?+)++)"
_EOL = r"(?:\r\n?|\n)"
_COMPLETE_RECORDS = re.compile(rf"(?:{_RECORD}?+{_EOL})*+")
_RECORD_END = re.compile(rf"({_RECORD})({_EOL})")
_LAST_RECORD = re.compile(_RECORD)
_FIRST_RECORD = re.compile(rf"{_EOL}*+({_RECORD})(?:{_EOL}|\Z)")
# A line with an odd number of quotes may continue a quoted field onto the next line.
_ODD_QUOTES_LINE = re.compile(r'(?m)^[^"\n]*+(?:"[^"\n]*+"[^"\n]*+)*+"')


class InputFileError(ValueError):
    """One line: '<source>: <what is wrong>' (row and field named where it applies)."""

    def __init__(self, source: str, problem: str | None = None):
        # Also raised as InputFileError("<source>: <problem>"), already joined.
        message = source if problem is None else f"{source}: {problem}"
        super().__init__(_one_line(message))


@dataclass(frozen=True)
class ParsedChunk:
    """Rows of one chunk of a file: the records that parsed, and the rows that did not.

    ``records`` has :data:`~monitoring_pipelines.sources.records.FRAME_COLUMNS`; ``rejected``
    has the quarantine columns but ``stage``: ``source, source_row, tenant, ts`` (tenant and ts as
    received), ``field``, a one-line ``reason`` and ``raw`` (the row as received, JSON text).
    """

    records: pd.DataFrame
    rejected: pd.DataFrame


def source_name(path: Path, root: Path | None) -> str:
    """``path`` relative to ``root`` (posix) when it lies under it, else its absolute posix path."""
    absolute = Path(os.path.abspath(path))
    if root is not None:
        base = Path(os.path.abspath(root))
        if absolute != base and absolute.is_relative_to(base):
            return absolute.relative_to(base).as_posix()
    return absolute.as_posix()


def file_fingerprint(path: Path) -> str:
    """SHA-256 of the file's content: a touched but unchanged file keeps its fingerprint."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while block := fh.read(_HASH_BLOCK):
                digest.update(block)
    except OSError as exc:
        raise InputFileError(source_name(path, None), _os_problem(exc)) from None
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
    kind = _file_format(path, source)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputFileError(source, _os_problem(exc)) from None
    if not path.is_file():
        raise InputFileError(source, "not a regular file")
    if size == 0:
        raise InputFileError(source, "empty file (0 bytes)")
    names_root = root if layout_root is None else layout_root
    if kind == "csv":
        yield from _read_csv(path, source, names_root, chunk_rows)
    else:
        yield from _read_parquet(path, source, names_root, chunk_rows)


# -- layout: which column is what -----------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    names: tuple[str, ...]  # header names as received (stripped), in file order
    roles: dict[str, int]  # tenant/service/metric/ts/value/tags -> column position
    extras: tuple[int, ...]  # positions of the columns that become tags
    path_names: dict[str, str] | None  # tenant/service/metric of a single-series file

    def label(self, position: int) -> str:
        """The column's name as a quarantine ``field``: its role, else its name made safe."""
        for role, pos in self.roles.items():
            if pos == position:
                return role
        name = self.names[position]
        return name if is_valid_name(name) else _quote(name, 40)


def _layout(header: list[str], path: Path, root: Path | None, source: str) -> _Layout:
    names = tuple(h.strip() or f"column_{i + 1}" for i, h in enumerate(header))
    positions: dict[str, int] = {}
    for i, name in enumerate(names):
        key = name.lower()
        if key in positions:
            raise InputFileError(source, f"duplicate column {_quote(name)}")
        positions[key] = i
    if "ts" in positions and "timestamp" in positions:
        raise InputFileError(source, "both 'ts' and 'timestamp' columns: which is the time?")
    if "timestamp" in positions:
        positions["ts"] = positions.pop("timestamp")
    series = not any(role in positions for role in NAME_ROLES)
    required = ("ts", "value") if series else (*NAME_ROLES, "ts", "value")
    missing = [role for role in required if role not in positions]
    if missing:
        raise InputFileError(
            source,
            f"missing required column{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
            f" (found {_summary(names)}; expected tenant, service, metric, ts, value[, tags]"
            " or timestamp, value)",
        )
    roles = {role: positions[role] for role in (*required, "tags") if role in positions}
    taken = set(roles.values())
    extras = tuple(i for i in range(len(names)) if i not in taken)
    path_names = _path_names(path, root, source) if series else None
    return _Layout(names, roles, extras, path_names)


def _path_names(path: Path, root: Path | None, source: str) -> dict[str, str]:
    folders: list[str] = []
    if root is not None:
        relative = source_name(path, root)
        if not Path(relative).is_absolute():
            folders = list(Path(relative).parts[:-1])
    if len(folders) > 2:
        raise InputFileError(
            source,
            "single-series file nested too deep: expected <root>/<tenant>/<service>/<metric>.csv",
        )
    tenant, service = [DEFAULT_NAME] * (2 - len(folders)) + folders
    names = {"tenant": tenant, "service": service, "metric": _stem(path)}
    for role, name in names.items():
        if not is_valid_name(name):
            raise InputFileError(
                source, f"{role} {_quote(name)} taken from the path is not a valid name"
            )
    return names


def _file_format(path: Path, source: str) -> str:
    lowered = path.name.lower()
    for suffix, kind in _FORMATS:
        if lowered.endswith(suffix):
            return kind
    raise InputFileError(
        source,
        f"unsupported file type {_quote(''.join(path.suffixes) or path.name)}"
        " (expected .csv, .csv.gz, .parquet or .pq)",
    )


def _stem(path: Path) -> str:
    lowered = path.name.lower()
    for suffix, _ in _FORMATS:
        if lowered.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


# -- CSV ------------------------------------------------------------------------------------------


class _MarkedRecords(io.RawIOBase):
    """The CSV bytes after the header, with :data:`_MARK` appended to every non-blank record.

    Blank lines are left alone, so pandas skips them and source_row stays the data-row number.
    Bytes, and never more than asked for: pandas would re-buffer a text stream on every read.
    """

    def __init__(self, text: TextIO, source: str):
        self._text = text
        self._source = source
        self._pending = ""
        self._eof = False
        self._done = False
        self._out = b""
        self._offset = 0
        # The last record when the file ends inside a quoted field: pandas never sees it.
        self.unterminated: str | None = None

    def readable(self) -> bool:
        return True

    def header(self) -> list[str] | None:
        while True:
            match = _FIRST_RECORD.match(self._pending)
            if match and (match.end() < len(self._pending) or self._eof):
                self._pending = self._pending[match.end() :]
                try:
                    return next(csv.reader([match.group(1)]))
                except csv.Error as exc:
                    raise InputFileError(
                        self._source, f"cannot read the header ({_short(exc)})"
                    ) from None
            if self._eof:
                if self._pending.strip():
                    raise InputFileError(
                        self._source, "cannot read the header (a quote never closed?)"
                    )
                return None
            self._fill("the header")

    def read(self, size: int | None = -1) -> bytes:
        while self._offset >= len(self._out) and not self._done:
            self._out = self._next_marked().encode("utf-8")
            self._offset = 0
        if size is None or size < 0:
            size = len(self._out) - self._offset
        chunk = self._out[self._offset : self._offset + size]
        self._offset += len(chunk)
        return chunk

    def _next_marked(self) -> str:
        while not self._eof:
            self._fill("a row")
            if self._eof:
                break
            marked, self._pending = _mark_records(self._pending, eof=False)
            if marked:
                return marked
        self._done = True
        marked, rest = _mark_records(self._pending, eof=True)
        self._pending = ""
        if rest:
            if _LAST_RECORD.fullmatch(rest):
                marked += rest + _MARK
            else:
                self.unterminated = rest
        return marked

    def _fill(self, what: str) -> None:
        block = self._text.read(_BLOCK_CHARS)
        if not block:
            self._eof = True
            return
        self._pending += block
        if len(self._pending) > _MAX_RECORD_CHARS:
            raise InputFileError(
                self._source,
                f"{what} is longer than {_MAX_RECORD_CHARS} characters (a quote never closed?)",
            )


def _mark_records(text: str, *, eof: bool) -> tuple[str, str]:
    """Mark the complete records at the start of ``text``; return them and the rest."""
    end = text.rfind("\n") + 1
    complete = text[:end]
    quoted_newline = '"' in complete and _ODD_QUOTES_LINE.search(complete)
    lone_cr = "\r" in text and text.count("\r") != text.count("\r\n")
    if not quoted_newline and not lone_cr:
        # Fast path: no field spans lines, so every newline ends a record.
        if "\r" in complete:
            complete = complete.replace("\r\n", "\n")
        marked = complete.replace("\n", _MARK + "\n")
        if marked.startswith(_MARK + "\n"):
            marked = marked[len(_MARK) :]
        while _BLANK_MARKED in marked:
            marked = marked.replace(_BLANK_MARKED, "\n\n")
        return marked, text[end:]
    # A CR at the very end may be the first half of a CRLF still to come.
    limit = len(text) - 1 if not eof and text.endswith("\r") else len(text)
    end = _COMPLETE_RECORDS.match(text, 0, limit).end()
    return _RECORD_END.sub(r"\1" + _MARK + r"\2", text[:end]), text[end:]


def _open_text(path: Path) -> TextIO:
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _check_text(path: Path, source: str) -> None:
    try:
        with _open_text(path) as text:
            head = text.buffer.read(_PROBE_BYTES)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputFileError(source, _compressed_problem(exc)) from None
    if not head:
        raise InputFileError(source, "empty file (no header)")
    if b"\x00" in head:
        raise InputFileError(source, "not a text CSV file (NUL bytes in the first 64 KiB)")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as exc:
        raise InputFileError(
            source, f"not a text CSV file (invalid UTF-8 at byte {exc.start})"
        ) from None


def _read_csv(path: Path, source: str, root: Path | None, chunk_rows: int):
    _check_text(path, source)
    rows_read = 0
    try:
        with _open_text(path) as text:
            stream = _MarkedRecords(text, source)
            header = stream.header()
            if header is None:
                raise InputFileError(source, "empty file (no header)")
            layout = _layout(header, path, root, source)
            columns = [f"c{i}" for i in range(len(layout.names))] + ["marker"]
            reader = pd.read_csv(
                stream,
                header=None,
                names=columns,
                # With usecols, a row with more fields than names is cut, not a parser error.
                usecols=columns,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                index_col=False,
                engine="c",
                chunksize=chunk_rows,
            )
            for frame in reader:
                if frame.empty:
                    continue
                rows = np.arange(rows_read + 1, rows_read + len(frame) + 1, dtype=np.int64)
                rows_read += len(frame)
                yield _csv_chunk(frame, layout, rows, source)
            if stream.unterminated is not None:
                yield _unterminated_chunk(stream.unterminated, layout, rows_read + 1, source)
    except InputFileError:
        raise
    except UnicodeDecodeError:
        raise InputFileError(source, f"not valid UTF-8 text (after data row {rows_read})") from None
    except (EOFError, OSError, zlib.error) as exc:
        raise InputFileError(
            source, f"{_compressed_problem(exc)} (after data row {rows_read})"
        ) from None
    except pd.errors.ParserError as exc:
        raise InputFileError(
            source, f"cannot parse CSV after data row {rows_read}: {_short(exc)}"
        ) from None


def _csv_chunk(frame: pd.DataFrame, layout: _Layout, rows: np.ndarray, source: str):
    width = len(layout.names)
    data = frame.iloc[:, :width]
    extra_field = frame["marker"]
    fields = np.full(len(frame), width, dtype=np.int64)
    in_place = (extra_field == _SENTINEL).to_numpy(dtype=bool)
    for i in np.flatnonzero(~in_place):
        row = frame.iloc[i].tolist()
        if _SENTINEL in row[:width]:
            fields[i] = row.index(_SENTINEL)
        elif extra_field.iat[i] != "":
            fields[i] = width + 1
        else:
            # No end marker at all: the record did not split where the CSV grammar says.
            fields[i] = -1

    def received(i: int, position: int) -> object:
        return data.iat[i, position] if position < fields[i] or fields[i] < 0 else None

    def raw(i: int) -> str:
        present = width if fields[i] < 0 else min(fields[i], width)
        row = {layout.names[p]: received(i, p) for p in range(present)}
        if fields[i] > width:
            row["_extra"] = [extra_field.iat[i], "..."]
        return _raw_json(row)

    def shape_problem(i: int) -> tuple[str, str]:
        if fields[i] < 0:
            return "row", "row: malformed, its fields do not line up with the header"
        if fields[i] > width:
            return "row", f"row: more fields than the {width} columns of the header"
        label = layout.label(int(fields[i]))
        return label, f"{label}: missing, the row is truncated ({fields[i]} of {width} fields)"

    problems = _Problems(len(frame))
    problems.add_each(fields != width, shape_problem)
    return _parse(data, layout, rows, source, problems, received, raw)


def _split_unterminated(text: str) -> list[str]:
    """The fields of a record cut inside a quoted field, that field closed where the file ends."""
    # csv refuses fields over 128 KiB, and the cut field may run for megabytes.
    try:
        return next(csv.reader([text[:_PROBE_BYTES] + '"']))
    except csv.Error:
        return [text[:_RAW_VALUE_LIMIT]]


def _unterminated_chunk(text: str, layout: _Layout, row: int, source: str) -> ParsedChunk:
    width = len(layout.names)
    values = _split_unterminated(text)[:width]
    cut = layout.label(len(values) - 1)
    present = dict(zip(layout.names, values, strict=False))
    tenant = _tenant_received(layout, lambda p: values[p] if p < len(values) else None)
    ts_pos = layout.roles["ts"]
    rejected = _rejected_frame(
        source,
        np.array([row], dtype=np.int64),
        tenant=[tenant],
        ts=[values[ts_pos] if ts_pos < len(values) else None],
        field=[cut],
        reason=[
            f"{cut}: cut off inside a quoted field, the row is truncated"
            f" ({len(values)} of {width} fields)"
        ],
        raw=[_raw_json(present)],
    )
    return ParsedChunk(normalise(_empty_parsed()), rejected)


# -- Parquet --------------------------------------------------------------------------------------


def _read_parquet(path: Path, source: str, root: Path | None, chunk_rows: int):
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputFileError(source, f"not a valid Parquet file ({_short(exc)})") from None
    rows_read = 0
    with parquet:
        layout = _layout(list(parquet.schema_arrow.names), path, root, source)
        _check_parquet_types(parquet.schema_arrow, layout, source)
        batches = parquet.iter_batches(batch_size=chunk_rows)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (pa.ArrowException, OSError) as exc:
                raise InputFileError(
                    source,
                    f"corrupt Parquet data after data row {rows_read} ({_short(exc)})",
                ) from None
            if batch.num_rows == 0:
                continue
            frame = _parquet_frame(batch, layout)
            rows = np.arange(rows_read + 1, rows_read + len(frame) + 1, dtype=np.int64)
            rows_read += len(frame)

            def received(i: int, position: int, frame: pd.DataFrame = frame) -> object:
                return frame.iat[i, position]

            def raw(i: int, frame: pd.DataFrame = frame) -> str:
                return _raw_json(dict(zip(layout.names, frame.iloc[i].tolist(), strict=True)))

            yield _parse(frame, layout, rows, source, _Problems(len(frame)), received, raw)


def _check_parquet_types(schema: pa.Schema, layout: _Layout, source: str) -> None:
    for position, field in enumerate(schema):
        kind = field.type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        role = layout.label(position)
        if role == "ts":
            ok = _is_text(kind) or _is_number(kind) or pa.types.is_temporal(kind)
            ok = ok and not pa.types.is_time(kind) and not pa.types.is_duration(kind)
        elif role == "value":
            ok = _is_text(kind) or _is_number(kind) or pa.types.is_boolean(kind)
        elif role == "tags":
            ok = _is_text(kind)
        else:
            ok = not pa.types.is_nested(kind)
        if not ok:
            raise InputFileError(source, f"column {role} has unsupported Parquet type {kind}")


def _exact_integers(kind: pa.DataType) -> pd.ArrowDtype | None:
    # numpy would turn an integer column with nulls into float64, so epochs and values as
    # received would read 1e+17.
    return pd.ArrowDtype(kind) if pa.types.is_integer(kind) else None


def _is_text(kind: pa.DataType) -> bool:
    return (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_string_view(kind)
        or pa.types.is_null(kind)
    )


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)


def _parquet_frame(batch: pa.RecordBatch, layout: _Layout) -> pd.DataFrame:
    """The batch as pandas: names and tags as text, ts and value kept in their own types."""
    columns = {}
    for position, column in enumerate(batch.columns):
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        kind = column.type
        role = layout.label(position)
        if role == "ts" and (pa.types.is_date(kind) or pa.types.is_null(kind)):
            column = pc.cast(column, pa.timestamp("s") if pa.types.is_date(kind) else pa.string())
        elif role == "value" and (pa.types.is_decimal(kind) or pa.types.is_boolean(kind)):
            column = pc.cast(column, pa.float64())
        elif pa.types.is_null(kind) or (role not in ("ts", "value") and not _is_text(kind)):
            column = pc.cast(column, pa.string())
        columns[f"c{position}"] = column.to_pandas(types_mapper=_exact_integers)
    return pd.DataFrame(columns)


# -- rows -----------------------------------------------------------------------------------------


class _Problems:
    """The first problem found in each row: its field and its one-line reason."""

    def __init__(self, size: int):
        self.field = np.full(size, None, dtype=object)
        self.reason = np.full(size, None, dtype=object)

    def add(self, mask: np.ndarray, field: str, reason: Callable[[int], str]) -> None:
        for i in np.flatnonzero(mask & pd.isna(self.field)):
            self.field[i] = field
            self.reason[i] = reason(i)

    def add_each(self, mask: np.ndarray, problem: Callable[[int], tuple[str, str]]) -> None:
        for i in np.flatnonzero(mask & pd.isna(self.field)):
            self.field[i], self.reason[i] = problem(i)

    @property
    def ok(self) -> np.ndarray:
        return pd.isna(self.field)


def _parse(
    frame: pd.DataFrame,
    layout: _Layout,
    rows: np.ndarray,
    source: str,
    problems: _Problems,
    received: Callable[[int, int], object],
    raw: Callable[[int], str],
) -> ParsedChunk:
    size = len(frame)
    parsed: dict[str, object] = {}
    if layout.path_names is not None:
        parsed.update(layout.path_names)
    else:
        for role in NAME_ROLES:
            position = layout.roles[role]
            names = _stripped(frame.iloc[:, position])
            blank = _blank(names)
            problems.add(blank, role, lambda i, role=role: f"{role}: missing")
            problems.add(
                ~blank & ~_valid_names(names),
                role,
                lambda i, role=role, position=position, names=names: (
                    f"{role}: {_quote(received(i, position))} is not a valid name"
                    f" ({broken_name_rule(names.iloc[i])})"
                ),
            )
            parsed[role] = names.to_numpy(dtype=object)

    ts_position = layout.roles["ts"]
    stamps = parse_timestamps(frame.iloc[:, ts_position])
    ts_blank, ts_bad, ts_range = stamps.blank, stamps.bad, stamps.out_of_range
    problems.add(ts_blank, "ts", lambda i: "ts: missing")
    problems.add(
        ts_bad,
        "ts",
        lambda i: f"ts: cannot parse {_quote(received(i, ts_position))} as a timestamp",
    )
    problems.add(
        ts_range,
        "ts",
        lambda i: (
            f"ts: {_quote(received(i, ts_position))} is outside the supported range"
            " 1677-09-22..2262-04-11"
        ),
    )
    parsed["ts"] = stamps.ts.reset_index(drop=True)

    value_position = layout.roles["value"]
    values, value_bad = _parse_value(frame.iloc[:, value_position])
    problems.add(
        value_bad,
        "value",
        lambda i: f"value: {_quote(received(i, value_position))} is not a number",
    )
    parsed["value"] = values

    tags, tags_bad = _build_tags(frame, layout)
    if "tags" in layout.roles:
        tags_position = layout.roles["tags"]
        problems.add(
            tags_bad,
            "tags",
            lambda i: f"tags: {_quote(received(i, tags_position))} is not a JSON object",
        )
    parsed["tags"] = tags
    parsed["source"] = source
    parsed["source_row"] = rows

    ok = problems.ok
    table = pd.DataFrame(parsed, index=pd.RangeIndex(size))
    records = normalise(table[ok])
    bad = np.flatnonzero(~ok)
    if len(bad) == 0:
        return ParsedChunk(records, _empty_rejected())
    rejected = _rejected_frame(
        source,
        rows[bad],
        tenant=[_tenant_received(layout, lambda p, i=i: received(i, p)) for i in bad],
        ts=[_text_received(received(i, ts_position)) for i in bad],
        field=problems.field[bad],
        reason=problems.reason[bad],
        raw=[raw(i) for i in bad],
    )
    return ParsedChunk(records, rejected)


def _stripped(column: pd.Series) -> pd.Series:
    if not pd.api.types.is_string_dtype(column):
        column = column.astype("str")
    return column.str.strip()


def _blank(text: pd.Series) -> np.ndarray:
    return (text.isna() | (text == "")).to_numpy(dtype=bool)


def _valid_names(names: pd.Series) -> np.ndarray:
    # Names repeat on every row of a series: check each distinct one once.
    codes, uniques = pd.factorize(names)
    valid = np.fromiter((is_valid_name(u) for u in uniques), dtype=bool, count=len(uniques))
    return np.append(valid, False)[codes]


def _parse_value(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return column.to_numpy(dtype="float64", na_value=np.nan), np.zeros(len(column), bool)
    text = _stripped(column)
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    missing = (text.isna() | text.str.lower().isin(_VALUE_MISSING)).to_numpy(dtype=bool)
    return values, np.isnan(values) & ~missing


def _build_tags(frame: pd.DataFrame, layout: _Layout) -> tuple[np.ndarray, np.ndarray]:
    """Tags text per row (canonical JSON or "") and the rows whose ``tags`` is not an object."""
    size = len(frame)
    has_json = "tags" in layout.roles
    positions = ([layout.roles["tags"]] if has_json else []) + list(layout.extras)
    if not positions:
        return np.full(size, "", dtype=object), np.zeros(size, dtype=bool)
    columns = [_stripped(frame.iloc[:, p]).fillna("") for p in positions]
    keys = [layout.names[p] for p in layout.extras]
    # Tag combinations repeat on every row of a series: build each distinct one once.
    codes = np.zeros(size, dtype=np.int64)
    for column in columns:
        column_codes, uniques = pd.factorize(column)
        codes, _ = pd.factorize(codes * len(uniques) + column_codes)
    _, first = np.unique(codes, return_index=True)
    combos = [tuple(column.iat[i] for column in columns) for i in first]
    texts = []
    for combo in combos:
        json_text = combo[0] if has_json else ""
        extras = combo[1:] if has_json else combo
        texts.append(_tags_text(json_text, dict(zip(keys, extras, strict=True))))
    text = np.array(texts, dtype=object)[codes] if texts else np.full(size, "", dtype=object)
    bad = pd.isna(text)
    text[bad] = ""
    return text, bad


def _tags_text(json_text: str, extras: dict[str, str]) -> str | None:
    tags: dict[str, object] = {}
    if json_text:
        try:
            parsed = json.loads(json_text, parse_constant=_no_constant)
        except ValueError:
            return None
        if not isinstance(parsed, dict):
            return None
        tags.update(parsed)
    tags.update((key, value) for key, value in extras.items() if value != "")
    return json.dumps(tags, sort_keys=True, separators=(",", ":")) if tags else ""


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _empty_parsed() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "tenant": pd.Series(dtype=object),
            "service": pd.Series(dtype=object),
            "metric": pd.Series(dtype=object),
            "ts": pd.Series(dtype="datetime64[ns, UTC]"),
            "value": pd.Series(dtype="float64"),
            "tags": pd.Series(dtype=object),
            "source": pd.Series(dtype=object),
            "source_row": pd.Series(dtype="int64"),
        }
    )


def _empty_rejected() -> pd.DataFrame:
    return empty_quarantine().drop(columns="stage")


# -- text safety ----------------------------------------------------------------------------------


def _tenant_received(layout: _Layout, value_at: Callable[[int], object]) -> str | None:
    if layout.path_names is not None:
        return layout.path_names["tenant"]
    text = _text_received(value_at(layout.roles["tenant"]))
    return None if text is None else text[:_TENANT_LIMIT]


def _rejected_frame(source: str, rows: np.ndarray, **texts: Iterable[str | None]) -> pd.DataFrame:
    # Object columns as in empty_quarantine(): pandas would infer its str dtype, None becoming NaN.
    columns = {name: pd.Series(list(values), dtype=object) for name, values in texts.items()}
    columns["source"] = pd.Series([source] * len(rows), dtype=object)
    columns["source_row"] = pd.Series(rows, dtype=np.int64)
    return pd.DataFrame(columns)[list(REJECTED_COLUMNS)]


def _text_received(value: object) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)


def _raw_json(row: dict[str, object]) -> str:
    return json.dumps({key: _json_value(value) for key, value in row.items()})


def _json_value(value: object) -> object:
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and not np.isfinite(value):
        # Strict JSON has no NaN or Infinity.
        return None if np.isnan(value) else str(value)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, bool | int | float):
        return value
    text = str(value)
    if len(text) > _RAW_VALUE_LIMIT:
        return f"{text[:_RAW_VALUE_LIMIT]}...[{len(text)} characters]"
    return text


def _quote(value: object, limit: int = _QUOTE_LIMIT) -> str:
    """A received value quoted for a one-line message: repr escapes control characters."""
    text = str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def _summary(names: tuple[str, ...], limit: int = 8) -> str:
    shown = ", ".join(_quote(name, 30) for name in names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} columns)"


def _one_line(text: str) -> str:
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


def _short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _os_problem(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, PermissionError):
        return "cannot read the file (permission denied)"
    if isinstance(exc, IsADirectoryError):
        return "not a regular file"
    return f"cannot read the file ({exc.strerror or type(exc).__name__})"


def _compressed_problem(exc: BaseException) -> str:
    if isinstance(exc, gzip.BadGzipFile):
        return "not a valid gzip file"
    if isinstance(exc, EOFError):
        return "gzip data is truncated"
    if isinstance(exc, zlib.error):
        return "gzip data is corrupt"
    if isinstance(exc, OSError):
        return _os_problem(exc)
    return _short(exc)
