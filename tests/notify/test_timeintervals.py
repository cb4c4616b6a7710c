"""Time intervals: Alertmanager's ``time_intervals`` read in a named zone, with every expectation written out
as a UTC instant and checked against the local calendar by hand (2024-06-03 is a Monday; Berlin is UTC+1 in
winter and UTC+2 in summer, switching on 2024-03-31 and 2024-10-27 at 01:00 UTC; New York is UTC-5/-4,
switching on 2024-03-10 at 07:00 UTC and 2024-11-03 at 06:00 UTC; Los Angeles UTC-8/-7 on the same days at
10:00 and 09:00 UTC; Kolkata is UTC+5:30 all year)."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from alertengine.errors import FieldError
from alertengine.notify.timeintervals import (TimeInterval, Window, parse_time_interval, parse_window,
                                              quiet_window)


def utc(text: str) -> datetime:
    """``"2024-06-03 20:00"`` (or with seconds) as an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def hours(start: str, end: str) -> list[dict[str, str]]:
    return [{"start_time": start, "end_time": end}]


BERLIN_OFFICE = {"times": hours("09:00", "17:00"), "weekdays": ["monday:friday"], "location": "Europe/Berlin"}
NY_OFFICE = {"times": hours("09:00", "17:00"), "weekdays": ["monday:friday"], "location": "America/New_York"}

