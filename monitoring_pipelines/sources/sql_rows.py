"""One chunk of a SQL source's result rows turned into metric records and rejected rows.

Each row is checked field by field (names, timestamp, window, value, tags); the first field that
fails decides its one-line reason, and a rejected row keeps its received values for quarantine.
"""

import json
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from monitoring_pipelines.sources.config import (
    empty_rejected,
    jsonable,
    quote,
    raw_json,
    received_text,
    rejected_frame,
    tags_json,
)
from monitoring_pipelines.sources.records import (
    KEY_COLUMNS,
    broken_name_rule,
    empty_frame,
    is_valid_name,
    normalise,
)
from monitoring_pipelines.sources.timestamps import parse_timestamps

REQUIRED_COLUMNS = (*KEY_COLUMNS, "value")


_VALUE_MISSING = frozenset(("", "nan", "na", "n/a", "null", "none"))


def _is_blank(value: object) -> bool:
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and not value.strip())
    )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | Decimal | np.integer | np.floating) and not isinstance(
        value, bool
    )


def _name_text(value: object) -> str | None:
    if _is_blank(value):
        return None
    return value.strip() if isinstance(value, str) else str(value)


def _number(value: object) -> float | None:
    """The value as a float: NaN when blank, ``None`` when it is not a number."""
    if _is_blank(value):
        return math.nan
    if _is_number(value):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _VALUE_MISSING:
            return math.nan
        try:
            # float() takes "inf" and "-Infinity" too: they pass, and the quality gate judges.
            return float(text)
        except ValueError:
            return None
    return None


def _tags(value: object) -> dict[str, Any] | None:
    """The ``tags`` column as a dict (``None`` when it is not a JSON object)."""
    if _is_blank(value):
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None
    return None


def roles_of(columns: list[str]) -> dict[str, int]:
    """Positions of the record columns, matched without regard to case or blanks."""
    found: dict[str, int] = {}
    for position, column in enumerate(columns):
        role = column.strip().lower()
        if role in (*REQUIRED_COLUMNS, "tags"):
            found.setdefault(role, position)
    return found


class _Verdicts:
    """Per received row, the first field that failed and why (None while the row is good)."""

    def __init__(self, received: pd.DataFrame, roles: dict[str, int]):
        self.received = received
        self.roles = roles
        self.field = pd.Series(None, index=received.index, dtype=object)
        self.reason = pd.Series(None, index=received.index, dtype=object)

    def reject(self, mask: pd.Series, role: str, why) -> None:
        """Reject the rows in ``mask`` not rejected yet; ``why`` is text or a function of the
        row's value in that role."""
        todo = mask & self.field.isna()
        if todo.any():
            self.field[todo] = role
            column = self.received.loc[todo, self.roles[role]]
            self.reason[todo] = column.map(lambda v: f"{role}: {why(v)}") if callable(why) else why


