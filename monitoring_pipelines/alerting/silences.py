"""Silences: planned quiet for the incidents their matchers select, once or every week.

A silence is either a fixed window (``starts``/``ends``, ISO-8601 with a timezone) or a weekly one
(``days``, ``start``/``end`` as HH:MM in a ``timezone``; a window may wrap past midnight). It is
judged at the data time of each event, so re-running a partition silences the same notifications.
Silenced notifications are kept with their reason, never dropped.
"""

from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from monitoring_pipelines.alerting.matchers import (
    Matcher,
    incident_labels,
    incident_metrics,
    matches_all,
    read_matchers,
)
from monitoring_pipelines.alerting.policy_reader import PolicyReader, join
from monitoring_pipelines.alerting.types import Incident

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class WeeklyWindow:
    days: frozenset[int]
    start: time
    end: time
    timezone: ZoneInfo

    def active(self, at: datetime) -> bool:
        local = at.astimezone(self.timezone)
        clock, day = local.time(), local.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= clock < self.end
        # Wraps past midnight: the window belongs to the day it starts on.
        return (day in self.days and clock >= self.start) or (
            (day - 1) % 7 in self.days and clock < self.end
        )


@dataclass(frozen=True)
class Silence:
    name: str
    matchers: tuple[Matcher, ...]
    starts: datetime | None = None
    ends: datetime | None = None
    weekly: WeeklyWindow | None = None
    comment: str = ""

    def active(self, at: datetime) -> bool:
        if self.weekly is not None:
            return self.weekly.active(at)
        return self.starts <= at < self.ends


def silence_reason(silences: tuple[Silence, ...], incident: Incident, at: datetime) -> str | None:
    """Why a notification about ``incident`` at data time ``at`` is silenced (None if it is not):
    the first silence active then whose matchers all select the incident."""
    labels, metrics = incident_labels(incident), incident_metrics(incident)
    for silence in silences:
        if silence.active(at) and matches_all(silence.matchers, labels, metrics):
            note = f" ({silence.comment})" if silence.comment else ""
            return f"silenced by {silence.name}{note}"
    return None


def read_silence(reader: PolicyReader, data, path: str) -> Silence:
    """The silence at ``path`` of the policy file."""
    data = reader.mapping(data, path, ("matchers", "starts", "ends", "weekly", "comment"))
    matchers = read_matchers(reader, data.get("matchers"), join(path, "matchers"))
    if not matchers:
        raise reader.fail(join(path, "matchers"), "a silence needs at least one matcher")
    comment = str(data.get("comment") or "")
    has_window = "starts" in data or "ends" in data
    if has_window == ("weekly" in data):
        raise reader.fail(path, "give either starts and ends, or a weekly window")
    if "weekly" in data:
        weekly = _read_weekly(reader, data["weekly"], join(path, "weekly"))
        return Silence(path, matchers, weekly=weekly, comment=comment)
    for key in ("starts", "ends"):
        if key not in data:
            raise reader.fail(join(path, key), "missing")
    starts = _timestamp(reader, data["starts"], join(path, "starts"))
    ends = _timestamp(reader, data["ends"], join(path, "ends"))
    if ends <= starts:
        raise reader.fail(join(path, "ends"), "must be after starts")
    return Silence(path, matchers, starts=starts, ends=ends, comment=comment)


def _read_weekly(reader: PolicyReader, data, path: str) -> WeeklyWindow:
    raw = reader.mapping(data, path, ("days", "start", "end", "timezone"))
    days = set()
    for i, day in enumerate(reader.sequence(raw.get("days"), join(path, "days"))):
        short = str(day).strip().lower()[:3]
        if short not in _DAYS or len(str(day).strip()) < 3:
            raise reader.fail(
                f"{join(path, 'days')}[{i}]",
                f"bad day {day!r} (expected one of {', '.join(_DAYS)})",
            )
        days.add(_DAYS.index(short))
    if not days:
        raise reader.fail(join(path, "days"), "name at least one day")
    for key in ("start", "end"):
        if key not in raw:
            raise reader.fail(join(path, key), "missing (HH:MM)")
    start = _clock(reader, raw["start"], join(path, "start"))
    end = _clock(reader, raw["end"], join(path, "end"))
    if start == end:
        raise reader.fail(path, "start and end are the same time")
    tz_name = raw.get("timezone", "UTC")
    try:
        tz = ZoneInfo(str(tz_name))
    except (ZoneInfoNotFoundError, ValueError):
        raise reader.fail(join(path, "timezone"), f"unknown timezone {tz_name!r}") from None
    return WeeklyWindow(frozenset(days), start, end, tz)


def _timestamp(reader: PolicyReader, value, path: str) -> datetime:
    try:
        out = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        raise reader.fail(
            path, f"bad timestamp {value!r} (expected ISO-8601 like 2026-10-01T02:00:00Z)"
        ) from None
    if out.tzinfo is None:
        raise reader.fail(path, f"timestamp {value!r} needs a timezone (e.g. a trailing Z for UTC)")
    return out


def _clock(reader: PolicyReader, value, path: str) -> time:
    try:
        return time.fromisoformat(str(value).strip())
    except ValueError:
        raise reader.fail(path, f"bad time of day {value!r} (expected HH:MM)") from None
