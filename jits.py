"""jits: the Just-In-Time Scheduler.

Periodic and deferred work for sites that have no cron, no worker process
and no message broker.  jits runs that work *just in time*: when requests
arrive, its middleware looks (at most once every few seconds per process)
for due tasks in a task store and runs them, either inline or in a small
pool of background threads.  Every due occurrence and every enqueued job
runs exactly once across all processes that share the store.

Quick start (standalone, any WSGI application)::

    import jits

    @jits.task(every=60)
    def clean_up():
        ...

    @jits.task
    def send_mail(address, subject):
        ...

    app = jits.WSGIMiddleware(app)        # polls the store as requests come in
    send_mail.enqueue("a@example.com", "Hello")

With Django, add ``"jits.app"`` to INSTALLED_APPS and
``"jits.middleware.JitsMiddleware"`` to MIDDLEWARE; tasks defined in each
app's ``tasks.py`` are found when Django starts and are stored in the
project's own database.

One module, standard library only.  Copyright (c) 2008-2026 the jits
authors.  MIT licence (see LICENSE).
"""

__version__ = "2.0.0"

__all__ = [
    # Exceptions
    "JitsError",
    "ScheduleError",
    "StoreError",
    # Schedules
    "Every",
    "At",
    "Cron",
    # Tasks
    "task",
    "Task",
    "RunContext",
    "registry",
    # Stores
    "SQLiteStore",
    "DjangoStore",
    # Scheduler
    "Scheduler",
    "default_scheduler",
    "configure",
    # Web integration
    "WSGIMiddleware",
    "JitsMiddleware",
    # Django Tasks
    "TasksBackend",
    # Command line
    "main",
]

import argparse
import asyncio
import atexit
import calendar
import contextlib
import functools
import importlib.machinery
import inspect
import json
import logging
import math
import os
import queue
import signal
import socket
import sqlite3
import sys
import threading
import time
import traceback
import types
import uuid
import weakref
import zoneinfo
from datetime import date, datetime, timedelta, timezone, tzinfo

logger = logging.getLogger("jits")

#: Defaults of the 2008 settings (JITS_THREADED and friends).
DEFAULT_THREADED = False
DEFAULT_NUM_THREADS = 10
DEFAULT_MIN_SECONDS = 5
DEFAULT_MIN_MINUTES = 0

#: A claim is valid this long unless renewed; running tasks renew it.
DEFAULT_LEASE = 60.0
#: Shorter leases could end before a renewal gets through a busy store.
MIN_LEASE = 1.0
#: A blocking poll waits at most this long for SQLite's write lock ...
BLOCKING_LOCK_WAIT = 0.5
#: ... and only after this many busy polls in a row is that logged as an error.
BUSY_POLLS_QUIET = 3
#: The largest thread pool a scheduler accepts.
MAX_THREADS = 1000
#: Retries back off exponentially from ``retry_delay`` up to this cap.
MAX_RETRY_DELAY = 3600.0
#: Standalone store file, unless JITS_DATABASE names another.
DEFAULT_SQLITE_PATH = "jits.sqlite3"
#: How often a store shared by several hosts re-reads the database's clock.
CLOCK_CHECK_INTERVAL = 60.0
#: How often a scheduler re-checks its periodic rows even if nothing changed.
RESYNC_INTERVAL = 300.0
#: How often a poll also looks for due rows whose task is not registered.
UNKNOWN_CHECK_INTERVAL = 60.0
#: How long shutdown waits for running tasks before giving their claims back.
DEFAULT_GRACE = 10.0
#: In blocking mode, a poll starts no new run after this many seconds, so a
#: backlog cannot hold one request for long (the rest is left for later
#: polls and other processes).  None: no limit.
DEFAULT_BUDGET = 2.0
#: Finished jobs and run history are kept this long (JITS_RESULT_TTL).
DEFAULT_RESULT_TTL = 7 * 86400.0
#: Pruning deletes at most this many rows per table and batch ...
PRUNE_BATCH = 100
#: ... and, once it has caught up, looks again after this many seconds.
PRUNE_INTERVAL = 300.0

_ERR_JSON = (
    "{where} is {kind}, which JSON cannot hold (allowed: None, bool, int, "
    "finite float, str, list, tuple and dict with str keys)"
)
_ERR_NUMBER = "{what} must be {allowed}, got {value!r}"


# ---------------------------------------------------------------------------
# Exceptions: one root, so callers can catch everything jits raises.
# ---------------------------------------------------------------------------


class JitsError(Exception):
    """Base class of the errors jits raises."""


class ScheduleError(JitsError, ValueError):
    """A schedule (interval, date or cron expression) is invalid."""


class StoreError(JitsError):
    """The task store could not be used."""


# ---------------------------------------------------------------------------
# Time helpers: the store keeps UTC epoch seconds; users see aware datetimes.
# ---------------------------------------------------------------------------


def _default_timezone():
    """Return Django's TIME_ZONE when Django is configured, else UTC."""
    if "django.conf" in sys.modules:
        from django.conf import settings

        name = getattr(settings, "TIME_ZONE", None) if settings.configured else None
        if name and name.upper() != "UTC":
            return _resolve_zone(name)
    return timezone.utc


def _aware(value, what="datetime"):
    """Return *value* as an aware datetime; a naive one is read in the
    default zone (Django's TIME_ZONE, else UTC)."""
    if not isinstance(value, datetime):
        raise TypeError("%s must be a datetime, got %r" % (what, value))
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        zone = _default_timezone()
        if hasattr(zone, "localize"):  # pragma: no cover - pytz via old Django
            return zone.localize(value)
        return value.replace(tzinfo=zone)
    return value


def _epoch(value):
    """Return the UTC epoch seconds of a datetime (naive: default zone)."""
    return _aware(value).timestamp()


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _micros(value):
    """Return the whole microseconds from the epoch to an aware datetime."""
    return (value - _EPOCH) // timedelta(microseconds=1)


def _utc(seconds):
    """Return epoch seconds as an aware UTC datetime."""
    return datetime.fromtimestamp(seconds, timezone.utc)


def _check_number(value, what, minimum=0.0, allow_zero=True):
    """Return *value* as a float, or raise naming *what* and the allowed range."""
    allowed = "a number >= %g" % minimum if allow_zero else "a number > 0"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(_ERR_NUMBER.format(what=what, allowed=allowed, value=value))
    if not math.isfinite(value) or value < minimum or (value == 0 and not allow_zero):
        raise ValueError(_ERR_NUMBER.format(what=what, allowed=allowed, value=value))
    return float(value)


# ---------------------------------------------------------------------------
# Schedules: objects with next_after(datetime) -> datetime (or None when the
# schedule has ended) and describe() -> str, the text kept in the store.
# ---------------------------------------------------------------------------


class Every:
    """Run every fixed interval, on slots aligned to an anchor.

    Slots are ``anchor + k * period``; the default anchor is the Unix epoch,
    so ``Every(hours=1)`` fires on the hour (UTC) in every process alike.
    Because the next slot is computed from the clock rather than from when
    the last run ended, runs never drift, and after a quiet spell the task
    runs once, not once per missed slot.
    """

    def __init__(self, seconds=0, minutes=0, hours=0, days=0, weeks=0, anchor=None):
        parts = {
            "seconds": seconds,
            "minutes": minutes,
            "hours": hours,
            "days": days,
            "weeks": weeks,
        }
        for what, value in parts.items():
            _check_number(value, "Every(%s=...)" % what)
        period = seconds + 60 * minutes + 3600 * hours + 86400 * (days + 7 * weeks)
        # Slots are counted in whole microseconds, the resolution of
        # datetime, so that float rounding can never yield a slot that is
        # not strictly after the given time.
        self._step = round(period * 1_000_000)
        if self._step <= 0:
            raise ScheduleError(
                "Every() needs a positive interval, got %r seconds" % (period,)
            )
        self.period = self._step / 1_000_000
        self.anchor = None if anchor is None else _aware(anchor, "anchor")
        self._anchor = 0 if anchor is None else _micros(self.anchor)

    def next_after(self, dt):
        """Return the first slot strictly after *dt* (naive: default zone)."""
        t = _micros(_aware(dt))
        k = (t - self._anchor) // self._step + 1
        return _EPOCH + timedelta(microseconds=self._anchor + k * self._step)

    def describe(self):
        text = "every " + _format_seconds(self.period)
        if self.anchor is not None:
            text += " from " + self.anchor.isoformat()
        return text

    def __repr__(self):
        return "Every(seconds=%r)" % (self.period,)

    def __eq__(self, other):
        return isinstance(other, Every) and (self._step, self._anchor) == (
            other._step,
            other._anchor,
        )

    def __hash__(self):
        return hash((Every, self._step, self._anchor))