# (interval document, UTC instant, expected contains)
CONTAINS = [
    # weekdays (UTC)
    ({"weekdays": ["monday:friday"]}, "2024-06-03 12:00", True),
    ({"weekdays": ["monday:friday"]}, "2024-06-07 23:59", True),
    ({"weekdays": ["monday:friday"]}, "2024-06-08 00:00", False),
    ({"weekdays": ["monday:friday"]}, "2024-06-09 12:00", False),
    ({"weekdays": ["monday:friday", "sunday"]}, "2024-06-09 12:00", True),
    ({"weekdays": ["monday:friday", "sunday"]}, "2024-06-08 12:00", False),
    ({"weekdays": ["saturday:sunday"]}, "2024-06-09 12:00", True),
    ({"weekdays": ["saturday:sunday"]}, "2024-06-10 00:00", False),
    ({"weekdays": ["sunday:saturday"]}, "2024-06-05 12:00", True),
    ({"weekdays": ["friday:monday"]}, "2024-06-09 12:00", True),
    ({"weekdays": ["friday:monday"]}, "2024-06-10 12:00", True),
    ({"weekdays": ["friday:monday"]}, "2024-06-11 12:00", False),
    ({"weekdays": ["Wednesday"]}, "2024-06-05 00:00", True),
    ({"weekdays": ["Wednesday"]}, "2024-06-04 23:59", False),
    # days of the month, -1 = last day: February of a leap (2024) and a common (2023) year
    ({"days_of_month": ["-1"]}, "2024-02-29 12:00", True),
    ({"days_of_month": ["-1"]}, "2024-02-28 12:00", False),
    ({"days_of_month": ["-1"]}, "2023-02-28 12:00", True),
    ({"days_of_month": ["-1"]}, "2023-02-27 12:00", False),
    ({"days_of_month": ["-1"]}, "2023-03-01 00:00", False),
    ({"days_of_month": ["-1"]}, "2024-04-30 23:59", True),
    ({"days_of_month": ["-1"]}, "2024-04-29 23:59", False),
    ({"days_of_month": ["-2:-1"]}, "2023-02-27 12:00", True),
    ({"days_of_month": ["-2:-1"]}, "2023-02-26 12:00", False),
    ({"days_of_month": ["-2:-1"]}, "2024-02-28 12:00", True),
    ({"days_of_month": ["29:31"]}, "2023-02-28 12:00", False),
    ({"days_of_month": ["29:31"]}, "2024-02-29 12:00", True),
    ({"days_of_month": ["28:31"]}, "2023-02-28 12:00", True),
    ({"days_of_month": ["-31:-1"]}, "2023-02-01 00:00", True),
    ({"days_of_month": ["31"]}, "2024-04-30 12:00", False),
    ({"days_of_month": ["31"]}, "2024-05-31 12:00", True),
    ({"days_of_month": ["15:-1"]}, "2024-02-29 12:00", True),
    ({"days_of_month": ["15:-1"]}, "2024-02-14 12:00", False),
    ({"days_of_month": ["1:5", "-1"]}, "2024-06-05 23:59", True),
    ({"days_of_month": ["1:5", "-1"]}, "2024-06-06 00:00", False),
    ({"days_of_month": ["1:5", "-1"]}, "2024-06-30 00:00", True),
    ({"days_of_month": [1]}, "2024-06-01 00:00", True),
    ({"days_of_month": [1]}, "2024-06-02 00:00", False),
    # months
    ({"months": ["january:march", "12"]}, "2024-03-31 23:59", True),
    ({"months": ["january:march", "12"]}, "2024-04-01 00:00", False),
    ({"months": ["january:march", "12"]}, "2024-12-01 00:00", True),
    ({"months": ["january:march", "12"]}, "2024-11-30 23:59", False),
    ({"months": ["december"], "location": "Europe/Berlin"}, "2024-11-30 23:30", True),
    ({"months": ["december"]}, "2024-11-30 23:30", False),
    # times, end exclusive, "24:00" = end of the day
    ({"times": hours("22:00", "24:00")}, "2024-06-03 22:00", True),
    ({"times": hours("22:00", "24:00")}, "2024-06-03 23:59:59", True),
    ({"times": hours("22:00", "24:00")}, "2024-06-03 21:59:59", False),
    ({"times": hours("22:00", "24:00")}, "2024-06-04 00:00", False),
    ({"times": hours("09:00", "17:00")}, "2024-06-03 09:00", True),
    ({"times": hours("09:00", "17:00")}, "2024-06-03 08:59:59", False),
    ({"times": hours("09:00", "17:00")}, "2024-06-03 16:59:59", True),
    ({"times": hours("09:00", "17:00")}, "2024-06-03 17:00", False),
    ({"times": hours("00:00", "01:00") + hours("12:00", "12:01")}, "2024-06-03 12:00:30", True),
    ({"times": hours("00:00", "01:00") + hours("12:00", "12:01")}, "2024-06-03 12:01", False),
    # all fields together
    ({"times": hours("22:00", "24:00"), "weekdays": ["monday:friday"], "days_of_month": ["1:5"],
      "months": ["june"]}, "2024-06-03 22:30", True),
    ({"times": hours("22:00", "24:00"), "weekdays": ["monday:friday"], "days_of_month": ["1:5"],
      "months": ["june"]}, "2024-06-10 22:30", False),
    # the same UTC instant, two zones, different answers
    ({"times": hours("09:00", "17:00"), "location": "Europe/Berlin"}, "2024-06-03 20:00", False),
    ({"times": hours("09:00", "17:00"), "location": "America/New_York"}, "2024-06-03 20:00", True),
    ({"times": hours("22:00", "24:00"), "location": "Europe/Berlin"}, "2024-06-03 20:00", True),
    ({"times": hours("22:00", "24:00"), "location": "America/New_York"}, "2024-06-03 20:00", False),
    ({"weekdays": ["sunday"], "location": "America/New_York"}, "2024-06-03 02:00", True),
    ({"weekdays": ["sunday"], "location": "Europe/Berlin"}, "2024-06-03 02:00", False),
    (BERLIN_OFFICE, "2024-06-07 14:59", True),
    (NY_OFFICE, "2024-06-07 14:59", True),
    (BERLIN_OFFICE, "2024-06-07 15:00", False),
    (NY_OFFICE, "2024-06-07 21:00", False),
    # Berlin spring forward, 2024-03-31 01:00 UTC: 01:59 CET -> 03:00 CEST; 02:xx never happens
    ({"times": hours("02:00", "03:00"), "location": "Europe/Berlin"}, "2024-03-31 00:59", False),
    ({"times": hours("02:00", "03:00"), "location": "Europe/Berlin"}, "2024-03-31 01:00", False),
    ({"times": hours("02:30", "03:30"), "location": "Europe/Berlin"}, "2024-03-31 00:59", False),
    ({"times": hours("02:30", "03:30"), "location": "Europe/Berlin"}, "2024-03-31 01:00", True),
    ({"times": hours("02:30", "03:30"), "location": "Europe/Berlin"}, "2024-03-31 01:29", True),
    ({"times": hours("02:30", "03:30"), "location": "Europe/Berlin"}, "2024-03-31 01:30", False),
    ({"times": hours("01:00", "02:00"), "location": "Europe/Berlin"}, "2024-03-31 00:59", True),
    ({"times": hours("01:00", "02:00"), "location": "Europe/Berlin"}, "2024-03-31 01:00", False),
    ({"times": hours("12:00", "13:00"), "location": "Europe/Berlin"}, "2024-03-30 11:00", True),
    ({"times": hours("12:00", "13:00"), "location": "Europe/Berlin"}, "2024-03-31 11:00", False),
    ({"times": hours("12:00", "13:00"), "location": "Europe/Berlin"}, "2024-03-31 10:00", True),
    # Berlin fall back, 2024-10-27 01:00 UTC: 02:59 CEST -> 02:00 CET; 02:xx happens twice
    ({"times": hours("02:00", "03:00"), "location": "Europe/Berlin"}, "2024-10-26 23:59", False),
    ({"times": hours("02:00", "03:00"), "location": "Europe/Berlin"}, "2024-10-27 00:00", True),
    ({"times": hours("02:00", "03:00"), "location": "Europe/Berlin"}, "2024-10-27 01:00", True),
    ({"times": hours("02:00", "03:00"), "location": "Europe/Berlin"}, "2024-10-27 01:59", True),
    ({"times": hours("02:00", "03:00"), "location": "Europe/Berlin"}, "2024-10-27 02:00", False),
    # New York spring forward, 2024-03-10 07:00 UTC: 01:59 EST -> 03:00 EDT
    ({"times": hours("02:00", "03:00"), "location": "America/New_York"}, "2024-03-10 06:59", False),
    ({"times": hours("02:00", "03:00"), "location": "America/New_York"}, "2024-03-10 07:00", False),
    ({"times": hours("01:00", "02:00"), "location": "America/New_York"}, "2024-03-10 06:00", True),
    ({"times": hours("01:00", "02:00"), "location": "America/New_York"}, "2024-03-10 06:59", True),
    ({"times": hours("01:00", "02:00"), "location": "America/New_York"}, "2024-03-10 07:00", False),
    # New York fall back, 2024-11-03 06:00 UTC: 01:59 EDT -> 01:00 EST; 01:xx happens twice
    ({"times": hours("01:00", "02:00"), "location": "America/New_York"}, "2024-11-03 04:59", False),
    ({"times": hours("01:00", "02:00"), "location": "America/New_York"}, "2024-11-03 05:00", True),
    ({"times": hours("01:00", "02:00"), "location": "America/New_York"}, "2024-11-03 06:30", True),
    ({"times": hours("01:00", "02:00"), "location": "America/New_York"}, "2024-11-03 07:00", False),
    # an empty document restricts nothing
    ({}, "2024-06-03 12:00", True),
    ({"times": [], "weekdays": None}, "2024-06-03 12:00", True),
]


