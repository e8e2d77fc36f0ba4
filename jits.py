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
    # Command line
    "main",
]

import argparse
import asyncio
import atexit
import contextlib
import functools
import importlib.machinery
import inspect
import json
import logging
import math
import os
import queue
import socket
import sqlite3
import sys
import threading
import time
import traceback
import types
import uuid
import weakref
from datetime import datetime, timedelta, timezone

try:
    import zoneinfo
except ImportError:  # pragma: no cover - Python 3.9+ ships it; kept for clarity
    zoneinfo = None

logger = logging.getLogger("jits")

#: Defaults of the 2008 settings (JITS_THREADED and friends).
DEFAULT_THREADED = False
DEFAULT_NUM_THREADS = 10
DEFAULT_MIN_SECONDS = 5
DEFAULT_MIN_MINUTES = 0

#: A claim is valid this long unless renewed; running tasks renew it.
DEFAULT_LEASE = 60.0
#: Retries back off exponentially from ``retry_delay`` up to this cap.
MAX_RETRY_DELAY = 3600.0
#: Standalone store file, unless JITS_DATABASE names another.
DEFAULT_SQLITE_PATH = "jits.sqlite3"
#: How often a poll also looks for due rows whose task is not registered.
UNKNOWN_CHECK_INTERVAL = 60.0
#: How long shutdown waits for running tasks before giving their claims back.
DEFAULT_GRACE = 10.0
#: In blocking mode, a poll starts no new run after this many seconds, so a
#: backlog cannot hold one request for long (the rest is left for later
#: polls and other processes).  None: no limit.
DEFAULT_BUDGET = 2.0

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

        if settings.configured and getattr(settings, "TIME_ZONE", None):
            return _zone(settings.TIME_ZONE)
    return timezone.utc


def _zone(name):
    """Return the tzinfo for *name* (a zone name or a tzinfo)."""
    if name is None:
        return _default_timezone()
    if not isinstance(name, str):
        if hasattr(name, "utcoffset"):
            return name
        raise TypeError("timezone must be a zone name or a tzinfo, got %r" % (name,))
    if name.upper() == "UTC":
        return timezone.utc
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            "unknown time zone %r (use an IANA name such as 'Europe/Berlin')" % name
        ) from None


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
    allowed = "a number >= 0" if allow_zero else "a number > 0"
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


class Cron:
    """A cron schedule; the full implementation follows in its own section."""

    def __init__(self, expression, timezone=None):  # pragma: no cover - replaced
        raise ScheduleError("cron schedules are not available in this build")


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
    lease = _check_number(lease, "lease", allow_zero=False)
    retry_delay = _check_number(retry_delay, "retry_delay")
    if isinstance(retries, bool) or not isinstance(retries, int):
        raise TypeError("retries must be an int >= 0, got %r" % (retries,))
    if retries < 0:
        raise ValueError("retries must be an int >= 0, got %r" % (retries,))
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError("priority must be an int, got %r" % (priority,))
    if not isinstance(queue, str) or not 0 < len(queue) <= 64:
        raise ValueError("queue must be a name of 1 to 64 characters, got %r" % (queue,))
    if name is not None and (not isinstance(name, str) or not 0 < len(name) <= 200):
        raise ValueError("name must be a str of 1 to 200 characters, got %r" % (name,))

    def register(fn):
        if not callable(fn):
            raise TypeError("jits.task needs a callable, got %r" % (fn,))
        task_name = name or "%s.%s" % (fn.__module__, fn.__qualname__)
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