def parse_chunk(
    rows: Sequence[Any],
    columns: list[str],
    offset: int,
    source: str,
    window: tuple[pd.Timestamp, pd.Timestamp],
    tenant: str | None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Valid records and rejected rows of one chunk of the result, numbered from ``offset + 1``."""
    received = pd.DataFrame([tuple(r) for r in rows], columns=range(len(columns)), dtype=object)
    received.index = pd.RangeIndex(offset + 1, offset + 1 + len(received))
    roles = roles_of(columns)
    verdicts = _Verdicts(received, roles)
    names = _names(received, roles, verdicts)
    ts = _timestamps(received[roles["ts"]], window, verdicts)
    values = _values(received[roles["value"]], verdicts)
    base_tags = received[roles["tags"]].map(_tags) if "tags" in roles else None
    if base_tags is not None:
        verdicts.reject(base_tags.isna(), "tags", lambda v: f"{quote(v)} is not a JSON object")
    if tenant is not None:
        keep = names["tenant"] == tenant
        received, ts, values = received[keep], ts[keep], values[keep]
        verdicts.field, verdicts.reason = verdicts.field[keep], verdicts.reason[keep]
        names = {role: column[keep] for role, column in names.items()}
        base_tags = None if base_tags is None else base_tags[keep]
    ok = verdicts.field.isna()
    tags = _merged_tags(received[ok], columns, roles, base_tags)
    return (
        _records(names, ts, values, tags, ok, source, received[ok].index),
        _rejected(received[~ok], columns, roles, verdicts, source),
    )


def _names(received: pd.DataFrame, roles: dict[str, int], verdicts: _Verdicts) -> dict:
    names = {}
    for role in ("tenant", "service", "metric"):
        names[role] = received[roles[role]].map(_name_text)
        missing = names[role].isna()
        verdicts.reject(missing, role, f"{role}: missing")
        valid = names[role].map(is_valid_name).astype(bool)
        verdicts.reject(
            ~missing & ~valid,
            role,
            lambda v: f"{quote(v)} is not a valid name ({broken_name_rule(_name_text(v))})",
        )
    return names


def _timestamps(column: pd.Series, window, verdicts: _Verdicts) -> pd.Series:
    stamps = parse_timestamps(column)
    ts = stamps.ts
    verdicts.reject(pd.Series(stamps.blank, index=ts.index), "ts", "ts: missing")
    verdicts.reject(
        pd.Series(stamps.bad, index=ts.index),
        "ts",
        lambda v: f"cannot parse {quote(v)} as a timestamp",
    )
    start, end = window
    # An instant past what nanoseconds hold (a year-9999 typo) is outside any window too.
    outside = (ts.notna() & ((ts < start) | (ts >= end))) | stamps.out_of_range
    window_text = f"[{start.isoformat()}, {end.isoformat()})"
    verdicts.reject(outside, "ts", lambda v: f"{quote(v)} is outside the window {window_text}")
    return ts


def _values(column: pd.Series, verdicts: _Verdicts) -> pd.Series:
    # A list, not Series.map: map would turn the None that marks "not a number" into NaN.
    numbers = [_number(v) for v in column]
    not_number = pd.Series([n is None for n in numbers], index=column.index)
    verdicts.reject(not_number, "value", lambda v: f"{quote(v)} is not a number")
    return pd.Series([math.nan if n is None else n for n in numbers], index=column.index)


def _merged_tags(good: pd.DataFrame, columns, roles, base_tags) -> list[str]:
    """Each good row's tags as JSON: an extra column wins over a key of the same name in
    ``tags``; blank extra values are left out."""
    extras = [i for i, c in enumerate(columns) if i not in roles.values()]
    tags = []
    for i in good.index:
        merged = dict(base_tags[i]) if base_tags is not None else {}
        for position in extras:
            value = good.at[i, position]
            if not _is_blank(value):
                merged[columns[position]] = value
        tags.append(tags_json(jsonable(merged)))
    return tags


def _records(names, ts, values, tags, ok, source: str, index) -> pd.DataFrame:
    if not len(index):
        return empty_frame()
    return normalise(
        pd.DataFrame(
            {
                "tenant": names["tenant"][ok],
                "service": names["service"][ok],
                "metric": names["metric"][ok],
                "ts": ts[ok],
                "value": values[ok].astype("float64"),
                "tags": tags,
                "source": source,
                "source_row": index,
            },
            index=index,
        )
    )


def _rejected(bad: pd.DataFrame, columns, roles, verdicts: _Verdicts, source: str) -> pd.DataFrame:
    if not len(bad):
        return empty_rejected()
    return rejected_frame(
        {
            "source": source,
            "source_row": int(i),
            "tenant": received_text(bad.at[i, roles["tenant"]], "tenant"),
            "ts": received_text(bad.at[i, roles["ts"]]),
            "field": verdicts.field[i],
            "reason": verdicts.reason[i],
            "raw": raw_json(dict(zip(columns, bad.loc[i].tolist(), strict=True))),
        }
        for i in bad.index
    )