@pytest.mark.parametrize("doc,instant,expected", CONTAINS)
def test_contains(doc: dict, instant: str, expected: bool) -> None:
    assert parse_time_interval(doc, "ti").contains(utc(instant)) is expected


def test_contains_reads_any_aware_datetime_and_refuses_naive_ones() -> None:
    berlin_office = parse_time_interval(BERLIN_OFFICE, "ti")
    assert berlin_office.contains(datetime(2024, 6, 3, 9, 0, tzinfo=ZoneInfo("Europe/Berlin"))) is True
    assert berlin_office.contains(datetime(2024, 6, 3, 3, 0, tzinfo=ZoneInfo("America/New_York"))) is True
    assert berlin_office.contains(datetime(2024, 6, 3, 2, 59, tzinfo=ZoneInfo("America/New_York"))) is False
    with pytest.raises(ValueError):
        berlin_office.contains(datetime(2024, 6, 3, 12, 0))
    with pytest.raises(ValueError):
        berlin_office.next_change(datetime(2024, 6, 3, 12, 0))


# (interval document, from, expected next change, or None)
NEXT_CHANGE = [
    (BERLIN_OFFICE, "2024-06-07 14:00", "2024-06-07 15:00"),   # Friday 16:00 CEST -> 17:00
    (BERLIN_OFFICE, "2024-06-07 14:59:30", "2024-06-07 15:00"),
    (BERLIN_OFFICE, "2024-06-07 15:00", "2024-06-10 07:00"),   # over the weekend to Monday 09:00 CEST
    (BERLIN_OFFICE, "2024-06-10 07:00", "2024-06-10 15:00"),   # strictly after: not the start itself
    (BERLIN_OFFICE, "2024-03-29 16:00", "2024-04-01 07:00"),   # Friday 17:00 CET, Monday 09:00 CEST
    (BERLIN_OFFICE, "2024-10-25 15:00", "2024-10-28 08:00"),   # Friday 17:00 CEST, Monday 09:00 CET
    (NY_OFFICE, "2024-03-08 22:00", "2024-03-11 13:00"),       # Friday 17:00 EST, Monday 09:00 EDT
    # spring forward in Berlin: 02:30-03:30 starts at the jump; 02:00-03:00 skips the day
    ({"times": hours("02:30", "03:30"), "location": "Europe/Berlin"}, "2024-03-30 23:00", "2024-03-31 01:00"),
    ({"times": hours("02:30", "03:30"), "location": "Europe/Berlin"}, "2024-03-31 01:00", "2024-03-31 01:30"),
    ({"times": hours("02:00", "03:00"), "location": "Europe/Berlin"}, "2024-03-30 23:00", "2024-04-01 00:00"),
    ({"times": hours("01:00", "02:00"), "location": "Europe/Berlin"}, "2024-03-31 00:30", "2024-03-31 01:00"),
    # fall back in Berlin: 02:00-03:00 lasts two hours
    ({"times": hours("02:00", "03:00"), "location": "Europe/Berlin"}, "2024-10-26 23:00", "2024-10-27 00:00"),
    ({"times": hours("02:00", "03:00"), "location": "Europe/Berlin"}, "2024-10-27 00:00", "2024-10-27 02:00"),
    # New York, both changes
    ({"times": hours("02:30", "03:30"), "location": "America/New_York"}, "2024-03-10 05:00", "2024-03-10 07:00"),
    ({"times": hours("02:30", "03:30"), "location": "America/New_York"}, "2024-03-10 07:00", "2024-03-10 07:30"),
    ({"times": hours("01:00", "02:00"), "location": "America/New_York"}, "2024-11-03 04:00", "2024-11-03 05:00"),
    ({"times": hours("01:00", "02:00"), "location": "America/New_York"}, "2024-11-03 05:00", "2024-11-03 07:00"),
    # a window running to 24:00 and one starting at 00:00 join at midnight
    ({"times": hours("22:00", "24:00") + hours("00:00", "06:00")}, "2024-06-03 23:00", "2024-06-04 06:00"),
    # whole days
    ({"weekdays": ["saturday:sunday"], "location": "America/New_York"}, "2024-06-05 12:00", "2024-06-08 04:00"),
    ({"days_of_month": ["-1"]}, "2024-02-10 00:00", "2024-02-29 00:00"),
    ({"days_of_month": ["-1"]}, "2024-02-29 00:00", "2024-03-01 00:00"),
    ({"months": ["december"], "location": "Europe/Berlin"}, "2024-06-01 00:00", "2024-11-30 23:00"),
    # never changes
    ({}, "2024-06-03 12:00", None),
    ({"weekdays": ["monday:sunday"]}, "2024-06-03 12:00", None),
    ({"months": ["february"], "days_of_month": ["29"]}, "2024-03-01 00:00", None),
]