def _format_seconds(seconds):
    """Return a short text such as '1h30m' or '2.5s' for a period."""
    if seconds != int(seconds) or seconds < 60:
        return "%gs" % seconds
    out = []
    rest = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out.append("%d%s" % (rest // size, unit))
            rest %= size
    return "".join(out)


class At:
    """Run once, at a given moment."""

    def __init__(self, when):
        self.when = _aware(when, "at")
        self._t = self.when.timestamp()

    def next_after(self, dt):
        """Return the moment if it is after *dt*, else None (no more runs)."""
        return self.when if self._t > _epoch(dt) else None

    def describe(self):
        return "at " + self.when.isoformat()

    def __repr__(self):
        return "At(%r)" % (self.when,)


# ---------------------------------------------------------------------------
# Cron schedules
#
# This section owns the cron language and the search for the next fire time.
# ---------------------------------------------------------------------------

CRON_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    # Debian marks @hourly's hour field as a wildcard, so it counts as a
    # wildcard job for the DST rules, exactly like "0 * * * *".
    "@hourly": "0 * * * *",
}

_MONTH_NAMES = {
    name: number
    for number, name in enumerate(
        "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(), 1
    )
}
_DAY_NAMES = {
    name: number for number, name in enumerate("SUN MON TUE WED THU FRI SAT".split())
}

_MINUTE, _HOUR, _DOM, _MONTH, _DOW = range(5)
# (name, lowest, highest, names accepted in place of numbers)
_FIELDS = (
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day-of-month", 1, 31, None),
    ("month", 1, 12, _MONTH_NAMES),
    ("day-of-week", 0, 7, _DAY_NAMES),
)

_ERR_FIELD = '{field} field: {detail} in "{expression}"'
_ERR_COUNT = (
    "expected 5 fields (minute hour day-of-month month day-of-week) or a "
    'macro such as @daily, got {count} in "{expression}"'
)

# A search that finds nothing in this many years is a bug: every accepted
# expression fires at least once per 400-year Gregorian cycle.
_MAX_SEARCH_YEARS = 401

# In the tz database since 1900 no fold is longer than 23 hours (Kwajalein,
# 1969) and no two offset changes are closer than four days.  So one probe a
# day ahead sees any fold that can repeat wall times the search has passed,
# and a pair of changes cannot cancel out between the two probes.
_FOLD_WINDOW = timedelta(days=1)

# Zones that never change their offset: they take the fast path.
_FIXED_ZONE_KEYS = frozenset(
    "UTC UCT GMT GMT0 GMT+0 GMT-0 Greenwich Universal Zulu".split()
)

_MONTH_LENGTHS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_ONE_MINUTE = timedelta(minutes=1)
_ONE_SECOND = timedelta(seconds=1)


def _field_error(index, detail, expression):
    return ScheduleError(
        _ERR_FIELD.format(
            field=_FIELDS[index][0], detail=detail, expression=expression
        )
    )


def _allowed(index):
    """Describe what a field accepts, for error messages."""
    low, high = _FIELDS[index][1:3]
    text = "numbers %d-%d" % (low, high)
    if index == _MONTH:
        text += " or names JAN-DEC"
    elif index == _DOM:
        text += ", L, LW or nW"
    elif index == _DOW:
        text += " (0 and 7 are Sunday), names SUN-SAT, nL or n#k"
    return text


def _parse_value(token, index, expression):
    """Return the number that *token* stands for in field *index*."""
    low, high, names = _FIELDS[index][1:]
    if token.isascii() and token.isdigit():
        value = int(token)
    elif names is not None and token.upper() in names:
        value = names[token.upper()]
    elif not token:
        raise _field_error(
            index, "a number is missing; expected %s" % _allowed(index), expression
        )
    else:
        detail = "%s is not valid; expected %s" % (token, _allowed(index))
        if index not in (_DOM, _DOW) and any(c in token.upper() for c in "LW#?"):
            detail += " (L, W, # and ? belong to the day fields)"
        raise _field_error(index, detail, expression)
    if not low <= value <= high:
        raise _field_error(
            index,
            "%s is out of range %d-%d" % (token, low, high),
            expression,
        )
    return value


def _parse_special(item, index, expression):
    """Parse the L, W and # forms of the day fields, else return None."""
    upper = item.upper()
    if index == _DOM:
        if upper == "L":
            return ("last",)
        if upper == "LW":
            return ("last-weekday",)
        if upper.endswith("W"):
            if upper == "W":
                raise _field_error(
                    index, "W needs a day before it (e.g. 15W)", expression
                )
            day = _parse_value(upper[:-1], index, expression)
            return ("nearest-weekday", day)
        return None
    if "#" in upper:
        day, _, nth = upper.partition("#")
        weekday = _parse_value(day, index, expression) % 7
        if not (nth.isascii() and nth.isdigit() and 1 <= int(nth) <= 5):
            raise _field_error(
                index,
                "%s needs an occurrence 1-5 after # (e.g. 5#2 or FRI#2)" % item,
                expression,
            )
        return ("nth", weekday, int(nth))
    if upper.endswith("L"):
        if upper == "L":
            raise _field_error(
                index,
                "L needs a weekday before it (e.g. 5L or FRIL)",
                expression,
            )
        weekday = _parse_value(upper[:-1], index, expression) % 7
        return ("last-of", weekday)
    return None


def _parse_field(text, index, expression):
    """Return (values, specials) for one field's text."""
    low, high = _FIELDS[index][1:3]
    values = set()
    specials = []
    for item in text.split(","):
        if not item:
            raise _field_error(
                index,
                "%s has an empty list item (stray comma); expected %s "
                "separated by single commas" % (text, _allowed(index)),
                expression,
            )
        if item.startswith("?"):
            if index not in (_DOM, _DOW):
                raise _field_error(
                    index,
                    "? is only allowed in the day-of-month and day-of-week fields",
                    expression,
                )
            item = "*" + item[1:]
        if index in (_DOM, _DOW):
            special = _parse_special(item, index, expression)
            if special is not None:
                specials.append(special)
                continue
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not (step_text.isascii() and step_text.isdigit()):
                raise _field_error(
                    index,
                    "step %r in %s is not a whole number 1 or more" % (step_text, item),
                    expression,
                )
            step = int(step_text)
            if step == 0:
                raise _field_error(
                    index, "step 0 in %s must be 1 or more" % item, expression
                )
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start = _parse_value(first, index, expression)
            end = _parse_value(last, index, expression)
            # "MON-SUN" and "FRI-SUN" read naturally; let SUN close a range.
            if index == _DOW and end == 0 < start and not last.isdigit():
                end = 7
            if start > end:
                raise _field_error(
                    index,
                    "range %s is reversed; write the smaller value first" % base,
                    expression,
                )
        else:
            start = _parse_value(base, index, expression)
            # "a/n" runs from a to the end of the field; in the day-of-week
            # field that is 7, Sunday again, just as for "*/n".
            end = high if slash else start
        values.update(range(start, end + 1, step))
    if index == _DOW and 7 in values:
        values.discard(7)
        values.add(0)
    return values, specials


def _split_expression(expression):
    """Expand a macro and return the five field texts."""
    text = expression.strip()
    if not text:
        raise ScheduleError(
            "cron expression is empty; expected 5 fields or a macro such as @daily"
        )
    if text.startswith("@"):
        key = text.lower()
        if key not in CRON_MACROS:
            raise ScheduleError(
                'unknown macro %s in "%s"; allowed: %s'
                % (text, expression, ", ".join(CRON_MACROS))
            )
        text = CRON_MACROS[key]
    fields = text.split()
    if len(fields) != 5:
        raise ScheduleError(_ERR_COUNT.format(count=len(fields), expression=expression))
    return fields


def _next_table(allowed, size):
    """Map each index to the first allowed value at or after it, else -1."""
    table = [-1] * (size + 1)
    following = -1
    for value in range(size, -1, -1):
        if value in allowed:
            following = value
        table[value] = following
    return table


def _resolve_zone(zone):
    if zone is None:
        zone = _default_timezone()
    if isinstance(zone, str):
        try:
            return zoneinfo.ZoneInfo(zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            raise ScheduleError(
                "unknown time zone %r; expected an IANA name such as "
                "'Europe/Berlin' or 'UTC'" % zone
            ) from None
    if isinstance(zone, tzinfo):
        return zone
    raise TypeError(
        "timezone must be None, a zone name or a tzinfo, not %s" % type(zone).__name__
    )


def _zone_key(zone):
    """Return a stable name for *zone*, used for equality and listings."""
    if isinstance(zone, timezone):
        offset = zone.utcoffset(None)
        if not offset:
            return "UTC"
        sign = "-" if offset < timedelta(0) else "+"
        minutes = abs(offset) // _ONE_MINUTE
        return "UTC%s%02d:%02d" % (sign, minutes // 60, minutes % 60)
    key = getattr(zone, "key", None) or getattr(zone, "zone", None)
    return key if isinstance(key, str) else repr(zone)


def _fixed_offset(zone, key):
    """Return the zone's offset if it never changes, else None."""
    if isinstance(zone, timezone):
        return zone.utcoffset(None)
    if isinstance(zone, zoneinfo.ZoneInfo) and (
        key in _FIXED_ZONE_KEYS or key.startswith("Etc/")
    ):
        return zone.utcoffset(datetime(2000, 1, 1))
    return None


class Cron:
    """A cron schedule evaluated in one time zone.

    *expression* has five fields (minute, hour, day of month, month, day of
    week) or is a macro such as ``@daily``.  *timezone* is None (the default
    zone), an IANA zone name or a tzinfo.  Invalid input raises
    ``ScheduleError``, a ``ValueError``, naming the field, the token and what
    is allowed; so does an expression that can never fire.

    Daylight-saving changes follow Debian's cron daemon.  A job whose minute
    or hour field starts with ``*`` is a wildcard job; any other job is a
    fixed-time job.  When clocks spring forward, a fixed-time job fires once
    at the first instant after the change for the times it had in the
    skipped interval, and a wildcard job skips them.  When clocks fall back,
    a fixed-time job fires in the first pass of the repeated interval only,
    and a wildcard job fires in both.

    Limits: the search assumes, as holds for the tz database since 1900,
    that a zone's offset changes at most once in four days and that no
    fold lasts a day or more.  Rule 1 applies to skipped intervals of any
    length, where Debian's daemon only catches up on shorter jumps.
    """

    def __init__(self, expression, timezone=None):
        if not isinstance(expression, str):
            raise TypeError(
                "cron expression must be a str, not %s" % type(expression).__name__
            )
        self.expression = expression
        self.timezone = _resolve_zone(timezone)
        self._key = _zone_key(self.timezone)
        self._offset = _fixed_offset(self.timezone, self._key)

        texts = _split_expression(expression)
        parsed = [_parse_field(text, i, expression) for i, text in enumerate(texts)]
        # Debian sorts jobs on the text, not the values: "0-59 * ..." is
        # fixed-time, "*/1 2 ..." is a wildcard job.
        self._wildcard = texts[_MINUTE][0] == "*" or texts[_HOUR][0] == "*"
        # Debian ANDs the day fields when either one starts with "*" (even
        # "*/2") and ORs them when both are restricted.
        day_star = [texts[i][0] in "*?" for i in (_DOM, _DOW)]
        self._days_and = day_star[0] or day_star[1]

        self._dom_values = frozenset(parsed[_DOM][0])
        self._dom_specials = tuple(parsed[_DOM][1])
        self._dow_values = frozenset(parsed[_DOW][0])
        self._dow_specials = tuple(parsed[_DOW][1])
        months = parsed[_MONTH][0]
        self._next_minute = _next_table(parsed[_MINUTE][0], 60)
        self._next_hour = _next_table(parsed[_HOUR][0], 24)
        self._next_month = _next_table(months, 13)
        self._first_month = min(months)
        # Both caches only ever receive values computed from the fields
        # above, so threads sharing a Cron can at worst build a table twice.
        self._day_tables = {}
        self._shape_tables = {}

        if not self._can_fire(months):
            raise ScheduleError(
                "day-of-month field: %s with day-of-week %s matches no day of "
                'month %s, so the expression can never fire in "%s"'
                % (texts[_DOM], texts[_DOW], texts[_MONTH], expression)
            )

    def __repr__(self):
        return "Cron(%r, timezone=%r)" % (self.expression, self._key)

    def __eq__(self, other):
        if not isinstance(other, Cron):
            return NotImplemented
        return (self.expression, self._key) == (other.expression, other._key)

    def __hash__(self):
        return hash((self.expression, self._key))

    def describe(self):
        """Return a one-line description for task listings."""
        return 'cron "%s" %s' % (self.expression, self._key)

    def next_after(self, dt):
        """Return the first fire time strictly after *dt*.

        The result is an aware datetime in the schedule's zone.  A naive
        *dt* is read as wall time in that zone.
        """
        if not isinstance(dt, datetime):
            raise TypeError("next_after() needs a datetime, not %s" % type(dt).__name__)
        zone = self.timezone
        if self._offset is None:
            return self._next_zoned(dt)
        if dt.tzinfo is not None and dt.tzinfo is not zone:
            dt = dt.astimezone(zone)
        # Starting at minute + 1 makes the result strictly later; the
        # search rolls 60 minutes over into the next hour by itself.
        year, month, day, hour, minute = self._next_wall(
            dt.year, dt.month, dt.day, dt.hour, dt.minute + 1
        )
        return datetime(year, month, day, hour, minute, 0, 0, zone)

    # -- calendar search ----------------------------------------------------

    def _days_of(self, first_dow, length):
        """Return the matching days of a month, sorted.

        A month's matching days depend only on its length and on the cron
        weekday (Sunday is 0) of its 1st.
        """
        dom_days = {day for day in self._dom_values if day <= length}
        for special in self._dom_specials:
            kind = special[0]
            if kind == "last":
                dom_days.add(length)
            elif kind == "last-weekday":
                day = length
                while (first_dow + day - 1) % 7 in (0, 6):
                    day -= 1
                dom_days.add(day)
            else:
                day = special[1]
                # W never crosses into another month: a day the month
                # lacks matches nothing, and Saturday the 1st moves to
                # Monday the 3rd, Sunday the last to Friday.
                if day > length:
                    continue
                dow = (first_dow + day - 1) % 7
                if dow == 6:
                    day = day - 1 if day > 1 else day + 2
                elif dow == 0:
                    day = day + 1 if day < length else day - 2
                dom_days.add(day)
        dow_days = {
            day
            for day in range(1, length + 1)
            if (first_dow + day - 1) % 7 in self._dow_values
        }
        for special in self._dow_specials:
            offset = (special[1] - first_dow) % 7
            if special[0] == "last-of":
                dow_days.add(offset + 1 + (length - offset - 1) // 7 * 7)
            else:
                day = offset + 1 + (special[2] - 1) * 7
                if day <= length:
                    dow_days.add(day)
        if self._days_and:
            return sorted(dom_days & dow_days)
        return sorted(dom_days | dow_days)

    def _can_fire(self, months):
        # Every month starts on every weekday somewhere in the 400-year
        # Gregorian cycle, and February does so in leap years too.
        return any(
            self._days_of(first_dow, length)
            for month in months
            for length in ((28, 29) if month == 2 else (_MONTH_LENGTHS[month],))
            for first_dow in range(7)
        )

    def _day_table(self, year, month):
        """Return the next-matching-day table of a month, and cache it."""
        length = _MONTH_LENGTHS[month]
        if month == 2 and calendar.isleap(year):
            length = 29
        # Day 1 of year 1 has ordinal 1 and was a Monday, cron weekday 1.
        shape = length * 8 + date(year, month, 1).toordinal() % 7
        table = self._shape_tables.get(shape)
        if table is None:
            table = _next_table(set(self._days_of(shape % 8, length)), 32)
            self._shape_tables[shape] = table
        if len(self._day_tables) > 4096:
            self._day_tables.clear()
        self._day_tables[year * 16 + month] = table
        return table

    def _next_wall(self, year, month, day, hour, minute):
        """Return the first matching wall time at or after the given one.

        Fields may overflow by one (minute 60, hour 24, day 32, month 13):
        each lookup table maps the overflow to -1, which moves the search
        on to the next hour, day, month or year.
        """
        next_minute = self._next_minute
        next_hour = self._next_hour
        next_month = self._next_month
        tables = self._day_tables
        last_year = min(year + _MAX_SEARCH_YEARS, 9999)
        while True:
            found = next_month[month]
            if found != month:
                if found < 0:
                    year += 1
                    if year > last_year:
                        raise OverflowError(
                            'no fire time for "%s" before year %d'
                            % (self.expression, last_year + 1)
                        )
                    found = self._first_month
                month = found
                day = 1
                hour = minute = 0
            table = tables.get(year * 16 + month) or self._day_table(year, month)
            while True:
                found = table[day]
                if found < 0:
                    break
                if found != day:
                    day = found
                    hour = minute = 0
                found = next_hour[hour]
                if found < 0:
                    day += 1
                    hour = minute = 0
                    continue
                if found != hour:
                    hour = found
                    minute = 0
                found = next_minute[minute]
                if found < 0:
                    hour += 1
                    minute = 0
                    continue
                return year, month, day, hour, found
            month += 1
            day = 1
            hour = minute = 0

    # -- time zones and daylight saving -------------------------------------

    def _next_zoned(self, dt):
        zone = self.timezone
        # All instants below are naive UTC: aware datetimes that share a
        # tzinfo compare by wall time and would ignore fold.
        if dt.tzinfo is None:
            start = dt - zone.utcoffset(dt)
        else:
            start = dt.replace(tzinfo=None) - dt.utcoffset()
        local = zone.fromutc(start.replace(tzinfo=zone))
        wall = self._next_wall(
            local.year, local.month, local.day, local.hour, local.minute + 1
        )
        if self._wildcard:
            return self._next_wildcard(start, local, wall)
        return self._next_fixed(start, wall)

    def _next_fixed(self, start, wall):
        zone = self.timezone
        while True:
            naive = datetime(*wall)
            # The offsets of the two folds tell the cases apart: equal for an
            # ordinary time, early > late for a repeated one, early < late
            # for one skipped by the clocks springing forward.
            early = zone.utcoffset(naive)
            late = zone.utcoffset(naive.replace(fold=1))
            if early == late:
                if naive - early > start:
                    return naive.replace(tzinfo=zone)
            elif early > late:
                # Rule 3: a repeated wall time fires in the first pass only,
                # so when the search starts in the second pass the rest of
                # the repeated interval is skipped, one match at a time.
                if naive - early > start:
                    return naive.replace(tzinfo=zone)
            else:
                # Rule 1: a time skipped by the clocks springing forward
                # fires once, at the first instant after the change.
                change = self._change_between(naive - late, naive - early)
                if change > start:
                    return zone.fromutc(change.replace(tzinfo=zone))
            wall = self._next_wall(
                wall[0], wall[1], wall[2], wall[3], wall[4] + 1
            )

    def _next_wildcard(self, start, local, wall):
        zone = self.timezone
        while True:
            naive = datetime(*wall)
            early = zone.utcoffset(naive)
            late = zone.utcoffset(naive.replace(fold=1))
            # Rule 2: a skipped wall time (early < late) does not exist and
            # never fires.  Rule 4: a repeated one fires in both passes.
            if early >= late and naive - early > start:
                result, offset = naive.replace(tzinfo=zone), early
                break
            if early > late and naive - late > start:
                result, offset = naive.replace(tzinfo=zone, fold=1), late
                break
            wall = self._next_wall(
                wall[0], wall[1], wall[2], wall[3], wall[4] + 1
            )
        instant = naive - offset
        # If clocks fall back before the result, the second pass repeats
        # wall times the search has already passed, and one of those may
        # come first.
        before = zone.utcoffset(local)
        if offset == before and instant - start <= _FOLD_WINDOW:
            return result
        reach = min(instant, start + _FOLD_WINDOW)
        if self._offset_at(reach) == before:
            return result
        change = self._change_between(start, reach)
        after = self._offset_at(change)
        if after >= before or change >= instant:
            return result
        repeat_from = change + after
        repeat_to = change + before
        if repeat_from.second or repeat_from.microsecond:
            repeat_from = repeat_from.replace(second=0, microsecond=0) + _ONE_MINUTE
        wall = self._next_wall(
            repeat_from.year,
            repeat_from.month,
            repeat_from.day,
            repeat_from.hour,
            repeat_from.minute,
        )
        naive = datetime(*wall)
        if naive < repeat_to and naive - after < instant:
            return naive.replace(tzinfo=zone, fold=1)
        return result

    def _offset_at(self, instant):
        zone = self.timezone
        return zone.fromutc(instant.replace(tzinfo=zone)).utcoffset()

    def _change_between(self, low, high):
        """Return the first instant in (low, high] with a new UTC offset.

        Both ends are naive UTC and the offset at *high* must differ from
        the offset at *low*.  The tz database changes offsets on whole
        seconds, so a bisection over seconds finds the change exactly.
        """
        low = low.replace(microsecond=0)
        before = self._offset_at(low)
        lo, hi = 0, -((low - high) // _ONE_SECOND)
        while hi - lo > 1:
            middle = (lo + hi) // 2
            if self._offset_at(low + middle * _ONE_SECOND) == before:
                lo = middle
            else:
                hi = middle
        return low + hi * _ONE_SECOND


# ---------------------------------------------------------------------------
# Tasks: the decorator, the registry of runnable functions, JSON arguments.
# ---------------------------------------------------------------------------

#: Registered tasks by name.  Only these can run: the store keeps names,
#: never pickled code, so a tampered row cannot run arbitrary functions.
registry = {}
_registry_lock = threading.Lock()
_registry_version = [0]  # bumped on every registration; schedulers re-sync


class RunContext:
    """What a task defined with ``takes_context=True`` gets as first argument."""

    def __init__(self, task_name, job_id, scheduled, attempt, owner):
        self.task_name = task_name
        self.job_id = job_id
        #: The occurrence being run (aware UTC datetime): for a periodic task
        #: its slot, for a job the time it was due.
        self.scheduled = scheduled
        #: 1 for the first try, 2 for the first retry (or rerun after a crash).
        self.attempt = attempt
        self.owner = owner

    def __repr__(self):
        return "RunContext(%r, job=%r, attempt=%d)" % (
            self.task_name,
            self.job_id,
            self.attempt,
        )


class Task:
    """A registered function; calling it calls the function directly."""

    def __init__(self, func, name, schedule=None, lease=DEFAULT_LEASE, retries=0,
                 retry_delay=10.0, queue="default", priority=0, takes_context=False):
        self.func = func
        self.name = name
        self.schedule = schedule
        self.lease = lease
        self.retries = retries
        self.retry_delay = retry_delay
        self.queue = queue
        self.priority = priority
        self.takes_context = takes_context
        functools.update_wrapper(self, func)

    def __call__(self, *args, **kwargs):
        return self.func(*args, **kwargs)

    def check_call(self, args, kwargs):
        """Raise TypeError unless the function accepts these arguments."""
        try:
            signature = inspect.signature(self.func)
        except (TypeError, ValueError):  # some builtins have no signature
            return
        if self.takes_context:
            args = (None,) + tuple(args)
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError("task %s%s cannot take these arguments: %s"
                            % (self.name, signature, exc)) from None

    def __repr__(self):
        return "<jits.Task %s%s>" % (
            self.name,
            " " + self.schedule.describe() if self.schedule else "",
        )

    def enqueue(self, *args, **kwargs):
        """Run the task once at the next poll; return the job id."""
        return default_scheduler().enqueue(self, None, args, kwargs)

    def enqueue_at(self, when, *args, **kwargs):
        """Run the task once at *when* (datetime, or timedelta from now)."""
        return default_scheduler().enqueue(self, when, args, kwargs)


def task(func=None, *, name=None, every=None, at=None, cron=None, timezone=None,
         lease=DEFAULT_LEASE, retries=0, retry_delay=10.0, queue="default",
         priority=0, takes_context=False):
    """Register a function as a task; usable as ``@task`` or ``@task(...)``.

    ``every`` (seconds, a timedelta or an Every) or ``cron`` (with an
    optional ``timezone``) make it periodic; ``at`` (a datetime) runs it
    once at that moment, or anchors ``every``'s slots when both are given.
    With none of them the task runs only when enqueued or run by hand.
    ``lease`` is how long a claim lasts without renewal, ``retries`` and
    ``retry_delay`` retry a failing run with exponential backoff.
    """
    schedule = _make_schedule(every, at, cron, timezone)
    lease = _check_number(lease, "lease", minimum=MIN_LEASE)
    retry_delay = _check_number(retry_delay, "retry_delay")
    if isinstance(retries, bool) or not isinstance(retries, int):
        raise TypeError("retries must be an int >= 0, got %r" % (retries,))
    if retries < 0:
        raise ValueError("retries must be an int >= 0, got %r" % (retries,))
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError("priority must be an int, got %r" % (priority,))
    if not -2**31 <= priority < 2**31:  # what an INTEGER column holds everywhere
        raise ValueError("priority must be an int from %d to %d, got %r"
                         % (-2**31, 2**31 - 1, priority))
    if not isinstance(takes_context, bool):
        raise TypeError("takes_context must be True or False, got %r"
                        % (takes_context,))
    if not isinstance(queue, str) or not 0 < len(queue) <= 64:
        raise ValueError("queue must be a name of 1 to 64 characters, got %r"
                         % (queue,))
    if name is not None and (not isinstance(name, str) or not 0 < len(name) <= 200):
        raise ValueError("name must be a str of 1 to 200 characters, got %r" % (name,))
    if name is not None and name.startswith(_DJANGO_PREFIX):
        raise ValueError("task names starting with %r are kept for Django's Tasks "
                         "framework, got %r" % (_DJANGO_PREFIX, name))

    def register(fn):
        if not callable(fn):
            hint = ""
            if isinstance(fn, (int, float, timedelta)) and not isinstance(fn, bool):
                hint = " (for a periodic task write @jits.task(every=%r))" % (fn,)
            raise TypeError("jits.task needs a callable, got %r%s" % (fn, hint))
        task_name = name or "%s.%s" % (_module_name(fn), fn.__qualname__)
        obj = Task(fn, task_name, schedule, lease, retries, retry_delay, queue,
                   priority, takes_context)
        _register(obj)
        return obj

    if func is None:
        return register
    if isinstance(func, str):
        raise TypeError(
            "jits.task got %r as a positional argument; pass the name as "
            "@jits.task(name=%r)" % (func, func)
        )
    return register(func)


def _module_name(func):
    """Return the name other processes import *func*'s module by.

    A script run as ``python app.py`` is ``__main__`` in its own process but
    ``app`` in every process that imports it (a WSGI server, the command
    line), and stored task names must agree between the two.
    """
    module = getattr(func, "__module__", None) or "?"
    if module != "__main__":
        return module
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return spec.name
    path = getattr(main, "__file__", None)
    return os.path.splitext(os.path.basename(path))[0] if path else module


def _make_schedule(every, at, cron, zone):
    """Build the schedule object from the decorator's arguments."""
    schedule = _build_schedule(every, at, cron, zone)
    if schedule is not None:
        try:
            schedule.next_after(datetime.now(timezone.utc))
        except (ArithmeticError, ValueError):
            raise ScheduleError("%s has no next run before the year 9999"
                                % schedule.describe()) from None
    return schedule


def _build_schedule(every, at, cron, zone):
    if cron is not None:
        if every is not None or at is not None:
            raise ScheduleError("cron= cannot be combined with every= or at=")
        if isinstance(cron, Cron):
            return cron
        if not isinstance(cron, str):
            raise TypeError("cron must be a str expression, got %r" % (cron,))
        return Cron(cron, zone)
    if zone is not None:
        raise ScheduleError("timezone= applies to cron= schedules only")
    if every is None:
        return None if at is None else At(at)
    if isinstance(every, Every):
        if at is not None and every.anchor is not None:
            raise ScheduleError("at= and Every(anchor=...) both set the first slot; "
                                "give only one")
        if at is not None:
            return Every(seconds=every.period, anchor=at)
        return every
    if isinstance(every, timedelta):
        seconds = every.total_seconds()
        if seconds <= 0:
            raise ScheduleError("every must be positive, got %r" % (every,))
        return Every(seconds=seconds, anchor=at)
    if isinstance(every, bool) or not isinstance(every, (int, float)):
        raise TypeError(
            "every must be seconds (int or float), a timedelta or an Every, "
            "got %r" % (every,)
        )
    if not math.isfinite(every) or every <= 0:
        raise ScheduleError("every must be a positive number of seconds, got %r"
                            % (every,))
    return Every(seconds=every, anchor=at)


def _register(obj):
    with _registry_lock:
        old = registry.get(obj.name)
        if old is not None and _origin(old.func) != _origin(obj.func):
            raise ValueError(
                "task name %r is already registered for %s; pass name= to tell "
                "them apart" % (obj.name, _origin(old.func))
            )
        # The same function registered again (its module re-imported, as
        # Django's autoreloader and test runners do) replaces the old entry.
        registry[obj.name] = obj
        _registry_version[0] += 1


def _origin(func):
    return "%s.%s" % (getattr(func, "__module__", "?"),
                      getattr(func, "__qualname__", func))


def _check_json(value, where):
    """Raise TypeError unless JSON can hold *value* without changing it."""
    if value is None or isinstance(value, (str, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(_ERR_JSON.format(where=where, kind="the float %r" % value))
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(item, "%s[%d]" % (where, i))
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    _ERR_JSON.format(where="a key of " + where, kind=repr(key))
                )
            _check_json(item, "%s[%r]" % (where, key))
        return
    raise TypeError(
        _ERR_JSON.format(where=where,
                         kind="of type %s (%r)" % (type(value).__name__, value))
    )


def _dump_args(args, kwargs):
    """Return the JSON text of a call's arguments, checking them first."""
    for i, value in enumerate(args):
        _check_json(value, "argument %d" % i)
    for key, value in kwargs.items():
        _check_json(value, "keyword argument %r" % key)
    return json.dumps([list(args), kwargs], separators=(",", ":"))


def _dump_result(value):
    """Return the JSON text of a return value, or None when JSON cannot hold it."""
    try:
        _check_json(value, "the result")
    except TypeError:
        logger.debug("result %r is not kept: JSON cannot hold it", value)
        return None
    return json.dumps(value, separators=(",", ":"))


# ---------------------------------------------------------------------------
# Stores: one table of rows to run, behind two backends (a sqlite3 file, or
# the Django project's database).  SQL is written once, with %s parameters.
# ---------------------------------------------------------------------------

# Design: a periodic task is one row whose id is the task's name; an
# enqueued job is one row whose id is a random hex string.  ``due`` is the
# moment a row next needs a worker: the occurrence time while it waits, the
# end of the lease while it runs, NULL once it is finished for good.  So a
# single index on ``due`` finds both due rows and abandoned claims, and a
# poll with nothing due costs one index probe however many rows are kept.
# ``claim`` counts claims; every write a worker makes after claiming names
# the count it got, so a worker that lost its lease cannot overwrite the
# row of the worker that took over.
_DDL_JOB = """CREATE TABLE IF NOT EXISTS jits_job (
    id VARCHAR(64) NOT NULL PRIMARY KEY,
    task VARCHAR(200) NOT NULL,
    schedule VARCHAR(255) NULL,
    queue VARCHAR(64) NOT NULL,
    priority INTEGER NOT NULL,
    status VARCHAR(16) NOT NULL,
    args {text} NOT NULL,
    due {float} NULL,
    scheduled {float} NULL,
    owner VARCHAR(255) NULL,
    claim INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    runs INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    enqueued {float} NOT NULL,
    started {float} NULL,
    finished {float} NULL,
    outcome VARCHAR(16) NULL,
    result {text} NULL,
    error {text} NULL{job_index}
)"""

# One row per finished attempt: the run history.
_DDL_RUN = """CREATE TABLE IF NOT EXISTS jits_run (
    id VARCHAR(32) NOT NULL PRIMARY KEY,
    job VARCHAR(64) NOT NULL,
    task VARCHAR(200) NOT NULL,
    attempt INTEGER NOT NULL,
    owner VARCHAR(255) NULL,
    scheduled {float} NULL,
    started {float} NOT NULL,
    finished {float} NOT NULL,
    outcome VARCHAR(16) NOT NULL,
    error {text} NULL,
    error_class VARCHAR(255) NULL{run_index}
)"""

# (name, table, columns).  (due, finished) on jits_job finds finished jobs
# (due IS NULL) old enough to prune, in order, without reading the others;
# ``job`` on jits_run reads one job's history (get_result).
_INDEXES = (
    ("jits_job_due", "jits_job", "due"),
    ("jits_job_done", "jits_job", "due, finished"),
    ("jits_run_finished", "jits_run", "finished"),
    ("jits_run_job", "jits_run", "job"),
)
_DDL_INDEXES = tuple("CREATE INDEX IF NOT EXISTS %s ON %s (%s)" % index
                     for index in _INDEXES)
# Columns added after the first release, added to older tables on first use.
_NEW_COLUMNS = (("jits_run", "error_class", "VARCHAR(255) NULL"),)

# Column types and index placement per database vendor.  MySQL cannot say
# CREATE INDEX IF NOT EXISTS, so there the indexes live in CREATE TABLE.
_VENDOR_DDL = {
    "sqlite": {"float": "REAL", "text": "TEXT", "job_index": "", "run_index": ""},
    "postgresql": {
        "float": "DOUBLE PRECISION",
        "text": "TEXT",
        "job_index": "",
        "run_index": "",
    },
    "mysql": {
        "float": "DOUBLE",
        "text": "LONGTEXT",
        "job_index": ",\n    INDEX jits_job_due (due),\n"
                     "    INDEX jits_job_done (due, finished)",
        "run_index": ",\n    INDEX jits_run_finished (finished),\n"
                     "    INDEX jits_run_job (job)",
    },
}

_JOB_COLUMNS = (
    "id, task, schedule, queue, priority, status, args, due, scheduled, claim, "
    "attempts, runs, failures, enqueued"
)
_SQL_INSERT_JOB = (
    "INSERT INTO jits_job (" + _JOB_COLUMNS + ") "
    "VALUES (%s, %s, %s, %s, %s, 'ready', %s, %s, %s, 0, 0, 0, 0, %s)"
)
_SQL_RESCHEDULE = (
    "UPDATE jits_job SET schedule = %s, due = %s, scheduled = %s, status = 'ready' "
    "WHERE id = %s AND schedule <> %s AND status <> 'running'"
)
_SQL_ANY_DUE = "SELECT 1 FROM jits_job WHERE due <= %s AND {names}{queues} LIMIT 1"
_SQL_DUE = (
    "SELECT id, task, schedule, args, scheduled, claim, attempts FROM jits_job "
    "WHERE due <= %s AND {names}{queues}{only} "
    "ORDER BY {order} LIMIT %s{lock}"
)
# The claim is a compare-and-set: it succeeds only if nobody claimed the
# row since it was read and it is still due, so it stays exactly-once even
# where the database cannot lock rows (and where it can, rows are locked).
_SQL_CLAIM = (
    "UPDATE jits_job SET status = 'running', due = %s, owner = %s, "
    "claim = claim + 1, attempts = attempts + 1, started = %s "
    "WHERE id = %s AND claim = %s AND due <= %s"
)
_SQL_RENEW = (
    "UPDATE jits_job SET due = %s WHERE id = %s AND claim = %s AND status = 'running'"
)
_SQL_FINISH = (
    "UPDATE jits_job SET status = %s, due = %s, scheduled = %s, owner = NULL, "
    "attempts = %s, runs = runs + 1, failures = failures + %s, finished = %s, "
    "outcome = %s, result = %s, error = COALESCE(%s, error), "
    "schedule = CASE WHEN schedule IS NULL THEN NULL ELSE COALESCE(%s, schedule) END "
    "WHERE id = %s AND claim = %s AND status = 'running'"
)
_SQL_INSERT_RUN = (
    "INSERT INTO jits_run (id, job, task, attempt, owner, scheduled, started, "
    "finished, outcome, error, error_class) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_SQL_RELEASE = (
    "UPDATE jits_job SET status = 'ready', due = %s, owner = NULL "
    "WHERE id = %s AND claim = %s AND status = 'running'"
)
_SQL_UNKNOWN = "SELECT DISTINCT task FROM jits_job WHERE due <= %s{names} LIMIT 20"
# Pruning reads a batch of ids outside any write transaction, then deletes
# them with the condition repeated; both steps are index range scans on
# ``finished``.  Periodic rows (schedule set) are never pruned: their row
# is their schedule.
_SQL_OLD_JOBS = (
    "SELECT id FROM jits_job WHERE due IS NULL AND finished < %s "
    "AND schedule IS NULL ORDER BY finished LIMIT %s"
)
_SQL_DELETE_JOBS = (
    "DELETE FROM jits_job WHERE id IN ({ids}) AND finished < %s AND due IS NULL "
    "AND schedule IS NULL"
)
_SQL_OLD_RUNS = "SELECT id FROM jits_run WHERE finished < %s ORDER BY finished LIMIT %s"
_SQL_DELETE_RUNS = "DELETE FROM jits_run WHERE id IN ({ids}) AND finished < %s"
_SQL_GET = (
    "SELECT id, task, schedule, queue, priority, status, args, due, scheduled, "
    "owner, claim, attempts, runs, failures, enqueued, started, finished, "
    "outcome, result, error FROM jits_job"
)
_GET_FIELDS = [column.strip() for column in
               _SQL_GET[len("SELECT "):-len(" FROM jits_job")].split(",")]


class Claim:
    """One claimed row: what a worker needs to run it and report back."""

    __slots__ = ("id", "task", "schedule", "args", "scheduled", "claim", "attempt",
                 "lease", "renew_at", "lost", "unrecorded")

    def __init__(self, row, lease, now):
        self.id, self.task, self.schedule, self.args, self.scheduled = row[:5]
        self.claim = row[5] + 1  # the count the claim UPDATE wrote
        self.attempt = row[6] + 1
        self.lease = lease
        self.renew_at = now + lease / 3.0
        self.lost = False
        #: The outcome (arguments of store.finish) while writing it failed.
        self.unrecorded = None


# The database server's clock as epoch seconds, for stores shared by hosts.
_SQL_DB_NOW = {
    "postgresql": "SELECT EXTRACT(EPOCH FROM clock_timestamp())",
    "mysql": "SELECT UNIX_TIMESTAMP(NOW(6))",
}


class _SQLStore:
    """Store logic shared by the backends; they provide ``_transaction``.

    ``_transaction(write)`` yields a DB-API cursor.  With ``write`` true it
    holds a write transaction from its first statement (so two claimers
    never both read the same row as free and then both write it); without,
    it may run in autocommit.
    """

    vendor = "sqlite"
    _time = staticmethod(time.time)  # the local clock (tests skew it)

    def __init__(self):
        self._ready = False
        self._ready_lock = threading.Lock()
        #: Counts the times this store made sure of its tables; a scheduler
        #: re-syncs its periodic rows when it changes.
        self.generation = 0
        self._waits = threading.local()
        self._offset = 0.0
        self._next_clock_check = -math.inf
        _track_for_fork(self)

    def _after_fork(self):
        # A lock held by a thread of the parent would never be released.
        self._ready_lock = threading.Lock()

    @contextlib.contextmanager
    def lock_wait(self, seconds):
        """Wait at most *seconds* for SQLite's write lock in this thread.

        A request-triggered poll uses it: waiting the full busy timeout for
        another process's write would hold up the user's request, while a
        poll that finds the store busy is simply repeated later.
        """
        old = getattr(self._waits, "seconds", None)
        self._waits.seconds = seconds
        try:
            yield
        finally:
            self._waits.seconds = old

    def _take_write_lock(self, cur, statement):
        """Run *statement*, which takes SQLite's write lock, waiting no longer
        than this thread's lock_wait() when one is set."""
        wait = getattr(self._waits, "seconds", None)
        old = self._busy_timeout(cur, wait) if wait is not None else None
        try:
            cur.execute(statement)
        finally:
            if old is not None:
                self._busy_timeout(cur, old)

    def _busy_timeout(self, cur, seconds):
        """Set SQLite's busy timeout on *cur*'s connection; return the old one."""
        cur.execute("PRAGMA busy_timeout")
        old = cur.fetchone()[0] / 1000.0
        cur.execute("PRAGMA busy_timeout = %d" % int(seconds * 1000))
        return old

    def now(self):
        """Return the time that due dates and leases are compared with.

        Hosts sharing a database server must agree on it even when their own
        clocks drift apart (a host running ahead would take over leases that
        have not ended), so it is the local clock corrected by the server's,
        re-read every CLOCK_CHECK_INTERVAL seconds.  SQLite has no server:
        there it is the local clock.
        """
        local = self._time()
        if local >= self._next_clock_check:
            self._check_clock(local)
        return local + self._offset

    def _check_clock(self, local):
        sql = _SQL_DB_NOW.get(self.vendor)
        self._next_clock_check = local + CLOCK_CHECK_INTERVAL
        if sql is None:
            return
        try:
            with self._transaction(write=False) as cur:
                before = self._time()
                cur.execute(sql)
                server = float(cur.fetchone()[0])
                after = self._time()
        except Exception as exc:  # unreachable: keep the last offset, retry soon
            self._next_clock_check = local + 5.0
            logger.debug("could not read the database clock: %s", exc)
            return
        offset = server - (before + after) / 2
        if abs(offset - self._offset) > 1.0:
            logger.info("database clock differs from this host's by %.3fs", offset)
        self._offset = offset

    def _sql(self, text):
        return text

    def _insert_ignore(self, sql):
        if self.vendor == "mysql":
            return sql.replace("INSERT INTO", "INSERT IGNORE INTO", 1)
        return sql + " ON CONFLICT DO NOTHING"

    def _lock_clause(self):
        return ""

    # -- schema -----------------------------------------------------------

    def ensure_schema(self):
        """Create the tables and indexes if they are missing."""
        if self._ready:
            return
        with self._ready_lock:
            if not self._ready:
                self._create_schema()
                self._ready = True
                self.generation += 1

    def _schema_statements(self):
        ddl = _VENDOR_DDL[self.vendor]
        statements = [_DDL_JOB.format(**ddl), _DDL_RUN.format(**ddl)]
        if self.vendor != "mysql":
            statements.extend(_DDL_INDEXES)
        return statements

    def _create_schema(self):
        self._execute_ddl(self._schema_statements())
        self._upgrade_schema()

    def _index_names(self, cur):
        """Return the names of the indexes on the jits tables."""
        if self.vendor == "sqlite":
            cur.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        elif self.vendor == "postgresql":
            cur.execute("SELECT indexname FROM pg_indexes WHERE schemaname = "
                        "current_schema() AND tablename IN ('jits_job', 'jits_run')")
        else:
            cur.execute("SELECT DISTINCT index_name FROM information_schema.statistics "
                        "WHERE table_schema = DATABASE() "
                        "AND table_name IN ('jits_job', 'jits_run')")
        return {row[0].lower() for row in cur.fetchall()}

    def _missing_schema(self):
        """Return the statements that bring older jits tables up to date."""
        statements = []
        with self._transaction(write=False) as cur:
            for table, column, kind in _NEW_COLUMNS:
                cur.execute("SELECT * FROM %s WHERE 1 = 0" % table)
                if column not in {d[0].lower() for d in cur.description}:
                    statements.append("ALTER TABLE %s ADD COLUMN %s %s"
                                      % (table, column, kind))
            have = self._index_names(cur)
        statements.extend("CREATE INDEX %s ON %s (%s)" % index
                          for index in _INDEXES if index[0] not in have)
        return statements

    def _upgrade_schema(self):
        """Add the columns and indexes that tables made by an older jits lack.

        Checked once per store object; costs two small reads when nothing
        is missing.
        """
        statements = self._missing_schema()
        if not statements:
            return
        logger.info("upgrading the jits tables: %s", "; ".join(statements))
        try:
            self._execute_ddl(statements)
        except Exception:
            # Another process may be upgrading at the same moment; that is
            # only a problem if something is still missing afterwards.
            if self._missing_schema():
                raise
            logger.debug("jits tables were upgraded by another process")

    def _execute_ddl(self, statements):
        with self._transaction(write=True) as cur:
            for statement in statements:
                cur.execute(statement)

    def _schema_lost(self):
        """Forget that the schema exists, so the next use creates it again."""
        self._ready = False

    @contextlib.contextmanager
    def _use(self, write):
        """A transaction on a store whose schema is known to exist."""
        self.ensure_schema()
        try:
            with self._transaction(write) as cur:
                yield cur
        except Exception as exc:
            if "no such table" in str(exc) or "doesn't exist" in str(exc) or (
                "does not exist" in str(exc)
            ):
                self._schema_lost()
            raise

    # -- writing ----------------------------------------------------------

    def sync_tasks(self, rows, now):
        """Make sure each periodic task has its row.

        *rows* holds (name, schedule text, first due, queue, priority).  A
        row whose stored schedule text differs from the code's is moved to
        the new schedule, unless it is running right now.
        """
        insert = self._sql(self._insert_ignore(_SQL_INSERT_JOB))
        reschedule = self._sql(_SQL_RESCHEDULE)
        with self._use(write=True) as cur:
            for name, text, due, queue_name, priority in rows:
                cur.execute(insert, (name, name, text, queue_name, priority, "[[],{}]",
                                     due, due, now))
                cur.execute(reschedule, (text, due, due, name, text))

    def enqueue(self, job_id, name, args_json, due, queue_name, priority, now):
        """Store a one-off job."""
        with self._use(write=True) as cur:
            cur.execute(self._sql(_SQL_INSERT_JOB), (
                job_id, name, None, queue_name, priority, args_json, due, due, now))

    def claim(self, names, now, limit, owner, leases, queues=None, only=None,
              probe=True, prefix=None, by_priority=True):
        """Atomically claim up to *limit* due rows of the tasks in *names*
        (and, with *prefix*, of every task whose name starts with it).

        *leases* maps a task name to its lease in seconds.  Returns a list
        of Claim.  Rows another worker took first are skipped, not waited on.
        ``probe=False`` skips the read-only look for due rows, for callers
        that just claimed a full batch and so expect more.  Rows are taken
        by priority, then due time; ``by_priority=False`` (all candidates
        share one priority) takes them by due time alone, which the due
        index yields in order, so a claim reads only the rows it takes
        instead of sorting the whole backlog.
        """
        if not (names or prefix) or limit <= 0:
            return []
        names = sorted(names)
        params = [now] + names
        tests = []
        if names:
            tests.append("task IN (%s)" % ", ".join(["%s"] * len(names)))
        if prefix:
            tests.append("task LIKE %s")
            params.append(prefix + "%")
        marks = tests[0] if len(tests) == 1 else "(%s)" % " OR ".join(tests)
        queue_sql = only_sql = ""
        if queues:
            queue_sql = " AND queue IN (%s)" % ", ".join(["%s"] * len(queues))
            params += list(queues)
        if only is not None:
            only_sql = " AND id = %s"
            params.append(only)
        # Reading first, outside any write transaction, keeps the common
        # case (nothing due) from ever taking SQLite's write lock.
        if probe:
            sql = _SQL_ANY_DUE.format(names=marks, queues=queue_sql + only_sql)
            with self._use(write=False) as cur:
                cur.execute(self._sql(sql), params)
                if cur.fetchone() is None:
                    return []
        order = "priority DESC, due" if by_priority else "due"
        select = _SQL_DUE.format(names=marks, queues=queue_sql, only=only_sql,
                                 order=order, lock=self._lock_clause())
        update = self._sql(_SQL_CLAIM)
        claims = []
        with self._use(write=True) as cur:
            cur.execute(self._sql(select), params + [limit])
            for row in cur.fetchall():
                lease = leases.get(row[1], DEFAULT_LEASE)
                cur.execute(update, (now + lease, owner, now, row[0], row[5], now))
                if cur.rowcount == 1:
                    claims.append(Claim(row, lease, now))
                else:  # another worker got there between our read and write
                    logger.debug("job %s was claimed by another worker", row[0])
        return claims

    def renew(self, claim, until):
        """Extend a running claim; return False if it was lost."""
        with self._use(write=True) as cur:
            cur.execute(self._sql(_SQL_RENEW), (until, claim.id, claim.claim))
            return cur.rowcount == 1

    def finish(self, claim, status, due, scheduled, attempts, outcome, result, error,
               started, finished, owner, error_class=None, schedule=None):
        """Record a finished attempt; return False if the claim was lost.

        *schedule* is the periodic task's current schedule text, for a row
        whose schedule changed in the code while it ran.
        """
        failed = 1 if outcome == "failed" else 0
        with self._use(write=True) as cur:
            cur.execute(self._sql(_SQL_FINISH), (
                status, due, scheduled, attempts, failed, finished, outcome, result,
                error, schedule, claim.id, claim.claim))
            if cur.rowcount != 1:
                return False
            cur.execute(self._sql(_SQL_INSERT_RUN), (
                uuid.uuid4().hex, claim.id, claim.task, claim.attempt, owner,
                claim.scheduled, started, finished, outcome, error, error_class))
        return True

    def release(self, claim, due):
        """Give a claim back so that any worker can take the row at *due*."""
        with self._use(write=True) as cur:
            cur.execute(self._sql(_SQL_RELEASE), (due, claim.id, claim.claim))
            return cur.rowcount == 1

    # -- reading ----------------------------------------------------------

    def unknown_tasks(self, names, now, prefix=None):
        """Return names of due rows whose task is not in *names* (nor, with
        *prefix*, starts with it)."""
        names = sorted(names)
        params = [now] + names
        clause = ""
        if names:
            clause = " AND task NOT IN (%s)" % ", ".join(["%s"] * len(names))
        if prefix:
            clause += " AND task NOT LIKE %s"
            params.append(prefix + "%")
        with self._use(write=False) as cur:
            cur.execute(self._sql(_SQL_UNKNOWN.format(names=clause)), params)
            return sorted(row[0] for row in cur.fetchall())

    def prune(self, before, limit):
        """Delete up to *limit* finished jobs and *limit* run history rows
        that finished before *before*; return (jobs, runs) deleted."""
        counts = []
        for select, delete in ((_SQL_OLD_JOBS, _SQL_DELETE_JOBS),
                               (_SQL_OLD_RUNS, _SQL_DELETE_RUNS)):
            with self._use(write=False) as cur:
                cur.execute(self._sql(select), [before, limit])
                ids = [row[0] for row in cur.fetchall()]
            if not ids:
                counts.append(0)
                continue
            sql = delete.format(ids=", ".join(["%s"] * len(ids)))
            with self._use(write=True) as cur:
                cur.execute(self._sql(sql), ids + [before])
                counts.append(max(cur.rowcount, 0))
        return tuple(counts)

    def get(self, job_id):
        """Return one row as a dict, or None."""
        rows = self.rows("WHERE id = %s", [job_id])
        return rows[0] if rows else None

    def rows(self, where="", params=()):
        """Return rows as dicts, for listings and tests."""
        with self._use(write=False) as cur:
            cur.execute(self._sql(_SQL_GET + " " + where), list(params))
            return [dict(zip(_GET_FIELDS, row)) for row in cur.fetchall()]

    def task_summary(self):
        """Return {task: (runs, failures, last finished, last outcome)} from
        the run history (for listings)."""
        sql = ("SELECT r.task, m.runs, m.failures, r.finished, r.outcome "
               "FROM jits_run r JOIN (SELECT task, COUNT(*) AS runs, "
               "SUM(CASE WHEN outcome = 'failed' THEN 1 ELSE 0 END) AS failures, "
               "MAX(finished) AS last FROM jits_run GROUP BY task) m "
               "ON r.task = m.task AND r.finished = m.last")
        with self._use(write=False) as cur:
            cur.execute(sql)
            return {row[0]: (int(row[1]), int(row[2] or 0), row[3], row[4])
                    for row in cur.fetchall()}

    def runs(self, job_id=None):
        """Return the run history (of one job, or all), oldest first."""
        sql = ("SELECT job, task, attempt, owner, scheduled, started, finished, "
               "outcome, error, error_class FROM jits_run")
        params = []
        if job_id is not None:
            sql += " WHERE job = %s"
            params.append(job_id)
        fields = ["job", "task", "attempt", "owner", "scheduled", "started",
                  "finished", "outcome", "error", "error_class"]
        with self._use(write=False) as cur:
            cur.execute(self._sql(sql + " ORDER BY started, finished"), params)
            return [dict(zip(fields, row)) for row in cur.fetchall()]


class SQLiteStore(_SQLStore):
    """The standalone store: one sqlite3 file shared by all local processes.

    The default path is JITS_DATABASE from the environment, else
    ``jits.sqlite3`` in the working directory.  ``":memory:"`` gives a
    private in-process store (for tests).  The file runs in WAL mode so
    that readers never wait for the writer.
    """

    def __init__(self, path=None, timeout=5.0):
        super().__init__()
        path = path or os.environ.get("JITS_DATABASE") or DEFAULT_SQLITE_PATH
        self.path = path if path == ":memory:" else os.path.abspath(path)
        folder = os.path.dirname(self.path)
        if path != ":memory:" and not os.path.isdir(folder):
            raise StoreError("the folder of the SQLite store %r does not exist (create "
                             "%s first)" % (path, folder))
        if os.path.isdir(self.path):
            raise StoreError("the SQLite store %r is a folder; name a file in it, "
                             "such as %s"
                             % (path, os.path.join(path, DEFAULT_SQLITE_PATH)))
        self.timeout = _check_number(timeout, "timeout")
        self._local = threading.local()
        self._memory = None
        # In memory there is only one connection, so it is shared and this
        # lock serialises its users; a file gets one connection per thread.
        self._memory_lock = threading.RLock()

    def __repr__(self):
        return "SQLiteStore(%r)" % self.path

    def _connect(self):
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                               check_same_thread=False)
        if self.path != ":memory:":
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            except BaseException:
                conn.close()
                raise
        return conn

    def _connection(self):
        if self.path == ":memory:":
            if self._memory is None:
                self._memory = self._connect()
            return self._memory
        local = self._local
        conn = getattr(local, "conn", None)
        # A store file that was deleted or replaced under us would keep
        # taking writes into the old, unlinked inode, so look every time.
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            inode = None
        if conn is not None and inode != local.inode:
            logger.warning("jits store file %s was deleted or replaced; reopening it",
                           self.path)
            conn.close()
            conn = local.conn = None
            local.reopen = True
        if conn is None:
            # A file that cannot be opened (a corrupt replacement) raises
            # here on every use, as a store error, rate-limited by the
            # scheduler; the warning above is not repeated.
            conn = self._connect()
            try:
                if getattr(local, "reopen", False):
                    for statement in self._schema_statements():
                        conn.execute(statement)
                    self.generation += 1
                local.inode = os.stat(self.path).st_ino
            except BaseException:
                conn.close()
                raise
            local.conn, local.reopen = conn, False
        return conn

    @contextlib.contextmanager
    def _transaction(self, write):
        memory = self.path == ":memory:"
        guard = self._memory_lock if memory else contextlib.nullcontext()
        with guard:
            conn = self._connection()
            cur = conn.cursor()
            if not write:
                yield cur
                return
            # IMMEDIATE takes the write lock at BEGIN, waiting up to the busy
            # timeout; a deferred transaction that later upgrades fails at
            # once with "database is locked" instead.
            self._take_write_lock(cur, "BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _sql(self, text):
        return text.replace("%s", "?")

    def _after_fork(self):
        super()._after_fork()
        self._local = threading.local()
        self._memory = None
        self._memory_lock = threading.RLock()

    def close(self):
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class DjangoStore(_SQLStore):
    """The store in the Django project's own database (any alias).

    Works on Django's SQLite, PostgreSQL and MySQL/MariaDB backends.  The
    tables are created on first use, and by ``manage.py migrate``.  Jobs
    enqueued inside a transaction appear only if it commits.
    """

    def __init__(self, alias="default"):
        super().__init__()
        _require_django("DjangoStore")
        self.alias = alias

    def __repr__(self):
        return "DjangoStore(%r)" % self.alias

    @property
    def vendor(self):
        from django.db import connections

        return connections[self.alias].vendor

    def _lock_clause(self):
        from django.db import connections

        if connections[self.alias].features.has_select_for_update_skip_locked:
            return " FOR UPDATE SKIP LOCKED"
        return ""

    def _create_schema(self):
        from django.db import connections, transaction

        conn = connections[self.alias]
        if conn.vendor == "sqlite":
            # Look with a write, not a read: inside the caller's atomic block
            # (a view that enqueues) a read would hold SQLite's shared lock,
            # and SQLite fails a later upgrade to a write at once with
            # "database is locked" instead of waiting for the busy timeout.
            try:
                with transaction.atomic(using=self.alias), conn.cursor() as cur:
                    cur.execute("UPDATE jits_job SET claim = claim WHERE 1 = 0")
                    cur.execute("UPDATE jits_run SET attempt = attempt WHERE 1 = 0")
                return
            except Exception as exc:
                if "no such table" not in str(exc):
                    raise
        with conn.cursor() as cur:
            existing = set(conn.introspection.table_names(cur))
        if {"jits_job", "jits_run"} <= existing:
            self._upgrade_schema()
            return
        # Two processes may race to create the tables; the loser's error is
        # harmless if the tables exist afterwards.
        try:
            super()._create_schema()
        except Exception:
            with conn.cursor() as cur:
                existing = set(conn.introspection.table_names(cur))
            if not {"jits_job", "jits_run"} <= existing:
                raise
            logger.debug("jits tables were created by another process")

    def _execute_ddl(self, statements):
        from django.db import connections

        # Outside transaction.atomic: MySQL commits around DDL anyway.
        with connections[self.alias].cursor() as cur:
            for statement in statements:
                cur.execute(statement)

    @contextlib.contextmanager
    def _transaction(self, write):
        from django.db import connections, transaction

        conn = connections[self.alias]
        if not write:
            with conn.cursor() as cur:
                yield cur
            return
        with transaction.atomic(using=self.alias):
            with conn.cursor() as cur:
                if conn.vendor == "sqlite":
                    # Django opens SQLite transactions as deferred; a write
                    # that matches nothing takes the write lock now, with the
                    # busy timeout, rather than failing at a later upgrade.
                    self._take_write_lock(
                        cur, "UPDATE jits_job SET claim = claim WHERE 1 = 0")
                yield cur

    def _after_fork(self):
        super()._after_fork()
        # The parent still talks to the database over the connection this
        # process inherited: forget it without closing it (closing would end
        # the parent's session too), so the child opens its own.
        try:
            from django.db import connections

            connections[self.alias].connection = None
        except Exception:  # Django not set up in this process: nothing inherited
            logger.debug("no Django connection to reset after fork", exc_info=True)


# ---------------------------------------------------------------------------
# Worker pool: a fixed number of daemon threads reading one queue.Queue.
# ---------------------------------------------------------------------------


class _Pool:
    """Run work items on at most *size* threads, started as they are needed.

    ``run`` is called with each item and is expected to handle its own
    errors; anything that still escapes is logged and the thread lives on.
    ``on_done`` is called after each item, to let the scheduler fetch more.
    """

    def __init__(self, size, run, on_done):
        self.size = size
        self._run = run
        self._on_done = on_done
        self._queue = queue.Queue()
        # _lock guards _busy (items submitted and not yet finished),
        # _threads and _closed; _changed is notified whenever _busy drops.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._busy = 0
        self._threads = []
        self._closed = False

    def free(self):
        """Return how many more items can be taken right now."""
        with self._lock:
            return 0 if self._closed else self.size - self._busy

    def submit(self, item):
        with self._lock:
            if self._closed or self._busy >= self.size:
                raise RuntimeError("jits pool is closed or full")
            self._busy += 1
            if len(self._threads) < self._busy:
                thread = threading.Thread(target=self._work, daemon=True,
                                          name="jits-worker-%d" % len(self._threads))
                self._threads.append(thread)
                thread.start()
        self._queue.put(item)

    def _work(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._run(item)
            except BaseException:
                logger.exception("unexpected error in a jits worker thread")
            finally:
                with self._lock:
                    self._busy -= 1
                    self._changed.notify_all()
            self._on_done()

    def close(self):
        """Stop taking items; return the items that were queued but not started."""
        with self._lock:
            self._closed = True
            threads = len(self._threads)
        pending = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                pending.append(item)
        with self._lock:
            self._busy -= len(pending)
            self._changed.notify_all()
        for _ in range(threads):
            self._queue.put(None)
        return pending

    def wait(self, timeout):
        """Wait until no item is running; return True if that happened in time."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True


# ---------------------------------------------------------------------------
# Scheduler: throttled polling, claiming, running, lease renewal, shutdown.
# ---------------------------------------------------------------------------

_instances = weakref.WeakSet()  # stores and schedulers to reset after fork()


def _track_for_fork(obj):
    _instances.add(obj)


def _after_fork_in_child():
    for obj in list(_instances):
        obj._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Scheduler:
    """Find due tasks in a store and run them, inline or in a thread pool.

    ``poll()`` runs (blocking mode) or hands to the pool (threaded mode)
    everything due now and returns how many runs it started.
    ``maybe_poll()`` does the same at most once per ``min_interval``
    seconds of the monotonic clock; between polls it costs one clock read.
    In threaded mode ``maybe_poll()`` only wakes the background poller and
    returns 0, so the caller never waits on the store or on tasks.

    ``django_tasks=True`` also runs jobs enqueued through Django's Tasks
    framework (see TasksBackend).  Finished jobs and run history older than
    ``result_ttl`` seconds (None: keep them) are pruned in small batches,
    after a poll and off the request's thread.

    In blocking mode a poll starts no new run once it has taken ``budget``
    seconds (None: no limit).  ``grace`` is how long shutdown waits for
    running tasks.  ``clock`` (monotonic, for the throttle) and ``now``
    (epoch seconds, for schedules and leases; by default the store's
    ``now()``, which follows the database server's clock) can be replaced,
    for tests.
    """

    def __init__(self, store=None, threaded=False, num_threads=DEFAULT_NUM_THREADS,
                 min_interval=5.0, *, queues=None, grace=DEFAULT_GRACE,
                 budget=DEFAULT_BUDGET, django_tasks=False,
                 result_ttl=DEFAULT_RESULT_TTL, clock=time.monotonic, now=None):
        if not isinstance(threaded, bool):
            raise TypeError("threaded must be True or False, got %r" % (threaded,))
        if isinstance(num_threads, bool) or not isinstance(num_threads, int):
            raise TypeError("num_threads must be an int >= 1, got %r" % (num_threads,))
        if not 1 <= num_threads <= MAX_THREADS:
            raise ValueError("num_threads must be an int from 1 to %d, got %r"
                             % (MAX_THREADS, num_threads))
        if queues is not None:
            if isinstance(queues, str) or not all(
                    isinstance(q, str) and 0 < len(q) <= 64 for q in queues):
                raise TypeError("queues must be a list of queue names (str of 1 to 64 "
                                "characters), got %r" % (queues,))
        for what, value in (("clock", clock), ("now", now)):
            if value is not None and not callable(value):
                raise TypeError("%s must be a function returning seconds, got %r"
                                % (what, value))
        if not isinstance(django_tasks, bool):
            raise TypeError("django_tasks must be True or False, got %r"
                            % (django_tasks,))
        self.min_interval = _check_number(min_interval, "min_interval")
        self.grace = _check_number(grace, "grace")
        self.budget = None if budget is None else _check_number(budget, "budget")
        if result_ttl is not None:
            result_ttl = _check_number(result_ttl, "result_ttl")
        self.result_ttl = result_ttl
        self.django_tasks = django_tasks
        #: Prune in the polling thread (a worker process) instead of a
        #: short-lived helper thread (a web process in blocking mode).
        self.prune_inline = False
        if store is not None and not isinstance(store, _SQLStore):
            raise TypeError("store must be a jits store such as SQLiteStore(path) or "
                            "DjangoStore(alias), got %r" % (store,))
        self.store = store if store is not None else _default_store()
        self.threaded = threaded
        self.num_threads = num_threads
        self.queues = tuple(queues) if queues else None
        self._clock = clock
        self._now = now or self.store.now
        self._next_poll = -math.inf
        self._next_error_log = -math.inf
        self._errors_hidden = 0
        self._busy_polls = 0
        self._next_unknown_check = -math.inf
        self._next_prune = -math.inf
        self._warned_unknown = set()
        self._synced_version = None
        self._next_resync = -math.inf
        self._by_priority = True
        self._names = frozenset()
        self._leases = {}
        self._backlog = False
        self._stopping = False
        self._reset_threads()
        _track_for_fork(self)
        _live_schedulers.add(self)

    def _reset_threads(self):
        # _poll_lock: one poll at a time per scheduler (claiming included).
        # _state_lock: guards _inflight, the claims this process holds.
        self._poll_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._inflight = {}
        self._pool = None
        self._poller = None
        self._keeper = None
        self._pruner = None
        self._wake_poller = threading.Event()
        self._wake_keeper = threading.Event()
        self.owner = "%s:%d" % (socket.gethostname(), os.getpid())

    def _after_fork(self):
        # The parent's threads do not exist in the child, and its claims
        # stay the parent's: start afresh.
        self._reset_threads()
        self._stopping = False

    def __repr__(self):
        return "Scheduler(%r, threaded=%r, num_threads=%d, min_interval=%g)" % (
            self.store, self.threaded, self.num_threads, self.min_interval)

    # -- public API -------------------------------------------------------

    def maybe_poll(self):
        """Poll if ``min_interval`` has passed since the last poll; never raises."""
        now = self._clock()
        if now < self._next_poll:
            return 0
        self._next_poll = now + self.min_interval
        if not _sigterm_checked:
            _exit_on_sigterm()
        if not self._poll_lock.acquire(blocking=False):
            return 0  # a poll is still running
        try:
            if self.threaded:
                self._start_threads()
                self._wake_poller.set()
                return 0
            return self._poll_locked()
        except Exception:  # pragma: no cover - _poll_locked handles its own
            logger.exception("jits poll failed")
            return 0
        finally:
            self._poll_lock.release()

    def poll(self):
        """Run (or, threaded, start) every due run now; return how many."""
        if not _sigterm_checked:
            _exit_on_sigterm()
        with self._poll_lock:
            if self.threaded:
                self._start_threads()
            return self._poll_locked()

    def enqueue(self, task_obj, when, args, kwargs):
        """Store a job for *task_obj*; *when* is None, a datetime or a timedelta."""
        if not isinstance(task_obj, Task):
            task_obj = _lookup(task_obj)
        task_obj.check_call(args, kwargs)
        payload = _dump_args(args, kwargs)
        now = self._now()
        if when is None:
            due = now
        elif isinstance(when, timedelta):
            if when < timedelta(0):
                raise ValueError("enqueue_at() needs a timedelta >= 0, got %gs"
                                 % when.total_seconds())
            due = now + when.total_seconds()
        elif isinstance(when, datetime):
            due = _epoch(when)
        else:
            raise TypeError(
                "enqueue_at() needs a datetime or a timedelta, got %r" % (when,))
        job_id = uuid.uuid4().hex
        self.store.enqueue(job_id, task_obj.name, payload, due, task_obj.queue,
                           task_obj.priority, now)
        logger.debug("enqueued %s as job %s, due %s", task_obj.name, job_id, due)
        return job_id

    def run_now(self, name, args=(), kwargs=None):
        """Run a registered task at once, through the store; return its row."""
        task_obj = _lookup(name)
        job_id = self.enqueue(task_obj, None, tuple(args), dict(kwargs or {}))
        names = self._sync(self._now())
        for claim in self.store.claim(names, self._now(), 1, self.owner, self._leases,
                                      only=job_id, prefix=self._prefix()):
            self._execute(claim)
        return self.store.get(job_id)

    def shutdown(self, grace=None):
        """Stop polling; let running tasks finish for up to *grace* seconds,
        then give back the claims of those still running (another process
        will run them again)."""
        grace = self.grace if grace is None else grace
        self._stopping = True
        self._wake_poller.set()
        # Let a poll that is claiming finish, so no claim it makes is lost.
        polling = self._poll_lock.acquire(timeout=grace)
        try:
            pending = self._pool.close() if self._pool is not None else []
        finally:
            if polling:
                self._poll_lock.release()
        for claim in pending:
            self._untrack(claim)
        if self._pool is not None and not self._pool.wait(grace):
            logger.warning("jits shutdown: tasks still running after %.1fs", grace)
        with self._state_lock:
            leftover = list(self._inflight.values())
        for claim in leftover:
            claim.lost = True
        self._wake_keeper.set()
        def settle():
            for claim in pending + leftover:
                if claim.unrecorded is not None:
                    # The task did run: one last try to record it, never a rerun.
                    self._write_outcome(claim, final=True)
                else:
                    self._give_back(claim)

        # Both need the store, which may be unreachable: do it in a helper
        # thread and wait for it only so long, so exit never hangs.
        giving = threading.Thread(target=settle, daemon=True, name="jits-give-back")
        giving.start()
        giving.join(max(grace, 1.0))

    # -- polling ----------------------------------------------------------

    def _poll_locked(self):
        try:
            started = self._poll_once()
        except Exception as exc:
            if _is_corrupt(exc):
                self._log_error("jits store %r is corrupt; no task runs until the file "
                                "is moved away (jits then starts an empty store)",
                                self.store, exc)
            elif _is_contention(exc) and self._busy_polls < BUSY_POLLS_QUIET:
                # Another process holds SQLite's write lock, or the database
                # picked this transaction as a deadlock's victim: usual under
                # load; it was rolled back, and the next poll tries again.
                self._busy_polls += 1
                logger.debug("jits store is busy (%s); poll skipped", exc)
            else:
                self._log_error("jits could not poll its store %r", self.store, exc)
            return 0
        self._busy_polls = 0
        return started

    def _prefix(self):
        return _DJANGO_PREFIX if self.django_tasks else None

    def _lock_wait(self):
        """In blocking mode polls run on a request's thread: wait briefly."""
        if self.threaded:
            return contextlib.nullcontext()
        return self.store.lock_wait(BLOCKING_LOCK_WAIT)

    def _poll_once(self):
        now = self._now()
        with self._lock_wait():
            names = self._sync(now)
        if now >= self._next_unknown_check:
            self._next_unknown_check = now + UNKNOWN_CHECK_INTERVAL
            self._report_unknown(names, now)
        try:
            if self.threaded:
                return self._dispatch(names)
            return self._run_due(names)
        finally:
            self._maybe_prune(now)

    def _run_due(self, names):
        started = 0
        deadline = math.inf if self.budget is None else self._clock() + self.budget
        # Blocking mode claims one row at a time, so that other processes
        # can take the rest of a backlog while this one is busy.
        while not self._stopping and self._clock() < deadline:
            with self._lock_wait():
                claims = self.store.claim(names, self._now(), 1, self.owner,
                                          self._leases, self.queues, probe=not started,
                                          prefix=self._prefix(),
                                          by_priority=self._by_priority)
            if not claims:
                break
            self._execute(claims[0])
            started += 1
        return started

    def _dispatch(self, names):
        started = 0
        while not self._stopping:
            free = self._pool.free()
            if free <= 0:
                self._backlog = True
                break
            claims = self.store.claim(names, self._now(), free, self.owner,
                                      self._leases, self.queues,
                                      probe=not self._backlog, prefix=self._prefix(),
                                      by_priority=self._by_priority)
            for claim in claims:
                if not self._track(claim):
                    continue
                try:
                    self._pool.submit(claim)
                    started += 1
                except RuntimeError:  # shutting down: let another process run it
                    self._hand_back(claim)
            if len(claims) < free:
                self._backlog = False
                break
            self._backlog = True
        return started

    def _sync(self, now):
        """Bring the store's periodic rows in line with the registry.

        Done when tasks are registered, when the store's tables were made
        anew (a deleted file, a dropped table), and every RESYNC_INTERVAL
        seconds, which also repairs rows deleted by hand and moves rows
        whose schedule changed while they were running.
        """
        self.store.ensure_schema()  # may make the tables anew: a new generation
        version = (_registry_version[0], self.store.generation)
        if version == self._synced_version and now < self._next_resync:
            return self._names
        tasks = list(registry.values())
        rows = []
        for obj in tasks:
            if obj.schedule is None:
                continue
            try:
                if isinstance(obj.schedule, At):
                    first = obj.schedule.when.timestamp()
                else:
                    first = obj.schedule.next_after(_utc(now)).timestamp()
            except (ArithmeticError, ValueError) as exc:
                # One broken schedule must not stop the other tasks.
                logger.error("task %s has no next run (%s: %s); it is skipped",
                             obj.name, type(exc).__name__, exc)
                continue
            rows.append((obj.name, obj.schedule.describe(), first, obj.queue,
                         obj.priority))
        if rows:
            self.store.sync_tasks(rows, now)
        else:
            self.store.ensure_schema()
        self._names = frozenset(t.name for t in tasks)
        self._leases = {t.name: t.lease for t in tasks}
        # Django's tasks carry a priority per job; jits tasks one per task.
        self._by_priority = self.django_tasks or len({t.priority for t in tasks}) > 1
        self._synced_version = (version[0], self.store.generation)
        self._next_resync = now + RESYNC_INTERVAL
        return self._names

    def _report_unknown(self, names, now):
        for name in self.store.unknown_tasks(names, now, self._prefix()):
            if name not in self._warned_unknown:
                self._warned_unknown.add(name)
                logger.warning(
                    "the store has due runs of task %r, which is not registered in "
                    "this process; they are left alone", name)

    def prune(self, now=None, limit=PRUNE_BATCH):
        """Delete one batch of finished jobs and run history older than
        ``result_ttl``; return (jobs, runs) deleted."""
        if self.result_ttl is None:
            return (0, 0)
        now = self._now() if now is None else now
        counts = self.store.prune(now - self.result_ttl, limit)
        if any(counts):
            logger.debug("pruned %d finished job(s) and %d run(s)", *counts)
        return counts

    def _maybe_prune(self, now):
        """Prune one batch if it is time to; never in a request's thread."""
        if self.result_ttl is None or now < self._next_prune or self._stopping:
            return
        inline = self.threaded or self.prune_inline
        if not inline and self._pruner is not None and self._pruner.is_alive():
            return  # the last batch is still going: try again next poll
        self._next_prune = now + PRUNE_INTERVAL
        if inline:
            self._prune_batch(now)
        else:
            # Blocking mode polls inside a request: prune beside it instead.
            self._pruner = threading.Thread(target=self._prune_batch, args=(now, True),
                                            daemon=True, name="jits-prune")
            self._pruner.start()

    def _prune_batch(self, now, own_thread=False):
        try:
            counts = self.prune(now)
            if max(counts) >= PRUNE_BATCH:
                self._next_prune = now  # more to do: another batch next poll
        except Exception as exc:
            self._log_error("jits could not prune old results from %r", self.store, exc)
        finally:
            if own_thread:
                _release_django_connections(close=True)

    def _log_error(self, message, subject, exc):
        """Log a store error at most once per interval, with a count of the rest."""
        now = self._clock()
        if now < self._next_error_log:
            self._errors_hidden += 1
            return
        self._next_error_log = now + max(self.min_interval, 5.0)
        hidden, self._errors_hidden = self._errors_hidden, 0
        logger.error(message + ": %s: %s%s", subject, type(exc).__name__, exc,
                     " (%d similar errors not logged)" % hidden if hidden else "",
                     exc_info=logger.isEnabledFor(logging.DEBUG))

    # -- running ----------------------------------------------------------

    def _track(self, claim):
        """Note a claim as held by this process; False if it already was."""
        with self._state_lock:
            held = self._inflight.get(claim.id)
            if held is not None:
                # Our own run lost its lease (renewals failed) and this poll
                # claimed the row again: keep the one run going, with the
                # new claim, rather than queue the task a second time.
                held.claim, held.lost = claim.claim, False
                held.renew_at = min(held.renew_at, claim.renew_at)
                return False
            self._inflight[claim.id] = claim
        self._start_keeper()
        return True

    def _untrack(self, claim):
        with self._state_lock:
            if self._inflight.get(claim.id) is claim:
                del self._inflight[claim.id]

    def _execute(self, claim):
        """Run one claimed row and record its outcome; never raises Exception."""
        self._track(claim)
        task_obj = registry.get(claim.task)
        if task_obj is None and claim.task.startswith(_DJANGO_PREFIX):
            return _execute_django_task(self, claim)
        started = self._now()
        result = error = None
        try:
            if task_obj is None:
                raise JitsError("task %r is no longer registered" % claim.task)
            args, kwargs = json.loads(claim.args)
            if task_obj.takes_context:
                scheduled = None
                if claim.scheduled is not None:
                    scheduled = _utc(claim.scheduled)
                args = [RunContext(claim.task, claim.id, scheduled, claim.attempt,
                                   self.owner)] + args
            logger.info("running %s (job %s, attempt %d)", claim.task, claim.id,
                        claim.attempt)
            value = task_obj.func(*args, **kwargs)
            if inspect.iscoroutine(value):
                value = asyncio.run(value)
            result = _dump_result(value)
            outcome = "succeeded"
        except _Terminated:
            self._hand_back(claim)
            raise
        except (Exception, SystemExit):
            # A task calling sys.exit() has failed; it must not take the
            # request or the worker thread down with it.
            logger.exception("task %s failed (job %s, attempt %d)", claim.task,
                             claim.id, claim.attempt)
            outcome, error = "failed", traceback.format_exc()
        except BaseException:
            # The process is being interrupted (KeyboardInterrupt): hand the
            # row back so another process runs it.
            self._hand_back(claim)
            raise
        finished = self._now()
        self._untrack(claim)
        logger.info("%s %s in %.3fs", claim.task, outcome, finished - started)
        self._record(claim, task_obj, outcome, result, error, started, finished)

    def _record(self, claim, task_obj, outcome, result, error, started, finished,
                error_class=None):
        retries = task_obj.retries if task_obj is not None else 0
        # The code may have changed the schedule while the task ran.
        current = registry.get(claim.task, task_obj)
        schedule = current.schedule if current is not None else None
        text = schedule.describe() if schedule is not None else None
        if outcome == "failed" and claim.attempt <= retries:
            delay = task_obj.retry_delay * 2 ** (claim.attempt - 1)
            delay = min(delay, max(MAX_RETRY_DELAY, task_obj.retry_delay))
            status, due = "ready", finished + delay
            scheduled, attempts = claim.scheduled, claim.attempt
            logger.warning("task %s will be retried in %.1fs (attempt %d of %d)",
                           claim.task, delay, claim.attempt + 1, retries + 1)
        elif claim.schedule is not None and schedule is not None:
            # Count from the occurrence, not from when the run ended, so
            # that runs do not drift; but never schedule into the past, so a
            # long quiet spell or a long run yields one run, not a burst.
            base = max(claim.scheduled if claim.scheduled is not None else finished,
                       finished)
            nxt = schedule.next_after(_utc(base))
            status = "ready" if nxt is not None else outcome
            due = scheduled = nxt.timestamp() if nxt is not None else None
            attempts = 0
        else:
            status, due, attempts = outcome, None, claim.attempt
            scheduled = claim.scheduled
        claim.unrecorded = (status, due, scheduled, attempts, outcome, result, error,
                            started, finished, self.owner, error_class, text)
        self._write_outcome(claim)

    def _write_outcome(self, claim, final=False):
        """Write a finished run's outcome; return True when nothing is left to do.

        When the store fails (locked, unreachable), the claim stays held
        and the lease keeper tries again until the write succeeds or the
        lease is lost: a run that happened is recorded, not repeated, as
        long as the store comes back within the lease.
        """
        try:
            kept = self.store.finish(claim, *claim.unrecorded)
        except Exception as exc:
            if final:
                self._log_error("jits could not record the outcome of job %s (it will "
                                "run again when its lease ends)", claim.id, exc)
                return True
            self._log_error("jits could not record the outcome of job %s yet (it "
                            "keeps its claim and tries again)", claim.id, exc)
            claim.renew_at = self._now() + min(1.0, claim.lease / 6.0)
            with self._state_lock:
                self._inflight.setdefault(claim.id, claim)
            self._start_keeper()
            return False
        self._untrack(claim)
        claim.unrecorded = None
        if not kept:
            logger.warning("job %s (%s) lost its claim before it finished; another "
                           "worker may have run it again", claim.id, claim.task)
        return True

    def _hand_back(self, claim):
        """Stop holding a claim this process will not run, and give it back."""
        self._untrack(claim)
        self._give_back(claim)

    def _give_back(self, claim):
        try:
            self.store.release(claim, self._now())
        except Exception as exc:
            self._log_error("jits could not give back job %s (it will be taken again "
                            "when its lease ends)", claim.id, exc)

    # -- background threads ------------------------------------------------

    def _start_threads(self):
        if self._pool is None:
            self._pool = _Pool(self.num_threads, self._run_in_pool, self._after_run)
        if self._poller is None or not self._poller.is_alive():
            self._poller = threading.Thread(target=self._poll_forever, daemon=True,
                                            name="jits-poller")
            self._poller.start()

    def _run_in_pool(self, claim):
        try:
            self._execute(claim)
        finally:
            # Close connections as a request's end would, but keep them
            # through a backlog: reconnecting for every job would cost more
            # than the jobs themselves.
            _release_django_connections(keep=self._backlog)

    def _after_run(self):
        if self._backlog and not self._stopping:
            self._wake_poller.set()

    def _poll_forever(self):
        while True:
            self._wake_poller.wait()
            self._wake_poller.clear()
            if self._stopping:
                return
            with self._poll_lock:
                self._poll_locked()
            _release_django_connections(keep=self._backlog)

    def _start_keeper(self):
        self._wake_keeper.set()
        if self._keeper is None or not self._keeper.is_alive():
            with self._state_lock:
                if self._keeper is None or not self._keeper.is_alive():
                    self._keeper = threading.Thread(target=self._keep_leases,
                                                    daemon=True, name="jits-leases")
                    self._keeper.start()

    def _keep_leases(self):
        """Renew the leases of running claims, so long tasks keep them."""
        while not self._stopping:
            self._wake_keeper.clear()
            with self._state_lock:
                claims = [c for c in self._inflight.values() if not c.lost]
            now = self._now()
            if not claims:
                self._wake_keeper.wait()
                continue
            soonest = min(c.renew_at for c in claims)
            if soonest > now:
                self._wake_keeper.wait(min(soonest - now, 60.0))
                continue
            for claim in claims:
                if claim.renew_at > now:
                    continue
                if claim.unrecorded is not None:
                    self._write_outcome(claim)
                    continue
                try:
                    if self.store.renew(claim, now + claim.lease):
                        claim.renew_at = now + claim.lease / 3.0
                    else:
                        claim.lost = True
                        logger.warning("job %s (%s) lost its lease while running",
                                       claim.id, claim.task)
                except Exception as exc:
                    claim.renew_at = now + min(1.0, claim.lease / 6.0)
                    self._log_error("jits could not renew the lease of job %s",
                                    claim.id, exc)
            _release_django_connections()


_live_schedulers = weakref.WeakSet()


@atexit.register
def _shutdown_all():
    """At interpreter exit, let running tasks finish or hand their claims back."""
    for scheduler in list(_live_schedulers):
        if scheduler._pool is not None or scheduler._inflight:
            scheduler.shutdown()


def _is_corrupt(exc):
    """Tell whether a store error says the SQLite file is damaged."""
    text = str(exc)
    return "file is not a database" in text or "malformed" in text


_sigterm_checked = False


def _exit_on_sigterm():
    """Make SIGTERM end a plain process through SystemExit, once, if nobody
    else handles it.

    The default action kills the process at once: no atexit, so running
    tasks could neither finish nor give their claims back until their
    leases end.  Servers that handle SIGTERM themselves (gunicorn, uWSGI)
    are left alone; so is any handler the program set.  Only the main
    thread can set handlers; polls from other threads do not try.
    """
    global _sigterm_checked
    if threading.current_thread() is not threading.main_thread():
        return
    _sigterm_checked = True
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except (AttributeError, ValueError, OSError):  # pragma: no cover - no signals
        logger.debug("jits could not set a SIGTERM handler", exc_info=True)


def _is_contention(exc):
    """Tell whether a store error is a passing conflict with other writers."""
    text = str(exc).lower()
    return any(sign in text for sign in ("database is locked", "deadlock",
                                         "could not serialize", "lock wait timeout"))


class _Terminated(SystemExit):
    """SIGTERM, raised as SystemExit so the process exits the usual way.

    Unlike a task's own sys.exit(), which is the task failing, it must get
    through the scheduler to end the process.
    """


def _on_sigterm(signum, frame):
    # A second SIGTERM, during the grace period, kills at once as usual.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    logger.info("SIGTERM: jits lets running tasks finish (or gives them back)")
    raise _Terminated(128 + signum)


def _lookup(name):
    try:
        return registry[name]
    except KeyError:
        raise JitsError(
            "no task is registered as %r (registered: %s)"
            % (name, ", ".join(sorted(registry)) or "none")
        ) from None


def _release_django_connections(keep=False, close=False):
    """In a jits thread, close Django's connections as a request's end would.

    With *keep* (a backlog is being worked off) only broken connections are
    closed: reconnecting for every job would cost more than the jobs.  With
    *close* (the thread is about to end) all of them are closed.
    """
    if "django.db" not in sys.modules or not _django_configured():
        return
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        try:
            if close:
                conn.close()
            elif not keep:
                conn.close_if_unusable_or_obsolete()
            elif conn.connection is not None and conn.errors_occurred:
                if conn.is_usable():
                    conn.errors_occurred = False
                else:
                    conn.close()
        except Exception:  # a connection that cannot even close is gone anyway
            logger.debug("closing a Django connection failed", exc_info=True)


# ---------------------------------------------------------------------------
# Settings and the default scheduler (used by the middlewares and enqueue).
# ---------------------------------------------------------------------------

_default = None
_default_lock = threading.Lock()

# Settings of the 2008 install guide, with their defaults and checks.
_SETTINGS = (
    ("JITS_THREADED", DEFAULT_THREADED, "jits.E001", "True or False"),
    ("JITS_NUM_THREADS", DEFAULT_NUM_THREADS, "jits.E002", "an int >= 1"),
    ("JITS_MIN_SECONDS", DEFAULT_MIN_SECONDS, "jits.E003", "a number >= 0"),
    ("JITS_MIN_MINUTES", DEFAULT_MIN_MINUTES, "jits.E004", "a number >= 0"),
    ("JITS_RESULT_TTL", DEFAULT_RESULT_TTL, "jits.E006",
     "a number of seconds >= 0, or None to keep results"),
)


def _settings_problems(values, databases=None):
    """Return (check id, message) for each invalid JITS_* value in *values*.

    With *databases* (Django's DATABASES), JITS_DATABASE is checked too.
    """
    problems = []
    for name, _default_value, check_id, allowed in _SETTINGS:
        value = values.get(name, _default_value)
        if name == "JITS_THREADED":
            ok = isinstance(value, bool)
        elif name == "JITS_RESULT_TTL" and value is None:
            ok = True
        elif name == "JITS_NUM_THREADS":
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        else:
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
                  and math.isfinite(value) and value >= 0)
        if not ok:
            problems.append((check_id,
                             "%s must be %s, got %r" % (name, allowed, value)))
    if not problems:
        interval = values["JITS_MIN_MINUTES"] * 60 + values["JITS_MIN_SECONDS"]
        if not math.isfinite(interval):
            problems.append(("jits.E004", "JITS_MIN_MINUTES * 60 + JITS_MIN_SECONDS "
                             "must be finite, got %r" % (interval,)))
    if databases is not None:
        alias = values.get("JITS_DATABASE", "default")
        if not isinstance(alias, str) or alias not in databases:
            problems.append(("jits.E005", "JITS_DATABASE must name a database in "
                             "DATABASES (one of: %s), got %r"
                             % (", ".join(sorted(databases)), alias)))
    return problems


def _django_configured():
    if "django.conf" not in sys.modules:
        return False
    from django.conf import settings

    return settings.configured


def _require_django(what):
    try:
        import django  # noqa: F401
    except ImportError:
        raise JitsError("%s needs Django, which is not installed "
                        "(pip install django)" % what) from None


def _django_options():
    """Scheduler options from Django's settings; raise on invalid values."""
    from django.conf import settings

    values = {name: getattr(settings, name, default)
              for name, default, _, _ in _SETTINGS}
    values["JITS_DATABASE"] = getattr(settings, "JITS_DATABASE", "default")
    problems = _settings_problems(values, settings.DATABASES)
    if problems:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("; ".join(message for _, message in problems))
    return {
        "store": DjangoStore(getattr(settings, "JITS_DATABASE", "default")),
        "threaded": values["JITS_THREADED"],
        "num_threads": values["JITS_NUM_THREADS"],
        "min_interval": values["JITS_MIN_MINUTES"] * 60 + values["JITS_MIN_SECONDS"],
        "result_ttl": values["JITS_RESULT_TTL"],
        "django_tasks": _uses_tasks_backend(),
    }


def _default_store():
    if _django_configured():
        from django.conf import settings

        return DjangoStore(getattr(settings, "JITS_DATABASE", "default"))
    return SQLiteStore()


def default_scheduler():
    """Return the process's default scheduler, building it on first use.

    Under Django it follows the JITS_* settings and uses the project's
    database; standalone it is ``Scheduler()`` on the default SQLite file.
    """
    global _default
    scheduler = _default
    if scheduler is None:
        with _default_lock:
            if _default is None:
                _default = Scheduler(**(_django_options() if _django_configured()
                                        else {}))
            scheduler = _default
    return scheduler


def configure(**options):
    """Replace the default scheduler with ``Scheduler(**options)``; return it."""
    global _default
    scheduler = Scheduler(**options)
    with _default_lock:
        old, _default = _default, scheduler
    if old is not None:
        old.shutdown()
    return scheduler


# ---------------------------------------------------------------------------
# Web integration: WSGI and Django middleware, the Django app, and the
# module names of the 2008 install guide (jits.middleware, jits.app).
# ---------------------------------------------------------------------------


class WSGIMiddleware:
    """Wrap any WSGI application so that its requests drive the scheduler."""

    def __init__(self, app, scheduler=None):
        self.app = app
        self.scheduler = scheduler

    def __call__(self, environ, start_response):
        try:
            (self.scheduler or _default or default_scheduler()).maybe_poll()
        except Exception:
            logger.exception("jits could not poll; the request goes on")
        return self.app(environ, start_response)


class JitsMiddleware:
    """Django middleware (new style, old style and async) driving the scheduler.

    In blocking mode the request that triggers a poll runs the due tasks
    first; in threaded mode the poll happens in a background thread.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response=None):
        self.get_response = get_response
        self._async = False
        if _django_configured():
            _django_ready()
            default_scheduler()  # invalid JITS_* settings fail here, at startup
        if get_response is not None:
            from asgiref.sync import iscoroutinefunction, markcoroutinefunction

            if iscoroutinefunction(get_response):
                self._async = True
                markcoroutinefunction(self)

    def process_request(self, request):
        """Poll if due (the hook of old-style MIDDLEWARE_CLASSES)."""
        try:
            (_default or default_scheduler()).maybe_poll()
        except Exception:
            logger.exception("jits could not poll; the request goes on")

    def __call__(self, request):
        if self._async:
            return self.__acall__(request)
        # Between polls a request costs one clock read and one comparison,
        # inlined here because every request pays for each extra call.
        scheduler = _default
        if scheduler is None or scheduler._clock() >= scheduler._next_poll:
            self.process_request(request)
        return self.get_response(request)

    async def __acall__(self, request):
        scheduler = _default or default_scheduler()
        if scheduler._clock() >= scheduler._next_poll:
            if scheduler.threaded:
                scheduler.maybe_poll()
            else:
                from asgiref.sync import sync_to_async

                await sync_to_async(scheduler.maybe_poll, thread_sensitive=True)()
        return await self.get_response(request)


_django_is_ready = False
_app_config_class = None


def _django_ready():
    """Hook jits into a configured Django, once: checks, tables, tasks.py."""
    global _django_is_ready
    if _django_is_ready:
        return
    _django_is_ready = True
    from django.core import checks
    from django.db.models.signals import post_migrate
    from django.utils.module_loading import autodiscover_modules

    checks.register(_django_checks)
    post_migrate.connect(_create_tables_after_migrate, dispatch_uid="jits-tables")
    autodiscover_modules("tasks")


def _django_checks(app_configs=None, **kwargs):
    """Django system check: report invalid JITS_* settings."""
    from django.conf import settings
    from django.core.checks import Error

    values = {name: getattr(settings, name, default)
              for name, default, _, _ in _SETTINGS}
    values["JITS_DATABASE"] = getattr(settings, "JITS_DATABASE", "default")
    return [Error(message, id=check_id) for check_id, message in
            _settings_problems(values, settings.DATABASES)]


def _create_tables_after_migrate(sender=None, using="default", **kwargs):
    from django.conf import settings

    if using == getattr(settings, "JITS_DATABASE", "default"):
        default_scheduler().store.ensure_schema()


def _django_app_config():
    """Return jits's AppConfig class, creating it (and importing Django) once."""
    global _app_config_class
    if _app_config_class is None:
        from django.apps import AppConfig

        class JitsConfig(AppConfig):
            name = "jits"
            label = "jits"
            verbose_name = "jits scheduler"
            default = True
            # A directory that does not exist: jits.py often sits in
            # site-packages or a project folder, and Django must not take
            # that folder's templates, static files or commands as ours.
            path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "jits-app-has-no-files")

            def ready(self):
                _django_ready()

        _app_config_class = JitsConfig
    return _app_config_class


class _AppsModule(types.ModuleType):
    """Stands in for an ``apps.py``; builds the AppConfig only when Django
    asks for it, so that importing jits never imports Django."""

    def __getattr__(self, name):
        if name == "JitsConfig":
            return _django_app_config()
        raise AttributeError(name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | {"JitsConfig"})


def _module(name, cls=types.ModuleType, **attrs):
    module = cls(name, "Part of jits, kept importable for older settings.")
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.__file__ = __file__
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def _install_module_names():
    """Make ``jits.middleware``, ``jits.app`` and ``jits.apps`` importable.

    Django finds an app's AppConfig in its ``apps`` submodule, which only a
    package can have; so jits and jits.app get an empty ``__path__`` and
    their ``apps`` modules are placed in sys.modules directly.
    """
    this = sys.modules[__name__]
    if __name__ == "__main__":
        # Run as ``python -m jits``: let ``import jits`` find this module,
        # so the command line and the tasks share one registry.
        sys.modules.setdefault("jits", this)
    this.__path__ = []
    this.middleware = _module("jits.middleware", JitsMiddleware=JitsMiddleware,
                              WSGIMiddleware=WSGIMiddleware)
    this.app = _module("jits.app", __path__=[])
    this.app.apps = _module("jits.app.apps", _AppsModule)
    this.apps = _module("jits.apps", _AppsModule)


_install_module_names()


# ---------------------------------------------------------------------------
# Django Tasks: a backend for django.tasks (Django 6) whose jobs live in the
# jits store and are run by the same polls, exactly once, with results.
# ---------------------------------------------------------------------------

# A Django task's job row is named _DJANGO_PREFIX + the task's module path;
# its ``args`` column holds [args, kwargs, {"backend": alias, "run_after":
# epoch or null}].  The row names a function, so running it is guarded:
# the path must lead, without walking attributes, to a django.tasks.Task
# in a module that is already imported or belongs to an installed app.
_DJANGO_PREFIX = "django:"
_OPTIONS = {"RETRIES": "an int >= 0", "RETRY_DELAY": "a number of seconds >= 0"}
_STATUS = {"ready": "READY", "running": "RUNNING", "succeeded": "SUCCESSFUL",
           "failed": "FAILED"}
_tasks_backend = None


def __getattr__(name):
    """Build TasksBackend on first use, so importing jits never imports Django."""
    if name == "TasksBackend":
        return _tasks_backend_class()
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def _tasks_backend_class():
    global _tasks_backend
    if _tasks_backend is None:
        try:
            from django.tasks.backends.base import BaseTaskBackend
        except ImportError:
            _tasks_backend = _unavailable_backend()
        else:
            _tasks_backend = _build_tasks_backend(BaseTaskBackend)
    return _tasks_backend


def _unavailable_backend():
    class TasksBackend:
        """Stands in for the backend where django.tasks (Django 6) is missing."""

        def __init__(self, alias=None, params=None):
            try:
                import django

                found = "Django %s" % django.get_version()
            except ImportError:
                found = "no Django"
            raise JitsError("jits.TasksBackend needs Django 6.0 or newer "
                            "(django.tasks); found %s" % found)

    return TasksBackend


def _build_tasks_backend(base):
    from django.tasks.exceptions import InvalidTask, InvalidTaskBackend

    class TasksBackend(base):
        """Django Tasks backend: jobs in the jits store, run just in time.

        ``TASKS = {"default": {"BACKEND": "jits.TasksBackend"}}``.  Enqueued
        tasks are stored in the jits store (JITS_DATABASE) and run by the
        next poll of any process sharing it: a request through
        JitsMiddleware, or ``python -m jits worker``.  OPTIONS: ``RETRIES``
        (default 0) and ``RETRY_DELAY`` (seconds, default 10; doubled on
        each retry, capped at MAX_RETRY_DELAY).
        """

        supports_defer = True
        supports_async_task = True
        supports_get_result = True
        supports_priority = True

        #: Read by the scheduler when it records an outcome (no schedule:
        #: Django tasks run once, with up to ``retries`` retries).
        schedule = None

        def __init__(self, alias, params):
            super().__init__(alias, params)
            unknown = sorted(set(self.options) - set(_OPTIONS))
            if unknown:
                raise InvalidTaskBackend(
                    "TASKS[%r]['OPTIONS'] has unknown key(s) %s (allowed: %s)"
                    % (alias, ", ".join(map(repr, unknown)), ", ".join(_OPTIONS)))
            retries = self.options.get("RETRIES", 0)
            if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
                raise InvalidTaskBackend(
                    "TASKS[%r]['OPTIONS']['RETRIES'] must be %s, got %r"
                    % (alias, _OPTIONS["RETRIES"], retries))
            try:
                delay = _check_number(self.options.get("RETRY_DELAY", 10.0),
                                      "TASKS[%r]['OPTIONS']['RETRY_DELAY']" % alias)
            except (TypeError, ValueError) as exc:
                raise InvalidTaskBackend(str(exc)) from None
            self.retries = retries
            self.retry_delay = delay

        def validate_task(self, task):
            super().validate_task(task)
            if len(task.queue_name) > 64:
                raise InvalidTask("Queue name %r is longer than the 64 characters "
                                  "jits can store." % (task.queue_name,))
            if len(_DJANGO_PREFIX + task.module_path) > 200:
                raise InvalidTask("Task path %r is longer than the %d characters "
                                  "jits can store." % (task.module_path,
                                                       200 - len(_DJANGO_PREFIX)))

        def enqueue(self, task, args, kwargs):
            return _django_enqueue(self, task, args, kwargs)

        def get_result(self, result_id):
            return _django_get_result(self, result_id)

        def check(self, **kwargs):
            return list(super().check(**kwargs)) + _tasks_backend_checks(self)

    TasksBackend.__module__ = "jits"
    TasksBackend.__qualname__ = "TasksBackend"
    return TasksBackend


def _uses_tasks_backend():
    """Return True when Django's TASKS setting names jits.TasksBackend."""
    from django.conf import settings

    tasks = getattr(settings, "TASKS", None)
    if not isinstance(tasks, dict):
        return False
    try:
        from django.tasks.backends.base import BaseTaskBackend  # noqa: F401
    except ImportError:
        return False
    from django.utils.module_loading import import_string

    ours = _tasks_backend_class()
    for params in tasks.values():
        path = params.get("BACKEND") if isinstance(params, dict) else None
        if not isinstance(path, str):
            continue
        try:
            found = import_string(path)
        except ImportError:
            continue
        if isinstance(found, type) and issubclass(found, ours):
            return True
    return False


def _tasks_backend_checks(backend):
    """Warn when nothing in this project would ever run the enqueued tasks."""
    from django.conf import settings
    from django.core.checks import Warning

    middleware = getattr(settings, "MIDDLEWARE", None) or []
    names = {"jits.middleware.JitsMiddleware", "jits.JitsMiddleware"}
    if names & set(middleware):
        return []
    return [Warning(
        "TASKS[%r] uses jits.TasksBackend, but JitsMiddleware is not in "
        "MIDDLEWARE, so requests will not run the tasks" % backend.alias,
        hint="add 'jits.middleware.JitsMiddleware' to MIDDLEWARE, or run "
             "'python -m jits worker'",
        id="jits.W001")]


def _resolve_django_task(path):
    """Return the django.tasks.Task at *path*, or raise JitsError.

    Only a module that is already imported, or that belongs to an installed
    app, is imported; the object must be a module attribute and a Task.
    """
    from django.tasks import Task as DjangoTask

    module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise JitsError("stored task %r is not a dotted path 'module.name'" % (path,))
    module = sys.modules.get(module_name)
    if module is None:
        from django.apps import apps

        if apps.get_containing_app_config(module_name) is None:
            raise JitsError(
                "refused to run %r: module %r is neither imported nor part of an "
                "installed app" % (path, module_name))
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise JitsError("refused to run %r: cannot import %r (%s)"
                            % (path, module_name, exc)) from None
    found = getattr(module, attr, None)
    if not isinstance(found, DjangoTask):
        raise JitsError(
            "refused to run %r: it is %s, not a Django task (only functions "
            "decorated with django.tasks.task run from the store)"
            % (path, "missing" if found is None else "a %s" % type(found).__name__))
    return found


def _class_path(cls):
    return "%s.%s" % (cls.__module__, cls.__qualname__)


def _load_payload(text):
    """Return [args, kwargs, meta] of a Django task's row, or raise JitsError."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not (isinstance(data, list) and len(data) == 3 and isinstance(data[0], list)
            and isinstance(data[1], dict) and isinstance(data[2], dict)):
        raise JitsError("stored arguments %r are not [args, kwargs, meta]" % (text,))
    return data


def _django_enqueue(backend, task, args, kwargs):
    """Store a call of a Django task; return its TaskResult (READY)."""
    from django.tasks import TaskResult, TaskResultStatus
    from django.tasks.exceptions import InvalidTask
    from django.tasks.signals import task_enqueued

    backend.validate_task(task)
    # The row keeps only the path, so the task must be found there again.
    try:
        found = _resolve_django_task(task.module_path)
    except JitsError as exc:
        raise InvalidTask(str(exc)) from None
    if found.func is not task.func:
        raise InvalidTask("%r does not lead back to this task's function"
                          % (task.module_path,))
    scheduler = _default or default_scheduler()
    now = scheduler._now()
    job_id = uuid.uuid4().hex
    result = TaskResult(task=task, id=job_id, status=TaskResultStatus.READY,
                        enqueued_at=_utc(now), started_at=None, finished_at=None,
                        last_attempted_at=None, args=list(args), kwargs=dict(kwargs),
                        backend=backend.alias, errors=[], worker_ids=[])
    _dump_args(result.args, result.kwargs)  # raises TypeError for non-JSON
    run_after = None if task.run_after is None else _epoch(task.run_after)
    payload = json.dumps([result.args, result.kwargs,
                          {"backend": backend.alias, "run_after": run_after}],
                         separators=(",", ":"))
    scheduler.store.enqueue(job_id, _DJANGO_PREFIX + task.module_path, payload,
                            now if run_after is None else run_after, task.queue_name,
                            task.priority, now)
    logger.debug("enqueued Django task %s as job %s", task.module_path, job_id)
    task_enqueued.send(type(backend), task_result=result)
    return result


def _django_get_result(backend, result_id):
    from django.tasks.exceptions import TaskResultDoesNotExist

    store = (_default or default_scheduler()).store
    row = store.get(result_id) if isinstance(result_id, str) else None
    if row is None or not row["task"].startswith(_DJANGO_PREFIX):
        raise TaskResultDoesNotExist(result_id)
    try:
        task = _resolve_django_task(row["task"][len(_DJANGO_PREFIX):])
        args, kwargs, meta = _load_payload(row["args"])
    except JitsError as exc:
        raise TaskResultDoesNotExist("%s: %s" % (result_id, exc)) from None
    return _django_task_result(task, row, store.runs(result_id), args, kwargs,
                               meta.get("backend") or backend.alias, meta)


def _django_task_result(task, row, runs, args, kwargs, alias, meta):
    """Build the TaskResult of a stored row and its run history."""
    from django.tasks import TaskResult, TaskResultStatus
    from django.tasks.base import TaskError

    run_after = meta.get("run_after")
    try:
        task = task.using(priority=row["priority"], queue_name=row["queue"],
                          backend=alias,
                          run_after=None if run_after is None else _utc(run_after))
    except Exception:  # settings changed since (queue or backend gone)
        logger.debug("job %s is shown with its task's defaults", row["id"],
                     exc_info=True)
    status = TaskResultStatus(_STATUS[row["status"]])
    running = status == TaskResultStatus.RUNNING
    errors = [TaskError(exception_class_path=r["error_class"] or _class_path(JitsError),
                        traceback=r["error"] or "")
              for r in runs if r["outcome"] == "failed"]
    # An attempt whose worker died left no history: keep it counted.
    worker_ids = [r["owner"] or "unknown" for r in runs]
    lost = row["attempts"] - len(runs) - (1 if running else 0)
    worker_ids += ["unknown"] * max(lost, 0)
    if running:
        worker_ids.append(row["owner"] or "unknown")
    first = min((r["started"] for r in runs), default=row["started"])
    last = row["started"] if running or not runs else runs[-1]["started"]
    result = TaskResult(
        task=task, id=row["id"], status=status, enqueued_at=_utc(row["enqueued"]),
        started_at=None if first is None else _utc(first),
        finished_at=_utc(row["finished"]) if status in (
            TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED) else None,
        last_attempted_at=None if last is None else _utc(last),
        args=args, kwargs=kwargs, backend=alias, errors=errors, worker_ids=worker_ids)
    if status == TaskResultStatus.SUCCESSFUL and row["result"] is not None:
        object.__setattr__(result, "_return_value", json.loads(row["result"]))
    return result


def _execute_django_task(scheduler, claim):
    """Run one claimed Django task row; the Django side of Scheduler._execute."""
    from django.tasks import TaskContext, TaskResultStatus, task_backends
    from django.tasks.base import TaskError
    from django.tasks.signals import task_finished, task_started
    from django.utils.json import normalize_json

    path = claim.task[len(_DJANGO_PREFIX):]
    started = scheduler._now()
    try:
        args, kwargs, meta = _load_payload(claim.args)
        task = _resolve_django_task(path)
        backend = task_backends[meta.get("backend") or "default"]
        if not isinstance(backend, _tasks_backend_class()):
            raise JitsError("backend %r is not a jits.TasksBackend" % (backend.alias,))
        row = scheduler.store.get(claim.id)
        result = _django_task_result(task, row, scheduler.store.runs(claim.id), args,
                                     kwargs, backend.alias, meta)
    except Exception as exc:
        # A tampered or stale row: refuse it, record why, run nothing.
        logger.error("job %s (%s) refused: %s", claim.id, claim.task, exc)
        scheduler._untrack(claim)
        scheduler._record(claim, None, "failed", None, traceback.format_exc(),
                          started, scheduler._now(), _class_path(type(exc)))
        return

    def finish(status, finished):
        object.__setattr__(result, "status", status)
        if status != TaskResultStatus.READY:  # READY: a retry is due later
            object.__setattr__(result, "finished_at", _utc(finished))
        task_finished.send(type(backend), task_result=result)

    task_started.send(type(backend), task_result=result)
    logger.info("running %s (job %s, attempt %d)", claim.task, claim.id, claim.attempt)
    try:
        if result.task.takes_context:
            value = result.task.call(TaskContext(task_result=result), *args, **kwargs)
        else:
            value = result.task.call(*args, **kwargs)
        value = normalize_json(value)
        encoded = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except _Terminated:
        scheduler._hand_back(claim)
        raise
    except (Exception, SystemExit) as exc:  # sys.exit() in a task is a failure
        finished = scheduler._now()
        scheduler._untrack(claim)
        logger.exception("task %s failed (job %s, attempt %d)", claim.task, claim.id,
                         claim.attempt)
        error = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        kind = _class_path(type(exc))
        scheduler._record(claim, backend, "failed", None, error, started, finished,
                          kind)
        result.errors.append(TaskError(exception_class_path=kind, traceback=error))
        retry = claim.attempt <= backend.retries
        # Sent inside the except block, so that receivers see the exception.
        finish(TaskResultStatus.READY if retry else TaskResultStatus.FAILED, finished)
        return
    except BaseException:
        scheduler._hand_back(claim)
        raise
    finished = scheduler._now()
    scheduler._untrack(claim)
    logger.info("%s succeeded in %.3fs", claim.task, finished - started)
    scheduler._record(claim, backend, "succeeded", encoded, None, started, finished)
    object.__setattr__(result, "_return_value", value)
    finish(TaskResultStatus.SUCCESSFUL, finished)


# ---------------------------------------------------------------------------
# Command line: python -m jits [--settings S | --database PATH] COMMAND
# ---------------------------------------------------------------------------


def _out(*lines):
    """Print results for the command line (the only place jits prints)."""
    for line in lines:
        sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _err(line):
    sys.stderr.write(line + "\n")


def _when(seconds):
    if seconds is None:
        return "-"
    moment = _utc(seconds).astimezone(_default_timezone())
    return moment.strftime("%Y-%m-%d %H:%M:%S ") + (moment.tzname() or "")


def _table(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = "  ".join("%%-%ds" % w for w in widths)
    return [(fmt % tuple(header)).rstrip(), (fmt % tuple("-" * w for w in widths))] + [
        (fmt % tuple(str(x) for x in row)).rstrip() for row in rows]


def _cmd_list(scheduler):
    scheduler._sync(scheduler._now())
    rows = scheduler.store.rows("WHERE schedule IS NOT NULL OR due IS NOT NULL "
                                "ORDER BY schedule IS NULL, due")
    tasks, jobs = [], []
    stored = {r["id"] for r in rows if r["schedule"] is not None}
    for r in rows:
        if r["schedule"] is None:
            jobs.append(r)
            continue
        if r["status"] == "running":
            next_run = "running since " + _when(r["started"])
        else:
            next_run = _when(r["due"])
            if r["due"] is not None and r["due"] <= scheduler._now():
                next_run += " (due)"
        outcome = r["outcome"] or "-"
        if r["failures"]:
            outcome += " (%d failed of %d)" % (r["failures"], r["runs"])
        known = "" if r["task"] in registry else " (not registered here)"
        tasks.append((r["task"] + known, r["schedule"], next_run, _when(r["finished"]),
                      outcome))
    history = scheduler.store.task_summary()
    for name in sorted(set(registry) - stored):
        obj = registry[name]
        runs, failures, finished, outcome = history.get(name, (0, 0, None, None))
        if failures:
            outcome += " (%d failed of %d)" % (failures, runs)
        tasks.append((name, obj.schedule.describe() if obj.schedule else "on demand",
                      "-", _when(finished), outcome or "-"))
    _out(*_table(("TASK", "SCHEDULE", "NEXT RUN", "LAST RUN", "LAST OUTCOME"), tasks))
    _out("", "%d pending job(s)" % len(jobs))
    if jobs:
        _out(*_table(("JOB", "TASK", "DUE", "STATUS", "ATTEMPTS"), [
            (r["id"], r["task"], _when(r["due"]), r["status"], r["attempts"])
            for r in jobs]))
    return 0


def _cmd_run(scheduler, name, args_json="[]", kwargs_json="{}"):
    try:
        args, kwargs = json.loads(args_json), json.loads(kwargs_json)
    except ValueError as exc:
        raise JitsError("--args and --kwargs take JSON: %s" % exc) from None
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise JitsError("--args takes a JSON list and --kwargs a JSON object")
    try:
        row = scheduler.run_now(name, args, kwargs)
    except TypeError as exc:
        raise JitsError("%s (pass them with --args '[...]' and --kwargs "
                        "'{...}')" % exc) from None
    if row is None:  # pragma: no cover - the row was just written
        _err("job vanished")
        return 1
    _out("%s: %s (job %s)" % (name, row["outcome"] or row["status"], row["id"]))
    if row["result"] is not None:
        _out("result: " + row["result"])
    if row["outcome"] == "failed":
        _err(row["error"] or "")
        return 1
    return 0


def _cmd_poll(scheduler):
    count = scheduler.poll()
    _out("%d run(s) started" % count)
    return 0


def _cmd_demo(seconds):
    """Serve a small WSGI app with jits on 127.0.0.1 and drive it."""
    import shutil
    import tempfile
    import urllib.request
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    folder = tempfile.mkdtemp(prefix="jits-demo-")
    store = SQLiteStore(os.path.join(folder, "demo.sqlite3"))
    scheduler = Scheduler(store, threaded=True, num_threads=2, min_interval=1.0)
    t0 = time.monotonic()
    counts = {"heartbeat": 0, "greet": 0, "requests": 0}

    def stamp():
        return "%5.1fs" % (time.monotonic() - t0)

    @task(name="demo.heartbeat", every=2)
    def heartbeat():
        counts["heartbeat"] += 1
        _out("%s  periodic task demo.heartbeat ran (every 2 s)" % stamp())

    @task(name="demo.greet")
    def greet(who):
        counts["greet"] += 1
        _out("%s  job demo.greet(%r) ran, just in time" % (stamp(), who))

    def app(environ, start_response):
        body = b"hello from the demo\n"
        if environ.get("PATH_INFO") == "/enqueue":
            job = scheduler.enqueue(greet, None, ("visitor",), {})
            body = ("enqueued job %s\n" % job).encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    server = make_server("127.0.0.1", 0, WSGIMiddleware(app, scheduler),
                         handler_class=QuietHandler)
    base = "http://127.0.0.1:%d" % server.server_port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    _out("jits demo: serving %s for %g s; each request lets jits poll (at most "
         "once a second here)" % (base, seconds))
    enqueue_at = {2.0, 5.0, 8.0}
    try:
        while time.monotonic() - t0 < seconds:
            elapsed = time.monotonic() - t0
            path = "/"
            due = [x for x in enqueue_at if x <= elapsed]
            if due:
                enqueue_at.difference_update(due)
                path = "/enqueue"
            with opener.open(base + path, timeout=10) as response:
                text = response.read().decode().strip()
            counts["requests"] += 1
            if path == "/enqueue":
                _out("%s  request %s -> %s" % (stamp(), path, text))
            time.sleep(0.2)
    finally:
        server.shutdown()
        server.server_close()
        scheduler.shutdown(grace=5)
        for name in ("demo.heartbeat", "demo.greet"):
            registry.pop(name, None)
        shutil.rmtree(folder, ignore_errors=True)
    _out("done: %d requests served; demo.heartbeat ran %d times, demo.greet %d "
         "times" % (counts["requests"], counts["heartbeat"], counts["greet"]))
    return 0


def _cmd_worker(scheduler, interval):
    """Poll every *interval* seconds until SIGINT or SIGTERM.

    The first signal lets the running task finish and then stops; a second
    one interrupts the task, whose claim is given back to the store.
    """
    import signal

    stop = threading.Event()
    received = []

    def on_signal(signum, frame):
        received.append(signum)
        scheduler._stopping = True  # claim nothing more
        stop.set()
        if len(received) > 1:
            raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    scheduler.prune_inline = True
    _out("jits worker %s: polling %r every %gs (stop with Ctrl-C or SIGTERM)"
         % (scheduler.owner, scheduler.store, interval))
    runs = 0
    try:
        while not stop.is_set():
            runs += scheduler.poll()
            _release_django_connections()
            stop.wait(interval)
    except KeyboardInterrupt:
        _err("jits worker interrupted; the running task was given back")
        return 1
    _out("jits worker stopped after %d run(s)" % runs)
    return 0


def _setup_cli(args):
    """Return the scheduler the command works on (Django's or standalone)."""
    sys.path.insert(0, os.getcwd())
    settings_module = args.settings or (
        None if args.database else os.environ.get("DJANGO_SETTINGS_MODULE"))
    options = {}
    if settings_module:
        os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
        _require_django("--settings")
        import django

        django.setup()
        default = default_scheduler()
        store = default.store
        options = {"django_tasks": default.django_tasks,
                   "result_ttl": default.result_ttl}
    else:
        store = SQLiteStore(args.database)
    for name in args.imports:
        importlib.import_module(name)
    return Scheduler(store, threaded=False, min_interval=0,
                     queues=getattr(args, "queues", None) or None, **options)


def main(argv=None):
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m jits",
        description="jits, the Just-In-Time Scheduler: inspect and run tasks.")
    parser.add_argument("--settings", help="Django settings module "
                        "(default: $DJANGO_SETTINGS_MODULE)")
    parser.add_argument("--database", help="standalone SQLite store file "
                        "(default: $JITS_DATABASE or ./jits.sqlite3)")
    parser.add_argument("--import", dest="imports", action="append", default=[],
                        metavar="MODULE",
                        help="import MODULE first so that its tasks register")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log what jits does")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("list", help="show tasks and pending jobs")
    run = commands.add_parser("run", help="run a task now")
    run.add_argument("name")
    run.add_argument("--args", default="[]", metavar="JSON",
                     help="positional arguments as a JSON list")
    run.add_argument("--kwargs", default="{}", metavar="JSON",
                     help="keyword arguments as a JSON object")
    commands.add_parser("poll", help="run what is due, once")
    commands.add_parser("init", help="create the store's tables")
    worker = commands.add_parser("worker", help="poll every few seconds until "
                                 "stopped (SIGINT or SIGTERM)")
    worker.add_argument("--interval", type=float, default=5.0, metavar="SECONDS",
                        help="seconds between polls (default 5)")
    worker.add_argument("--queue", dest="queues", action="append", default=[],
                        metavar="NAME", help="run only jobs of this queue "
                        "(repeatable; default: all queues)")
    demo = commands.add_parser("demo", help="watch jits work on a tiny web app")
    demo.add_argument("--seconds", type=float, default=12.0)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if not logging.getLogger().handlers and not logger.handlers:
        # A Django project's LOGGING may already show jits's messages.
        logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logger.setLevel(logging.INFO if args.verbose else logging.WARNING)
    if args.command == "demo":
        if not 1 <= args.seconds <= 600:  # also refuses nan
            parser.error("--seconds must be from 1 to 600, got %r" % (args.seconds,))
        return _cmd_demo(args.seconds)
    if args.command == "worker" and not (
            math.isfinite(args.interval) and args.interval > 0):
        parser.error("--interval must be a number of seconds > 0, got %r"
                     % (args.interval,))
    if args.command == "worker" and not all(args.queues):
        parser.error("--queue needs a queue name")
    try:
        scheduler = _setup_cli(args)
        if args.command == "init":
            scheduler.store.ensure_schema()
            _out("jits tables are ready in %r" % (scheduler.store,))
            return 0
        if args.command == "list":
            return _cmd_list(scheduler)
        if args.command == "run":
            return _cmd_run(scheduler, args.name, args.args, args.kwargs)
        if args.command == "worker":
            return _cmd_worker(scheduler, args.interval)
        return _cmd_poll(scheduler)
    except (JitsError, sqlite3.Error, ImportError) as exc:
        _err("jits: %s" % exc)
        return 1
    except Exception as exc:
        if type(exc).__name__ != "ImproperlyConfigured":  # Django's, by name:
            raise  # Django may not even be installed
        _err("jits: %s" % exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
