"""Schedule expressions and their fire times: EventBridge Scheduler's ``rate(…)``, ``cron(…)`` and
``at(…)``, and plain five-field crontab lines. Pure: no clock, no I/O.

``parse(expression, timezone)`` checks an expression and returns a ``Schedule``, or raises
``ScheduleError`` whose message is the reason (config validation shows it as is).
``next_fire(schedule, after)`` is the first fire time strictly after ``after``, computed from the
expression each time, so a scheduler that always asks for the time after the tick it just fired
never drifts. ``latest_fire(schedule, after, now)`` is the last tick a daemon missed while it was
down (for ``catch_up = "latest"``). Times in and out are aware datetimes; results are in UTC.

Daylight saving, as EventBridge Scheduler documents it: a cron time that falls in the hour the
clocks skip in spring does not fire that day, and a time that occurs twice in autumn fires once,
at its first occurrence. A rate is a duration on the clock (``rate(1 day)`` is every 24 hours,
whatever the local day's length) counted from an anchor, by default the Unix epoch, so that every
daemon given the same expression computes the same ticks. Headwater's one extension:
``rate(N seconds)``, since EventBridge's minute is too coarse to test a scheduler with.

The arithmetic is our own (no cron library): a year → month → day → hour → minute search over
the sets each field allows, pruned at the first level that passes the start.
"""

from __future__ import annotations

import calendar
import re
from bisect import bisect_left
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
YEARS = (1970, 2199)  # EventBridge's year field; crontab lines, which have none, get the same span
MONTH_NAMES = {name.upper(): i for i, name in enumerate(calendar.month_abbr) if name}
DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
SATURDAY = 5  # Python's weekday(): Monday is 0


class ScheduleError(ValueError):
    """An expression that cannot be scheduled; the message says why."""


# --- which days of a month a day field allows ------------------------------------------------------

DaySpec = Callable[[int, int], list[int]]  # (year, month) → the days that fire, ascending


def _month(year: int, month: int) -> tuple[int, int]:
    """The weekday of the month's first day and its number of days."""
    return calendar.monthrange(year, month)


def every_day(year: int, month: int) -> list[int]:
    return list(range(1, _month(year, month)[1] + 1))


@dataclass(frozen=True)
class MonthDays:
    days: frozenset[int]

    def __call__(self, year: int, month: int) -> list[int]:
        length = _month(year, month)[1]
        return sorted(d for d in self.days if d <= length)


def last_day(year: int, month: int) -> list[int]:
    return [_month(year, month)[1]]


def last_weekday(year: int, month: int) -> list[int]:
    """``LW``: the month's last Monday-to-Friday."""
    first, length = _month(year, month)
    weekday = (first + length - 1) % 7
    return [length - max(0, weekday - 4)]


@dataclass(frozen=True)
class NearestWeekday:
    """``15W``: the Monday-to-Friday nearest the 15th, never outside the month; a day the month
    does not have fires nothing, as the plain number would not."""

    day: int

    def __call__(self, year: int, month: int) -> list[int]:
        first, length = _month(year, month)
        if self.day > length:
            return []
        weekday = (first + self.day - 1) % 7
        if weekday == SATURDAY:
            return [self.day - 1 if self.day > 1 else self.day + 2]
        if weekday == SATURDAY + 1:
            return [self.day + 1 if self.day < length else self.day - 2]
        return [self.day]


@dataclass(frozen=True)
class WeekDays:
    weekdays: frozenset[int]  # Python weekday numbers

    def __call__(self, year: int, month: int) -> list[int]:
        first, length = _month(year, month)
        return [d for d in range(1, length + 1) if (first + d - 1) % 7 in self.weekdays]


@dataclass(frozen=True)
class LastOfWeekday:
    """``6L``: the month's last Friday."""

    weekday: int

    def __call__(self, year: int, month: int) -> list[int]:
        first, length = _month(year, month)
        last = (first + length - 1) % 7
        return [length - (last - self.weekday) % 7]


@dataclass(frozen=True)
class NthWeekday:
    """``3#2``: the month's second Tuesday; a month without a fifth one fires nothing."""

    weekday: int
    n: int

    def __call__(self, year: int, month: int) -> list[int]:
        first, length = _month(year, month)
        day = 1 + (self.weekday - first) % 7 + 7 * (self.n - 1)
        return [day] if day <= length else []