@pytest.mark.parametrize("doc,start,expected", NEXT_CHANGE)
def test_next_change(doc: dict, start: str, expected: str | None) -> None:
    found = parse_time_interval(doc, "ti").next_change(utc(start))
    if expected is None:
        assert found is None
    else:
        assert found == utc(expected)
        assert found.tzinfo is timezone.utc


def test_next_change_horizon() -> None:
    office = parse_time_interval(BERLIN_OFFICE, "ti")
    assert office.next_change(utc("2024-06-07 15:00"), horizon_days=2) is None
    assert office.next_change(utc("2024-06-07 15:00"), horizon_days=3) == utc("2024-06-10 07:00")
    leap_day = parse_time_interval({"months": ["february"], "days_of_month": ["29"]}, "ti")
    assert leap_day.next_change(utc("2024-03-01 00:00"), horizon_days=1500) == utc("2028-02-29 00:00")
    with pytest.raises(ValueError):
        office.next_change(utc("2024-06-07 15:00"), horizon_days=-1)


def test_next_change_accepts_other_zones_and_answers_in_utc() -> None:
    office = parse_time_interval(BERLIN_OFFICE, "ti")
    found = office.next_change(datetime(2024, 6, 7, 23, 0, tzinfo=ZoneInfo("Asia/Tokyo")))  # Friday 16:00 CEST
    assert found == utc("2024-06-07 15:00")
    assert found is not None and found.tzinfo is timezone.utc


