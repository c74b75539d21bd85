"""Schedule expressions as tables: fire times (daylight-saving changes, month ends, leap years),
refusals with their reasons, catch-up after downtime, sweeps against a brute-force oracle; and
the Scheduled Event a tick sends."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from sources.cron import EPOCH, Cron, ScheduleError, latest_fire, next_fire, parse
from sources.schedule import CatchUp, encode, resume, rule_arn, scheduled_event


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def fires(expression: str, after: str, n: int, tz: str = "UTC") -> list[str]:
    schedule = parse(expression, tz)
    t: datetime | None = utc(after)
    out = []
    for _ in range(n):
        t = next_fire(schedule, t)  # type: ignore[arg-type]
        if t is None:
            break
        out.append(t.strftime("%Y-%m-%d %H:%M:%S"))
    return out


@pytest.mark.parametrize(("expression", "tz", "after", "want"), [
    # plain EventBridge forms, UTC
    ("cron(0 12 * * ? *)", "UTC", "2027-01-01 00:00", ["2027-01-01 12:00:00", "2027-01-02 12:00:00"]),
    ("cron(0 12 * * ? *)", "UTC", "2027-01-01 12:00", ["2027-01-02 12:00:00"]),  # strictly after
    ("cron(15 10 ? * 6L 2027)", "UTC", "2027-11-27 00:00", ["2027-12-31 10:15:00"]),  # then none
    ("cron(5-20/5 8-9 ? JAN,MAR * 2027)", "UTC", "2027-03-31 09:10",
     ["2027-03-31 09:15:00", "2027-03-31 09:20:00"]),
    ("cron(1/20 * * * ? *)", "UTC", "2027-01-01 00:00", ["2027-01-01 00:01:00", "2027-01-01 00:21:00",
                                                          "2027-01-01 00:41:00", "2027-01-01 01:01:00"]),
    ("cron(0 0 1 1 ? 2026/4)", "UTC", "2027-01-01 00:00", ["2030-01-01 00:00:00", "2034-01-01 00:00:00"]),
    ("cron(0 8 ? * mon-fri *)", "UTC", "2027-01-01 09:00", ["2027-01-04 08:00:00"]),  # names, any case
    # month ends and leap years
    ("cron(0 0 L * ? *)", "UTC", "2027-01-31 00:00", ["2027-02-28 00:00:00", "2027-03-31 00:00:00"]),
    ("cron(0 0 L 2 ? *)", "UTC", "2027-03-01 00:00", ["2028-02-29 00:00:00", "2029-02-28 00:00:00"]),
    ("cron(0 0 L 2 ? 2100)", "UTC", "2027-01-01 00:00", ["2100-02-28 00:00:00"]),  # not a leap year
    ("cron(0 0 29 2 ? 1999-2001)", "UTC", "1999-01-01 00:00", ["2000-02-29 00:00:00"]),  # but 2000 is
    ("cron(0 0 31 * ? *)", "UTC", "2027-01-31 00:00", ["2027-03-31 00:00:00", "2027-05-31 00:00:00"]),
    ("0 0 29 2 *", "UTC", "2027-01-01 00:00", ["2028-02-29 00:00:00", "2032-02-29 00:00:00"]),
    # W, LW, # and L in day-of-week
    ("cron(0 0 15W * ? *)", "UTC", "2027-05-01 00:00", ["2027-05-14 00:00:00", "2027-06-15 00:00:00"]),
    ("cron(0 0 15W 8 ? *)", "UTC", "2027-01-01 00:00", ["2027-08-16 00:00:00"]),  # a Sunday → Monday
    ("cron(0 0 1W 5 ? *)", "UTC", "2027-01-01 00:00", ["2027-05-03 00:00:00"]),  # Saturday the 1st
    ("cron(0 0 31W 10 ? *)", "UTC", "2027-01-01 00:00", ["2027-10-29 00:00:00"]),  # stays in October
    ("cron(0 0 LW * ? *)", "UTC", "2027-01-01 00:00", ["2027-01-29 00:00:00", "2027-02-26 00:00:00",
                                                        "2027-03-31 00:00:00"]),
    ("cron(0 0 ? * 3#2 *)", "UTC", "2027-01-01 00:00", ["2027-01-12 00:00:00", "2027-02-09 00:00:00"]),
    ("cron(0 0 ? * MON#5 *)", "UTC", "2027-01-01 00:00", ["2027-03-29 00:00:00", "2027-05-31 00:00:00",
                                                           "2027-08-30 00:00:00"]),
    ("cron(0 0 ? * 6L *)", "UTC", "2027-01-01 00:00", ["2027-01-29 00:00:00", "2027-02-26 00:00:00"]),
    ("cron(0 0 ? * L *)", "UTC", "2027-01-01 00:00", ["2027-01-02 00:00:00", "2027-01-09 00:00:00"]),
    # daylight saving, New York: 2027-03-14 02:00 → 03:00, 2027-11-07 02:00 → 01:00
    ("cron(0 10 * * ? *)", "America/New_York", "2027-03-13 00:00",
     ["2027-03-13 15:00:00", "2027-03-14 14:00:00", "2027-03-15 14:00:00"]),
    ("cron(30 2 * * ? *)", "America/New_York", "2027-03-13 12:00",  # skipped on the 14th
     ["2027-03-15 06:30:00", "2027-03-16 06:30:00"]),
    ("cron(30 1 * * ? *)", "America/New_York", "2027-11-06 12:00",  # once on the 7th, the first
     ["2027-11-07 05:30:00", "2027-11-08 06:30:00"]),
    ("cron(0/15 1 * * ? *)", "America/New_York", "2027-11-07 04:59",
     ["2027-11-07 05:00:00", "2027-11-07 05:15:00", "2027-11-07 05:30:00", "2027-11-07 05:45:00",
      "2027-11-08 06:00:00"]),
    ("cron(45 1 * * ? *)", "America/New_York", "2027-11-07 06:10",  # from inside the second 1 o'clock
     ["2027-11-08 06:45:00"]),
    # Paris: 2027-03-28 02:00 → 03:00, 2027-10-31 03:00 → 02:00
    ("cron(0 9 ? * MON-FRI *)", "Europe/Paris", "2027-03-26 00:00",
     ["2027-03-26 08:00:00", "2027-03-29 07:00:00", "2027-03-30 07:00:00"]),
    ("cron(30 2 * * ? *)", "Europe/Paris", "2027-03-27 12:00", ["2027-03-29 00:30:00"]),
    ("cron(30 2 * * ? *)", "Europe/Paris", "2027-10-30 12:00",
     ["2027-10-31 00:30:00", "2027-11-01 01:30:00"]),
    ("0 9 * * 1-5", "Europe/Paris", "2027-10-29 00:00", ["2027-10-29 07:00:00", "2027-11-01 08:00:00"]),
    # Lord Howe moves its clocks by half an hour: 2027-10-03 02:00 → 02:30
    ("cron(15 2 * * ? *)", "Australia/Lord_Howe", "2027-10-02 00:00", ["2027-10-03 15:15:00"]),
    ("cron(45 2 * * ? *)", "Australia/Lord_Howe", "2027-10-02 00:00", ["2027-10-02 15:45:00"]),
    # Sydney, southern hemisphere: 2027-04-04 03:00 → 02:00
    ("cron(30 2 * * ? *)", "Australia/Sydney", "2027-04-03 00:00",
     ["2027-04-03 15:30:00", "2027-04-04 16:30:00"]),
    # crontab lines
    ("*/15 * * * *", "UTC", "2027-01-01 00:07", ["2027-01-01 00:15:00", "2027-01-01 00:30:00"]),
    ("0 0 1,15 * 5", "UTC", "2027-01-01 00:00",  # both restricted: either matches
     ["2027-01-08 00:00:00", "2027-01-15 00:00:00", "2027-01-22 00:00:00", "2027-01-29 00:00:00",
      "2027-02-01 00:00:00"]),
    ("0 0 */2 * 5", "UTC", "2027-01-01 00:00",  # a field starting with *: both must match
     ["2027-01-15 00:00:00", "2027-01-29 00:00:00", "2027-02-05 00:00:00"]),
    ("0 0 * * 7", "UTC", "2027-01-01 00:00", ["2027-01-03 00:00:00"]),  # 7 is Sunday, as 0
    ("0 0 * * sun-tue", "UTC", "2027-01-03 00:00", ["2027-01-04 00:00:00", "2027-01-05 00:00:00",
                                                     "2027-01-10 00:00:00"]),
    ("30 4 1 jan *", "UTC", "2027-01-01 00:00", ["2027-01-01 04:30:00", "2028-01-01 04:30:00"]),
    ("@weekly", "UTC", "2027-01-01 00:00", ["2027-01-03 00:00:00", "2027-01-10 00:00:00"]),
    ("@hourly", "UTC", "2027-01-01 00:00", ["2027-01-01 01:00:00"]),
    # rates: durations from the epoch, whatever the zone's clocks do
    ("rate(5 minutes)", "UTC", "2027-01-01 00:02", ["2027-01-01 00:05:00", "2027-01-01 00:10:00"]),
    ("rate(5 minutes)", "UTC", "2027-01-01 00:05", ["2027-01-01 00:10:00"]),
    ("rate(1 day)", "America/New_York", "2027-03-13 12:00", ["2027-03-14 00:00:00", "2027-03-15 00:00:00"]),
    ("rate(3 hours)", "UTC", "2027-01-01 01:00", ["2027-01-01 03:00:00"]),
    ("rate(7 seconds)", "UTC", "2027-01-01 00:00", ["2027-01-01 00:00:01", "2027-01-01 00:00:08"]),
    # one-time, in the zone
    ("at(2027-01-01T09:00:00)", "Europe/Paris", "2026-06-01 00:00", ["2027-01-01 08:00:00"]),
    ("at(2027-01-01T09:00:00)", "Europe/Paris", "2027-01-01 08:00", []),
    ("at(2027-10-31T02:30:00)", "Europe/Paris", "2027-01-01 00:00", ["2027-10-31 00:30:00"]),  # first
])
def test_next_fire(expression: str, tz: str, after: str, want: list[str]) -> None:
    assert fires(expression, after, len(want) or 1, tz) == want


def test_a_schedule_that_runs_out_ends() -> None:
    assert fires("cron(15 10 ? * 6L 2027)", "2027-11-27 00:00", 5) == ["2027-12-31 10:15:00"]
    assert fires("at(2027-01-01T09:00:00)", "2026-01-01 00:00", 5) == ["2027-01-01 09:00:00"]


def test_rate_from_an_anchor() -> None:
    anchor = datetime(2027, 1, 1, 0, 0, 10, tzinfo=ZoneInfo("Europe/Paris"))
    schedule = parse("rate(1 minute)", anchor=anchor)
    assert next_fire(schedule, utc("2026-01-01 00:00")) == anchor
    assert next_fire(schedule, anchor) == anchor + timedelta(minutes=1)
    with pytest.raises(ScheduleError, match="anchor needs a time zone"):
        parse("rate(1 minute)", anchor=datetime(2027, 1, 1))


@pytest.mark.parametrize(("expression", "tz", "message"), [
    ("cron(0 12 * * * *)", "UTC",
     "day-of-month and day-of-week cannot both be given: one of them must be ?"),
    ("cron(0 12 ? * ? *)", "UTC", "day-of-month and day-of-week cannot both be ?"),
    ("cron(0 12 * * ?)", "UTC",
     "cron() takes six fields (minutes hours day-of-month month day-of-week year), got 5"),
    ("cron(60 * * * ? *)", "UTC", "minutes: 60 is outside 0-59"),
    ("cron(0 24 * * ? *)", "UTC", "hours: 24 is outside 0-23"),
    ("cron(0 0 0 * ? *)", "UTC", "day-of-month: 0 is outside 1-31"),
    ("cron(0 0 ? * 8 *)", "UTC", "day-of-week: 8 is outside 1-7"),
    ("cron(0 0 * * ? 2200)", "UTC", "year: 2200 is outside 1970-2199"),
    ("cron(0 0 * FOO ? *)", "UTC",
     "month: 'FOO' is not a number or a name (JAN, FEB, MAR, APR, MAY, JUN, JUL, AUG, SEP, OCT, "
     "NOV, DEC)"),
    ("cron(0 0 ? * 3#1,6#3 *)", "UTC", "day-of-week: '3#1,6#3': nL and n#k stand alone (6L, 3#2)"),
    ("cron(0 0 ? * 3#6 *)", "UTC", "day-of-week: '3#6': the week after # must be 1 to 5"),
    ("cron(0 0 L,15 * ? *)", "UTC", "day-of-month: 'L,15': L, LW and nW stand alone (L, LW, 15W)"),
    ("cron(0 0 1-5W * ? *)", "UTC", "day-of-month: '1-5W': L, LW and nW stand alone (L, LW, 15W)"),
    ("cron(0/0 * * * ? *)", "UTC", "minutes: the increment in '0/0' must be a number from 1 to 59"),
    ("cron(30-10 * * * ? *)", "UTC", "minutes: the range '30-10' runs backwards"),
    ("cron(1,,2 * * * ? *)", "UTC", "minutes: empty item in '1,,2'"),
    ("cron(0 0 31 2 ? *)", "UTC", "'cron(0 0 31 2 ? *)' never fires: no date it names exists"),
    ("cron(0 0 30 2 ? *)", "UTC", "'cron(0 0 30 2 ? *)' never fires: no date it names exists"),
    ("cron(0 0 31W 4 ? 2027)", "UTC",  # April has no 31st
     "'cron(0 0 31W 4 ? 2027)' never fires: no date it names exists"),
    ("rate(1 minutes)", "UTC", "rate(): one takes the singular: rate(1 minute)"),
    ("rate(5 minute)", "UTC", "rate(): more than one takes the plural: rate(5 minutes)"),
    ("rate(0 minutes)", "UTC", "rate(): the value must be a positive number"),
    ("rate(5 weeks)", "UTC", "rate(): unknown unit 'weeks': minutes, hours, days (or seconds)"),
    ("rate(five minutes)", "UTC",
     "rate() takes a value and a unit, as in rate(5 minutes), got rate(five minutes)"),
    ("rate 5 minutes", "UTC", "'rate 5 minutes': expected rate(…), cron(…) or at(…), with its parentheses"),
    ("at(2027-02-30T09:00:00)", "UTC", "at(2027-02-30T09:00:00): day is out of range for month"),
    ("at(2027-01-01 09:00)", "UTC",
     "at() takes a local date and time yyyy-mm-ddThh:mm:ss, got at(2027-01-01 09:00)"),
    ("at(2027-03-28T02:30:00)", "Europe/Paris",
     "at(2027-03-28T02:30:00): that time does not exist in Europe/Paris: the clocks skip it"),
    ("cron(0 12 * * ? *)", "Mars/Olympus", "unknown time zone 'Mars/Olympus' (an IANA name such as "
     "\"Europe/Paris\")"),
    ("cron(0 12 * * ? *)", "../etc/passwd", "unknown time zone '../etc/passwd' (an IANA name such as "
     "\"Europe/Paris\")"),
    ("0 0 * * * *", "UTC", "a crontab line has five fields; EventBridge's six-field form is written "
     "cron(minutes hours day-of-month month day-of-week year)"),
    ("0 12 * * ?", "UTC", "? belongs to cron(…); a crontab line uses *"),
    ("@reboot", "UTC", "'@reboot' is not a schedule; the macros are @yearly, @annually, @monthly, "
     "@weekly, @daily, @midnight, @hourly"),
    ("every day", "UTC",
     "expected rate(…), cron(…), at(…) or a five-field crontab line, got 'every day'"),
    ("", "UTC", "expected rate(…), cron(…), at(…) or a five-field crontab line, got ''"),
])
def test_refused_with_reason(expression: str, tz: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse(expression, tz)
    assert str(caught.value) == message


@pytest.mark.parametrize(("expression", "after", "now", "want"), [
    ("rate(5 minutes)", "2027-01-01 00:00", "2027-01-03 10:07", "2027-01-03 10:05"),
    ("rate(5 minutes)", "2027-01-03 10:05", "2027-01-03 10:07", None),  # nothing since the last
    ("cron(0 9 * * ? *)", "2027-05-02 09:00", "2027-05-02 12:00", None),
    ("cron(0 9 * * ? *)", "2026-01-01 00:00", "2027-05-03 08:00", "2027-05-02 09:00"),
    ("cron(0 0 1 1 ? *)", "2020-01-01 00:00", "2027-06-01 00:00", "2027-01-01 00:00"),
    ("cron(* 9 * * ? *)", "2027-01-01 00:00", "2027-01-02 20:00", "2027-01-02 09:59"),  # dense, then a gap
    ("cron(0 0 1 1 ? 2020)", "2019-01-01 00:00", "2027-06-01 00:00", "2020-01-01 00:00"),
    ("at(2027-01-01T09:00:00)", "2026-01-01 00:00", "2027-06-01 00:00", "2027-01-01 09:00"),
    ("at(2027-01-01T09:00:00)", "2027-01-01 09:00", "2027-06-01 00:00", None),  # fired already
    ("at(2027-01-01T09:00:00)", "2026-01-01 00:00", "2026-06-01 00:00", None),  # not yet
])
def test_latest_fire(expression: str, after: str, now: str, want: str | None) -> None:
    got = latest_fire(parse(expression), utc(after), utc(now))
    assert got == (utc(want) if want else None)


def test_rate_never_drifts() -> None:
    """10,000 ticks of rate(7 minutes), each found from the one before, all exact multiples."""
    schedule = parse("rate(7 minutes)")
    t = utc("2027-01-01 00:00:00.123456")
    for _ in range(10_000):
        t = next_fire(schedule, t)  # type: ignore[assignment]
        assert (t - EPOCH) % timedelta(minutes=7) == timedelta(0)
    assert t == EPOCH + timedelta(minutes=7) * ((utc("2027-01-01 00:00") - EPOCH) //
                                                timedelta(minutes=7) + 10_000)


def test_a_year_of_noons_in_paris() -> None:
    ticks = fires("cron(0 12 * * ? *)", "2026-12-31 23:59", 400, "Europe/Paris")
    in_2027 = [t for t in ticks if t.startswith("2027")]
    assert len(in_2027) == 365
    local = [utc(t).astimezone(ZoneInfo("Europe/Paris")) for t in in_2027]
    assert {(t.hour, t.minute) for t in local} == {(12, 0)}


def brute_force(minutes: set[int], hours: set[int], weekdays: set[int] | None, tz: ZoneInfo,
                start: datetime, end: datetime) -> list[datetime]:
    """Every UTC minute in [start, end) whose local wall time matches, each wall time once:
    the oracle for the search, written the slow way."""
    found, seen = [], set()
    t = start
    while t < end:
        wall = t.astimezone(tz)
        key = wall.replace(tzinfo=None)
        if (wall.minute in minutes and wall.hour in hours and key not in seen
                and (weekdays is None or wall.weekday() in weekdays)):
            found.append(t)
        seen.add(key)
        t += timedelta(minutes=1)
    return found


@pytest.mark.parametrize(("expression", "minutes", "hours", "weekdays"), [
    ("cron(*/10 * * * ? *)", set(range(0, 60, 10)), set(range(24)), None),
    ("cron(5,35 1-3 * * ? *)", {5, 35}, {1, 2, 3}, None),
    ("cron(0/20 2 ? * SUN *)", {0, 20, 40}, {2}, {6}),
    ("*/30 0-4 * * 0,6", {0, 30}, {0, 1, 2, 3, 4}, {5, 6}),
])
@pytest.mark.parametrize(("tz", "start"), [
    ("Europe/Paris", "2027-03-27 00:00"), ("Europe/Paris", "2027-10-30 00:00"),
    ("America/New_York", "2027-11-06 00:00"), ("Australia/Lord_Howe", "2027-10-02 00:00"),
])
def test_sweep_over_a_change_of_clocks(expression: str, minutes: set[int], hours: set[int],
                                       weekdays: set[int] | None, tz: str, start: str) -> None:
    zone = ZoneInfo(tz)
    begin, end = utc(start), utc(start) + timedelta(days=3)
    schedule = parse(expression, tz)
    assert isinstance(schedule, Cron)
    chain, t = [], begin - timedelta(microseconds=1)
    while (t := next_fire(schedule, t)) is not None and t < end:  # type: ignore[assignment]
        chain.append(t)
    assert chain == brute_force(minutes, hours, weekdays, zone, begin, end)


# --- sources.schedule: the Scheduled Event of a tick ------------------------------------------------


def test_scheduled_event_shape() -> None:
    arn = rule_arn("eu-west-3", "123456789012", "nightly")
    event = json.loads(encode(scheduled_event(arn, utc("2027-01-01 09:00:00.250"),
                                              account="123456789012", region="eu-west-3")))
    assert list(event) == ["version", "id", "detail-type", "source", "account", "time", "region",
                           "resources", "detail"]
    assert event | {"id": "-"} == {
        "version": "0", "id": "-", "detail-type": "Scheduled Event", "source": "aws.events",
        "account": "123456789012", "time": "2027-01-01T09:00:00Z", "region": "eu-west-3",
        "resources": ["arn:aws:events:eu-west-3:123456789012:rule/nightly"], "detail": {}}
    assert uuid.UUID(event["id"]).version == 5


@pytest.mark.parametrize(("a", "b", "same"), [
    (("r1", "2027-01-01 09:00:00"), ("r1", "2027-01-01 09:00:00.900"), True),  # one tick, one id
    (("r1", "2027-01-01 09:00:00"), ("r1", "2027-01-01 09:00:01"), False),
    (("r1", "2027-01-01 09:00:00"), ("r2", "2027-01-01 09:00:00"), False),
])
def test_a_tick_has_one_identity(a: tuple[str, str], b: tuple[str, str], same: bool) -> None:
    def build(rule: str, at: str) -> bytes:
        return encode(scheduled_event(rule_arn("us-east-1", "000000000000", rule), utc(at),
                                      account="000000000000", region="us-east-1"))
    assert (build(*a) == build(*b)) is same


@pytest.mark.parametrize(("expression", "last", "now", "catch_up", "want"), [
    ("rate(1 hour)", "2027-01-01 00:00", "2027-01-01 05:30", "latest", "2027-01-01 05:00"),  # once
    ("rate(1 hour)", "2027-01-01 00:00", "2027-01-01 05:30", "none", None),
    ("rate(1 hour)", None, "2027-01-01 05:30", "latest", None),  # a new trigger missed nothing
    ("rate(1 hour)", "2027-01-01 05:00", "2027-01-01 05:30", "latest", None),  # fired by another node
    ("cron(0 9 * * ? *)", "2027-01-01 09:00", "2027-01-03 08:00", "latest", "2027-01-02 09:00"),
    ("at(2027-01-01T09:00:00)", "2026-12-01 00:00", "2027-01-05 00:00", "latest", "2027-01-01 09:00"),
])
def test_resume(expression: str, last: str | None, now: str, catch_up: CatchUp, want: str | None) -> None:
    got = resume(parse(expression), utc(last) if last else None, utc(now), catch_up)
    assert got == (utc(want) if want else None)