@dataclass(frozen=True)
class CrontabDays:
    """A crontab line's day-of-month and day-of-week together, as cron(8) reads them: when one of
    the fields starts with ``*`` a day must match both, otherwise it may match either."""

    by_month: MonthDays
    by_week: WeekDays
    either: bool

    def __call__(self, year: int, month: int) -> list[int]:
        a, b = set(self.by_month(year, month)), set(self.by_week(year, month))
        return sorted(a | b if self.either else a & b)


# --- schedules ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rate:
    period: timedelta
    anchor: datetime  # UTC; ticks are anchor + k × period, k ≥ 0


@dataclass(frozen=True)
class Cron:
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: DaySpec
    months: tuple[int, ...]
    years: tuple[int, ...]
    tz: ZoneInfo


@dataclass(frozen=True)
class At:
    when: datetime  # UTC


Schedule = Rate | Cron | At


def next_fire(schedule: Schedule, after: datetime) -> datetime | None:
    """The first fire time strictly after ``after`` (aware), in UTC; None if there is none."""
    after = after.astimezone(UTC)
    if isinstance(schedule, Rate):
        if after < schedule.anchor:
            return schedule.anchor
        # Whole microseconds, so that no float rounding ever moves a tick.
        elapsed = (after - schedule.anchor) // timedelta(microseconds=1)
        period = schedule.period // timedelta(microseconds=1)
        ticks = elapsed // period + 1
        return schedule.anchor + timedelta(microseconds=ticks * period)
    if isinstance(schedule, At):
        return schedule.when if schedule.when > after else None
    return _next_cron(schedule, after)


def _next_cron(c: Cron, after: datetime) -> datetime | None:
    start = after.astimezone(c.tz).replace(tzinfo=None, fold=0)
    first_year = (start.year, start.month)
    for year in c.years[bisect_left(c.years, start.year):]:
        for month in c.months:
            if (year, month) < first_year:
                continue
            this_month = (year, month) == first_year
            for day in c.days(year, month):
                if this_month and day < start.day:
                    continue
                today = this_month and day == start.day
                for hour in c.hours:
                    if today and hour < start.hour:
                        continue
                    for minute in c.minutes:
                        if today and hour == start.hour and minute < start.minute:
                            continue
                        wall = datetime(year, month, day, hour, minute)
                        fire = wall.replace(tzinfo=c.tz).astimezone(UTC)
                        # fold=0 is the first of a time that occurs twice (the second never fires);
                        # a time the clocks skip does not survive the round trip.
                        if fire > after and fire.astimezone(c.tz).replace(tzinfo=None) == wall:
                            return fire
    return None


def latest_fire(schedule: Schedule, after: datetime, now: datetime) -> datetime | None:
    """The last fire time in (``after``, ``now``], if any: what ``catch_up = "latest"`` fires.

    It looks back over windows that double from one minute, so a long downtime costs a few
    searches rather than one per missed tick."""
    window = timedelta(minutes=1)
    while True:
        low = max(after, now - window)
        found = next_fire(schedule, low)
        if found is not None and found <= now:
            while (later := next_fire(schedule, found)) is not None and later <= now:
                found = later
            return found
        if low == after:
            return None
        window *= 2


# --- parsing -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    name: str
    lo: int
    hi: int
    names: Mapping[str, int]


_MINUTES = _Field("minutes", 0, 59, {})
_HOURS = _Field("hours", 0, 23, {})
_DAY_OF_MONTH = _Field("day-of-month", 1, 31, {})
_MONTHS = _Field("month", 1, 12, MONTH_NAMES)
_YEARS = _Field("year", *YEARS, {})
_EB_WEEKDAYS = _Field("day-of-week", 1, 7, {n: i + 1 for i, n in enumerate(DAY_NAMES)})
_CRONTAB_WEEKDAYS = _Field("day-of-week", 0, 7, {n: i for i, n in enumerate(DAY_NAMES)})


def _value(text: str, field: _Field) -> int:
    upper = text.upper()
    if upper in field.names:
        return field.names[upper]
    if not text.isdigit():
        raise ScheduleError(f"{field.name}: {text!r} is not a number" +
                            (f" or a name ({', '.join(field.names)})" if field.names else ""))
    value = int(text)
    if not field.lo <= value <= field.hi:
        raise ScheduleError(f"{field.name}: {value} is outside {field.lo}-{field.hi}")
    return value