def test_next_change_steps_over_days_not_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    original = TimeInterval.contains

    def counting(self: TimeInterval, at: datetime) -> bool:
        nonlocal calls
        calls += 1
        return original(self, at)

    monkeypatch.setattr(TimeInterval, "contains", counting)
    interval = parse_time_interval({"times": hours("09:00", "17:00"), "months": ["february"],
                                    "days_of_month": ["29"], "location": "Europe/Berlin"}, "ti")
    assert interval.next_change(utc("2024-03-01 00:00"), horizon_days=400) is None
    assert calls < 3 * 400   # 400 days of 1440 minutes would be 576,000


# (document, expected fields)
PARSED = [
    ({"times": hours("22:00", "24:00"), "weekdays": ["monday:friday", "sunday"], "days_of_month": ["1:5", "-1"],
      "months": ["january:march", "12"], "location": "Europe/Berlin"},
     dict(times=((1320, 1440),), weekdays=((0, 4), (6, 6)), days_of_month=((1, 5), (-1, -1)),
          months=((1, 3), (12, 12)), location="Europe/Berlin")),
    ({}, dict(times=(), weekdays=(), days_of_month=(), months=(), location="UTC")),
    ({"weekdays": ["sunday:saturday"]}, dict(weekdays=((6, 6), (0, 5)))),
    ({"weekdays": ["FRIDAY:Monday"]}, dict(weekdays=((4, 6), (0, 0)))),
    ({"days_of_month": [-1, "1:-1", "-3:-1", 7]}, dict(days_of_month=((-1, -1), (1, -1), (-3, -1), (7, 7)))),
    ({"months": [3, "APRIL:5", "11:december"]}, dict(months=((3, 3), (4, 5), (11, 12)))),
    ({"times": hours("00:00", "00:01") + hours("23:59", "24:00")}, dict(times=((0, 1), (1439, 1440)))),
    ({"time_zone": "America/New_York"}, dict(location="America/New_York")),
    ({"location": None, "times": None}, dict(location="UTC", times=())),
]


@pytest.mark.parametrize("doc,fields", PARSED)
def test_parse_time_interval(doc: dict, fields: dict) -> None:
    interval = parse_time_interval(doc, "ti")
    for name, value in fields.items():
        assert getattr(interval, name) == value


