"""One-line messages about received files and values: quoted, cut to length, control
characters escaped, and the raw row kept as strict JSON."""

import gzip
import json
import zlib

import numpy as np
import pandas as pd

_QUOTE_LIMIT = 60
RAW_VALUE_LIMIT = 4096


class InputFileError(ValueError):
    """One line: '<source>: <what is wrong>' (row and field named where it applies)."""

    def __init__(self, source: str, problem: str | None = None):
        # Also raised as InputFileError("<source>: <problem>"), already joined.
        message = source if problem is None else f"{source}: {problem}"
        super().__init__(one_line(message))


def text_received(value: object) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)


def raw_json(row: dict[str, object]) -> str:
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
    if len(text) > RAW_VALUE_LIMIT:
        return f"{text[:RAW_VALUE_LIMIT]}...[{len(text)} characters]"
    return text


def quote(value: object, limit: int = _QUOTE_LIMIT) -> str:
    """A received value quoted for a one-line message: repr escapes control characters."""
    text = str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def summary(names: tuple[str, ...], limit: int = 8) -> str:
    shown = ", ".join(quote(name, 30) for name in names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} columns)"


def one_line(text: str) -> str:
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


def short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def os_problem(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, PermissionError):
        return "cannot read the file (permission denied)"
    if isinstance(exc, IsADirectoryError):
        return "not a regular file"
    return f"cannot read the file ({exc.strerror or type(exc).__name__})"


def compressed_problem(exc: BaseException) -> str:
    if isinstance(exc, gzip.BadGzipFile):
        return "not a valid gzip file"
    if isinstance(exc, EOFError):
        return "gzip data is truncated"
    if isinstance(exc, zlib.error):
        return "gzip data is corrupt"
    if isinstance(exc, OSError):
        return os_problem(exc)
    return short(exc)