def _make_schedule(every, at, cron, zone):
    """Build the schedule object from the decorator's arguments."""
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
        raise ScheduleError("every must be a positive number of seconds, got %r" % every)
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
    return "%s.%s" % (getattr(func, "__module__", "?"), getattr(func, "__qualname__", func))


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
        _ERR_JSON.format(where=where, kind="a %s (%r)" % (type(value).__name__, value))
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
    error {text} NULL{run_index}
)"""

_DDL_INDEXES = (
    "CREATE INDEX IF NOT EXISTS jits_job_due ON jits_job (due)",
    "CREATE INDEX IF NOT EXISTS jits_run_finished ON jits_run (finished)",
)

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
        "job_index": ",\n    INDEX jits_job_due (due)",
        "run_index": ",\n    INDEX jits_run_finished (finished)",
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
_SQL_ANY_DUE = "SELECT 1 FROM jits_job WHERE due <= %s AND task IN ({names}){queues} LIMIT 1"
_SQL_DUE = (
    "SELECT id, task, schedule, args, scheduled, claim, attempts FROM jits_job "
    "WHERE due <= %s AND task IN ({names}){queues}{only} "
    "ORDER BY priority DESC, due LIMIT %s{lock}"
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
    "outcome = %s, result = %s, error = COALESCE(%s, error) "
    "WHERE id = %s AND claim = %s AND status = 'running'"
)
_SQL_INSERT_RUN = (
    "INSERT INTO jits_run (id, job, task, attempt, owner, scheduled, started, "
    "finished, outcome, error) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_SQL_RELEASE = (
    "UPDATE jits_job SET status = 'ready', due = %s, owner = NULL "
    "WHERE id = %s AND claim = %s AND status = 'running'"
)
_SQL_UNKNOWN = "SELECT DISTINCT task FROM jits_job WHERE due <= %s{names} LIMIT 20"
_SQL_GET = (
    "SELECT id, task, schedule, queue, priority, status, args, due, scheduled, "
    "owner, claim, attempts, runs, failures, enqueued, started, finished, "
    "outcome, result, error FROM jits_job"
)
_GET_FIELDS = [c.strip() for c in _SQL_GET[len("SELECT "):-len(" FROM jits_job")].split(",")]


class Claim:
    """One claimed row: what a worker needs to run it and report back."""

    __slots__ = ("id", "task", "schedule", "args", "scheduled", "claim", "attempt",
                 "lease", "renew_at", "lost")

    def __init__(self, row, lease, now):
        self.id, self.task, self.schedule, self.args, self.scheduled = row[:5]
        self.claim = row[5] + 1  # the count the claim UPDATE wrote
        self.attempt = row[6] + 1
        self.lease = lease
        self.renew_at = now + lease / 3.0
        self.lost = False


class _SQLStore:
    """Store logic shared by the backends; they provide ``_transaction``.

    ``_transaction(write)`` yields a DB-API cursor.  With ``write`` true it
    holds a write transaction from its first statement (so two claimers
    never both read the same row as free and then both write it); without,
    it may run in autocommit.
    """

    vendor = "sqlite"

    def __init__(self):
        self._ready = False
        self._ready_lock = threading.Lock()

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

    def _schema_statements(self):
        ddl = _VENDOR_DDL[self.vendor]
        statements = [_DDL_JOB.format(**ddl), _DDL_RUN.format(**ddl)]
        if self.vendor != "mysql":
            statements.extend(_DDL_INDEXES)
        return statements

    def _create_schema(self):
        self._execute_ddl(self._schema_statements())

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
            cur.execute(self._sql(_SQL_INSERT_JOB), (job_id, name, None, queue_name,
                                                     priority, args_json, due, due, now))

    def claim(self, names, now, limit, owner, leases, queues=None, only=None,
              probe=True):
        """Atomically claim up to *limit* due rows of the tasks in *names*.

        *leases* maps a task name to its lease in seconds.  Returns a list
        of Claim.  Rows another worker took first are skipped, not waited on.
        ``probe=False`` skips the read-only look for due rows, for callers
        that just claimed a full batch and so expect more.
        """
        if not names or limit <= 0:
            return []
        names = sorted(names)
        marks = ", ".join(["%s"] * len(names))
        params = [now] + names
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
        select = _SQL_DUE.format(names=marks, queues=queue_sql, only=only_sql,
                                 lock=self._lock_clause())
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
               started, finished, owner):
        """Record a finished attempt; return False if the claim was lost."""
        failed = 1 if outcome == "failed" else 0
        with self._use(write=True) as cur:
            cur.execute(self._sql(_SQL_FINISH), (
                status, due, scheduled, attempts, failed, finished, outcome, result,
                error, claim.id, claim.claim))
            if cur.rowcount != 1:
                return False
            cur.execute(self._sql(_SQL_INSERT_RUN), (
                uuid.uuid4().hex, claim.id, claim.task, claim.attempt, owner,
                claim.scheduled, started, finished, outcome, error))
        return True

    def release(self, claim, due):
        """Give a claim back so that any worker can take the row at *due*."""
        with self._use(write=True) as cur:
            cur.execute(self._sql(_SQL_RELEASE), (due, claim.id, claim.claim))
            return cur.rowcount == 1

    # -- reading ----------------------------------------------------------

    def unknown_tasks(self, names, now):
        """Return names of due rows whose task is not in *names*."""
        names = sorted(names)
        clause = ""
        if names:
            clause = " AND task NOT IN (%s)" % ", ".join(["%s"] * len(names))
        with self._use(write=False) as cur:
            cur.execute(self._sql(_SQL_UNKNOWN.format(names=clause)), [now] + names)
            return sorted(row[0] for row in cur.fetchall())

    def get(self, job_id):
        """Return one row as a dict, or None."""
        rows = self.rows("WHERE id = %s", [job_id])
        return rows[0] if rows else None

    def rows(self, where="", params=()):
        """Return rows as dicts, for listings and tests."""
        with self._use(write=False) as cur:
            cur.execute(self._sql(_SQL_GET + " " + where), list(params))
            return [dict(zip(_GET_FIELDS, row)) for row in cur.fetchall()]

    def runs(self, job_id=None):
        """Return the run history (of one job, or all), oldest first."""
        sql = ("SELECT job, task, attempt, owner, scheduled, started, finished, "
               "outcome, error FROM jits_run")
        params = []
        if job_id is not None:
            sql += " WHERE job = %s"
            params.append(job_id)
        fields = ["job", "task", "attempt", "owner", "scheduled", "started",
                  "finished", "outcome", "error"]
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
        self.timeout = _check_number(timeout, "timeout")
        self._local = threading.local()
        self._memory = None
        # In memory there is only one connection, so it is shared and this
        # lock serialises its users; a file gets one connection per thread.
        self._memory_lock = threading.RLock()
        _track_for_fork(self)

    def __repr__(self):
        return "SQLiteStore(%r)" % self.path

    def _connect(self):
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                               check_same_thread=False)
        if self.path != ":memory:":
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
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
            conn = local.conn = self._connect()
            local.inode = os.stat(self.path).st_ino
            for statement in self._schema_statements():
                conn.execute(statement)
        if conn is None:
            conn = local.conn = self._connect()
            local.inode = os.stat(self.path).st_ino
        return conn

    @contextlib.contextmanager
    def _transaction(self, write):
        guard = self._memory_lock if self.path == ":memory:" else contextlib.nullcontext()
        with guard:
            conn = self._connection()
            cur = conn.cursor()
            if not write:
                yield cur
                return
            # IMMEDIATE takes the write lock at BEGIN, waiting up to the busy
            # timeout; a deferred transaction that later upgrades fails at
            # once with "database is locked" instead.
            cur.execute("BEGIN IMMEDIATE")
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
        self._local = threading.local()
        self._memory = None

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
        from django.db import connections

        conn = connections[self.alias]
        with conn.cursor() as cur:
            existing = set(conn.introspection.table_names(cur))
        if {"jits_job", "jits_run"} <= existing:
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
                    cur.execute("UPDATE jits_job SET claim = claim WHERE 1 = 0")
                yield cur


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

    In blocking mode a poll starts no new run once it has taken ``budget``
    seconds (None: no limit).  ``grace`` is how long shutdown waits for
    running tasks.  ``clock`` (monotonic, for the throttle) and ``now``
    (epoch seconds, for schedules) can be replaced, for tests.
    """

    def __init__(self, store=None, threaded=False, num_threads=DEFAULT_NUM_THREADS,
                 min_interval=5.0, *, queues=None, grace=DEFAULT_GRACE,
                 budget=DEFAULT_BUDGET, clock=time.monotonic, now=time.time):
        if not isinstance(threaded, bool):
            raise TypeError("threaded must be True or False, got %r" % (threaded,))
        if isinstance(num_threads, bool) or not isinstance(num_threads, int):
            raise TypeError("num_threads must be an int >= 1, got %r" % (num_threads,))
        if num_threads < 1:
            raise ValueError("num_threads must be an int >= 1, got %r" % (num_threads,))
        self.min_interval = _check_number(min_interval, "min_interval")
        self.grace = _check_number(grace, "grace")
        self.budget = None if budget is None else _check_number(budget, "budget")
        self.store = store if store is not None else _default_store()
        self.threaded = threaded
        self.num_threads = num_threads
        self.queues = tuple(queues) if queues else None
        self._clock = clock
        self._now = now
        self._next_poll = -math.inf
        self._next_error_log = -math.inf
        self._errors_hidden = 0
        self._next_unknown_check = -math.inf
        self._warned_unknown = set()
        self._synced_version = None
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
        with self._poll_lock:
            if self.threaded:
                self._start_threads()
            return self._poll_locked()

    def enqueue(self, task_obj, when, args, kwargs):
        """Store a job for *task_obj*; *when* is None, a datetime or a timedelta."""
        if not isinstance(task_obj, Task):
            task_obj = _lookup(task_obj)
        payload = _dump_args(args, kwargs)
        now = self._now()
        if when is None:
            due = now
        elif isinstance(when, timedelta):
            if when < timedelta(0):
                raise ValueError("enqueue_at() needs a timedelta >= 0, got %r" % (when,))
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

    def run_now(self, name):
        """Run a registered task at once, through the store; return its row."""
        task_obj = _lookup(name)
        job_id = self.enqueue(task_obj, None, (), {})
        names = self._sync(self._now())
        for claim in self.store.claim(names, self._now(), 1, self.owner, self._leases,
                                      only=job_id):
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
            self._give_back(claim)
        if self._pool is not None and not self._pool.wait(grace):
            logger.warning("jits shutdown: tasks still running after %.1fs", grace)
        with self._state_lock:
            leftover = list(self._inflight.values())
        for claim in leftover:
            claim.lost = True
            self._give_back(claim)
        self._wake_keeper.set()

    # -- polling ----------------------------------------------------------

    def _poll_locked(self):
        try:
            return self._poll_once()
        except Exception as exc:
            self._log_error("jits could not poll its store %r", self.store, exc)
            return 0

    def _poll_once(self):
        now = self._now()
        names = self._sync(now)
        if now >= self._next_unknown_check:
            self._next_unknown_check = now + UNKNOWN_CHECK_INTERVAL
            self._report_unknown(names, now)
        if self.threaded:
            return self._dispatch(names)
        started = 0
        deadline = math.inf if self.budget is None else self._clock() + self.budget
        # Blocking mode claims one row at a time, so that other processes
        # can take the rest of a backlog while this one is busy.
        while not self._stopping and self._clock() < deadline:
            claims = self.store.claim(names, self._now(), 1, self.owner, self._leases,
                                      self.queues, probe=not started)
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
            claims = self.store.claim(names, self._now(), free, self.owner, self._leases,
                                      self.queues, probe=not self._backlog)
            for claim in claims:
                if not self._track(claim):
                    continue
                try:
                    self._pool.submit(claim)
                    started += 1
                except RuntimeError:  # shutting down: let another process run it
                    self._untrack(claim)
                    self._give_back(claim)
            if len(claims) < free:
                self._backlog = False
                break
            self._backlog = True
        return started

    def _sync(self, now):
        """Bring the store's periodic rows in line with the registry."""
        version = _registry_version[0]
        if version == self._synced_version:
            return self._names
        tasks = list(registry.values())
        rows = []
        for obj in tasks:
            if obj.schedule is None:
                continue
            if isinstance(obj.schedule, At):
                first = obj.schedule.when.timestamp()
            else:
                first = obj.schedule.next_after(_utc(now)).timestamp()
            rows.append((obj.name, obj.schedule.describe(), first, obj.queue,
                         obj.priority))
        if rows:
            self.store.sync_tasks(rows, now)
        else:
            self.store.ensure_schema()
        self._names = frozenset(t.name for t in tasks)
        self._leases = {t.name: t.lease for t in tasks}
        self._synced_version = version
        return self._names

    def _report_unknown(self, names, now):
        for name in self.store.unknown_tasks(names, now):
            if name not in self._warned_unknown:
                self._warned_unknown.add(name)
                logger.warning(
                    "the store has due runs of task %r, which is not registered in "
                    "this process; they are left alone", name)

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
        started = self._now()
        result = error = None
        try:
            if task_obj is None:
                raise JitsError("task %r is no longer registered" % claim.task)
            args, kwargs = json.loads(claim.args)
            if task_obj.takes_context:
                scheduled = _utc(claim.scheduled) if claim.scheduled is not None else None
                args = [RunContext(claim.task, claim.id, scheduled, claim.attempt,
                                   self.owner)] + args
            logger.info("running %s (job %s, attempt %d)", claim.task, claim.id,
                        claim.attempt)
            value = task_obj.func(*args, **kwargs)
            if inspect.iscoroutine(value):
                value = asyncio.run(value)
            result = _dump_result(value)
            outcome = "succeeded"
        except Exception:
            logger.exception("task %s failed (job %s, attempt %d)", claim.task, claim.id,
                             claim.attempt)
            outcome, error = "failed", traceback.format_exc()
        except BaseException:
            # The process is going away (SystemExit, KeyboardInterrupt):
            # hand the row back so another process runs it.
            self._untrack(claim)
            self._give_back(claim)
            raise
        finished = self._now()
        self._untrack(claim)
        logger.info("%s %s in %.3fs", claim.task, outcome, finished - started)
        self._record(claim, task_obj, outcome, result, error, started, finished)

    def _record(self, claim, task_obj, outcome, result, error, started, finished):
        retries = task_obj.retries if task_obj is not None else 0
        schedule = task_obj.schedule if task_obj is not None else None
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
            status, due, scheduled, attempts = outcome, None, claim.scheduled, claim.attempt
        try:
            kept = self.store.finish(claim, status, due, scheduled, attempts, outcome,
                                     result, error, started, finished, self.owner)
        except Exception as exc:
            self._log_error("jits could not record the outcome of job %s (it will run "
                            "again when its lease ends)", claim.id, exc)
            return
        if not kept:
            logger.warning("job %s (%s) lost its claim before it finished; another "
                           "worker may have run it again", claim.id, claim.task)

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