# (document, field named by the error)
PARSE_ERRORS: list[tuple[object, str]] = [
    (None, "ti"), ([], "ti"), ("weekdays", "ti"), (5, "ti"),
    ({"years": ["2024"]}, "ti.years"),
    ({1: "x"}, "ti"),
    ({"location": "UTC", "time_zone": "UTC"}, "ti.time_zone"),
    ({"times": "09:00-17:00"}, "ti.times"),
    ({"times": {"start_time": "09:00", "end_time": "10:00"}}, "ti.times"),
    ({"times": ["09:00"]}, "ti.times[0]"),
    ({"times": [{"start_time": "09:00"}]}, "ti.times[0].end_time"),
    ({"times": [{"end_time": "09:00"}]}, "ti.times[0].start_time"),
    ({"times": [{"start_time": "09:00", "end_time": "10:00", "zone": "x"}]}, "ti.times[0]"),
    ({"times": hours("9:00", "10:00")}, "ti.times[0].start_time"),
    ({"times": hours("09:00", "10:0")}, "ti.times[0].end_time"),
    ({"times": hours("25:00", "26:00")}, "ti.times[0].start_time"),
    ({"times": hours("09:60", "10:00")}, "ti.times[0].start_time"),
    ({"times": hours("00:00", "24:01")}, "ti.times[0].end_time"),
    ({"times": hours("24:00", "24:00")}, "ti.times[0].start_time"),
    ({"times": hours("10:00", "10:00")}, "ti.times[0].end_time"),
    ({"times": hours("22:00", "06:00")}, "ti.times[0].end_time"),
    ({"times": [{"start_time": 900, "end_time": "10:00"}]}, "ti.times[0].start_time"),
    ({"times": hours("09:00", "10:00") + hours("x", "y")}, "ti.times[1].start_time"),
    ({"weekdays": "monday"}, "ti.weekdays"),
    ({"weekdays": ["funday"]}, "ti.weekdays[0]"),
    ({"weekdays": ["monday:"]}, "ti.weekdays[0]"),
    ({"weekdays": ["monday:tuesday:friday"]}, "ti.weekdays[0]"),
    ({"weekdays": [1]}, "ti.weekdays[0]"),
    ({"weekdays": ["mon"]}, "ti.weekdays[0]"),
    ({"weekdays": ["monday"] * 65}, "ti.weekdays"),
    ({"days_of_month": ["0"]}, "ti.days_of_month[0]"),
    ({"days_of_month": ["32"]}, "ti.days_of_month[0]"),
    ({"days_of_month": ["-32"]}, "ti.days_of_month[0]"),
    ({"days_of_month": ["-1:5"]}, "ti.days_of_month[0]"),
    ({"days_of_month": ["5:1"]}, "ti.days_of_month[0]"),
    ({"days_of_month": ["-1:-3"]}, "ti.days_of_month[0]"),
    ({"days_of_month": ["28:-1"]}, "ti.days_of_month[0]"),
    ({"days_of_month": ["1.5"]}, "ti.days_of_month[0]"),
    ({"days_of_month": [True]}, "ti.days_of_month[0]"),
    ({"days_of_month": [100]}, "ti.days_of_month[0]"),
    ({"months": ["13"]}, "ti.months[0]"),
    ({"months": ["0"]}, "ti.months[0]"),
    ({"months": [0]}, "ti.months[0]"),
    ({"months": ["march:january"]}, "ti.months[0]"),
    ({"months": ["smarch"]}, "ti.months[0]"),
    ({"months": ["١"]}, "ti.months[0]"),
    ({"location": "Mars/Olympus_Mons"}, "ti.location"),
    ({"location": "../../etc/passwd"}, "ti.location"),
    ({"location": "/etc/localtime"}, "ti.location"),
    ({"location": "localtime"}, "ti.location"),
    ({"location": "Europe"}, "ti.location"),
    ({"location": "europe/berlin"}, "ti.location"),
    ({"location": "Europe/Berlin/"}, "ti.location"),
    ({"location": "Europe/Berlin\x00"}, "ti.location"),
    ({"location": "\ud800"}, "ti.location"),
    ({"location": "A" * 65}, "ti.location"),
    ({"location": ""}, "ti.location"),
    ({"location": 5}, "ti.location"),
    ({"time_zone": "Nowhere/Land"}, "ti.time_zone"),
]


@pytest.mark.parametrize("doc,field", PARSE_ERRORS, ids=range(len(PARSE_ERRORS)))
def test_parse_errors_name_the_sub_field(doc: object, field: str) -> None:
    with pytest.raises(FieldError) as caught:
        parse_time_interval(doc, "ti")
    assert caught.value.field == field


