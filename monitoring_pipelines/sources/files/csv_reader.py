"""CSV files streamed in chunks, every row checked to have exactly the header's fields."""

import codecs
import csv
import gzip
import io
import re
import zlib
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from monitoring_pipelines.sources.files.layout import Layout, read_layout
from monitoring_pipelines.sources.files.rows import (
    ParsedChunk,
    Problems,
    empty_parsed,
    parse_rows,
    rejected_frame,
    tenant_received,
)
from monitoring_pipelines.sources.files.text import (
    RAW_VALUE_LIMIT,
    InputFileError,
    compressed_problem,
    raw_json,
    short,
)
from monitoring_pipelines.sources.records import normalise

_PROBE_BYTES = 64 * 1024
_BLOCK_CHARS = 1024 * 1024
# A quote that is never closed swallows the rest of the file into one row: stop before that row
# holds the whole file in memory.
_MAX_RECORD_CHARS = 16 * 1024 * 1024

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
                        self._source, f"cannot read the header ({short(exc)})"
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
        raise InputFileError(source, compressed_problem(exc)) from None
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


def read_csv(path: Path, source: str, root: Path | None, chunk_rows: int):
    _check_text(path, source)
    rows_read = 0
    try:
        with _open_text(path) as text:
            stream = _MarkedRecords(text, source)
            header = stream.header()
            if header is None:
                raise InputFileError(source, "empty file (no header)")
            layout = read_layout(header, path, root, source)
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
            source, f"{compressed_problem(exc)} (after data row {rows_read})"
        ) from None
    except pd.errors.ParserError as exc:
        raise InputFileError(
            source, f"cannot parse CSV after data row {rows_read}: {short(exc)}"
        ) from None


def _csv_chunk(frame: pd.DataFrame, layout: Layout, rows: np.ndarray, source: str):
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
        return raw_json(row)

    def shape_problem(i: int) -> tuple[str, str]:
        if fields[i] < 0:
            return "row", "row: malformed, its fields do not line up with the header"
        if fields[i] > width:
            return "row", f"row: more fields than the {width} columns of the header"
        label = layout.label(int(fields[i]))
        return label, f"{label}: missing, the row is truncated ({fields[i]} of {width} fields)"

    problems = Problems(len(frame))
    problems.add_each(fields != width, shape_problem)
    return parse_rows(data, layout, rows, source, problems, received, raw)


def _split_unterminated(text: str) -> list[str]:
    """The fields of a record cut inside a quoted field, that field closed where the file ends."""
    # csv refuses fields over 128 KiB, and the cut field may run for megabytes.
    try:
        return next(csv.reader([text[:_PROBE_BYTES] + '"']))
    except csv.Error:
        return [text[:RAW_VALUE_LIMIT]]


def _unterminated_chunk(text: str, layout: Layout, row: int, source: str) -> ParsedChunk:
    width = len(layout.names)
    values = _split_unterminated(text)[:width]
    cut = layout.label(len(values) - 1)
    present = dict(zip(layout.names, values, strict=False))
    tenant = tenant_received(layout, lambda p: values[p] if p < len(values) else None)
    ts_pos = layout.roles["ts"]
    rejected = rejected_frame(
        source,
        np.array([row], dtype=np.int64),
        tenant=[tenant],
        ts=[values[ts_pos] if ts_pos < len(values) else None],
        field=[cut],
        reason=[
            f"{cut}: cut off inside a quoted field, the row is truncated"
            f" ({len(values)} of {width} fields)"
        ],
        raw=[raw_json(present)],
    )
    return ParsedChunk(normalise(empty_parsed()), rejected)