def _lookup(name):
    try:
        return registry[name]
    except KeyError:
        raise JitsError(
            "no task is registered as %r (registered: %s)"
            % (name, ", ".join(sorted(registry)) or "none")
        ) from None


def _release_django_connections(keep=False):
    """In a jits thread, close Django's connections as a request's end would.

    With *keep* (a backlog is being worked off) only broken connections are
    closed: reconnecting for every job would cost more than the jobs.
    """
    if "django.db" not in sys.modules or not _django_configured():
        return
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        try:
            if not keep:
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
)


def _settings_problems(values):
    """Return (check id, message) for each invalid JITS_* value in *values*."""
    problems = []
    for name, _default_value, check_id, allowed in _SETTINGS:
        value = values.get(name, _default_value)
        if name == "JITS_THREADED":
            ok = isinstance(value, bool)
        elif name == "JITS_NUM_THREADS":
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        else:
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
                  and math.isfinite(value) and value >= 0)
        if not ok:
            problems.append((check_id, "%s must be %s, got %r" % (name, allowed, value)))
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

    values = {name: getattr(settings, name, default) for name, default, _, _ in _SETTINGS}
    problems = _settings_problems(values)
    if problems:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("; ".join(message for _, message in problems))
    return {
        "store": DjangoStore(getattr(settings, "JITS_DATABASE", "default")),
        "threaded": values["JITS_THREADED"],
        "num_threads": values["JITS_NUM_THREADS"],
        "min_interval": values["JITS_MIN_MINUTES"] * 60 + values["JITS_MIN_SECONDS"],
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

    values = {name: getattr(settings, name, default) for name, default, _, _ in _SETTINGS}
    errors = [Error(message, id=check_id) for check_id, message in
              _settings_problems(values)]
    alias = getattr(settings, "JITS_DATABASE", "default")
    if alias not in settings.DATABASES:
        errors.append(Error(
            "JITS_DATABASE must name a database in DATABASES, got %r" % (alias,),
            hint="one of: %s" % ", ".join(sorted(settings.DATABASES)),
            id="jits.E005"))
    return errors


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
    return _utc(seconds).astimezone(_default_timezone()).strftime("%Y-%m-%d %H:%M:%S")


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
        outcome = r["outcome"] or "-"
        if r["failures"]:
            outcome += " (%d failed of %d)" % (r["failures"], r["runs"])
        known = "" if r["task"] in registry else " (not registered here)"
        tasks.append((r["task"] + known, r["schedule"], next_run, _when(r["finished"]),
                      outcome))
    for name in sorted(set(registry) - stored):
        obj = registry[name]
        tasks.append((name, obj.schedule.describe() if obj.schedule else "on demand",
                      "-", "-", "-"))
    _out(*_table(("TASK", "SCHEDULE", "NEXT RUN", "LAST RUN", "LAST OUTCOME"), tasks))
    _out("", "%d pending job(s)" % len(jobs))
    if jobs:
        _out(*_table(("JOB", "TASK", "DUE", "STATUS", "ATTEMPTS"), [
            (r["id"], r["task"], _when(r["due"]), r["status"], r["attempts"])
            for r in jobs]))
    return 0


def _cmd_run(scheduler, name):
    row = scheduler.run_now(name)
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


def _setup_cli(args):
    """Return the scheduler the command works on (Django's or standalone)."""
    sys.path.insert(0, os.getcwd())
    settings_module = args.settings or (
        None if args.database else os.environ.get("DJANGO_SETTINGS_MODULE"))
    if settings_module:
        os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
        _require_django("--settings")
        import django

        django.setup()
        store = default_scheduler().store
    else:
        store = SQLiteStore(args.database)
    for name in args.imports:
        importlib.import_module(name)
    return Scheduler(store, threaded=False, min_interval=0)


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
    commands.add_parser("poll", help="run what is due, once")
    commands.add_parser("init", help="create the store's tables")
    demo = commands.add_parser("demo", help="watch jits work on a tiny web app")
    demo.add_argument("--seconds", type=float, default=12.0)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command == "demo":
        return _cmd_demo(args.seconds)
    try:
        scheduler = _setup_cli(args)
        if args.command == "init":
            scheduler.store.ensure_schema()
            _out("jits tables are ready in %r" % (scheduler.store,))
            return 0
        if args.command == "list":
            return _cmd_list(scheduler)
        if args.command == "run":
            return _cmd_run(scheduler, args.name)
        return _cmd_poll(scheduler)
    except (JitsError, sqlite3.Error, ImportError) as exc:
        _err("jits: %s" % exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