# quiet hours: (start, end, zone, UTC instant, expected contains)
QUIET = [
    ("22:00", "07:00", "Asia/Kolkata", "2024-06-03 16:29", False),   # 21:59 IST
    ("22:00", "07:00", "Asia/Kolkata", "2024-06-03 16:30", True),    # 22:00 IST
    ("22:00", "07:00", "Asia/Kolkata", "2024-06-03 18:30", True),    # 00:00 IST
    ("22:00", "07:00", "Asia/Kolkata", "2024-06-04 01:29", True),    # 06:59 IST
    ("22:00", "07:00", "Asia/Kolkata", "2024-06-04 01:30", False),   # 07:00 IST
    ("23:30", "06:15", "America/Los_Angeles", "2024-06-03 06:29", False),   # 23:29 PDT
    ("23:30", "06:15", "America/Los_Angeles", "2024-06-03 06:30", True),    # 23:30 PDT
    ("23:30", "06:15", "America/Los_Angeles", "2024-06-03 13:14", True),    # 06:14 PDT
    ("23:30", "06:15", "America/Los_Angeles", "2024-06-03 13:15", False),   # 06:15 PDT
    ("23:30", "06:15", "America/Los_Angeles", "2024-01-10 14:14", True),    # 06:14 PST
    ("23:30", "06:15", "America/Los_Angeles", "2024-01-10 14:15", False),   # 06:15 PST
    ("09:00", "17:00", "Asia/Kolkata", "2024-06-03 03:30", True),           # no midnight: one range
    ("09:00", "17:00", "Asia/Kolkata", "2024-06-03 11:30", False),
]


@pytest.mark.parametrize("start,end,zone,instant,expected", QUIET)
def test_quiet_window_contains(start: str, end: str, zone: str, instant: str, expected: bool) -> None:
    assert quiet_window(start, end, zone, "quiet").contains(utc(instant)) is expected


@pytest.mark.parametrize("start,end,times", [
    ("22:00", "07:00", ((0, 420), (1320, 1440))),
    ("22:00", "24:00", ((1320, 1440),)),
    ("22:00", "00:00", ((1320, 1440),)),
    ("00:00", "07:00", ((0, 420),)),
    ("07:00", "22:00", ((420, 1320),)),
])
def test_quiet_window_ranges(start: str, end: str, times: tuple) -> None:
    assert quiet_window(start, end, "UTC", "quiet").times == times


# (start, end, zone, from, expected next change): crossing midnight is one stretch, not two
QUIET_CHANGES = [
    ("22:00", "07:00", "Asia/Kolkata", "2024-06-03 12:00", "2024-06-03 16:30"),
    ("22:00", "07:00", "Asia/Kolkata", "2024-06-03 16:30", "2024-06-04 01:30"),
    ("23:30", "06:15", "America/Los_Angeles", "2024-06-03 12:00", "2024-06-03 13:15"),
    ("23:30", "06:15", "America/Los_Angeles", "2024-06-03 13:15", "2024-06-04 06:30"),
    # over the fall-back night: 23:30 PDT to 06:15 PST
    ("23:30", "06:15", "America/Los_Angeles", "2024-11-03 06:30", "2024-11-03 14:15"),
    # over the spring-forward night: 23:30 PST to 06:15 PDT
    ("23:30", "06:15", "America/Los_Angeles", "2024-03-10 07:30", "2024-03-10 13:15"),
]


@pytest.mark.parametrize("start,end,zone,since,expected", QUIET_CHANGES)
def test_quiet_window_next_change(start: str, end: str, zone: str, since: str, expected: str) -> None:
    assert quiet_window(start, end, zone, "quiet").next_change(utc(since)) == utc(expected)


@pytest.mark.parametrize("start,end,zone,field", [
    ("08:00", "08:00", "UTC", "quiet.end"),
    ("00:00", "24:00", "UTC", "quiet.end"),
    ("24:00", "07:00", "UTC", "quiet.start"),
    ("7:00", "08:00", "UTC", "quiet.start"),
    ("07:00", "8", "UTC", "quiet.end"),
    (None, "08:00", "UTC", "quiet.start"),
    ("07:00", 800, "UTC", "quiet.end"),
    ("22:00", "07:00", "Mars/Base", "quiet.location"),
    ("22:00", "07:00", "../etc/passwd", "quiet.location"),
    ("22:00", "07:00", None, "quiet.location"),
])
def test_quiet_window_errors(start: object, end: object, zone: object, field: str) -> None:
    with pytest.raises(FieldError) as caught:
        quiet_window(start, end, zone, "quiet")
    assert caught.value.field == field


WEEKEND = {"weekdays": ["saturday:sunday"], "location": "Europe/Berlin"}
UTC_9_17 = {"times": hours("09:00", "17:00")}
UTC_16_20 = {"times": hours("16:00", "20:00")}