def _values(text: str, field: _Field) -> frozenset[int]:
    """A list of values, ranges (``a-b``) and increments (``*/n``, ``a/n``, ``a-b/n``)."""
    found: set[int] = set()
    for item in text.split(","):
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or not 1 <= int(step_text) <= field.hi:
                raise ScheduleError(f"{field.name}: the increment in {item!r} must be a number "
                                    f"from 1 to {field.hi}")
            step = int(step_text)
        if base == "*":
            lo, hi = field.lo, field.hi
        elif "-" in base:
            first, _, last = base.partition("-")
            lo, hi = _value(first, field), _value(last, field)
            if lo > hi:
                raise ScheduleError(f"{field.name}: the range {base!r} runs backwards")
        elif base:
            lo = _value(base, field)
            hi = field.hi if slash else lo
        else:
            raise ScheduleError(f"{field.name}: empty item in {text!r}")
        found.update(range(lo, hi + 1, step))
    return frozenset(found)


def _eb_weekday(value: int) -> int:
    """EventBridge's day of the week (1 = Sunday … 7 = Saturday) as Python's (Monday = 0)."""
    return (value + 5) % 7


def _eb_day_of_month(text: str) -> DaySpec | None:
    if text == "?":
        return None
    if text == "L":
        return last_day
    if text == "LW":
        return last_weekday
    if m := re.fullmatch(r"(\d+)W", text):
        return NearestWeekday(_value(m[1], _DAY_OF_MONTH))
    if "L" in text or "W" in text:
        raise ScheduleError(f"day-of-month: {text!r}: L, LW and nW stand alone (L, LW, 15W)")
    return every_day if text == "*" else MonthDays(_values(text, _DAY_OF_MONTH))


def _eb_day_of_week(text: str) -> DaySpec | None:
    if text == "?":
        return None
    if text == "L":
        return WeekDays(frozenset({SATURDAY}))  # the last day of the week
    if m := re.fullmatch(r"(\w+)L", text):
        return LastOfWeekday(_eb_weekday(_value(m[1], _EB_WEEKDAYS)))
    if m := re.fullmatch(r"(\w+)#(\d+)", text):
        if not 1 <= int(m[2]) <= 5:
            raise ScheduleError(f"day-of-week: {text!r}: the week after # must be 1 to 5")
        return NthWeekday(_eb_weekday(_value(m[1], _EB_WEEKDAYS)), int(m[2]))
    if "#" in text or "L" in text:
        raise ScheduleError(f"day-of-week: {text!r}: nL and n#k stand alone (6L, 3#2)")
    if text == "*":
        return every_day
    return WeekDays(frozenset(_eb_weekday(v) for v in _values(text, _EB_WEEKDAYS)))


def _eventbridge_cron(fields: list[str], tz: ZoneInfo) -> Cron:
    if len(fields) != 6:
        raise ScheduleError(f"cron() takes six fields (minutes hours day-of-month month "
                            f"day-of-week year), got {len(fields)}")
    minutes, hours, dom, month, dow, year = fields
    by_month, by_week = _eb_day_of_month(dom), _eb_day_of_week(dow)
    if by_month is None and by_week is None:
        raise ScheduleError("day-of-month and day-of-week cannot both be ?")
    days: DaySpec | None
    if by_month is None:
        days = by_week
    elif by_week is None:
        days = by_month
    else:
        raise ScheduleError("day-of-month and day-of-week cannot both be given: one of them must be ?")
    return _cron(minutes, hours, days, month, _values(year, _YEARS), tz)


def _cron(minutes: str, hours: str, days: DaySpec, month: str, years: frozenset[int],
          tz: ZoneInfo) -> Cron:
    return Cron(tuple(sorted(_values(minutes, _MINUTES))), tuple(sorted(_values(hours, _HOURS))), days,
                tuple(sorted(_values(month, _MONTHS))), tuple(sorted(years)), tz)


CRONTAB_MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}


