"""Recurring time windows with Alertmanager's ``time_intervals`` meaning, read in a named IANA time zone.

A :class:`TimeInterval` is a set of local wall-clock minutes: an instant is inside when its wall time in
``location`` is (seconds are ignored, as in Alertmanager). Daylight saving time follows from that:

* on a spring-forward day the skipped wall times never happen, so a window ``02:30``-``03:30`` in
  Europe/Berlin starts at 03:00 local (the moment of the jump) and ``02:00``-``02:30`` is empty that day;
* on a fall-back day the repeated wall times are inside both times they happen, so ``02:00``-``03:00`` in
  Europe/Berlin lasts two hours.

The document keys are Alertmanager's (``times``, ``weekdays``, ``days_of_month``, ``months``) plus
``location`` (Alertmanager's ``time_zone`` is read as a synonym). ``years`` is not supported. Weekday ranges
are read forwards through the week and may run past Sunday: Alertmanager's ``sunday:saturday`` (its weeks
start on Sunday) means every day here too, and ``friday:monday`` means Friday to Monday.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import date, datetime, time, timedelta, timezone
from typing import Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from alertengine.errors import FieldError

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")
KEYS = ("times", "weekdays", "days_of_month", "months", "location")
MAX_ITEMS = 64
DAY_MINUTES = 1440

Range = tuple[int, int]

_HHMM = re.compile(r"(?:[01][0-9]|2[0-3]):[0-5][0-9]|24:00")
_DAY_NUMBER = re.compile(r"-?[0-9]{1,2}")
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*")
_HOST_DEPENDENT_ZONES = frozenset({"localtime", "local", "posixrules"})
_MINUTE = timedelta(minutes=1)
_DAY = timedelta(days=1)
# Searches stop here, well clear of datetime.max, so converting to any zone cannot overflow.
_LATEST = datetime(9999, 12, 1, tzinfo=timezone.utc)


def _utc(at: datetime) -> datetime:
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("a timezone-aware datetime is required")
    return at.astimezone(timezone.utc)


def _floor_minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def _limit(at_utc: datetime, horizon_days: int) -> datetime:
    if isinstance(horizon_days, bool) or not isinstance(horizon_days, int) or horizon_days < 0:
        raise ValueError("horizon_days must be a whole number of days >= 0")
    if at_utc >= _LATEST:
        return at_utc
    return _floor_minute(at_utc + min(timedelta(days=min(horizon_days, 3_660_000)), _LATEST - at_utc))


def _check_ranges(name: str, ranges: tuple[Range, ...], low: int, high: int) -> None:
    for start, end in ranges:
        if not (low <= start <= end <= high):
            raise ValueError(f"TimeInterval.{name} holds {start}..{end}, outside {low}..{high} or reversed")


@dataclass(frozen=True)
class TimeInterval:
    """Minutes of the day, weekdays, days of the month and months, all in ``location``; every field must
    match for an instant to be inside, and an empty field matches everything.

    ``times`` are minute-of-day ranges, start inclusive, end exclusive (0..1440); ``weekdays`` 0=Monday to
    6=Sunday, ``days_of_month`` 1..31 or -31..-1 counted from the month's end (-1 = last day), ``months``
    1..12, all inclusive. Build it with :func:`parse_time_interval` from user input."""

    times: tuple[Range, ...] = ()
    weekdays: tuple[Range, ...] = ()
    days_of_month: tuple[Range, ...] = ()
    months: tuple[Range, ...] = ()
    location: str = "UTC"
    _zone: ZoneInfo = dataclass_field(default=None, init=False, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        for start, end in self.times:
            if not (0 <= start < end <= DAY_MINUTES):
                raise ValueError(f"TimeInterval.times holds {start}..{end}: need 0 <= start < end <= 1440")
        _check_ranges("weekdays", self.weekdays, 0, 6)
        _check_ranges("months", self.months, 1, 12)
        for start, end in self.days_of_month:
            if 0 in (start, end) or not (-31 <= start <= 31 and -31 <= end <= 31):
                raise ValueError(f"TimeInterval.days_of_month holds {start}..{end}")
        try:
            zone = ZoneInfo(self.location)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise ValueError(f"TimeInterval.location {self.location!r} is not a known time zone") from exc
        object.__setattr__(self, "_zone", zone)

    # -- membership -----------------------------------------------------------------------------------

    def _day_ok(self, day: date) -> bool:
        if self.months and not any(lo <= day.month <= hi for lo, hi in self.months):
            return False
        if self.weekdays and not any(lo <= day.weekday() <= hi for lo, hi in self.weekdays):
            return False
        if self.days_of_month:
            length = calendar.monthrange(day.year, day.month)[1]
            return any(_day_in(day.day, lo, hi, length) for lo, hi in self.days_of_month)
        return True

    def _minute_ok(self, minute: int) -> bool:
        return not self.times or any(lo <= minute < hi for lo, hi in self.times)

    def contains(self, at: datetime) -> bool:
        """Whether ``at`` (timezone-aware; ValueError otherwise) falls in the interval, read in ``location``."""
        local = _utc(at).astimezone(self._zone)
        return self._day_ok(local.date()) and self._minute_ok(local.hour * 60 + local.minute)

    # -- changes --------------------------------------------------------------------------------------

    def next_change(self, at: datetime, horizon_days: int = 400) -> datetime | None:
        """The first whole UTC minute after ``at`` at which :meth:`contains` differs from ``contains(at)``, or
        None when it does not change within ``horizon_days``.

        Cost grows with the days searched, not the minutes: each day is one step in which only midnight,
        the ``times`` edges and any UTC-offset change are looked at."""
        at_utc = _utc(at)
        return self._next_change_until(at_utc, _limit(at_utc, horizon_days))

    def _offset(self, at_utc: datetime) -> timedelta:
        offset = at_utc.astimezone(self._zone).utcoffset()
        assert offset is not None
        return offset

    def _next_change_until(self, at_utc: datetime, limit: datetime) -> datetime | None:
        """The search itself. Between UTC-offset changes the wall clock runs in step with UTC, so the value
        can only change where the wall clock reaches midnight or a ``times`` edge, or where the offset
        changes. Those candidates are visited in order and the first whose value differs is returned: the
        value is constant from one candidate to the next, so nothing earlier can differ."""
        state = self.contains(at_utc)
        step = _floor_minute(at_utc) + _MINUTE
        while step <= limit:
            offset = self._offset(step)
            probe = min(step + _DAY, limit + _MINUTE)
            end = probe if self._offset(probe) == offset else self._offset_change(step, probe, offset)
            for candidate in self._candidates(step, end, offset):
                if candidate > limit:
                    return None
                if self.contains(candidate) != state:
                    return candidate
            step = end
        return None

    def _offset_change(self, low: datetime, high: datetime, offset: timedelta) -> datetime:
        """The first whole minute in (low, high] whose UTC offset is not ``offset`` (it is at ``high``).

        Assumes one offset change within the span (at most a day), which holds for every zone in tzdata."""
        lo, hi = 0, (high - low) // _MINUTE
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self._offset(low + mid * _MINUTE) == offset:
                lo = mid
            else:
                hi = mid
        return low + hi * _MINUTE

    def _candidates(self, start: datetime, end: datetime, offset: timedelta) -> Iterator[datetime]:
        """``start``, then every instant in (start, end) whose wall time (at ``offset``) is a midnight or a
        ``times`` edge of a day the day fields allow, in order."""
        yield start
        wall_start = (start + offset).replace(tzinfo=None)
        wall_end = (end + offset).replace(tzinfo=None)
        day = wall_start.date()
        while day <= wall_end.date():
            edges = {0}
            if self.times and self._day_ok(day):
                for lo, hi in self.times:
                    edges.update((lo, hi))
            midnight = datetime.combine(day, time())
            for minute in sorted(edges):
                wall = midnight + timedelta(minutes=minute)
                if wall_start < wall < wall_end:
                    yield (wall - offset).replace(tzinfo=timezone.utc)
            day += timedelta(days=1)


def _day_in(day: int, lo: int, hi: int, length: int) -> bool:
    """Alertmanager's reading of a day-of-month range in a month of ``length`` days: negative numbers count
    from the end (-1 = last day), and the parts of a range beyond the month match nothing (``29:31`` in a
    28-day February matches no day; ``-31:-1`` matches every day of it)."""
    begin = length + lo + 1 if lo < 0 else lo
    finish = length + hi + 1 if hi < 0 else hi
    return begin <= day <= finish


@dataclass(frozen=True)
class Window:
    """A union of intervals: inside when any member is (Alertmanager's list of ``time_intervals``)."""

    intervals: tuple[TimeInterval, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "intervals", tuple(self.intervals))
        if not all(isinstance(i, TimeInterval) for i in self.intervals):
            raise ValueError("Window.intervals must hold TimeInterval objects")

    def contains(self, at: datetime) -> bool:
        at_utc = _utc(at)
        return any(i.contains(at_utc) for i in self.intervals)

    def next_change(self, at: datetime, horizon_days: int = 400) -> datetime | None:
        """The first whole UTC minute after ``at`` at which :meth:`contains` differs from ``contains(at)``.

        The union can change only where a member changes, so the members' changes are visited in order;
        a member is searched again only from its own change (before that, its next change is the same)."""
        at_utc = _utc(at)
        limit = _limit(at_utc, horizon_days)
        state = self.contains(at_utc)
        upcoming = [i._next_change_until(at_utc, limit) for i in self.intervals]
        while True:
            pending = [moment for moment in upcoming if moment is not None]
            if not pending:
                return None
            moment = min(pending)
            if self.contains(moment) != state:
                return moment
            upcoming = [i._next_change_until(moment, limit) if seen == moment else seen
                        for i, seen in zip(self.intervals, upcoming)]


# -- reading documents ---------------------------------------------------------------------------------


def _sub(field: str, name: str) -> str:
    return f"{field}.{name}" if field else name


def _minute_of_day(value: object, field: str) -> int:
    if not isinstance(value, str) or not _HHMM.fullmatch(value):
        raise FieldError(field, 'must be a time "HH:MM" from "00:00" to "24:00"')
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


def _items(doc: dict, key: str, field: str) -> list:
    value = doc.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise FieldError(_sub(field, key), f"must be a list, not {type(value).__name__}")
    if len(value) > MAX_ITEMS:
        raise FieldError(_sub(field, key), f"at most {MAX_ITEMS} entries are allowed")
    return value


def _range_parts(item: object, field: str, what: str, allow_int: bool) -> list[str]:
    """Split ``"a:b"`` or ``"a"`` (or an int, where allowed) into its one or two lower-cased parts."""
    if allow_int and isinstance(item, int) and not isinstance(item, bool):
        return [str(item)]
    if not isinstance(item, str):
        raise FieldError(field, f"must be a {what} or a range like {_EXAMPLES[what]}, not {type(item).__name__}")
    parts = item.lower().split(":")
    if len(parts) > 2 or len(item) > 40:
        raise FieldError(field, f"must be a {what} or a range like {_EXAMPLES[what]}")
    return parts


_EXAMPLES = {"weekday": '"monday:friday"', "day of the month": '"1:5" or "-1"', "month": '"january:march"'}


def _parse_times(doc: dict, field: str) -> tuple[Range, ...]:
    found = []
    for i, item in enumerate(_items(doc, "times", field)):
        where = f"{_sub(field, 'times')}[{i}]"
        if not isinstance(item, dict):
            raise FieldError(where, 'must be an object {"start_time": "HH:MM", "end_time": "HH:MM"}')
        for key in item:
            if key not in ("start_time", "end_time"):
                raise FieldError(where, f"unknown key {_short(key)}: only start_time and end_time are allowed")
        for key in ("start_time", "end_time"):
            if key not in item:
                raise FieldError(f"{where}.{key}", "is required")
        start = _minute_of_day(item["start_time"], f"{where}.start_time")
        if start == DAY_MINUTES:
            raise FieldError(f"{where}.start_time", '"24:00" can only end a range')
        end = _minute_of_day(item["end_time"], f"{where}.end_time")
        if end <= start:
            raise FieldError(f"{where}.end_time", "must be after start_time (to cross midnight, use two ranges)")
        found.append((start, end))
    return tuple(found)


def _parse_weekdays(doc: dict, field: str) -> tuple[Range, ...]:
    found: list[Range] = []
    for i, item in enumerate(_items(doc, "weekdays", field)):
        where = f"{_sub(field, 'weekdays')}[{i}]"
        numbers = []
        for part in _range_parts(item, where, "weekday", allow_int=False):
            if part not in WEEKDAYS:
                raise FieldError(where, f"{_short(part)} is not a weekday (monday ... sunday)")
            numbers.append(WEEKDAYS.index(part))
        start, end = numbers[0], numbers[-1]
        if start <= end:
            found.append((start, end))
        else:  # runs past Sunday
            found += [(start, 6), (0, end)]
    return tuple(found)


def _parse_days_of_month(doc: dict, field: str) -> tuple[Range, ...]:
    found = []
    for i, item in enumerate(_items(doc, "days_of_month", field)):
        where = f"{_sub(field, 'days_of_month')}[{i}]"
        numbers = []
        for part in _range_parts(item, where, "day of the month", allow_int=True):
            if not _DAY_NUMBER.fullmatch(part) or int(part) == 0 or not -31 <= int(part) <= 31:
                raise FieldError(where, f"{_short(part)} is not a day of the month (1 to 31, or -1 to -31 "
                                        "counted from the month's end)")
            numbers.append(int(part))
        start, end = numbers[0], numbers[-1]
        if start < 0 < end:
            raise FieldError(where, "a range starting from the month's end must also end counted from it")
        # As Alertmanager: refuse what is reversed even in the shortest month (28 days).
        if (28 + start if start < 0 else start) > (28 + end if end < 0 else end):
            raise FieldError(where, f"the range ends ({end}) before it starts ({start})")
        found.append((start, end))
    return tuple(found)


def _parse_months(doc: dict, field: str) -> tuple[Range, ...]:
    found = []
    for i, item in enumerate(_items(doc, "months", field)):
        where = f"{_sub(field, 'months')}[{i}]"
        numbers = []
        for part in _range_parts(item, where, "month", allow_int=True):
            if part in MONTHS:
                numbers.append(MONTHS.index(part) + 1)
            elif part.isascii() and part.isdigit() and 1 <= int(part) <= 12:
                numbers.append(int(part))
            else:
                raise FieldError(where, f"{_short(part)} is not a month (january ... december, or 1 to 12)")
        start, end = numbers[0], numbers[-1]
        if start > end:
            raise FieldError(where, f"the range ends ({MONTHS[end - 1]}) before it starts ({MONTHS[start - 1]})")
        found.append((start, end))
    return tuple(found)


def _short(value: object) -> str:
    text = value if isinstance(value, str) else type(value).__name__
    return repr(text if len(text) <= 40 else text[:40] + "…")


def parse_location(value: object, field: str) -> str:
    """An IANA time zone name that this machine's tz database knows, e.g. ``Europe/Berlin``.

    Names that depend on the host (``localtime``) or that could read outside the database (``..``, a
    leading ``/``) are refused before the database is asked."""
    if not isinstance(value, str):
        raise FieldError(field, f"must be a time zone name like \"Europe/Berlin\", not {type(value).__name__}")
    if len(value) > 64 or ".." in value or value.startswith("/") or not _ZONE_NAME.fullmatch(value):
        raise FieldError(field, f"{_short(value)} is not a time zone name like \"Europe/Berlin\"")
    if value.lower() in _HOST_DEPENDENT_ZONES:
        raise FieldError(field, f"{_short(value)} depends on the host; name the zone, like \"Europe/Berlin\"")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise FieldError(field, f"{_short(value)} is not a known time zone") from None
    return value


def parse_time_interval(doc: object, field: str) -> TimeInterval:
    """Read one Alertmanager-style interval, e.g. ``{"times": [{"start_time": "22:00", "end_time": "24:00"}],
    "weekdays": ["monday:friday"], "days_of_month": ["1:5", "-1"], "months": ["january:march", "12"],
    "location": "Europe/Berlin"}``. Every key is optional; an absent, null or empty list does not restrict."""
    if not isinstance(doc, dict):
        raise FieldError(field, f"must be an object with {', '.join(KEYS)}, not {type(doc).__name__}")
    for key in doc:
        if key not in KEYS and key != "time_zone":
            where = _sub(field, key) if isinstance(key, str) and re.fullmatch(r"[a-z_]{1,40}", key) else field
            raise FieldError(where, f"unknown key {_short(key)}: allowed are {', '.join(KEYS)}")
    if "location" in doc and "time_zone" in doc:
        raise FieldError(_sub(field, "time_zone"), "give location or time_zone, not both")
    zone_key = "time_zone" if "time_zone" in doc else "location"
    location = doc.get(zone_key)
    return TimeInterval(
        times=_parse_times(doc, field),
        weekdays=_parse_weekdays(doc, field),
        days_of_month=_parse_days_of_month(doc, field),
        months=_parse_months(doc, field),
        location="UTC" if location is None else parse_location(location, _sub(field, zone_key)),
    )


def parse_window(value: object, field: str) -> Window:
    """A list of interval documents (see :func:`parse_time_interval`), inside when any of them is."""
    if not isinstance(value, list):
        raise FieldError(field, f"must be a list of time intervals, not {type(value).__name__}")
    if len(value) > MAX_ITEMS:
        raise FieldError(field, f"at most {MAX_ITEMS} time intervals are allowed")
    return Window(tuple(parse_time_interval(doc, f"{field}[{i}]") for i, doc in enumerate(value)))


def quiet_window(start: object, end: object, location: object, field: str) -> TimeInterval:
    """Quiet hours every day from ``start`` to ``end`` (``"HH:MM"``, local time in ``location``).

    A window that crosses midnight, ``"22:00"`` to ``"07:00"``, becomes the two ranges 00:00-07:00 and
    22:00-24:00; ``end`` may be ``"24:00"``. ``start == end`` is refused: it would mean never or always."""
    first = _minute_of_day(start, _sub(field, "start"))
    if first == DAY_MINUTES:
        raise FieldError(_sub(field, "start"), '"24:00" can only be an end; use "00:00"')
    last = _minute_of_day(end, _sub(field, "end"))
    if last == first or (first == 0 and last == DAY_MINUTES):
        raise FieldError(_sub(field, "end"), "must differ from start (a window of no time or of every minute)")
    zone = parse_location(location, _sub(field, "location"))
    if first < last:
        times: tuple[Range, ...] = ((first, last),)
    elif last == 0:
        times = ((first, DAY_MINUTES),)
    else:
        times = ((0, last), (first, DAY_MINUTES))
    return TimeInterval(times=times, location=zone)
