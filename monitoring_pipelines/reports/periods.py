"""Report periods: a week (Monday to Sunday) or a calendar month in the report timezone.

A report made on a date covers the last period that is complete by then, so the Monday 08:00 run
reports the week that just ended and ``--as-of 2026-11-01`` the month of October 2026.
"""

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEK = "week"
MONTH = "month"
# The asset name and folder of each kind.
REPORT_NAMES = {WEEK: "weekly", MONTH: "monthly"}
# How far each kind's forecast looks ahead.
HORIZON_DAYS = {WEEK: 7, MONTH: 30}


class PeriodError(ValueError):
    """A bad period kind, date or timezone; the message is one line for the CLI."""


@dataclass(frozen=True)
class Period:
    kind: str
    start: datetime  # inclusive, timezone-aware, midnight in ``timezone``
    end: datetime  # exclusive
    timezone: str

    @property
    def key(self) -> str:
        """The first day, ``2026-10-26``: the Dagster partition key and the folder name."""
        return self.start.date().isoformat()

    @property
    def last_day(self) -> date:
        return (self.end - timedelta(days=1)).date()

    @property
    def days(self) -> int:
        return (self.end.date() - self.start.date()).days

    @property
    def horizon_days(self) -> int:
        return HORIZON_DAYS[self.kind]

    def previous(self) -> "Period":
        return period_containing(self.kind, self.start.date() - timedelta(days=1), self.timezone)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "key": self.key,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "last_day": self.last_day.isoformat(),
            "timezone": self.timezone,
        }


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PeriodError(f"unknown timezone {name!r} (expected an IANA name like UTC)") from None


def parse_kind(text: str) -> str:
    value = (text or "").strip().lower()
    aliases = {"week": WEEK, "weekly": WEEK, "month": MONTH, "monthly": MONTH}
    if value not in aliases:
        raise PeriodError(f"unknown period {text!r} (expected week or month)")
    return aliases[value]


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(str(text).strip())
    except ValueError:
        raise PeriodError(f"bad date {text!r} (expected YYYY-MM-DD)") from None


def period_containing(kind: str, day: date, timezone: str = "UTC") -> Period:
    """The week (from its Monday) or calendar month that contains ``day``."""
    tz = zone(timezone)
    if kind == WEEK:
        first = day - timedelta(days=day.weekday())
        after = first + timedelta(days=7)
    elif kind == MONTH:
        first = day.replace(day=1)
        after = (first + timedelta(days=32)).replace(day=1)
    else:
        raise PeriodError(f"unknown period {kind!r} (expected week or month)")

    def midnight(d: date) -> datetime:
        return datetime(d.year, d.month, d.day, tzinfo=tz)

    return Period(kind, midnight(first), midnight(after), timezone)


def period_as_of(kind: str, as_of: date, timezone: str = "UTC") -> Period:
    """The last period of ``kind`` that has ended by the start of ``as_of``."""
    return period_containing(kind, as_of, timezone).previous()


def period_from_key(kind: str, key: str, timezone: str = "UTC") -> Period:
    """The period whose first day is ``key`` (a Dagster partition key)."""
    period = period_containing(kind, parse_date(key[:10]), timezone)
    if period.key != key[:10]:
        raise PeriodError(f"{key!r} is not the first day of a {kind}")
    return period
