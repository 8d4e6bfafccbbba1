"""Received rows parsed into records: names, timestamps, values and tags checked; each row
that fails gets its first problem as a one-line reason and goes to ``rejected``."""

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from monitoring_pipelines.sources.files.layout import NAME_ROLES, Layout
from monitoring_pipelines.sources.files.text import quote, text_received
from monitoring_pipelines.sources.records import (
    QUARANTINE_COLUMNS,
    broken_name_rule,
    empty_quarantine,
    is_valid_name,
    normalise,
)
from monitoring_pipelines.sources.timestamps import parse_timestamps

REJECTED_COLUMNS = tuple(c for c in QUARANTINE_COLUMNS if c != "stage")

# Quarantine.tenant is VARCHAR(256): a hostile tenant must not fail the quarantine insert.
_TENANT_LIMIT = 256

_VALUE_MISSING = ("", "nan", "na", "n/a", "null", "none")


@dataclass(frozen=True)
class ParsedChunk:
    """Rows of one chunk of a file: the records that parsed, and the rows that did not.

    ``records`` has :data:`~monitoring_pipelines.sources.records.FRAME_COLUMNS`; ``rejected``
    has the quarantine columns but ``stage``: ``source, source_row, tenant, ts`` (tenant and ts as
    received), ``field``, a one-line ``reason`` and ``raw`` (the row as received, JSON text).
    """

    records: pd.DataFrame
    rejected: pd.DataFrame


class Problems:
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


def parse_rows(
    frame: pd.DataFrame,
    layout: Layout,
    rows: np.ndarray,
    source: str,
    problems: Problems,
    received: Callable[[int, int], object],
    raw: Callable[[int], str],
) -> ParsedChunk:
    """A chunk parsed: its records, and its rejected rows each with its first problem."""
    size = len(frame)
    parsed = _parse_names(frame, layout, problems, received)
    ts_position = layout.roles["ts"]
    parsed["ts"] = _parse_ts(
        frame.iloc[:, ts_position], problems, lambda i: received(i, ts_position)
    )

    value_position = layout.roles["value"]
    values, value_bad = _parse_value(frame.iloc[:, value_position])
    problems.add(
        value_bad,
        "value",
        lambda i: f"value: {quote(received(i, value_position))} is not a number",
    )
    parsed["value"] = values

    tags, tags_bad = _build_tags(frame, layout)
    if "tags" in layout.roles:
        tags_position = layout.roles["tags"]
        problems.add(
            tags_bad,
            "tags",
            lambda i: f"tags: {quote(received(i, tags_position))} is not a JSON object",
        )
    parsed["tags"] = tags
    parsed["source"] = source
    parsed["source_row"] = rows

    ok = problems.ok
    table = pd.DataFrame(parsed, index=pd.RangeIndex(size))
    records = normalise(table[ok])
    bad = np.flatnonzero(~ok)
    if len(bad) == 0:
        return ParsedChunk(records, empty_rejected())
    rejected = rejected_frame(
        source,
        rows[bad],
        tenant=[tenant_received(layout, lambda p, i=i: received(i, p)) for i in bad],
        ts=[text_received(received(i, ts_position)) for i in bad],
        field=problems.field[bad],
        reason=problems.reason[bad],
        raw=[raw(i) for i in bad],
    )
    return ParsedChunk(records, rejected)


def _parse_names(
    frame: pd.DataFrame, layout: Layout, problems: Problems, received: Callable[[int, int], object]
) -> dict[str, object]:
    """Tenant, service and metric per row: from the path, or checked from their columns."""
    if layout.path_names is not None:
        return dict(layout.path_names)
    parsed: dict[str, object] = {}
    for role in NAME_ROLES:
        position = layout.roles[role]
        names = _stripped(frame.iloc[:, position])
        blank = _blank(names)
        problems.add(blank, role, lambda i, role=role: f"{role}: missing")
        problems.add(
            ~blank & ~_valid_names(names),
            role,
            lambda i, role=role, position=position, names=names: (
                f"{role}: {quote(received(i, position))} is not a valid name"
                f" ({broken_name_rule(names.iloc[i])})"
            ),
        )
        parsed[role] = names.to_numpy(dtype=object)
    return parsed


def _parse_ts(
    column: pd.Series, problems: Problems, received: Callable[[int], object]
) -> pd.Series:
    """The timestamps of ``column``; each missing, unparsable or out-of-range one a problem."""
    stamps = parse_timestamps(column)
    problems.add(stamps.blank, "ts", lambda i: "ts: missing")
    problems.add(
        stamps.bad,
        "ts",
        lambda i: f"ts: cannot parse {quote(received(i))} as a timestamp",
    )
    problems.add(
        stamps.out_of_range,
        "ts",
        lambda i: f"ts: {quote(received(i))} is outside the supported range 1677-09-22..2262-04-11",
    )
    return stamps.ts.reset_index(drop=True)


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


def _build_tags(frame: pd.DataFrame, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
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


def empty_parsed() -> pd.DataFrame:
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


def empty_rejected() -> pd.DataFrame:
    return empty_quarantine().drop(columns="stage")


def tenant_received(layout: Layout, value_at: Callable[[int], object]) -> str | None:
    if layout.path_names is not None:
        return layout.path_names["tenant"]
    text = text_received(value_at(layout.roles["tenant"]))
    return None if text is None else text[:_TENANT_LIMIT]


def rejected_frame(source: str, rows: np.ndarray, **texts: Iterable[str | None]) -> pd.DataFrame:
    # Object columns as in empty_quarantine(): pandas would infer its str dtype, None becoming NaN.
    columns = {name: pd.Series(list(values), dtype=object) for name, values in texts.items()}
    columns["source"] = pd.Series([source] * len(rows), dtype=object)
    columns["source_row"] = pd.Series(rows, dtype=np.int64)
    return pd.DataFrame(columns)[list(REJECTED_COLUMNS)]