# (member documents, from, expected next change of the union)
WINDOW_CHANGES = [
    ([BERLIN_OFFICE, WEEKEND], "2024-06-07 14:00", "2024-06-07 15:00"),   # office ends Friday 17:00 CEST
    ([BERLIN_OFFICE, WEEKEND], "2024-06-07 15:00", "2024-06-07 22:00"),   # weekend starts Saturday 00:00 CEST
    ([BERLIN_OFFICE, WEEKEND], "2024-06-08 10:00", "2024-06-09 22:00"),   # weekend ends Monday 00:00 CEST
    ([BERLIN_OFFICE, WEEKEND], "2024-06-09 22:00", "2024-06-10 07:00"),
    ([UTC_9_17, UTC_16_20], "2024-06-03 10:00", "2024-06-03 20:00"),       # 17:00 is covered by the other
    ([UTC_16_20, UTC_9_17], "2024-06-03 08:00", "2024-06-03 09:00"),
    ([{"times": hours("08:00", "12:00")}, {"times": hours("12:00", "18:00")}], "2024-06-03 09:00",
     "2024-06-03 18:00"),   # adjacent ranges make one stretch
    ([BERLIN_OFFICE, NY_OFFICE], "2024-06-03 08:00", "2024-06-03 21:00"),  # 07:00-15:00 and 13:00-21:00 UTC
    ([BERLIN_OFFICE, NY_OFFICE], "2024-06-03 21:00", "2024-06-04 07:00"),
    ([BERLIN_OFFICE, NY_OFFICE], "2024-06-07 21:00", "2024-06-10 07:00"),
    ([{}, UTC_9_17], "2024-06-03 10:00", None),
    ([], "2024-06-03 10:00", None),
]


@pytest.mark.parametrize("docs,since,expected", WINDOW_CHANGES)
def test_window_next_change(docs: list[dict], since: str, expected: str | None) -> None:
    window = parse_window(docs, "w")
    found = window.next_change(utc(since))
    assert found == (utc(expected) if expected else None)


@pytest.mark.parametrize("docs,instant,expected", [
    ([BERLIN_OFFICE, WEEKEND], "2024-06-08 12:00", True),
    ([BERLIN_OFFICE, WEEKEND], "2024-06-07 12:00", True),
    ([BERLIN_OFFICE, WEEKEND], "2024-06-07 18:00", False),
    ([UTC_9_17, UTC_16_20], "2024-06-03 19:59", True),
    ([UTC_9_17, UTC_16_20], "2024-06-03 20:00", False),
    ([], "2024-06-03 12:00", False),
])
def test_window_contains(docs: list[dict], instant: str, expected: bool) -> None:
    assert Window(tuple(parse_time_interval(d, "w") for d in docs)).contains(utc(instant)) is expected


def test_window_next_change_horizon() -> None:
    window = parse_window([BERLIN_OFFICE, WEEKEND], "w")
    assert window.next_change(utc("2024-06-08 10:00"), horizon_days=1) is None
    assert window.next_change(utc("2024-06-08 10:00"), horizon_days=2) == utc("2024-06-09 22:00")


@pytest.mark.parametrize("value,field", [
    (None, "w"), ({"times": []}, "w"), ([None], "w[0]"),
    ([{}, {"times": hours("10:00", "09:00")}], "w[1].times[0].end_time"),
    ([{}] * 65, "w"),
])
def test_parse_window_errors(value: object, field: str) -> None:
    with pytest.raises(FieldError) as caught:
        parse_window(value, field="w")
    assert caught.value.field == field


@pytest.mark.parametrize("kwargs", [
    dict(times=((10, 5),)), dict(times=((0, 1441),)), dict(weekdays=((0, 7),)), dict(months=((0, 12),)),
    dict(days_of_month=((0, 5),)), dict(location="Nowhere/Land"),
])
def test_building_an_invalid_interval_directly_is_a_programming_error(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        TimeInterval(**kwargs)


def test_interval_equality_ignores_the_cached_zone() -> None:
    assert parse_time_interval({"time_zone": "Europe/Berlin"}, "ti") == TimeInterval(location="Europe/Berlin")
