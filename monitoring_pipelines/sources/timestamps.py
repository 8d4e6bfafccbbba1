"""Timestamps as every source reads them: ISO 8601 text, date/time objects or epoch numbers.

An offset is converted to UTC and a naive time is read as UTC. A number (or purely numeric text)
is epoch seconds, or epoch milliseconds from 1e11 on (as seconds those would lie past the year
5000). Text that is neither (pandas alone would read "now" or "today") is refused, and so is an
instant outside what ``datetime64[ns]`` holds (1677-09-22..2262-04-11).
"""

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

import numpy as np
import pandas as pd

EPOCH_MS_FROM = 1e11
_ISO_SHAPE = r"\d{4}-\d{2}-\d{2}"
_EPOCH_SHAPE = r"[+-]?\d+(?:\.\d+)?"
_NAT = np.iinfo(np.int64).min
_NS_PER_UNIT = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
# datetime64[ns] spans 1677-09-21..2262-04-11; in microseconds, kept inside float64's exact range.
_MAX_EPOCH_US = 9.2e15


@dataclass(frozen=True)
class ParsedTimestamps:
    """UTC instants (NaT where not read) and, per row, why not: blank, unreadable, out of range."""

    ts: pd.Series
    blank: np.ndarray
    bad: np.ndarray
    out_of_range: np.ndarray


def parse_timestamps(column: pd.Series) -> ParsedTimestamps:
    """Read ``column`` (a datetime, numeric, text or mixed object column) as UTC instants."""
    size = len(column)
    ns = np.full(size, _NAT, dtype=np.int64)
    bad = np.zeros(size, dtype=bool)
    out_of_range = np.zeros(size, dtype=bool)
    if pd.api.types.is_datetime64_any_dtype(column):
        # A naive time is read as UTC, so only an aware one needs converting.
        if column.dt.tz is not None:
            column = column.dt.tz_convert("UTC").dt.tz_localize(None)
        ns, blank, out_of_range = _to_ns(column.to_numpy())
    elif pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        seconds = column.to_numpy(dtype="float64", na_value=np.nan)
        blank = np.isnan(seconds)
        ns, out_of_range = _from_epoch(seconds)
    else:
        shapes = _shapes(column)
        blank = shapes == "blank"
        epoch, instant = shapes == "epoch", shapes == "instant"
        if epoch.any():
            numbers = pd.to_numeric(_text(column[epoch]), errors="coerce").to_numpy(dtype="float64")
            ns[epoch], out_of_range[epoch] = _from_epoch(numbers)
            bad[np.flatnonzero(epoch)[np.isnan(numbers)]] = True
        if instant.any():
            values = _text(column[instant])
            instants = pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce")
            ns[instant], nat, out_of_range[instant] = _to_ns(
                instants.dt.tz_localize(None).to_numpy()
            )
            bad[np.flatnonzero(instant)[nat]] = True
        bad |= shapes == "other"
    utc = pd.Series(ns.view("datetime64[ns]"), index=column.index).dt.tz_localize("UTC")
    return ParsedTimestamps(utc, blank, bad & ~blank, out_of_range & ~blank)


def _shapes(column: pd.Series) -> np.ndarray:
    """Each value's shape: blank, epoch (a number), instant (ISO text or a date/time), other."""
    out = np.full(len(column), "other", dtype=object)
    is_text = column.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
    if is_text.any():
        text = column[is_text].astype(str).str.strip()
        epoch = text.str.fullmatch(_EPOCH_SHAPE).to_numpy(dtype=bool)
        iso = text.str.match(_ISO_SHAPE).to_numpy(dtype=bool)
        blank = (text == "").to_numpy(dtype=bool)
        shapes = np.where(epoch, "epoch", np.where(iso, "instant", "other"))
        out[is_text] = np.where(blank, "blank", shapes)
    if not is_text.all():
        # Other values (numbers, date/time objects from a database) repeat: classify each once.
        codes, uniques = pd.factorize(column[~is_text], use_na_sentinel=True)
        shapes = np.array([_shape(v) for v in uniques] + ["blank"], dtype=object)
        out[~is_text] = shapes[codes]
    return out


def _shape(value: object) -> str:
    if isinstance(value, bool | np.bool_):
        return "other"
    if isinstance(value, int | float | Decimal | np.integer | np.floating):
        return "blank" if isinstance(value, float | np.floating) and np.isnan(value) else "epoch"
    if isinstance(value, datetime | date | np.datetime64):
        return "instant"
    return "blank" if value is None or value is pd.NA or value is pd.NaT else "other"


def _text(values: pd.Series) -> pd.Series:
    return values.map(lambda v: v.strip() if isinstance(v, str) else v)


def _to_ns(instants: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """datetime64 of any unit -> (int64 nanoseconds with NaT, NaT mask, out-of-range mask)."""
    unit, _ = np.datetime_data(instants.dtype)
    per = _NS_PER_UNIT[unit]
    counts = instants.view(np.int64)
    nat = counts == _NAT
    limit = np.iinfo(np.int64).max // per
    out_of_range = ~nat & ((counts > limit) | (counts < -limit))
    ok = ~nat & ~out_of_range
    return np.where(ok, np.where(ok, counts, 0) * per, _NAT), nat, out_of_range


def _from_epoch(numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Epoch seconds, or milliseconds from 1e11 on -> (int64 nanoseconds, out-of-range mask)."""
    with np.errstate(invalid="ignore", over="ignore"):
        micros = np.where(np.abs(numbers) >= EPOCH_MS_FROM, numbers * 1e3, numbers * 1e6)
        out_of_range = ~np.isnan(numbers) & ~(np.abs(micros) <= _MAX_EPOCH_US)
        ok = ~np.isnan(numbers) & ~out_of_range
        whole = np.rint(np.where(ok, micros, 0.0)).astype(np.int64)
    return np.where(ok, whole * 1000, _NAT), out_of_range