def _crontab(line: str, tz: ZoneInfo) -> Cron:
    line = CRONTAB_MACROS.get(line, line)
    if line.startswith("@"):
        raise ScheduleError(f"{line.split()[0]!r} is not a schedule; the macros are "
                            f"{', '.join(CRONTAB_MACROS)}")
    fields = line.split()
    if len(fields) == 6:
        raise ScheduleError("a crontab line has five fields; EventBridge's six-field form is "
                            "written cron(minutes hours day-of-month month day-of-week year)")
    if len(fields) != 5:
        raise ScheduleError(f"expected rate(…), cron(…), at(…) or a five-field crontab line, "
                            f"got {line!r}")
    minutes, hours, dom, month, dow = fields
    if "?" in line:
        raise ScheduleError("? belongs to cron(…); a crontab line uses *")
    by_month = MonthDays(_values(dom, _DAY_OF_MONTH))
    # crontab counts 0 (and 7) = Sunday … 6 = Saturday.
    by_week = WeekDays(frozenset((v + 6) % 7 for v in _values(dow, _CRONTAB_WEEKDAYS)))
    days: DaySpec = every_day if dom == dow == "*" else CrontabDays(
        by_month, by_week, either=not (dom.startswith("*") or dow.startswith("*")))
    return _cron(minutes, hours, days, month, frozenset(range(YEARS[0], YEARS[1] + 1)), tz)


_UNITS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1),
          "second": timedelta(seconds=1)}


def _rate(body: str, anchor: datetime) -> Rate:
    m = re.fullmatch(r"\s*(\d+)\s+([a-z]+)\s*", body)
    if not m:
        raise ScheduleError(f"rate() takes a value and a unit, as in rate(5 minutes), got "
                            f"rate({body})")
    value, unit = int(m[1]), m[2]
    singular = unit.removesuffix("s")
    if singular not in _UNITS:
        raise ScheduleError(f"rate(): unknown unit {unit!r}: minutes, hours, days (or seconds)")
    if value == 0:
        raise ScheduleError("rate(): the value must be a positive number")
    if value == 1 and unit != singular:
        raise ScheduleError(f"rate(): one takes the singular: rate(1 {singular})")
    if value > 1 and unit == singular:
        raise ScheduleError(f"rate(): more than one takes the plural: rate({value} {singular}s)")
    return Rate(value * _UNITS[singular], anchor)


def _at(body: str, tz: ZoneInfo) -> At:
    m = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})", body)
    if not m:
        raise ScheduleError(f"at() takes a local date and time yyyy-mm-ddThh:mm:ss, got at({body})")
    year, month, day, hour, minute, second = (int(part) for part in m.groups())
    try:
        wall = datetime(year, month, day, hour, minute, second)
    except ValueError as e:
        raise ScheduleError(f"at({body}): {e}") from None
    when = wall.replace(tzinfo=tz).astimezone(UTC)
    if when.astimezone(tz).replace(tzinfo=None) != wall:
        raise ScheduleError(f"at({body}): that time does not exist in {tz.key}: the clocks skip it")
    return At(when)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {name!r} (an IANA name such as "
                            f"\"Europe/Paris\")") from None


def parse(expression: str, timezone: str = "UTC", *, anchor: datetime = EPOCH) -> Schedule:
    """Check ``expression`` in ``timezone`` (an IANA name); ``anchor`` is where a rate counts
    from. Raises ``ScheduleError``; an expression that can never fire is an error too."""
    tz = zone(timezone)
    if anchor.tzinfo is None:
        raise ScheduleError("a rate's anchor needs a time zone")
    anchor = anchor.astimezone(UTC)
    text = expression.strip()
    schedule: Schedule
    if m := re.fullmatch(r"(rate|cron|at)\((.*)\)", text, re.S):
        kind, body = m[1], m[2]
        if kind == "rate":
            return _rate(body, anchor)
        if kind == "at":
            return _at(body, tz)
        schedule = _eventbridge_cron(body.split(), tz)
    elif text.startswith(("rate", "cron", "at(")):
        raise ScheduleError(f"{text!r}: expected rate(…), cron(…) or at(…), with its parentheses")
    else:
        schedule = _crontab(text, tz)
    if next_fire(schedule, datetime(YEARS[0], 1, 1, tzinfo=UTC) - timedelta(days=1)) is None:
        raise ScheduleError(f"{text!r} never fires: no date it names exists")
    return schedule
