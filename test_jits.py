"""Tests for jits.  Run: python -m unittest -v test_jits  (or pytest).

Django, when installed, is configured once for the whole module (SQLite
file database, plus PostgreSQL and MariaDB aliases when those servers
answer on 127.0.0.1).  Tests that need a missing piece are skipped with the
reason; JITS_REQUIRE_DATABASES=1 turns skips for unreachable databases into
failures.
"""

import asyncio
import calendar
import contextlib
import glob
import json
import logging
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest
from datetime import date, datetime, timedelta, timezone
from unittest import mock
from zoneinfo import ZoneInfo

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import jits  # noqa: E402
from jits import Cron, ScheduleError  # noqa: E402

try:
    import django
    from django.conf import settings as dj_settings
except ImportError:  # pragma: no cover - Django-less run
    django = None

TMP = tempfile.mkdtemp(prefix="jits-tests-")
REQUIRE_DATABASES = os.environ.get("JITS_REQUIRE_DATABASES") == "1"
PG = dict(host="127.0.0.1", port=5432, user="postgres", name="test")
MY = dict(host="127.0.0.1", port=3306, user="root", name="test")


def _port_open(port):
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
        return True
    return False


def _driver(name):
    try:
        __import__(name)
        return True
    except ImportError:
        return False


HAVE_TASKS = django is not None and _driver("django.tasks")  # Django 6
HAVE_PG = django is not None and _driver("psycopg") and _port_open(5432)
HAVE_MY = django is not None and _driver("MySQLdb") and _port_open(3306)

# Each run of this file keeps its tables in a schema (PostgreSQL) or
# database (MariaDB) of its own on the shared servers, so that two runs at
# once cannot delete each other's rows; it is dropped when the run ends.
RUN_SCHEMA = "jits_test_%d_%s" % (os.getpid(), os.urandom(3).hex())


def _isolate_databases():
    import atexit

    if HAVE_PG:
        import psycopg

        with psycopg.connect(host=PG["host"], port=PG["port"], user=PG["user"],
                             dbname=PG["name"], autocommit=True) as conn:
            conn.execute("CREATE SCHEMA %s" % RUN_SCHEMA)

        def drop_pg():
            with contextlib.suppress(Exception), psycopg.connect(
                    host=PG["host"], port=PG["port"], user=PG["user"],
                    dbname=PG["name"], autocommit=True) as conn:
                conn.execute("DROP SCHEMA %s CASCADE" % RUN_SCHEMA)

        atexit.register(drop_pg)
    if HAVE_MY:
        import MySQLdb

        conn = MySQLdb.connect(host=MY["host"], port=MY["port"], user=MY["user"],
                               passwd="")
        conn.cursor().execute("CREATE DATABASE %s" % RUN_SCHEMA)
        conn.close()

        def drop_my():
            with contextlib.suppress(Exception):
                conn = MySQLdb.connect(host=MY["host"], port=MY["port"],
                                       user=MY["user"], passwd="")
                conn.cursor().execute("DROP DATABASE %s" % RUN_SCHEMA)
                conn.close()

        atexit.register(drop_my)


def _databases():
    databases = {
        "default": {"ENGINE": "django.db.backends.sqlite3",
                    "NAME": os.path.join(TMP, "django.sqlite3"),
                    "OPTIONS": {"timeout": 20}},
    }
    if HAVE_PG:
        databases["pg"] = {"ENGINE": "django.db.backends.postgresql", "NAME": PG["name"],
                           "USER": PG["user"], "HOST": PG["host"], "PORT": PG["port"],
                           "OPTIONS": {"options": "-c search_path=%s" % RUN_SCHEMA},
                           "TEST": {"NAME": "test"}}
    if HAVE_MY:
        databases["mysql"] = {"ENGINE": "django.db.backends.mysql", "NAME": RUN_SCHEMA,
                              "USER": MY["user"], "PASSWORD": "", "HOST": MY["host"],
                              "PORT": MY["port"], "TEST": {"NAME": "test"}}
    return databases


# A small Django app with django.tasks tasks, written into TMP so that other
# processes (the worker, get_result readers) import the very same module.
TASKS_APP = {
    "__init__.py": "",
    "tasks.py": """
        import asyncio
        import os

        from django.tasks import default_task_backend, task

        CALLS = []


        @task
        def add(a, b):
            CALLS.append(("add", a, b))
            return a + b


        @task
        async def double(x):
            await asyncio.sleep(0)
            CALLS.append(("double", x))
            return x * 2


        @task
        def record(label):
            CALLS.append(("record", label))
            return label


        @task(queue_name="mail", priority=5)
        def send(to):
            CALLS.append(("send", to))
            return {"sent": to}


        @task
        def fail(message):
            raise ValueError(message)


        @task(takes_context=True)
        def with_context(context, label):
            seen = default_task_backend.get_result(context.task_result.id)
            CALLS.append(("context", context.attempt))
            return {"attempt": context.attempt, "id": context.task_result.id,
                    "status_seen": seen.status, "label": label}


        @task(backend="retrying", takes_context=True)
        def flaky(context, failures):
            if context.attempt <= failures:
                raise RuntimeError("attempt %d fails" % context.attempt)
            return context.attempt


        @task
        def ledger(path, n):
            with open(path, "a") as f:
                f.write("%d %d\\n" % (n, os.getpid()))
            return n


        def plain(path):
            # Not a task: a stored row naming it must never run it.
            open(path, "w").close()
    """,
}
# Imported only by name from a tampered row: it must never be imported.
SIDE_EFFECT_MODULE = """
    import os
    open(os.environ.get("JITS_SIDE_EFFECT", "side-effect"), "w").close()
    boom = None
"""
TASKS_SETTING = {
    "default": {"BACKEND": "jits.TasksBackend", "QUEUES": ["default", "mail"]},
    "retrying": {"BACKEND": "jits.TasksBackend",
                 "OPTIONS": {"RETRIES": 2, "RETRY_DELAY": 0}},
}
os.makedirs(os.path.join(TMP, "jitstasks"))
for _name, _text in TASKS_APP.items():
    with open(os.path.join(TMP, "jitstasks", _name), "w") as _f:
        _f.write(textwrap.dedent(_text))
with open(os.path.join(TMP, "jits_side_effect.py"), "w") as _f:
    _f.write(textwrap.dedent(SIDE_EFFECT_MODULE))
sys.path.insert(0, TMP)

if django is not None and not dj_settings.configured:
    _isolate_databases()
    dj_settings.configure(
        DEBUG=False,
        SECRET_KEY="jits-tests",
        ALLOWED_HOSTS=["*"],
        USE_TZ=True,
        TIME_ZONE="UTC",
        DATABASES=_databases(),
        INSTALLED_APPS=["django.contrib.contenttypes", "jits.app"]
        + (["jitstasks"] if HAVE_TASKS else []),
        MIDDLEWARE=["jits.middleware.JitsMiddleware"],
        ROOT_URLCONF=__name__,
        TASKS=TASKS_SETTING,  # only read by Django 6
        JITS_MIN_SECONDS=0,
        LOGGING_CONFIG=None,
    )
    django.setup()


def _hello(request):
    from django.http import HttpResponse

    return HttpResponse("hello")


if django is not None:
    from django.urls import path as _path

    urlpatterns = [_path("", _hello)]


def skip_unless_db(have, what):
    """Skip when a database server is missing, unless CI requires it."""
    if have or REQUIRE_DATABASES:
        return lambda f: f
    return unittest.skip("%s is not reachable on 127.0.0.1 (or its driver is missing)"
                         % what)


needs_django = unittest.skipIf(django is None, "Django is not installed")


class FakeClock:
    """Both clocks a Scheduler reads, moved by hand."""

    def __init__(self, start=1_800_000_000.0):
        self.wall = start
        self.mono = 1000.0

    def now(self):
        return self.wall

    def monotonic(self):
        return self.mono

    def advance(self, seconds):
        self.wall += seconds
        self.mono += seconds


class RegistryMixin:
    """Give each test a clean task registry."""

    def setUp(self):
        super().setUp()
        saved = dict(jits.registry)
        jits.registry.clear()

        def restore():
            jits.registry.clear()
            jits.registry.update(saved)
            jits._registry_version[0] += 1

        self.addCleanup(restore)

    def memory_scheduler(self, **options):
        clock = FakeClock()
        options.setdefault("min_interval", 5)
        scheduler = jits.Scheduler(jits.SQLiteStore(":memory:"), clock=clock.monotonic,
                                   now=clock.now, **options)
        self.addCleanup(scheduler.shutdown, 0)
        return scheduler, clock


def wait_for(predicate, timeout=10.0, interval=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# ---------------------------------------------------------------------------
# Module surface
# ---------------------------------------------------------------------------


class ModuleTests(unittest.TestCase):
    def test_all_names_exist(self):
        for name in jits.__all__:
            self.assertTrue(hasattr(jits, name), name)

    def test_import_with_standard_library_only(self):
        code = "import sys; sys.path.insert(0, %r); import jits; print('ok')" % HERE
        out = subprocess.run([sys.executable, "-I", "-S", "-c", code],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.stdout.strip(), "ok", out.stderr)

    def test_import_does_not_import_django(self):
        code = ("import sys; sys.path.insert(0, %r); import jits; "
                "print('django' in sys.modules)" % HERE)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                             text=True, timeout=60)
        self.assertEqual(out.stdout.strip(), "False", out.stderr)

    def test_old_import_paths(self):
        import importlib

        self.assertIs(importlib.import_module("jits.middleware").JitsMiddleware,
                      jits.JitsMiddleware)
        self.assertIsNotNone(importlib.import_module("jits.app"))
        from jits.middleware import JitsMiddleware

        self.assertIs(JitsMiddleware, jits.JitsMiddleware)

    def test_standalone_default_store_is_sqlite_file(self):
        folder = tempfile.mkdtemp(dir=TMP)
        code = ("import sys; sys.path.insert(0, %r); import jits; "
                "print(jits.default_scheduler().store.path)" % HERE)
        env = dict(os.environ)
        env.pop("JITS_DATABASE", None)
        env.pop("DJANGO_SETTINGS_MODULE", None)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                             text=True, timeout=60, cwd=folder, env=env)
        self.assertEqual(out.stdout.strip(),
                         os.path.join(os.path.realpath(folder), "jits.sqlite3"),
                         out.stderr)
        env["JITS_DATABASE"] = os.path.join(folder, "other.db")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                             text=True, timeout=60, cwd=folder, env=env)
        self.assertEqual(out.stdout.strip(), env["JITS_DATABASE"], out.stderr)


# ---------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------


class EveryTests(unittest.TestCase):
    def test_slots_are_aligned_to_the_epoch(self):
        every = jits.Every(minutes=15)
        start = datetime(2026, 3, 1, 10, 7, 30, tzinfo=timezone.utc)
        self.assertEqual(every.next_after(start),
                         datetime(2026, 3, 1, 10, 15, tzinfo=timezone.utc))

    def test_next_after_is_strictly_later(self):
        every = jits.Every(seconds=10)
        on_slot = datetime(2026, 3, 1, 10, 0, 10, tzinfo=timezone.utc)
        self.assertEqual(every.next_after(on_slot), on_slot + timedelta(seconds=10))

    def test_units_add_up(self):
        every = jits.Every(seconds=1, minutes=1, hours=1, days=1, weeks=1)
        self.assertEqual(every.period, 1 + 60 + 3600 + 86400 + 7 * 86400)

    def test_anchor_shifts_slots(self):
        anchor = datetime(2026, 1, 1, 3, 30, tzinfo=timezone.utc)
        every = jits.Every(days=1, anchor=anchor)
        after = datetime(2026, 5, 5, 12, 0, tzinfo=timezone.utc)
        self.assertEqual(every.next_after(after),
                         datetime(2026, 5, 6, 3, 30, tzinfo=timezone.utc))

    def test_result_is_aware_and_naive_input_is_read_as_default_zone(self):
        every = jits.Every(hours=1)
        naive = datetime(2026, 3, 1, 10, 20)
        aware = naive.replace(tzinfo=jits._default_timezone())
        self.assertEqual(every.next_after(naive), every.next_after(aware))
        self.assertIsNotNone(every.next_after(naive).tzinfo)

    def test_float_periods_do_not_drift(self):
        every = jits.Every(seconds=0.1)
        t = datetime(2026, 3, 1, tzinfo=timezone.utc)
        for _ in range(1000):
            nxt = every.next_after(t)
            self.assertGreater(nxt, t)
            t = nxt
        self.assertAlmostEqual((t - datetime(2026, 3, 1, tzinfo=timezone.utc))
                               .total_seconds(), 100.0, places=3)

    def test_bad_intervals_are_rejected(self):
        with self.assertRaisesRegex(ValueError, "positive interval"):
            jits.Every()
        with self.assertRaisesRegex(ValueError, r"seconds=\.\.\.\) must be a number >= 0"):
            jits.Every(seconds=-5)
        with self.assertRaisesRegex(TypeError, "minutes"):
            jits.Every(minutes="5")
        with self.assertRaisesRegex(TypeError, "seconds"):
            jits.Every(seconds=True)
        with self.assertRaisesRegex(ValueError, "nan"):
            jits.Every(seconds=float("nan"))

    def test_describe(self):
        self.assertEqual(jits.Every(minutes=90).describe(), "every 1h30m")
        self.assertEqual(jits.Every(seconds=2.5).describe(), "every 2.5s")


class AtTests(unittest.TestCase):
    def test_runs_once(self):
        when = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
        at = jits.At(when)
        self.assertEqual(at.next_after(when - timedelta(seconds=1)), when)
        self.assertIsNone(at.next_after(when))

    def test_rejects_non_datetime(self):
        with self.assertRaisesRegex(TypeError, "at must be a datetime"):
            jits.At("2026-06-01")


# ---------------------------------------------------------------------------
# Cron schedules: parsing, search, daylight saving, and a brute-force reference
# ---------------------------------------------------------------------------

UTC = timezone.utc
ONE_MINUTE = timedelta(minutes=1)
MONTHS = "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split()
DAYS = "SUN MON TUE WED THU FRI SAT".split()


def _utc(text):
    """Parse an ISO time; without an offset it is UTC."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _chain(cron, start, count):
    """Return *count* successive fire times, each one the next start."""
    times = []
    for _ in range(count):
        start = cron.next_after(start)
        times.append(start)
    return times


class CronParseTests(unittest.TestCase):
    VALID = [
        "* * * * *",
        "*/5 * * * *",
        "0 0 * * *",
        "5/15 * * * *",
        "0-59/7 */3 * * *",
        "1,2,3,59 0,23 * * *",
        "05 09 01 01 00",
        "0 0 L * *",
        "0 0 LW * *",
        "0 0 l * *",
        "0 0 lw * *",
        "0 0 15W * *",
        "0 0 1w * *",
        "0 0 L,15,1W * *",
        "0 0 * * 5L",
        "0 0 * * FRIL",
        "0 0 * * fril",
        "0 0 * * 7L",
        "0 0 * * 1#1",
        "0 0 * * MON#5",
        "0 0 * * 1#2,5L",
        "0 0 ? * MON",
        "0 0 1 * ?",
        "0 0 ?/2 * *",
        "0 0 * JAN-MAR/2 *",
        "0 0 * * MON-FRI",
        "0 0 * * mon-sun",
        "0 0 * * FRI-SUN",
        "0 0 * * 0-7",
        "0 0 * * */2",
        "0 0 */30 2 *",
        "0 0 30 2 1",
        "0 0 * 2 1#5",
        "  0 0 * * *  ",
        "0\t0\t*\t*\t*",
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
        "@DAILY",
    ]

    def test_valid_expressions_parse(self):
        for expression in self.VALID:
            with self.subTest(expression=expression):
                cron = Cron(expression)
                self.assertEqual(cron.expression, expression)

    BAD = [
        ("60 * * * *", r'^minute field: 60 is out of range 0-59 in "60 \* \* \* \*"$'),
        ("* 24 * * *", r"^hour field: 24 is out of range 0-23 in"),
        ("* * 0 * *", r"^day-of-month field: 0 is out of range 1-31 in"),
        ("* * 32 * *", r"^day-of-month field: 32 is out of range 1-31 in"),
        ("* * * 13 *", r"^month field: 13 is out of range 1-12 in"),
        ("* * * 0 *", r"^month field: 0 is out of range 1-12 in"),
        ("* * * * 8", r"^day-of-week field: 8 is out of range 0-7 in"),
        ("0-60 * * * *", r"^minute field: 60 is out of range 0-59"),
        ("*/5,99 * * * *", r"^minute field: 99 is out of range 0-59"),
        ("* * * *", r"expected 5 fields .* got 4 in \"\* \* \* \*\""),
        ("* * * * * *", r"expected 5 fields .* got 6"),
        ("*", r"expected 5 fields .* got 1"),
        ("", r"cron expression is empty"),
        ("   ", r"cron expression is empty"),
        ("*/0 * * * *", r"^minute field: step 0 in \*/0 must be 1 or more"),
        ("* 1-5/0 * * *", r"^hour field: step 0 in 1-5/0 must be 1 or more"),
        ("*/ * * * *", r"^minute field: step '' in \*/ is not a whole number"),
        ("*/x * * * *", r"^minute field: step 'x' in \*/x is not a whole number"),
        ("*/-1 * * * *", r"^minute field: step '-1' in \*/-1 is not a whole"),
        ("1/2/3 * * * *", r"^minute field: step '2/3' in 1/2/3"),
        ("5-1 * * * *", r"^minute field: range 5-1 is reversed"),
        ("* 23-1 * * *", r"^hour field: range 23-1 is reversed"),
        ("* * 31-1 * *", r"^day-of-month field: range 31-1 is reversed"),
        ("* * * DEC-JAN *", r"^month field: range DEC-JAN is reversed"),
        ("* * * * 5-1", r"^day-of-week field: range 5-1 is reversed"),
        ("* * * * SAT-MON", r"^day-of-week field: range SAT-MON is reversed"),
        ("* * * FOO *", r"^month field: FOO is not valid; expected numbers 1-12 or"
         r" names JAN-DEC"),
        ("* * * JANUARY *", r"^month field: JANUARY is not valid"),
        ("* * * * FOO", r"^day-of-week field: FOO is not valid; expected numbers"
         r" 0-7 .*names SUN-SAT"),
        ("* * * * MONDAY", r"^day-of-week field: MONDAY is not valid"),
        ("* * MON * *", r"^day-of-month field: MON is not valid; expected numbers"
         r" 1-31, L, LW or nW"),
        ("* JAN * * *", r"^hour field: JAN is not valid; expected numbers 0-23"),
        ("JAN * * * *", r"^minute field: JAN is not valid"),
        ("* * * * JAN", r"^day-of-week field: JAN is not valid"),
        ("* * * MON *", r"^month field: MON is not valid"),
        ("@reboot", r'^unknown macro @reboot in "@reboot"; allowed: @yearly,'),
        ("@fortnightly", r"^unknown macro @fortnightly"),
        ("@", r"^unknown macro @ in"),
        ("@daily extra", r"^unknown macro @daily extra"),
        ("1,,2 * * * *", r"^minute field: 1,,2 has an empty list item \(stray"
         r" comma\); expected numbers 0-59"),
        (",1 * * * *", r"^minute field: ,1 has an empty list item"),
        ("1, * * * *", r"^minute field: 1, has an empty list item"),
        ("* 1,,2 * * *", r"^hour field: 1,,2 has an empty list item"),
        ("* * 1, * *", r"^day-of-month field: 1, has an empty list item"),
        ("* * * ,JAN *", r"^month field: ,JAN has an empty list item"),
        ("* * * * 1,", r"^day-of-week field: 1, has an empty list item"),
        ("a * * * *", r"^minute field: a is not valid; expected numbers 0-59"),
        ("1.5 * * * *", r"^minute field: 1.5 is not valid"),
        ("-1 * * * *", r"^minute field: a number is missing; expected numbers 0-59"),
        ("1- * * * *", r"^minute field: a number is missing"),
        ("*-5 * * * *", r"^minute field: \* is not valid"),
        ("\u00b2 * * * *", r"^minute field: \u00b2 is not valid"),
        ("L * * * *", r"^minute field: L is not valid; expected numbers 0-59 \(L,"
         r" W, # and \? belong to the day fields\)"),
        ("* L * * *", r"^hour field: L is not valid"),
        ("* * * L *", r"^month field: L is not valid"),
        ("5W * * * *", r"^minute field: 5W is not valid"),
        ("1#2 * * * *", r"^minute field: 1#2 is not valid"),
        ("? * * * *", r"^minute field: \? is only allowed in the day-of-month and"
         r" day-of-week fields"),
        ("* ? * * *", r"^hour field: \? is only allowed"),
        ("* * * ? *", r"^month field: \? is only allowed"),
        ("0 0 * * L", r"^day-of-week field: L needs a weekday before it"),
        ("0 0 W * *", r"^day-of-month field: W needs a day before it"),
        ("0 0 32W * *", r"^day-of-month field: 32 is out of range 1-31"),
        ("0 0 0W * *", r"^day-of-month field: 0 is out of range 1-31"),
        ("0 0 XW * *", r"^day-of-month field: X is not valid"),
        ("0 0 L-2 * *", r"^day-of-month field: L is not valid"),
        ("0 0 L/2 * *", r"^day-of-month field: L is not valid"),
        ("0 0 1#2 * *", r"^day-of-month field: 1#2 is not valid"),
        ("0 0 * * 8L", r"^day-of-week field: 8 is out of range 0-7"),
        ("0 0 * * XL", r"^day-of-week field: X is not valid"),
        ("0 0 * * 5W", r"^day-of-week field: 5W is not valid"),
        ("0 0 * * LW", r"^day-of-week field: LW is not valid"),
        ("0 0 * * 1#0", r"^day-of-week field: 1#0 needs an occurrence 1-5 after #"),
        ("0 0 * * 1#6", r"^day-of-week field: 1#6 needs an occurrence 1-5"),
        ("0 0 * * 1#", r"^day-of-week field: 1# needs an occurrence 1-5"),
        ("0 0 * * 1#x", r"^day-of-week field: 1#x needs an occurrence 1-5"),
        ("0 0 * * #1", r"^day-of-week field: a number is missing"),
        ("0 0 * * 8#1", r"^day-of-week field: 8 is out of range 0-7"),
        ("0 0 * * FOO#1", r"^day-of-week field: FOO is not valid"),
        ("0 0 30 2 *", r'^day-of-month field: 30 with day-of-week \* matches no day'
         r' of month 2, so the expression can never fire in "0 0 30 2 \*"'),
        ("0 0 31 2 *", r"can never fire"),
        ("0 0 30,31 FEB *", r"can never fire"),
        ("0 0 31 4,6,9,11 *", r"can never fire"),
        ("0 0 31 APR *", r"can never fire"),
        ("0 0 30 2 ?", r"can never fire"),
        ("0 0 31W 2 *", r"can never fire"),
        ("0 0 31W 6 *", r"can never fire"),
        ("0 0 30 2 */7", r"can never fire"),
    ]

    def test_bad_expressions_are_rejected(self):
        for expression, pattern in self.BAD:
            with self.subTest(expression=expression):
                with self.assertRaisesRegex(ValueError, pattern):
                    Cron(expression)

    def test_schedule_error_is_a_value_error(self):
        self.assertTrue(issubclass(ScheduleError, ValueError))
        with self.assertRaises(ScheduleError):
            Cron("61 * * * *")

    def test_wrong_types_raise_type_error(self):
        for bad in (None, 5, b"* * * * *", ["*"] * 5):
            with self.subTest(expression=bad):
                with self.assertRaisesRegex(TypeError, "cron expression must be a str"):
                    Cron(bad)
        with self.assertRaisesRegex(TypeError, "timezone must be None, a zone name"):
            Cron("* * * * *", timezone=5)
        with self.assertRaisesRegex(TypeError, "next_after\\(\\) needs a datetime"):
            Cron("* * * * *").next_after(date(2024, 1, 1))
        with self.assertRaisesRegex(TypeError, "needs a datetime"):
            Cron("* * * * *").next_after("2024-01-01")

    def test_unknown_zone_is_rejected(self):
        for name in ("Mars/Olympus", "Europe/Berlinn", "", "../etc/passwd", "Europe"):
            with self.subTest(zone=name):
                with self.assertRaisesRegex(ValueError, "unknown time zone %r" % name):
                    Cron("* * * * *", name)

    def test_zone_forms(self):
        cases = [
            ("Europe/Berlin", "Europe/Berlin"),
            (ZoneInfo("Europe/Berlin"), "Europe/Berlin"),
            ("UTC", "UTC"),
            (UTC, "UTC"),
            (timezone(timedelta(hours=5, minutes=45)), "UTC+05:45"),
            (timezone(timedelta(hours=-3), "BRT"), "UTC-03:00"),
        ]
        for zone, key in cases:
            with self.subTest(zone=zone):
                cron = Cron("30 2 * * 1-5", zone)
                self.assertEqual(cron.describe(), 'cron "30 2 * * 1-5" %s' % key)
                self.assertIn(key, repr(cron))
        self.assertIsInstance(Cron("* * * * *", "Asia/Kolkata").timezone, ZoneInfo)

    def test_default_zone_is_resolved_at_construction(self):
        berlin = ZoneInfo("Europe/Berlin")
        with mock.patch.object(jits, "_default_timezone", return_value=berlin):
            cron = Cron("0 12 * * *")
        self.assertIs(cron.timezone, berlin)
        self.assertEqual(Cron("0 12 * * *").timezone, UTC)
        result = cron.next_after(_utc("2024-07-01T00:00:00"))
        self.assertEqual(result.isoformat(), "2024-07-01T12:00:00+02:00")

    def test_repr_describe_eq_hash(self):
        cron = Cron("30 2 * * 1-5", "Europe/Berlin")
        self.assertEqual(repr(cron), "Cron('30 2 * * 1-5', timezone='Europe/Berlin')")
        self.assertEqual(cron.describe(), 'cron "30 2 * * 1-5" Europe/Berlin')
        same = Cron("30 2 * * 1-5", ZoneInfo("Europe/Berlin"))
        self.assertEqual(cron, same)
        self.assertEqual(hash(cron), hash(same))
        self.assertEqual(len({cron, same}), 1)
        self.assertNotEqual(cron, Cron("30 2 * * 1-5", "Europe/Paris"))
        self.assertNotEqual(cron, Cron("30 3 * * 1-5", "Europe/Berlin"))
        self.assertEqual(Cron("@daily", "UTC"), Cron("@daily", UTC))
        self.assertNotEqual(cron, "30 2 * * 1-5")
        self.assertEqual(cron.expression, "30 2 * * 1-5")


class CronNextTests(unittest.TestCase):
    # (expression, start, successive results); times are UTC.
    KNOWN = [
        ("* * * * *", "2024-01-01T00:00:00", ["2024-01-01T00:01:00"]),
        ("* * * * *", "2024-01-01T00:00:30", ["2024-01-01T00:01:00"]),
        ("* * * * *", "2024-01-01T00:00:59.999999", ["2024-01-01T00:01:00"]),
        ("* * * * *", "2024-12-31T23:59:00", ["2025-01-01T00:00:00"]),
        ("* * * * *", "2024-02-28T23:59:59", ["2024-02-29T00:00:00"]),
        ("*/15 * * * *", "2024-01-01T00:14:59", ["2024-01-01T00:15:00"]),
        ("*/15 * * * *", "2024-01-01T00:45:00",
         ["2024-01-01T01:00:00", "2024-01-01T01:15:00"]),
        ("5/20 * * * *", "2024-01-01T00:45:00",
         ["2024-01-01T01:05:00", "2024-01-01T01:25:00", "2024-01-01T01:45:00"]),
        ("10-30/10 * * * *", "2024-01-01T00:30:00",
         ["2024-01-01T01:10:00", "2024-01-01T01:20:00"]),
        ("05 * * * *", "2024-01-01T00:05:00", ["2024-01-01T01:05:00"]),
        ("59 23 * * *", "2024-12-31T23:59:00", ["2025-01-01T23:59:00"]),
        ("0 0 * * *", "2024-02-28T12:00:00",
         ["2024-02-29T00:00:00", "2024-03-01T00:00:00"]),
        ("0 12 31 12 *", "2024-12-31T12:00:00", ["2025-12-31T12:00:00"]),
        ("59 23 31 12 *", "2024-06-01T00:00:00", ["2024-12-31T23:59:00"]),
        ("0 0 1 1 *", "2024-01-01T00:00:00", ["2025-01-01T00:00:00"]),
        ("0,30 9-17/4 * * *", "2024-01-01T09:30:00",
         ["2024-01-01T13:00:00", "2024-01-01T13:30:00", "2024-01-01T17:00:00",
          "2024-01-01T17:30:00", "2024-01-02T09:00:00"]),
        ("30 2 * * 1-5", "2024-01-05T03:00:00",
         ["2024-01-08T02:30:00", "2024-01-09T02:30:00"]),
        ("0 9 * * MON-FRI", "2024-01-06T00:00:00", ["2024-01-08T09:00:00"]),
        ("0 9 * * SAT,SUN", "2024-01-01T00:00:00",
         ["2024-01-06T09:00:00", "2024-01-07T09:00:00", "2024-01-13T09:00:00"]),
        ("0 9 * * FRI-SUN", "2024-01-01T00:00:00",
         ["2024-01-05T09:00:00", "2024-01-06T09:00:00", "2024-01-07T09:00:00",
          "2024-01-12T09:00:00"]),
        ("0 9 * * 5-7", "2024-01-01T00:00:00",
         ["2024-01-05T09:00:00", "2024-01-06T09:00:00", "2024-01-07T09:00:00"]),
        ("0 9 * * */2", "2024-01-01T00:00:00",
         ["2024-01-02T09:00:00", "2024-01-04T09:00:00", "2024-01-06T09:00:00",
          "2024-01-07T09:00:00"]),
        # The 31st
        ("0 0 31 * *", "2024-01-31T00:00:00",
         ["2024-03-31T00:00:00", "2024-05-31T00:00:00", "2024-07-31T00:00:00",
          "2024-08-31T00:00:00", "2024-10-31T00:00:00", "2024-12-31T00:00:00",
          "2025-01-31T00:00:00"]),
        ("0 0 30 * *", "2024-01-30T00:00:00",
         ["2024-03-30T00:00:00", "2024-04-30T00:00:00"]),
        ("0 0 29 * *", "2023-01-29T00:00:00",
         ["2023-03-29T00:00:00"]),
        ("0 0 29 * *", "2024-01-29T00:00:00",
         ["2024-02-29T00:00:00", "2024-03-29T00:00:00"]),
        ("0 0 */30 2 *", "2024-01-01T00:00:00",
         ["2024-02-01T00:00:00", "2025-02-01T00:00:00"]),
        # Leap days
        ("0 0 29 2 *", "2024-01-01T00:00:00",
         ["2024-02-29T00:00:00", "2028-02-29T00:00:00", "2032-02-29T00:00:00"]),
        ("0 0 29 2 *", "2096-03-01T00:00:00", ["2104-02-29T00:00:00"]),
        ("0 0 29 2 *", "1999-01-01T00:00:00", ["2000-02-29T00:00:00"]),
        ("0 0 29 FEB *", "2024-02-29T00:00:00", ["2028-02-29T00:00:00"]),
        ("0 0 L 2 *", "2023-01-01T00:00:00",
         ["2023-02-28T00:00:00", "2024-02-29T00:00:00", "2025-02-28T00:00:00"]),
        ("0 0 28 2 *", "2024-02-28T00:00:00", ["2025-02-28T00:00:00"]),
        ("0 0 29 2 */7", "2024-01-01T00:00:00", ["2032-02-29T00:00:00"]),
        ("0 0 29 2 4", "2024-02-25T00:00:00",
         ["2024-02-29T00:00:00", "2025-02-06T00:00:00"]),
        # L, LW, nW
        ("0 0 L * *", "2024-01-01T00:00:00",
         ["2024-01-31T00:00:00", "2024-02-29T00:00:00", "2024-03-31T00:00:00",
          "2024-04-30T00:00:00"]),
        ("0 0 LW * *", "2024-03-01T00:00:00",
         ["2024-03-29T00:00:00", "2024-04-30T00:00:00", "2024-05-31T00:00:00",
          "2024-06-28T00:00:00", "2024-07-31T00:00:00", "2024-08-30T00:00:00",
          "2024-09-30T00:00:00"]),
        ("0 0 15W * *", "2024-06-01T00:00:00",
         ["2024-06-14T00:00:00", "2024-07-15T00:00:00"]),
        ("0 0 15W * *", "2024-09-01T00:00:00",
         ["2024-09-16T00:00:00", "2024-10-15T00:00:00"]),
        ("0 0 1W * *", "2024-05-15T00:00:00",
         ["2024-06-03T00:00:00", "2024-07-01T00:00:00", "2024-08-01T00:00:00",
          "2024-09-02T00:00:00"]),
        ("0 0 31W * *", "2024-03-01T00:00:00",
         ["2024-03-29T00:00:00", "2024-05-31T00:00:00", "2024-07-31T00:00:00"]),
        ("0 0 30W * *", "2024-06-01T00:00:00", ["2024-06-28T00:00:00"]),
        ("0 0 L,15 * *", "2024-02-01T00:00:00",
         ["2024-02-15T00:00:00", "2024-02-29T00:00:00", "2024-03-15T00:00:00"]),
        # nL, FRIL, n#k
        ("0 0 * * 5L", "2024-01-01T00:00:00",
         ["2024-01-26T00:00:00", "2024-02-23T00:00:00", "2024-03-29T00:00:00"]),
        ("0 0 * * FRIL", "2024-01-01T00:00:00", ["2024-01-26T00:00:00"]),
        ("0 0 * * 0L", "2024-01-01T00:00:00",
         ["2024-01-28T00:00:00", "2024-02-25T00:00:00", "2024-03-31T00:00:00"]),
        ("0 0 * * 7L", "2024-01-01T00:00:00", ["2024-01-28T00:00:00"]),
        ("0 0 * * SUNL", "2024-01-01T00:00:00", ["2024-01-28T00:00:00"]),
        ("0 0 * * 4L", "2024-02-01T00:00:00", ["2024-02-29T00:00:00"]),
        ("0 0 * * 1#1", "2024-01-01T00:00:00",
         ["2024-02-05T00:00:00", "2024-03-04T00:00:00"]),
        ("0 0 * * MON#2", "2024-01-01T00:00:00", ["2024-01-08T00:00:00"]),
        ("0 0 * * 5#5", "2024-01-01T00:00:00",
         ["2024-03-29T00:00:00", "2024-05-31T00:00:00", "2024-08-30T00:00:00"]),
        ("0 0 * * 7#1", "2024-01-01T00:00:00",
         ["2024-01-07T00:00:00", "2024-02-04T00:00:00"]),
        ("0 0 * * 1#2,5L", "2024-01-01T00:00:00",
         ["2024-01-08T00:00:00", "2024-01-26T00:00:00", "2024-02-12T00:00:00"]),
        ("0 0 * 2 4#5", "2024-01-01T00:00:00", ["2024-02-29T00:00:00"]),
        # ? and the day-field combination rules
        ("0 0 ? * MON", "2024-01-02T00:00:00", ["2024-01-08T00:00:00"]),
        ("0 0 1 * ?", "2024-01-02T00:00:00", ["2024-02-01T00:00:00"]),
        ("0 0 13 * 5", "2024-01-01T00:00:00",
         ["2024-01-05T00:00:00", "2024-01-12T00:00:00", "2024-01-13T00:00:00",
          "2024-01-19T00:00:00"]),
        ("0 0 13 * */5", "2024-01-01T00:00:00",
         ["2024-09-13T00:00:00", "2024-10-13T00:00:00", "2024-12-13T00:00:00"]),
        ("0 0 */13 * 5", "2024-01-01T00:00:00", ["2024-03-01T00:00:00"]),
        ("0 0 1-7 * 1", "2024-01-05T00:00:00",
         ["2024-01-06T00:00:00", "2024-01-07T00:00:00", "2024-01-08T00:00:00",
          "2024-01-15T00:00:00"]),
        ("0 0 1-7 * */1", "2024-01-05T00:00:00",
         ["2024-01-06T00:00:00", "2024-01-07T00:00:00", "2024-02-01T00:00:00"]),
        ("0 0 * * 1", "2024-01-05T00:00:00", ["2024-01-08T00:00:00"]),
        ("0 0 ?/10 * 1", "2024-01-01T00:00:00", ["2024-03-11T00:00:00"]),
        ("0 0 L * 5", "2024-02-20T00:00:00",
         ["2024-02-23T00:00:00", "2024-02-29T00:00:00", "2024-03-01T00:00:00"]),
        ("0 0 15W * 6#1", "2024-06-01T00:00:00",
         ["2024-06-14T00:00:00", "2024-07-06T00:00:00", "2024-07-15T00:00:00"]),
        ("0 0 30 2 1", "2024-01-31T00:00:00",
         ["2024-02-05T00:00:00", "2024-02-12T00:00:00"]),
        # Month names and ranges
        ("0 0 1 JAN-MAR/2 *", "2024-01-01T00:00:00",
         ["2024-03-01T00:00:00", "2025-01-01T00:00:00"]),
        ("0 0 1 jun,Dec *", "2024-01-01T00:00:00",
         ["2024-06-01T00:00:00", "2024-12-01T00:00:00"]),
        ("0 0 1 10/1 *", "2024-01-01T00:00:00",
         ["2024-10-01T00:00:00", "2024-11-01T00:00:00", "2024-12-01T00:00:00",
          "2025-10-01T00:00:00"]),
    ]

    def test_known_answers_in_utc(self):
        for expression, start, expected in self.KNOWN:
            with self.subTest(expression=expression, start=start):
                cron = Cron(expression, "UTC")
                got = _chain(cron, _utc(start), len(expected))
                self.assertEqual([g.astimezone(UTC) for g in got],
                                 [_utc(e) for e in expected])

    def test_result_is_aware_in_the_zone_and_strictly_later(self):
        for zone in ("UTC", UTC, "Europe/Berlin", timezone(timedelta(hours=9))):
            cron = Cron("*/7 * * * *", zone)
            start = _utc("2024-05-05T10:14:00")
            for _ in range(30):
                with self.subTest(zone=zone, start=start):
                    result = cron.next_after(start)
                    self.assertIs(result.tzinfo, cron.timezone)
                    self.assertGreater(result, start)
                    start = result

    def test_naive_start_is_read_in_the_zone(self):
        cases = [
            ("Europe/Berlin", "0 12 * * *", "2024-07-01T11:59:00",
             "2024-07-01T12:00:00+02:00"),
            ("America/New_York", "0 12 * * *", "2024-01-01T12:00:00",
             "2024-01-02T12:00:00-05:00"),
            (timezone(timedelta(hours=5, minutes=30)), "0 12 * * *",
             "2024-01-01T11:30:00", "2024-01-01T12:00:00+05:30"),
            ("UTC", "0 12 * * *", "2024-01-01T11:30:00",
             "2024-01-01T12:00:00+00:00"),
        ]
        for zone, expression, start, expected in cases:
            with self.subTest(zone=zone, expression=expression):
                got = Cron(expression, zone).next_after(datetime.fromisoformat(start))
                self.assertEqual(got.isoformat(), expected)

    def test_start_in_another_zone(self):
        cron = Cron("0 9 * * *", "Asia/Tokyo")
        start = datetime(2024, 1, 1, 0, 30, tzinfo=ZoneInfo("Europe/Berlin"))
        expected = "2024-01-01T09:00:00+09:00"
        self.assertEqual(cron.next_after(start).isoformat(), expected)
        fixed = Cron("0 9 * * *", timezone(timedelta(hours=9)))
        self.assertEqual(fixed.next_after(start).isoformat(), expected)

    def test_every_month_name(self):
        for number, name in enumerate(MONTHS, 1):
            for spelling in (name, name.lower(), name.title(), str(number)):
                with self.subTest(month=spelling):
                    cron = Cron("0 0 1 %s *" % spelling, "UTC")
                    got = cron.next_after(_utc("2023-12-31T12:00:00"))
                    self.assertEqual(got.astimezone(UTC),
                                     _utc("2024-%02d-01T00:00:00" % number))

    def test_every_day_name_and_seven_is_sunday(self):
        sunday = _utc("2024-01-07T00:30:00")
        for number, name in enumerate(DAYS):
            spellings = [name, name.lower(), name.title(), str(number)]
            if number == 0:
                spellings.append("7")
            for spelling in spellings:
                with self.subTest(day=spelling):
                    cron = Cron("0 12 * * %s" % spelling, "UTC")
                    got = _chain(cron, sunday, 2)
                    first = datetime(2024, 1, 7 + number, 12, tzinfo=UTC)
                    self.assertEqual(got, [first, first + timedelta(days=7)])

    def test_every_macro(self):
        cases = [
            ("@yearly", ["2025-01-01T00:00:00", "2026-01-01T00:00:00"]),
            ("@annually", ["2025-01-01T00:00:00", "2026-01-01T00:00:00"]),
            ("@monthly", ["2024-06-01T00:00:00", "2024-07-01T00:00:00"]),
            ("@weekly", ["2024-05-19T00:00:00", "2024-05-26T00:00:00"]),
            ("@daily", ["2024-05-16T00:00:00", "2024-05-17T00:00:00"]),
            ("@midnight", ["2024-05-16T00:00:00", "2024-05-17T00:00:00"]),
            ("@hourly", ["2024-05-15T11:00:00", "2024-05-15T12:00:00"]),
            ("@Hourly", ["2024-05-15T11:00:00", "2024-05-15T12:00:00"]),
        ]
        start = _utc("2024-05-15T10:20:00")
        for macro, expected in cases:
            with self.subTest(macro=macro):
                got = _chain(Cron(macro, "UTC"), start, 2)
                self.assertEqual(got, [_utc(e) for e in expected])

    def test_leap_days_over_two_centuries(self):
        cron = Cron("0 0 29 2 *", "UTC")
        for year in range(1990, 2210, 3):
            with self.subTest(year=year):
                expected = year
                while not calendar.isleap(expected):
                    expected += 1
                got = cron.next_after(datetime(year, 1, 1, tzinfo=UTC))
                self.assertEqual(got, datetime(expected, 2, 29, tzinfo=UTC))

    def test_last_day_of_every_month(self):
        cron = Cron("0 0 L * *", "UTC")
        for year in (1900, 2000, 2023, 2024):
            for month in range(1, 13):
                with self.subTest(year=year, month=month):
                    last = calendar.monthrange(year, month)[1]
                    got = cron.next_after(datetime(year, month, 1, tzinfo=UTC))
                    self.assertEqual(got, datetime(year, month, last, tzinfo=UTC))

    def test_thirty_first_from_every_month(self):
        cron = Cron("15 10 31 * *", "UTC")
        for month in range(1, 13):
            with self.subTest(month=month):
                got = cron.next_after(datetime(2025, month, 1, tzinfo=UTC))
                expected_month = month
                while calendar.monthrange(2025, expected_month)[1] < 31:
                    expected_month += 1
                self.assertEqual(got, datetime(2025, expected_month, 31, 10, 15,
                                               tzinfo=UTC))

    def test_search_past_year_9999_overflows(self):
        cron = Cron("0 0 29 2 *", "UTC")
        with self.assertRaisesRegex(OverflowError, "no fire time"):
            cron.next_after(datetime(9996, 3, 1, tzinfo=UTC))


class CronDSTTests(unittest.TestCase):
    # (zone, expression, start, successive results as local ISO with offset)
    # Rule numbers refer to the spec: 1 and 3 are fixed-time jobs, 2 and 4
    # wildcard jobs; 1 and 2 spring forward, 3 and 4 fall back.
    KNOWN = [
        # Europe/Berlin 2024: 02:00 -> 03:00 on 31 Mar, 03:00 -> 02:00 27 Oct.
        ("Europe/Berlin", "30 2 * * *", "2024-03-30T12:00:00",
         ["2024-03-31T03:00:00+02:00", "2024-04-01T02:30:00+02:00"]),
        ("Europe/Berlin", "30 2 * * *", "2024-03-31T00:59:59",
         ["2024-03-31T03:00:00+02:00"]),
        ("Europe/Berlin", "30 2 * * *", "2024-03-31T01:00:00",
         ["2024-04-01T02:30:00+02:00"]),
        ("Europe/Berlin", "0,30 2 * * *", "2024-03-30T12:00:00",
         ["2024-03-31T03:00:00+02:00", "2024-04-01T02:00:00+02:00"]),
        ("Europe/Berlin", "0-59/15 2 * * *", "2024-03-30T12:00:00",
         ["2024-03-31T03:00:00+02:00", "2024-04-01T02:00:00+02:00"]),
        ("Europe/Berlin", "0 2,3 * * *", "2024-03-30T12:00:00",
         ["2024-03-31T03:00:00+02:00", "2024-04-01T02:00:00+02:00"]),
        ("Europe/Berlin", "30 1-3 * * *", "2024-03-31T00:45:00",
         ["2024-03-31T03:00:00+02:00", "2024-03-31T03:30:00+02:00"]),
        ("Europe/Berlin", "0 3 * * *", "2024-03-30T12:00:00",
         ["2024-03-31T03:00:00+02:00"]),
        ("Europe/Berlin", "30 2 31 3 *", "2024-01-01T00:00:00",
         ["2024-03-31T03:00:00+02:00", "2025-03-31T02:30:00+02:00"]),
        ("Europe/Berlin", "*/15 2 * * *", "2024-03-30T12:00:00",
         ["2024-04-01T02:00:00+02:00"]),
        ("Europe/Berlin", "0 */2 * * *", "2024-03-31T00:30:00",
         ["2024-03-31T04:00:00+02:00"]),
        ("Europe/Berlin", "* * * * *", "2024-03-31T00:59:00",
         ["2024-03-31T03:00:00+02:00", "2024-03-31T03:01:00+02:00"]),
        ("Europe/Berlin", "30 * * * *", "2024-03-31T00:45:00",
         ["2024-03-31T03:30:00+02:00"]),
        ("Europe/Berlin", "@hourly", "2024-03-31T00:30:00",
         ["2024-03-31T03:00:00+02:00"]),
        ("Europe/Berlin", "30 2 * * *", "2024-10-26T12:00:00",
         ["2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00"]),
        ("Europe/Berlin", "30 2 * * *", "2024-10-27T00:30:00",
         ["2024-10-28T02:30:00+01:00"]),
        ("Europe/Berlin", "30 2 * * *", "2024-10-27T01:10:00",
         ["2024-10-28T02:30:00+01:00"]),
        ("Europe/Berlin", "45 2 * * *", "2024-10-27T00:50:00",
         ["2024-10-28T02:45:00+01:00"]),
        ("Europe/Berlin", "0-59/20 2 * * *", "2024-10-27T00:45:00",
         ["2024-10-28T02:00:00+01:00"]),
        ("Europe/Berlin", "0 2 * * *", "2024-10-26T23:30:00",
         ["2024-10-27T02:00:00+02:00", "2024-10-28T02:00:00+01:00"]),
        ("Europe/Berlin", "0 3 * * *", "2024-10-27T00:30:00",
         ["2024-10-27T03:00:00+01:00"]),
        ("Europe/Berlin", "0 0-23 * * *", "2024-10-26T23:30:00",
         ["2024-10-27T02:00:00+02:00", "2024-10-27T03:00:00+01:00"]),
        ("Europe/Berlin", "*/20 2 * * *", "2024-10-27T00:45:00",
         ["2024-10-27T02:00:00+01:00", "2024-10-27T02:20:00+01:00"]),
        ("Europe/Berlin", "*/20 2 * * *", "2024-10-27T01:00:00",
         ["2024-10-27T02:20:00+01:00"]),
        ("Europe/Berlin", "*/20 2 * * *", "2024-10-27T00:25:00",
         ["2024-10-27T02:40:00+02:00", "2024-10-27T02:00:00+01:00"]),
        ("Europe/Berlin", "*/20 2 * * *", "2024-10-26T12:00:00",
         ["2024-10-27T02:00:00+02:00", "2024-10-27T02:20:00+02:00",
          "2024-10-27T02:40:00+02:00", "2024-10-27T02:00:00+01:00",
          "2024-10-27T02:20:00+01:00", "2024-10-27T02:40:00+01:00",
          "2024-10-28T02:00:00+01:00"]),
        ("Europe/Berlin", "@hourly", "2024-10-27T00:30:00",
         ["2024-10-27T02:00:00+01:00", "2024-10-27T03:00:00+01:00"]),
        ("Europe/Berlin", "@daily", "2024-10-26T12:00:00",
         ["2024-10-27T00:00:00+02:00", "2024-10-28T00:00:00+01:00"]),
        ("Europe/Berlin", "*/1 2 * * *", "2024-10-27T00:58:00",
         ["2024-10-27T02:59:00+02:00", "2024-10-27T02:00:00+01:00"]),
        ("Europe/Berlin", "0-59 2 * * *", "2024-10-27T00:58:00",
         ["2024-10-27T02:59:00+02:00", "2024-10-28T02:00:00+01:00"]),
        # A search from the second pass must still reach the wall times
        # just after the repeated interval (a past bug jumped over them).
        ("Europe/Berlin", "5,50 2,3 * * *", "2024-10-27T01:40:00",
         ["2024-10-27T03:05:00+01:00", "2024-10-27T03:50:00+01:00"]),
        ("Europe/Berlin", "30 2,3 * * *", "2024-10-27T01:40:00",
         ["2024-10-27T03:30:00+01:00"]),
        ("Europe/London", "4,14,24,34,44,54 0,1,2 * * *", "2017-10-29T01:24:00",
         ["2017-10-29T02:04:00+00:00", "2017-10-29T02:14:00+00:00"]),
        ("Pacific/Chatham", "15,45 2,3 * * *", "2031-04-05T14:25:22",
         ["2031-04-06T03:45:00+12:45", "2031-04-07T02:15:00+12:45"]),
        ("Europe/Berlin", "* * * * *", "2024-10-27T00:59:00",
         ["2024-10-27T02:00:00+01:00"]),
        ("Europe/Berlin", "0 * * * *", "2024-10-26T23:30:00",
         ["2024-10-27T02:00:00+02:00", "2024-10-27T02:00:00+01:00",
          "2024-10-27T03:00:00+01:00"]),
        ("Europe/Berlin", "15,45 */1 * * *", "2024-10-27T00:20:00",
         ["2024-10-27T02:45:00+02:00", "2024-10-27T02:15:00+01:00",
          "2024-10-27T02:45:00+01:00", "2024-10-27T03:15:00+01:00"]),
        # America/New_York 2024: 02:00 -> 03:00 10 Mar, 02:00 -> 01:00 3 Nov.
        ("America/New_York", "30 2 * * *", "2024-03-09T17:00:00",
         ["2024-03-10T03:00:00-04:00", "2024-03-11T02:30:00-04:00"]),
        ("America/New_York", "*/30 2 * * *", "2024-03-09T17:00:00",
         ["2024-03-11T02:00:00-04:00"]),
        ("America/New_York", "0 0-23 * * *", "2024-03-10T06:30:00",
         ["2024-03-10T03:00:00-04:00", "2024-03-10T04:00:00-04:00"]),
        ("America/New_York", "0 * * * *", "2024-03-10T06:30:00",
         ["2024-03-10T03:00:00-04:00", "2024-03-10T04:00:00-04:00"]),
        ("America/New_York", "0 1 * * *", "2024-11-02T17:00:00",
         ["2024-11-03T01:00:00-04:00", "2024-11-04T01:00:00-05:00"]),
        ("America/New_York", "30 1 * * *", "2024-11-03T06:10:00",
         ["2024-11-04T01:30:00-05:00"]),
        ("America/New_York", "59 1 * * *", "2024-11-03T06:59:00",
         ["2024-11-04T01:59:00-05:00"]),
        ("America/New_York", "*/30 1 * * *", "2024-11-03T04:50:00",
         ["2024-11-03T01:00:00-04:00", "2024-11-03T01:30:00-04:00",
          "2024-11-03T01:00:00-05:00", "2024-11-03T01:30:00-05:00",
          "2024-11-04T01:00:00-05:00"]),
        ("America/New_York", "* * * * *", "2024-11-03T05:59:00",
         ["2024-11-03T01:00:00-05:00"]),
        ("America/New_York", "0 0-23 * * *", "2024-11-03T04:30:00",
         ["2024-11-03T01:00:00-04:00", "2024-11-03T02:00:00-05:00"]),
        ("America/New_York", "0 * * * *", "2024-11-03T04:30:00",
         ["2024-11-03T01:00:00-04:00", "2024-11-03T01:00:00-05:00",
          "2024-11-03T02:00:00-05:00"]),
        # Australia/Lord_Howe 2024: half-hour shifts.
        ("Australia/Lord_Howe", "15 2 * * *", "2024-10-05T02:00:00",
         ["2024-10-06T02:30:00+11:00", "2024-10-07T02:15:00+11:00"]),
        ("Australia/Lord_Howe", "0,15,30,45 2 * * *", "2024-10-05T02:00:00",
         ["2024-10-06T02:30:00+11:00", "2024-10-06T02:45:00+11:00",
          "2024-10-07T02:00:00+11:00"]),
        ("Australia/Lord_Howe", "*/15 2 * * *", "2024-10-05T02:00:00",
         ["2024-10-06T02:30:00+11:00", "2024-10-06T02:45:00+11:00",
          "2024-10-07T02:00:00+11:00"]),
        ("Australia/Lord_Howe", "45 1 * * *", "2024-04-06T02:00:00",
         ["2024-04-07T01:45:00+11:00", "2024-04-08T01:45:00+10:30"]),
        ("Australia/Lord_Howe", "45 1 * * *", "2024-04-06T15:05:00",
         ["2024-04-08T01:45:00+10:30"]),
        ("Australia/Lord_Howe", "15 1 * * *", "2024-04-06T02:00:00",
         ["2024-04-07T01:15:00+11:00"]),
        ("Australia/Lord_Howe", "*/15 1 * * *", "2024-04-06T14:20:00",
         ["2024-04-07T01:30:00+11:00", "2024-04-07T01:45:00+11:00",
          "2024-04-07T01:30:00+10:30", "2024-04-07T01:45:00+10:30",
          "2024-04-08T01:00:00+10:30"]),
        # Pacific/Chatham 2024: changes at 02:45 and 03:45 local.
        ("Pacific/Chatham", "0 3 * * *", "2024-09-28T00:00:00",
         ["2024-09-29T03:45:00+13:45", "2024-09-30T03:00:00+13:45"]),
        ("Pacific/Chatham", "50 2 * * *", "2024-09-28T00:00:00",
         ["2024-09-29T03:45:00+13:45"]),
        ("Pacific/Chatham", "44 3 * * *", "2024-09-28T00:00:00",
         ["2024-09-29T03:45:00+13:45"]),
        ("Pacific/Chatham", "45 3 * * *", "2024-09-28T00:00:00",
         ["2024-09-29T03:45:00+13:45"]),
        ("Pacific/Chatham", "40 2 * * *", "2024-09-28T00:00:00",
         ["2024-09-29T02:40:00+12:45"]),
        ("Pacific/Chatham", "*/15 * * * *", "2024-09-28T13:40:00",
         ["2024-09-29T02:30:00+12:45", "2024-09-29T03:45:00+13:45",
          "2024-09-29T04:00:00+13:45"]),
        ("Pacific/Chatham", "0 3 * * *", "2024-04-06T00:00:00",
         ["2024-04-07T03:00:00+13:45", "2024-04-08T03:00:00+12:45"]),
        ("Pacific/Chatham", "0 3 * * *", "2024-04-06T14:20:00",
         ["2024-04-08T03:00:00+12:45"]),
        ("Pacific/Chatham", "*/30 3 * * *", "2024-04-06T13:10:00",
         ["2024-04-07T03:00:00+13:45", "2024-04-07T03:30:00+13:45",
          "2024-04-07T03:00:00+12:45", "2024-04-07T03:30:00+12:45",
          "2024-04-08T03:00:00+12:45"]),
        # America/Sao_Paulo 2018: changes at midnight.
        ("America/Sao_Paulo", "30 0 * * *", "2018-11-03T15:00:00",
         ["2018-11-04T01:00:00-02:00", "2018-11-05T00:30:00-02:00"]),
        ("America/Sao_Paulo", "@daily", "2018-11-03T15:00:00",
         ["2018-11-04T01:00:00-02:00", "2018-11-05T00:00:00-02:00"]),
        ("America/Sao_Paulo", "0 0 4 11 *", "2018-01-01T00:00:00",
         ["2018-11-04T01:00:00-02:00", "2019-11-04T00:00:00-03:00"]),
        ("America/Sao_Paulo", "*/30 0 * * *", "2018-11-03T15:00:00",
         ["2018-11-05T00:00:00-02:00"]),
        ("America/Sao_Paulo", "30 23 * * *", "2018-02-17T12:00:00",
         ["2018-02-17T23:30:00-02:00", "2018-02-18T23:30:00-03:00"]),
        ("America/Sao_Paulo", "30 23 * * 6", "2018-02-17T12:00:00",
         ["2018-02-17T23:30:00-02:00", "2018-02-24T23:30:00-03:00"]),
        ("America/Sao_Paulo", "30 23 * * *", "2018-02-18T02:10:00",
         ["2018-02-18T23:30:00-03:00"]),
        ("America/Sao_Paulo", "0 0 18 2 *", "2018-02-17T12:00:00",
         ["2018-02-18T00:00:00-03:00"]),
        ("America/Sao_Paulo", "*/30 23 * * *", "2018-02-17T12:00:00",
         ["2018-02-17T23:00:00-02:00", "2018-02-17T23:30:00-02:00",
          "2018-02-17T23:00:00-03:00", "2018-02-17T23:30:00-03:00",
          "2018-02-18T23:00:00-03:00"]),
        ("America/Sao_Paulo", "*/30 23 * * 6", "2018-02-17T12:00:00",
         ["2018-02-17T23:00:00-02:00", "2018-02-17T23:30:00-02:00",
          "2018-02-17T23:00:00-03:00", "2018-02-17T23:30:00-03:00",
          "2018-02-24T23:00:00-03:00"]),
        # Asia/Kolkata during the Second World War: +05:30 <-> +06:30.
        ("Asia/Kolkata", "30 0 * * *", "1941-09-30T12:00:00",
         ["1941-10-01T01:00:00+06:30", "1941-10-02T00:30:00+06:30"]),
        ("Asia/Kolkata", "*/30 0 * * *", "1941-09-30T12:00:00",
         ["1941-10-02T00:00:00+06:30"]),
        ("Asia/Kolkata", "30 23 * * *", "1942-05-14T12:00:00",
         ["1942-05-14T23:30:00+06:30", "1942-05-15T23:30:00+05:30"]),
        ("Asia/Kolkata", "*/30 23 * * *", "1942-05-14T12:00:00",
         ["1942-05-14T23:00:00+06:30", "1942-05-14T23:30:00+06:30",
          "1942-05-14T23:00:00+05:30", "1942-05-14T23:30:00+05:30",
          "1942-05-15T23:00:00+05:30"]),
        ("Asia/Kolkata", "15 23 * * *", "1945-10-14T17:40:00",
         ["1945-10-15T23:15:00+05:30"]),
        ("Asia/Kolkata", "0 12 * * *", "1943-01-01T00:00:00",
         ["1943-01-01T12:00:00+06:30"]),
    ]

    def test_known_answers(self):
        for zone, expression, start, expected in self.KNOWN:
            with self.subTest(zone=zone, expression=expression, start=start):
                got = _chain(Cron(expression, zone), _utc(start), len(expected))
                self.assertEqual([g.isoformat() for g in got], expected)
                for value in got:
                    # The fold must agree with the offset it claims.
                    canonical = value.astimezone(UTC).astimezone(value.tzinfo)
                    self.assertEqual((value.fold, value.utcoffset()),
                                     (canonical.fold, canonical.utcoffset()))

    def test_naive_start_inside_repeated_hour(self):
        berlin = "Europe/Berlin"
        first = datetime(2024, 10, 27, 2, 30)
        second = datetime(2024, 10, 27, 2, 30, fold=1)
        cases = [
            ("*/20 2 * * *", first, "2024-10-27T02:40:00+02:00"),
            ("*/20 2 * * *", second, "2024-10-27T02:40:00+01:00"),
            ("40 2 * * *", first, "2024-10-27T02:40:00+02:00"),
            ("40 2 * * *", second, "2024-10-28T02:40:00+01:00"),
            ("30 2 * * *", first, "2024-10-28T02:30:00+01:00"),
            ("*/30 2 * * *", first, "2024-10-27T02:00:00+01:00"),
            ("*/30 2 * * *", second, "2024-10-28T02:00:00+01:00"),
        ]
        for expression, start, expected in cases:
            with self.subTest(expression=expression, fold=start.fold):
                got = Cron(expression, berlin).next_after(start)
                self.assertEqual(got.isoformat(), expected)

    def test_strictly_later_inside_repeated_hour(self):
        for expression in ("* * * * *", "*/5 1 * * *", "5 1 * * *", "0-59 1 * * *"):
            cron = Cron(expression, "America/New_York")
            start = _utc("2024-11-03T04:58:00")
            while start < _utc("2024-11-03T07:30:00"):
                with self.subTest(expression=expression, start=start):
                    result = cron.next_after(start)
                    self.assertGreater(result.astimezone(UTC), start.astimezone(UTC))
                    start = result

    def test_fixed_offset_zones_have_no_dst(self):
        cron = Cron("30 2 * * *", timezone(timedelta(hours=1)))
        got = cron.next_after(_utc("2024-03-30T12:00:00"))
        self.assertEqual(got.isoformat(), "2024-03-31T02:30:00+01:00")
        cron = Cron("30 2 * * *", "Etc/GMT-1")
        got = cron.next_after(_utc("2024-03-30T12:00:00"))
        self.assertEqual(got.astimezone(UTC), _utc("2024-03-31T01:30:00"))


# --- brute-force reference ---------------------------------------------------
#
# The reference simulates Debian's daemon one real minute at a time.  It
# remembers the latest wall time it has seen.  A wildcard job fires whenever
# the wall time matches.  A fixed-time job fires when the wall time moves
# past everything seen before and some wall time it skipped over, or reached,
# matches; a wall time seen before (clocks went back) never fires it again.


def _weekday(year, month, day):
    return (date(year, month, day).weekday() + 1) % 7


def _last_weekday(year, month):
    length = calendar.monthrange(year, month)[1]
    days = range(1, length + 1)
    return max(d for d in days if _weekday(year, month, d) not in (0, 6))


def _nearest_weekday(year, month, target):
    length = calendar.monthrange(year, month)[1]
    if target > length:
        return None
    days = range(1, length + 1)
    weekdays = [d for d in days if _weekday(year, month, d) not in (0, 6)]
    return min(weekdays, key=lambda d: abs(d - target))


class _Reference:
    def __init__(self, minutes, hours, months, dom, dow, days_and, wildcard, zone):
        self.minutes, self.hours, self.months = minutes, hours, months
        self.dom, self.dow = dom, dow
        self.days_and, self.wildcard, self.zone = days_and, wildcard, zone
        self._days = {}

    def _day_ok(self, year, month, day):
        key = (year, month, day)
        if key not in self._days:
            dom_hit = any(test(year, month, day) for test in self.dom)
            dow_hit = any(test(year, month, day) for test in self.dow)
            if self.days_and:
                self._days[key] = dom_hit and dow_hit
            else:
                self._days[key] = dom_hit or dow_hit
        return self._days[key]

    def matches(self, wall):
        return (
            wall.minute in self.minutes
            and wall.hour in self.hours
            and wall.month in self.months
            and self._day_ok(wall.year, wall.month, wall.day)
        )

    def fires(self, start, end):
        """Return the UTC instants in (start, end] at which the job fires.

        *start* and *end* are naive UTC, and so are the instants returned.
        """
        zone = self.zone
        now = start.replace(second=0, microsecond=0, tzinfo=UTC) - timedelta(hours=6)
        # Aware datetimes that share a tzinfo compare and add as wall times,
        # which is what the daemon's clock shows.
        seen = now.astimezone(zone)
        first, last = start.replace(tzinfo=UTC), end.replace(tzinfo=UTC)
        result = []
        while now <= last:
            now += ONE_MINUTE
            wall = now.astimezone(zone)
            if self.wildcard:
                fire = self.matches(wall)
            else:
                fire = False
                moment = seen + ONE_MINUTE
                while moment <= wall and not fire:
                    fire = self.matches(moment)
                    moment += ONE_MINUTE
            seen = max(seen, wall)
            if fire and first < now <= last:
                result.append(now.replace(tzinfo=None))
        return result


def _random_plain(rng, low, high, hot):
    """Return (text, values) for a random plain field."""
    def pick():
        return rng.choice(hot) if hot and rng.random() < 0.6 else rng.randint(low, high)

    kind = rng.choice(["star", "star", "step", "one", "list", "range", "rstep", "from"])
    if kind == "star":
        return "*", set(range(low, high + 1))
    if kind == "step":
        step = rng.randint(1, (high - low) // 2 + 1)
        return "*/%d" % step, set(range(low, high + 1, step))
    if kind == "one":
        value = pick()
        return str(value), {value}
    if kind == "list":
        values = sorted({pick() for _ in range(rng.randint(2, 4))})
        return ",".join(map(str, values)), set(values)
    a, b = sorted((pick(), pick()))
    if kind == "range":
        return "%d-%d" % (a, b), set(range(a, b + 1))
    step = rng.randint(1, 20)
    if kind == "rstep":
        return "%d-%d/%d" % (a, b, step), set(range(a, b + 1, step))
    return "%d/%d" % (a, step), set(range(a, high + 1, step))


def _random_dom(rng):
    """Return (text, tests) for the day-of-month field."""
    kind = rng.choice(["star"] * 5 + ["?", "plain", "plain", "L", "LW", "W", "mix"])
    if kind in ("star", "?"):
        return ("*" if kind == "star" else "?"), [lambda y, m, d: True]
    if kind == "plain":
        text, values = _random_plain(rng, 1, 31, [1, 15, 28, 29, 30, 31])
        return text, [lambda y, m, d, v=values: d in v]
    last = [lambda y, m, d: d == calendar.monthrange(y, m)[1]]
    if kind == "L":
        return "L", last
    if kind == "LW":
        return "LW", [lambda y, m, d: d == _last_weekday(y, m)]
    target = rng.choice([1, 2, 15, 29, 30, 31, rng.randint(1, 31)])
    nearest = [lambda y, m, d, t=target: d == _nearest_weekday(y, m, t)]
    if kind == "W":
        return "%dW" % target, nearest
    value = rng.randint(1, 31)
    return "L,%d,%dW" % (value, target), last + nearest + [
        lambda y, m, d, v=value: d == v
    ]


def _random_dow(rng):
    """Return (text, tests) for the day-of-week field."""
    kind = rng.choice(["star"] * 5 + ["?", "plain", "name", "L", "nth", "sun"])
    if kind in ("star", "?"):
        return ("*" if kind == "star" else "?"), [lambda y, m, d: True]
    if kind == "plain":
        # Like "*", "a/n" runs to 7, which is Sunday again.
        text, values = _random_plain(rng, 0, 7, [0, 6, 7])
        values = {value % 7 for value in values}
        return text, [lambda y, m, d, v=values: _weekday(y, m, d) in v]
    if kind == "sun":
        return "7", [lambda y, m, d: _weekday(y, m, d) == 0]
    day = rng.randint(0, 6)
    if kind == "name":
        other = rng.randint(day, 6)
        text = "%s-%s" % (DAYS[day], DAYS[other].lower())
        return text, [lambda y, m, d, a=day, b=other: a <= _weekday(y, m, d) <= b]
    if kind == "L":
        text = rng.choice(["%dL" % day, "%sL" % DAYS[day]])
        return text, [
            lambda y, m, d, w=day: _weekday(y, m, d) == w
            and d + 7 > calendar.monthrange(y, m)[1]
        ]
    nth = rng.randint(1, 5)
    return "%d#%d" % (day, nth), [
        lambda y, m, d, w=day, k=nth: _weekday(y, m, d) == w and (d - 1) // 7 == k - 1
    ]


def _random_months(rng):
    kind = rng.choice(["star"] * 4 + ["names", "plain"])
    if kind == "star":
        return "*", set(range(1, 13))
    if kind == "names":
        a, b = sorted(rng.sample(range(1, 13), 2))
        return "%s-%s" % (MONTHS[a - 1], MONTHS[b - 1]), set(range(a, b + 1))
    return _random_plain(rng, 1, 12, [2, 3, 4, 10, 11])


# (zone, first year, last year, local hours around its changes)
ZONES = [
    ("Europe/Berlin", 1980, 2037, [1, 2, 3]),
    ("Europe/London", 1972, 2037, [0, 1, 2]),
    ("America/New_York", 1970, 2037, [0, 1, 2, 3]),
    ("Australia/Lord_Howe", 1990, 2037, [1, 2]),
    ("Pacific/Chatham", 1990, 2037, [2, 3]),
    ("America/Sao_Paulo", 1990, 2018, [22, 23, 0, 1]),
    ("Asia/Kolkata", 1941, 1945, [22, 23, 0, 1]),
    ("UTC", 2000, 2037, [0, 1, 2]),
]


def _transitions(zone, year):
    """Return the UTC instants in *year* at which the zone's offset changes."""

    def offset(moment):
        return moment.replace(tzinfo=UTC).astimezone(zone).utcoffset()

    found = []
    day = datetime(year, 1, 1)
    while day.year == year:
        # Changes are days apart, so at most one falls inside a day; find
        # its minute by bisection.
        if offset(day) != offset(day + timedelta(days=1)):
            low, high = 0, 24 * 60
            while high - low > 1:
                middle = (low + high) // 2
                if offset(day + middle * ONE_MINUTE) == offset(day):
                    low = middle
                else:
                    high = middle
            found.append(day + high * ONE_MINUTE)
        day += timedelta(days=1)
    return found


class CronDifferentialTests(unittest.TestCase):
    SEED = 20240331
    CASES = 1000
    WINDOW = timedelta(days=2)

    def test_against_brute_force_reference(self):
        rng = random.Random(self.SEED)
        transitions = {}
        checked = 0
        for _ in range(self.CASES):
            key, first, last, hot = rng.choice(ZONES)
            zone = ZoneInfo(key)
            year = rng.randint(first, last)
            if (key, year) not in transitions:
                transitions[key, year] = _transitions(zone, year)
            near = transitions[key, year]
            if near and rng.random() < 0.85:
                spread = rng.choice((90, 90, 1800))
                shift = rng.randint(-spread, spread)
                start = rng.choice(near) + timedelta(minutes=shift)
            else:
                start = datetime(year, rng.randint(1, 12), rng.randint(1, 28),
                                 rng.randint(0, 23), rng.randint(0, 59))
            if rng.random() < 0.3:
                start += timedelta(seconds=rng.randint(0, 59))

            minute_text, minutes = _random_plain(rng, 0, 59, [0, 15, 30, 45, 59])
            hour_text, hours = _random_plain(rng, 0, 23, hot)
            dom_text, dom = _random_dom(rng)
            month_text, months = _random_months(rng)
            dow_text, dow = _random_dow(rng)
            if rng.random() < 0.4:
                # A fixed-time job at the hours the clocks change, every day.
                minutes = set(rng.sample(range(60), rng.randint(1, 4)))
                minute_text = ",".join(map(str, sorted(minutes)))
                hours = set(rng.sample(hot, rng.randint(1, len(hot))))
                hour_text = ",".join(map(str, sorted(hours)))
                dom_text, month_text, dow_text = "*", "*", "*"
                dom = dow = [lambda y, m, d: True]
                months = set(range(1, 13))
            expression = " ".join(
                (minute_text, hour_text, dom_text, month_text, dow_text)
            )
            try:
                cron = Cron(expression, zone)
            except ScheduleError:
                continue
            reference = _Reference(
                minutes,
                hours,
                months,
                dom,
                dow,
                days_and=dom_text[0] in "*?" or dow_text[0] in "*?",
                wildcard=minute_text[0] == "*" or hour_text[0] == "*",
                zone=zone,
            )
            end = start + self.WINDOW
            expected = reference.fires(start, end)
            got = []
            odd = []
            moment = start.replace(tzinfo=UTC)
            while True:
                moment = cron.next_after(moment)
                instant = moment.astimezone(UTC).replace(tzinfo=None)
                if instant > end:
                    break
                got.append(instant)
                # The result must show the wall time and fold that the zone
                # itself gives for that instant.
                canonical = zone.fromutc(instant.replace(tzinfo=zone))
                if (moment.replace(tzinfo=None), moment.fold) != (
                    canonical.replace(tzinfo=None),
                    canonical.fold,
                ):
                    odd.append(moment)
            with self.subTest(zone=key, expression=expression, start=start):
                self.assertEqual(got, expected)
                self.assertEqual(odd, [])
            checked += 1
        self.assertGreater(checked, self.CASES * 0.8)


# ---------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------


class TaskTests(RegistryMixin, unittest.TestCase):
    def test_bare_decorator_registers_with_qualified_name(self):
        @jits.task
        def job(x):
            return x * 2

        self.assertEqual(job.name, __name__ + ".TaskTests."
                         "test_bare_decorator_registers_with_qualified_name.<locals>.job")
        self.assertIs(jits.registry[job.name], job)
        self.assertEqual(job(21), 42)
        self.assertEqual(job.__name__, "job")

    def test_options(self):
        @jits.task(name="t.every", every=timedelta(minutes=2), lease=30, retries=2,
                   retry_delay=1, queue="mail", priority=5)
        def job():
            pass

        self.assertEqual(job.schedule, jits.Every(minutes=2))
        self.assertEqual((job.lease, job.retries, job.queue, job.priority),
                         (30.0, 2, "mail", 5))

    def test_every_and_at_anchor_the_slots(self):
        start = datetime(2026, 1, 1, 4, tzinfo=timezone.utc)

        @jits.task(name="t.anchored", every=3600 * 24, at=start)
        def job():
            pass

        self.assertEqual(job.schedule.next_after(datetime(2026, 2, 2, tzinfo=timezone.utc)),
                         datetime(2026, 2, 2, 4, tzinfo=timezone.utc))

    def test_cron_schedule(self):
        @jits.task(name="t.cron", cron="30 2 * * 1-5", timezone="Europe/Berlin")
        def job():
            pass

        self.assertEqual(job.schedule, Cron("30 2 * * 1-5", "Europe/Berlin"))
        with self.assertRaisesRegex(ValueError, r'minute field: 60 is out of range 0-59'):
            jits.task(cron="60 * * * *")(lambda: None)
        with self.assertRaisesRegex(ValueError, "cannot be combined"):
            jits.task(cron="* * * * *", every=5)(lambda: None)
        with self.assertRaisesRegex(TypeError, "cron must be a str"):
            jits.task(cron=5)(lambda: None)

    def test_non_callable_is_rejected(self):
        with self.assertRaisesRegex(TypeError, "needs a callable"):
            jits.task(42)
        with self.assertRaisesRegex(TypeError, "needs a callable"):
            jits.task(every=5)("not a function")
        with self.assertRaisesRegex(TypeError, r"name="):
            jits.task("a.name")

    def test_bad_every_is_rejected_at_definition(self):
        for bad, error, pattern in [
            (0, ValueError, "positive"),
            (-1, ValueError, "positive"),
            (timedelta(0), ValueError, "positive"),
            (timedelta(seconds=-3), ValueError, "positive"),
            (float("inf"), ValueError, "positive"),
            ("5", TypeError, "seconds .int or float., a timedelta or an Every"),
            (True, TypeError, "seconds"),
        ]:
            with self.subTest(every=bad):
                with self.assertRaisesRegex(error, pattern):
                    jits.task(every=bad)(lambda: None)

    def test_other_bad_options(self):
        cases = [
            (dict(lease=0), ValueError, "lease must be a number >= 1"),
            (dict(lease=0.001), ValueError, "lease must be a number >= 1"),
            (dict(priority=2**31), ValueError, "priority must be an int from"),
            (dict(takes_context="yes"), TypeError, "takes_context must be True"),
            (dict(name="django:x.y"), ValueError, "kept for Django's Tasks"),
            (dict(every=1e12), ValueError, "no next run before the year 9999"),
            (dict(every=timedelta(days=999999999)), ValueError, "no next run"),
            (dict(every=jits.Every(hours=1, anchor=datetime(2026, 1, 1)),
                  at=datetime(2026, 1, 2)), ValueError, "give only one"),
            (dict(retries=-1), ValueError, "retries must be an int >= 0"),
            (dict(retries=1.5), TypeError, "retries"),
            (dict(retry_delay=-1), ValueError, "retry_delay"),
            (dict(priority="high"), TypeError, "priority must be an int"),
            (dict(queue=""), ValueError, "queue must be a name"),
            (dict(at="tomorrow"), TypeError, "at must be a datetime"),
            (dict(timezone="UTC"), ValueError, "cron"),
        ]
        for options, error, pattern in cases:
            with self.subTest(options=options):
                with self.assertRaisesRegex(error, pattern):
                    jits.task(**options)(lambda: None)

    def test_script_tasks_are_named_after_the_script_file(self):
        """A task in ``python app.py`` must have the name ``import app`` gives."""
        folder = tempfile.mkdtemp(dir=TMP)
        with open(os.path.join(folder, "app.py"), "w") as f:
            f.write("import jits\n@jits.task\ndef tick():\n    pass\n"
                    "print(tick.name)\n")
        out = subprocess.run([sys.executable, "app.py"], cwd=folder, text=True,
                             capture_output=True, timeout=60,
                             env=dict(os.environ, PYTHONPATH=HERE))
        self.assertEqual(out.stdout.strip(), "app.tick", out.stderr)

    def test_same_name_for_another_function_is_rejected(self):
        jits.task(name="t.dup")(lambda: 1)

        def other():
            pass

        with self.assertRaisesRegex(ValueError, "already registered"):
            jits.task(name="t.dup")(other)

    def test_redefining_the_same_function_replaces_it(self):
        def job():
            return 1

        first = jits.task(name="t.same")(job)
        second = jits.task(name="t.same", every=5)(job)
        self.assertIs(jits.registry["t.same"], second)
        self.assertIsNot(first, second)


class EnqueueTests(RegistryMixin, unittest.TestCase):
    def setUp(self):
        super().setUp()
        self.scheduler, self.clock = self.memory_scheduler()

        @jits.task(name="t.echo")
        def echo(*args, **kwargs):
            return [args, kwargs]

        self.echo = echo

    def enqueue(self, *args, **kwargs):
        return self.scheduler.enqueue(self.echo, None, args, kwargs)

    def test_returns_a_string_id_and_stores_json(self):
        job = self.enqueue(1, "two", [3.5, None], flag=True, nested={"a": [1]})
        self.assertIsInstance(job, str)
        row = self.scheduler.store.get(job)
        self.assertEqual(json.loads(row["args"]),
                         [[1, "two", [3.5, None]], {"flag": True, "nested": {"a": [1]}}])
        self.assertEqual(row["status"], "ready")

    def test_arguments_json_cannot_hold_raise_type_error(self):
        cases = [
            ((object(),), {}, r"argument 0 is of type object"),
            ((), {"when": datetime(2026, 1, 1)},
             r"keyword argument .when. is of type datetime"),
            (({1: "x"},), {}, r"a key of argument 0 is 1"),
            (([1, {2, 3}],), {}, r"argument 0\[1\] is of type set"),
            ((float("nan"),), {}, r"float nan"),
            ((b"bytes",), {}, r"is of type bytes"),
        ]
        for args, kwargs, pattern in cases:
            with self.subTest(args=args, kwargs=kwargs):
                with self.assertRaisesRegex(TypeError, pattern):
                    self.enqueue(*args, **kwargs)
        self.assertEqual(self.scheduler.store.rows(), [])

    def test_arguments_the_function_cannot_take_raise_type_error(self):
        @jits.task(name="t.two")
        def two(a, b, *, c=0):
            pass

        with self.assertRaisesRegex(TypeError, r"task t.two\(a, b, \*, c=0\) cannot "
                                    r"take these arguments: missing a required"):
            self.scheduler.enqueue(two, None, (1,), {})
        with self.assertRaisesRegex(TypeError, "unexpected keyword argument 'd'"):
            self.scheduler.enqueue(two, None, (1, 2), {"d": 3})
        self.scheduler.enqueue(two, None, (1, 2), {"c": 3})

    def test_enqueue_at_timedelta_and_datetime(self):
        job = self.scheduler.enqueue(self.echo, timedelta(minutes=5), (), {})
        self.assertEqual(self.scheduler.store.get(job)["due"], self.clock.wall + 300)
        when = datetime(2030, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
        job = self.scheduler.enqueue(self.echo, when, (), {})
        self.assertEqual(self.scheduler.store.get(job)["due"], when.timestamp())

    def test_naive_datetime_is_read_in_the_default_zone(self):
        naive = datetime(2030, 1, 1, 12)
        aware = naive.replace(tzinfo=jits._default_timezone())
        a = self.scheduler.enqueue(self.echo, naive, (), {})
        b = self.scheduler.enqueue(self.echo, aware, (), {})
        self.assertEqual(self.scheduler.store.get(a)["due"],
                         self.scheduler.store.get(b)["due"])

    def test_bad_when(self):
        with self.assertRaisesRegex(ValueError, "timedelta >= 0"):
            self.scheduler.enqueue(self.echo, timedelta(seconds=-1), (), {})
        with self.assertRaisesRegex(TypeError, "datetime or a timedelta"):
            self.scheduler.enqueue(self.echo, 5, (), {})

    def test_task_methods_use_the_default_scheduler(self):
        old = jits._default
        jits._default = self.scheduler
        self.addCleanup(setattr, jits, "_default", old)
        job = self.echo.enqueue(1, x=2)
        later = self.echo.enqueue_at(timedelta(seconds=30), 3)
        self.assertEqual(self.scheduler.poll(), 1)
        row = self.scheduler.store.get(job)
        self.assertEqual((row["status"], json.loads(row["result"])),
                         ("succeeded", [[1], {"x": 2}]))
        self.assertEqual(self.scheduler.store.get(later)["status"], "ready")


# ---------------------------------------------------------------------------
# Stores: one contract, run against every backend that is available
# ---------------------------------------------------------------------------


def _claim_row(store, names=("t.a",), now=100.0, limit=10, owner="w1", lease=30.0, **kw):
    return store.claim(set(names), now, limit, owner, {n: lease for n in names}, **kw)


class StoreContract:
    """Behaviour every store must show; subclasses say how to build one."""

    def make_store(self):
        raise NotImplementedError

    def setUp(self):
        super().setUp()
        self.store = self.make_store()
        self.store.ensure_schema()
        with self.store._transaction(write=True) as cur:
            cur.execute("DELETE FROM jits_job")
            cur.execute("DELETE FROM jits_run")

    def add(self, job_id, task="t.a", due=50.0, priority=0, queue="default"):
        self.store.enqueue(job_id, task, "[[],{}]", due, queue, priority, 10.0)

    def test_claims_only_due_rows_of_known_tasks(self):
        self.add("j1", due=50)
        self.add("j2", due=500)
        self.add("j3", task="t.other", due=50)
        claims = _claim_row(self.store)
        self.assertEqual([c.id for c in claims], ["j1"])
        self.assertEqual((claims[0].attempt, claims[0].claim), (1, 1))
        row = self.store.get("j1")
        self.assertEqual((row["status"], row["owner"], row["due"]), ("running", "w1", 130.0))
        self.assertEqual(_claim_row(self.store), [])

    def test_priority_then_due_order_and_limit(self):
        self.add("low-early", due=10, priority=0)
        self.add("high-late", due=40, priority=9)
        self.add("low-late", due=20, priority=0)
        claims = _claim_row(self.store, limit=2)
        self.assertEqual([c.id for c in claims], ["high-late", "low-early"])

    def test_one_priority_claims_in_due_order(self):
        self.add("late", due=40, priority=9)
        self.add("early", due=10, priority=0)
        claims = _claim_row(self.store, limit=1, by_priority=False)
        self.assertEqual([c.id for c in claims], ["early"])

    def test_queue_and_only_filters(self):
        self.add("mail", queue="mail")
        self.add("plain")
        self.assertEqual([c.id for c in _claim_row(self.store, queues=("mail",))], ["mail"])
        self.assertEqual([c.id for c in _claim_row(self.store, only="plain")], ["plain"])

    def test_concurrent_claims_never_share_a_row(self):
        for i in range(60):
            self.add("j%02d" % i)
        got, errors = [], []

        def worker(n):
            try:
                for _ in range(30):
                    got.extend(c.id for c in _claim_row(self.store, limit=3,
                                                        owner="w%d" % n))
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                self.close_thread()

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(sorted(got), ["j%02d" % i for i in range(60)])

    def close_thread(self):
        """Release this thread's connection (Django keeps one per thread)."""

    def test_expired_lease_can_be_reclaimed_and_fences_the_old_claim(self):
        self.add("j1")
        old = _claim_row(self.store, now=100, lease=10)[0]
        self.assertEqual(_claim_row(self.store, now=109.9), [])
        new = _claim_row(self.store, now=110.0, owner="w2")[0]
        self.assertEqual((new.claim, new.attempt), (2, 2))
        self.assertFalse(self.store.renew(old, 200))
        self.assertFalse(self.store.finish(old, "succeeded", None, 50, 1, "succeeded",
                                           None, None, 100, 105, "w1"))
        self.assertTrue(self.store.renew(new, 300))
        self.assertEqual(_claim_row(self.store, now=299), [])
        self.assertTrue(self.store.finish(new, "succeeded", None, 50, 2, "succeeded",
                                          "42", None, 110, 111, "w2"))
        row = self.store.get("j1")
        self.assertEqual((row["status"], row["due"], row["result"], row["runs"]),
                         ("succeeded", None, "42", 1))
        self.assertEqual([r["owner"] for r in self.store.runs("j1")], ["w2"])

    def test_finished_row_is_never_claimed_again(self):
        """A claimer that read the row before it finished must not take it."""
        self.add("j1")
        claim = _claim_row(self.store)[0]
        self.store.finish(claim, "succeeded", None, 50, 1, "succeeded", None, None, 100,
                          101, "w1")
        with self.store._transaction(write=True) as cur:
            cur.execute(self.store._sql(jits._SQL_CLAIM),
                        (999, "late", 500, "j1", claim.claim, 500))
            self.assertEqual(cur.rowcount, 0)

    def test_release_makes_the_row_due_again(self):
        self.add("j1")
        claim = _claim_row(self.store)[0]
        self.assertTrue(self.store.release(claim, 100.0))
        again = _claim_row(self.store, now=100.0)
        self.assertEqual([c.id for c in again], ["j1"])

    def test_sync_inserts_once_and_moves_changed_schedules(self):
        self.store.sync_tasks([("t.p", "every 10s", 110.0, "default", 0)], 100.0)
        self.store.sync_tasks([("t.p", "every 10s", 120.0, "default", 0)], 105.0)
        self.assertEqual(self.store.get("t.p")["due"], 110.0)
        self.store.sync_tasks([("t.p", "every 1m", 160.0, "default", 0)], 105.0)
        self.assertEqual(self.store.get("t.p")["due"], 160.0)
        claim = _claim_row(self.store, names=("t.p",), now=170)[0]
        self.store.sync_tasks([("t.p", "every 5s", 175.0, "default", 0)], 170.0)
        self.assertEqual(self.store.get("t.p")["status"], "running")
        self.assertEqual(claim.schedule, "every 1m")

    def test_unknown_tasks(self):
        self.add("j1", task="gone.task")
        self.add("j2", task="t.a")
        self.add("j3", task="later.task", due=1000)
        self.assertEqual(self.store.unknown_tasks({"t.a"}, 100.0), ["gone.task"])

    def test_now_follows_the_database_clock_not_the_hosts(self):
        """Hosts whose clocks disagree must still agree on when leases end."""
        skewed = self.make_store()
        skewed._time = lambda: time.time() + 3600  # this host runs an hour fast
        if self.store.vendor == "sqlite":
            self.assertAlmostEqual(skewed.now() - 3600, time.time(), delta=5)
        else:
            self.assertAlmostEqual(skewed.now(), time.time(), delta=5)

    def test_nothing_due_among_many_rows(self):
        for i in range(300):
            self.add("f%03d" % i, due=10_000 + i)
        self.assertEqual(_claim_row(self.store, now=100), [])


class MemoryStoreTests(StoreContract, unittest.TestCase):
    def make_store(self):
        return jits.SQLiteStore(":memory:")


class FileStoreTests(StoreContract, unittest.TestCase):
    def make_store(self):
        return jits.SQLiteStore(tempfile.mktemp(dir=TMP, suffix=".sqlite3"))

    def close_thread(self):
        self.store.close()

    def test_periodic_tasks_come_back_after_the_file_or_table_is_lost(self):
        """A deleted store file or dropped table must not stop periodic tasks."""
        saved = dict(jits.registry)
        self.addCleanup(lambda: (jits.registry.clear(), jits.registry.update(saved)))
        jits.registry.clear()
        jits.task(name="t.lost", every=10)(lambda: None)
        clock = FakeClock()
        s = jits.Scheduler(self.store, clock=clock.monotonic, now=clock.now,
                           min_interval=0)
        s.poll()
        self.assertIsNotNone(self.store.get("t.lost"))
        os.remove(self.store.path)
        with self.assertLogs("jits", "WARNING"):
            s.poll()
        s.poll()
        self.assertIsNotNone(self.store.get("t.lost"))
        with self.store._transaction(write=True) as cur:
            cur.execute("DROP TABLE jits_job")
        with mock.patch.object(jits.logger, "error") as error:
            for _ in range(3):
                s.poll()
        self.assertLessEqual(error.call_count, 1)  # the poll that found it gone
        self.assertIsNotNone(self.store.get("t.lost"))

    def test_blocking_poll_waits_briefly_for_another_writer(self):
        """A request must not wait the whole busy timeout for SQLite's lock."""
        other = sqlite3.connect(self.store.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        self.addCleanup(other.close)
        s = jits.Scheduler(self.store, min_interval=0)
        app = jits.WSGIMiddleware(lambda e, sr: [b"ok"], s)
        t0 = time.monotonic()
        for _ in range(3):
            self.assertEqual(app({}, None), [b"ok"])
        self.assertLess(time.monotonic() - t0, 3 * 2.0)
        other.execute("ROLLBACK")

    def test_claim_in_due_order_reads_the_index_in_order(self):
        """Draining a backlog must not sort every due row for each claim."""
        sql = jits._SQL_DUE.format(names="task IN (?)", queues="", only="",
                                   order="due", lock="")
        with self.store._transaction(write=False) as cur:
            cur.execute("EXPLAIN QUERY PLAN " + sql.replace("%s", "?"),
                        (100.0, "t.a", 1))
            plan = " ".join(str(row[-1]) for row in cur.fetchall())
        self.assertIn("(due<?)", plan)  # an index led by due
        self.assertNotIn("TEMP B-TREE", plan)

    def test_deleted_file_is_recreated_with_a_warning(self):
        self.add("j1")
        os.remove(self.store.path)
        with self.assertLogs("jits", "WARNING") as logs:
            self.add("j2")
        self.assertIn("deleted or replaced", logs.output[0])
        self.assertEqual([r["id"] for r in self.store.rows()], ["j2"])


class DjangoStoreContract(StoreContract):
    alias = "default"

    def make_store(self):
        return jits.DjangoStore(self.alias)

    def close_thread(self):
        from django.db import connections

        connections.close_all()


@needs_django
class DjangoSQLiteStoreTests(DjangoStoreContract, unittest.TestCase):
    alias = "default"


@skip_unless_db(HAVE_PG, "PostgreSQL")
class DjangoPostgresStoreTests(DjangoStoreContract, unittest.TestCase):
    alias = "pg"

    @unittest.skipUnless(hasattr(os, "fork"), "needs fork()")
    def test_forked_child_opens_its_own_connection(self):
        """A child of fork() must not share the parent's database session."""
        from django.db import connections

        def backend_pid():
            with connections["pg"].cursor() as cur:
                cur.execute("SELECT pg_backend_pid()")
                return cur.fetchone()[0]

        self.add("j1")
        parent = backend_pid()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report its session, use the store, leave
            code = 1
            try:
                child = backend_pid()
                for _ in range(20):
                    self.store.get("j1")
                os.write(write, str(child).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        _, status = os.waitpid(pid, 0)
        child = int(os.read(read, 64) or b"0")
        os.close(read)
        self.assertEqual(os.waitstatus_to_exitcode(status) if hasattr(
            os, "waitstatus_to_exitcode") else status >> 8, 0)
        self.assertNotEqual(child, parent)
        self.assertEqual(backend_pid(), parent)  # the parent's session still works
        self.assertEqual(self.store.get("j1")["id"], "j1")


@skip_unless_db(HAVE_MY, "MariaDB")
class DjangoMySQLStoreTests(DjangoStoreContract, unittest.TestCase):
    alias = "mysql"


# ---------------------------------------------------------------------------
# Scheduler: throttle, schedules, failures, leases (fake clocks)
# ---------------------------------------------------------------------------


class SchedulerTests(RegistryMixin, unittest.TestCase):
    def setUp(self):
        super().setUp()
        self.scheduler, self.clock = self.memory_scheduler()
        self.calls = []

    def test_throttle_uses_the_monotonic_clock(self):
        @jits.task(name="t.count")
        def count():
            self.calls.append(1)

        s = self.scheduler
        s.enqueue(count, None, (), {})
        self.assertEqual(s.maybe_poll(), 1)
        s.enqueue(count, None, (), {})
        self.clock.mono += 4.9
        self.clock.wall += 86400  # a wall-clock jump forward changes nothing
        self.assertEqual(s.maybe_poll(), 0)
        self.clock.mono += 0.1
        self.assertEqual(s.maybe_poll(), 1)
        self.clock.wall -= 7 * 86400  # nor does a jump back stop polling
        s.enqueue(count, None, (), {})
        self.clock.mono += 5
        self.assertEqual(s.maybe_poll(), 1)
        self.assertEqual(len(self.calls), 3)

    def test_periodic_runs_do_not_drift(self):
        @jits.task(name="t.slow", every=10, takes_context=True)
        def slow(ctx):
            self.calls.append(ctx.scheduled.timestamp())
            self.clock.advance(3)  # the run itself takes three seconds

        s = self.scheduler
        s.poll()  # first poll stores the row, due at the next slot
        for _ in range(5):
            due = s.store.get("t.slow")["due"]
            self.clock.wall = due + 0.5
            self.assertEqual(s.poll(), 1)
        self.assertEqual([c - self.calls[0] for c in self.calls], [0, 10, 20, 30, 40])
        self.assertEqual(self.calls[0] % 10, 0)

    def test_cron_task_runs_on_its_slots(self):
        @jits.task(name="t.cron5", cron="*/5 * * * *", takes_context=True)
        def every_five(ctx):
            self.calls.append(ctx.scheduled)

        s = self.scheduler
        s.poll()
        for _ in range(3):
            self.clock.wall = s.store.get("t.cron5")["due"] + 1
            self.assertEqual(s.poll(), 1)
        self.assertEqual([c.minute % 5 for c in self.calls], [0, 0, 0])
        self.assertEqual([(b - a).total_seconds() for a, b in
                          zip(self.calls, self.calls[1:])], [300, 300])
        self.assertEqual(s.store.get("t.cron5")["schedule"], 'cron "*/5 * * * *" UTC')

    def test_quiet_spell_runs_once(self):
        @jits.task(name="t.minutely", every=60)
        def minutely():
            self.calls.append(self.clock.wall)

        s = self.scheduler
        s.poll()
        self.clock.advance(3 * 3600 + 17)
        self.assertEqual(s.poll(), 1)
        self.assertEqual(s.poll(), 0)
        row = s.store.get("t.minutely")
        self.assertGreater(row["due"], self.clock.wall)
        self.assertLessEqual(row["due"], self.clock.wall + 60)
        self.assertEqual(len(self.calls), 1)

    def test_failure_is_logged_recorded_and_rescheduled(self):
        @jits.task(name="t.bad", every=10)
        def bad():
            raise RuntimeError("boom")

        @jits.task(name="t.good")
        def good():
            self.calls.append("good")

        s = self.scheduler
        s.poll()
        self.clock.advance(10)
        s.enqueue(good, None, (), {})
        with self.assertLogs("jits", "ERROR") as logs:
            self.assertEqual(s.poll(), 2)
        self.assertIn("task t.bad failed", "\n".join(logs.output))
        self.assertIn("RuntimeError: boom", "\n".join(logs.output))
        row = s.store.get("t.bad")
        self.assertEqual((row["outcome"], row["failures"], row["status"]),
                         ("failed", 1, "ready"))
        self.assertIn("RuntimeError: boom", row["error"])
        self.assertGreater(row["due"], self.clock.wall)
        self.assertEqual(self.calls, ["good"])

    def test_retries_back_off_exponentially(self):
        @jits.task(name="t.flaky", retries=2, retry_delay=10)
        def flaky():
            self.calls.append(self.clock.wall)
            raise ValueError("nope")

        s = self.scheduler
        job = s.enqueue(flaky, None, (), {})
        with self.assertLogs("jits", "WARNING"):
            s.poll()
            self.assertEqual(s.store.get(job)["due"], self.clock.wall + 10)
            self.clock.advance(10)
            s.poll()
            self.assertEqual(s.store.get(job)["due"], self.clock.wall + 20)
            self.clock.advance(20)
            s.poll()
        row = s.store.get(job)
        self.assertEqual((row["status"], row["attempts"], row["due"]), ("failed", 3, None))
        self.assertEqual([r["attempt"] for r in s.store.runs(job)], [1, 2, 3])
        self.assertEqual(len(self.calls), 3)

    def test_sys_exit_in_a_task_is_a_failure_not_a_crash(self):
        @jits.task(name="t.exit", retries=1, retry_delay=0)
        def leave():
            self.calls.append(1)
            raise SystemExit(3)

        s = self.scheduler
        job = s.enqueue(leave, None, (), {})
        app = jits.WSGIMiddleware(lambda e, sr: [b"served"], s)
        with self.assertLogs("jits", "ERROR"):
            for _ in range(5):
                self.clock.advance(6)
                self.assertEqual(app({}, None), [b"served"])
        row = s.store.get(job)
        self.assertEqual((row["status"], row["attempts"], len(self.calls)),
                         ("failed", 2, 2))
        self.assertIn("SystemExit: 3", row["error"])

    def test_schedule_changed_while_running_is_used_for_the_next_run(self):
        def run():
            # The code is redeployed while the task runs.
            jits.task(name="t.moving", every=60)(run)

        jits.task(name="t.moving", every=3600)(run)
        s = self.scheduler
        s.poll()
        self.clock.wall = s.store.get("t.moving")["due"] + 1
        self.assertEqual(s.poll(), 1)
        row = s.store.get("t.moving")
        self.assertEqual(row["schedule"], "every 1m")
        self.assertLessEqual(row["due"], self.clock.wall + 60)

    def test_shutdown_never_hangs_on_an_unreachable_store(self):
        class Stuck(jits.SQLiteStore):
            def release(self, claim, due):
                time.sleep(30)

        s = jits.Scheduler(Stuck(":memory:"), grace=0.2)
        gate = threading.Event()
        jits.task(name="t.hold")(lambda: gate.wait(10))
        s.enqueue("t.hold", None, (), {})
        worker = threading.Thread(target=s.poll, daemon=True)
        worker.start()
        self.assertTrue(wait_for(lambda: s._inflight))
        t0 = time.monotonic()
        s.shutdown()
        self.assertLess(time.monotonic() - t0, 5)
        gate.set()

    def test_unknown_stored_name_is_logged_once_and_left_alone(self):
        s = self.scheduler
        s.store.enqueue("orphan", "gone.task", "[[],{}]", 0.0, "default", 0, 0.0)
        with self.assertLogs("jits", "WARNING") as logs:
            self.assertEqual(s.poll(), 0)
        self.assertIn("'gone.task', which is not registered", logs.output[0])
        row = s.store.get("orphan")
        self.assertEqual((row["status"], row["claim"]), ("ready", 0))

    def test_abandoned_claim_runs_again_after_its_lease(self):
        @jits.task(name="t.once", lease=30)
        def once():
            self.calls.append(1)

        s = self.scheduler
        job = s.enqueue(once, None, (), {})
        # A process claims the job and dies without a word.
        s._sync(self.clock.wall)
        dead = _claim_row(s.store, names=("t.once",), now=self.clock.wall, lease=30)
        self.assertEqual(len(dead), 1)
        self.assertEqual(s.poll(), 0)
        self.clock.advance(31)
        self.assertEqual(s.poll(), 1)
        row = s.store.get(job)
        self.assertEqual((row["status"], row["attempts"], len(self.calls)),
                         ("succeeded", 2, 1))

    def test_at_task_runs_once(self):
        when = datetime.fromtimestamp(self.clock.wall + 30, timezone.utc)

        @jits.task(name="t.at", at=when)
        def at():
            self.calls.append(1)

        s = self.scheduler
        self.assertEqual(s.poll(), 0)
        self.clock.advance(31)
        self.assertEqual(s.poll(), 1)
        self.clock.advance(3600)
        self.assertEqual(s.poll(), 0)
        self.assertEqual(s.store.get("t.at")["status"], "succeeded")

    def test_changed_schedule_in_code_moves_the_row(self):
        jits.task(name="t.p", every=3600)(lambda: None)
        s = self.scheduler
        s.poll()
        first = s.store.get("t.p")["due"]
        jits.task(name="t.p", every=60)(lambda: None)
        s.poll()
        row = s.store.get("t.p")
        self.assertEqual(row["schedule"], "every 1m")
        self.assertLess(row["due"], first)

    def test_async_task_and_non_json_result(self):
        @jits.task(name="t.async")
        async def coro(x):
            await asyncio.sleep(0)
            return x + 1

        @jits.task(name="t.obj")
        def obj():
            return object()

        s = self.scheduler
        a = s.enqueue(coro, None, (41,), {})
        b = s.enqueue(obj, None, (), {})
        s.poll()
        self.assertEqual(s.store.get(a)["result"], "42")
        self.assertEqual((s.store.get(b)["status"], s.store.get(b)["result"]),
                         ("succeeded", None))

    def test_store_errors_are_logged_once_per_interval_and_never_raised(self):
        path = tempfile.mktemp(dir=TMP)
        with open(path, "wb") as f:
            f.write(b"garbage, not a database " * 64)
        broken = jits.Scheduler(jits.SQLiteStore(path), clock=self.clock.monotonic,
                                now=self.clock.now, min_interval=0)
        with self.assertLogs("jits", "ERROR") as logs:
            for _ in range(50):
                self.assertEqual(broken.maybe_poll(), 0)
            self.clock.advance(5)
            broken.maybe_poll()
        self.assertEqual(len(logs.output), 2)
        self.assertIn("49 similar errors not logged", logs.output[1])

    def test_scheduler_arguments_are_checked(self):
        store = jits.SQLiteStore(":memory:")
        with self.assertRaisesRegex(TypeError, "store must be a jits store"):
            jits.Scheduler("jits.sqlite3")
        with self.assertRaisesRegex(TypeError, "queues must be a list of queue names"):
            jits.Scheduler(store, queues="mail")
        with self.assertRaisesRegex(TypeError, "queues must be a list"):
            jits.Scheduler(store, queues=[""])
        with self.assertRaisesRegex(TypeError, "clock must be a function"):
            jits.Scheduler(store, clock=5)
        with self.assertRaisesRegex(TypeError, "django_tasks must be True or False"):
            jits.Scheduler(store, django_tasks="no")
        with self.assertRaisesRegex(jits.StoreError, "is a folder"):
            jits.SQLiteStore(TMP)
        with self.assertRaisesRegex(jits.StoreError, "does not exist"):
            jits.SQLiteStore(os.path.join(TMP, "no", "such", "folder", "x.sqlite3"))
        with self.assertRaisesRegex(TypeError, "threaded must be True or False"):
            jits.Scheduler(store, threaded="yes")
        with self.assertRaisesRegex(ValueError, "num_threads must be an int from 1 to 1000"):
            jits.Scheduler(store, num_threads=0)
        with self.assertRaisesRegex(TypeError, "num_threads"):
            jits.Scheduler(store, num_threads=2.0)
        with self.assertRaisesRegex(ValueError, "min_interval must be a number >= 0"):
            jits.Scheduler(store, min_interval=-1)

    def test_blocking_poll_stops_starting_runs_after_its_budget(self):
        s, clock = self.memory_scheduler(budget=1.0)

        @jits.task(name="t.tenth")
        def tenth():
            clock.advance(0.3)  # each run takes 0.3 s of the fake clock

        for _ in range(10):
            s.enqueue(tenth, None, (), {})
        self.assertEqual(s.poll(), 4)  # started at 0, 0.3, 0.6 and 0.9 s
        self.assertEqual(s.poll(), 4)
        self.assertEqual(s.poll(), 2)

    def test_run_now(self):
        @jits.task(name="t.manual")
        def manual():
            return "done"

        row = self.scheduler.run_now("t.manual")
        self.assertEqual((row["outcome"], row["result"]), ("succeeded", '"done"'))
        with self.assertRaisesRegex(jits.JitsError, "no task is registered as 'nope'"):
            self.scheduler.run_now("nope")


# ---------------------------------------------------------------------------
# Threaded mode: the worker pool
# ---------------------------------------------------------------------------


class PoolTests(RegistryMixin, unittest.TestCase):
    def threaded(self, num_threads=3):
        store = jits.SQLiteStore(tempfile.mktemp(dir=TMP, suffix=".sqlite3"))
        scheduler = jits.Scheduler(store, threaded=True, num_threads=num_threads,
                                   min_interval=0)
        self.addCleanup(scheduler.shutdown, 1)
        return scheduler

    def test_pool_never_exceeds_its_size_and_drains_a_backlog(self):
        s = self.threaded(3)
        gate = threading.Event()
        lock = threading.Lock()
        running = [0, 0]  # now, most at once

        @jits.task(name="t.wait")
        def wait(n):
            with lock:
                running[0] += 1
                running[1] = max(running[1], running[0])
            gate.wait(10)
            with lock:
                running[0] -= 1

        jobs = [s.enqueue(wait, None, (n,), {}) for n in range(12)]
        self.assertEqual(s.poll(), 3)
        self.assertEqual(s.poll(), 0)  # full pool: nothing more is claimed
        self.assertTrue(wait_for(lambda: running[0] == 3))
        gate.set()
        done = lambda: all(s.store.get(j)["status"] == "succeeded" for j in jobs)
        self.assertTrue(wait_for(done, 20))
        self.assertEqual(running[1], 3)
        self.assertLessEqual(len(s._pool._threads), 3)

    def test_workers_survive_task_exceptions(self):
        s = self.threaded(1)

        @jits.task(name="t.raise")
        def bad():
            raise KeyError("x")

        @jits.task(name="t.ok")
        def ok():
            return 1

        with self.assertLogs("jits", "ERROR"):
            bad_job = s.enqueue(bad, None, (), {})
            s.poll()
            self.assertTrue(wait_for(lambda: s.store.get(bad_job)["status"] == "failed"))
        ok_job = s.enqueue(ok, None, (), {})
        s.poll()
        self.assertTrue(wait_for(lambda: s.store.get(ok_job)["status"] == "succeeded"))
        self.assertEqual(len(s._pool._threads), 1)

    def test_same_job_is_never_queued_twice_in_one_process(self):
        """A run whose lease lapsed is adopted, not started a second time."""
        clock = FakeClock()
        store = jits.SQLiteStore(tempfile.mktemp(dir=TMP, suffix=".sqlite3"))
        s = jits.Scheduler(store, threaded=True, num_threads=4, min_interval=0,
                           now=clock.now)
        self.addCleanup(s.shutdown, 1)
        gate, runs = threading.Event(), []

        @jits.task(name="t.long", lease=10)
        def long_task():
            runs.append(1)
            gate.wait(10)

        job = s.enqueue(long_task, None, (), {})
        self.assertEqual(s.poll(), 1)
        self.assertTrue(wait_for(lambda: runs))
        clock.advance(60)  # the lease lapses without renewal
        self.assertEqual(s.poll(), 0)
        gate.set()
        self.assertTrue(wait_for(lambda: store.get(job)["status"] == "succeeded"))
        self.assertEqual(len(runs), 1)

    def test_maybe_poll_never_waits_for_a_running_poll(self):
        s = self.threaded(2)
        entered, release = threading.Event(), threading.Event()
        real_claim = s.store.claim
        calls = []

        def slow_claim(*args, **kwargs):
            calls.append(1)
            entered.set()
            release.wait(10)
            return real_claim(*args, **kwargs)

        s.store.claim = slow_claim
        jits.task(name="t.any")(lambda: None)
        s.store.enqueue("j", "t.any", "[[],{}]", 0.0, "default", 0, 0.0)
        poller = threading.Thread(target=s.poll)
        poller.start()
        self.assertTrue(entered.wait(10))
        t0 = time.monotonic()
        for _ in range(100):
            self.assertEqual(s.maybe_poll(), 0)
        self.assertLess(time.monotonic() - t0, 1.0)
        release.set()
        poller.join(10)
        self.assertEqual(len(calls), 1)

    def test_interpreter_exit_does_not_hang_and_gives_claims_back(self):
        path = tempfile.mktemp(dir=TMP, suffix=".sqlite3")
        script = textwrap.dedent("""
            import sys, time
            sys.path.insert(0, %r)
            import jits
            @jits.task(name="t.sleepy")
            def sleepy():
                time.sleep(60)
            s = jits.Scheduler(jits.SQLiteStore(%r), threaded=True, grace=0.5)
            s.enqueue(sleepy, None, (), {})
            s.poll()
            time.sleep(0.5)
            print("leaving", flush=True)
        """ % (HERE, path))
        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "-c", script], capture_output=True,
                             text=True, timeout=30)
        self.assertIn("leaving", out.stdout, out.stderr)
        self.assertLess(time.monotonic() - t0, 15)
        row = jits.SQLiteStore(path).rows()[0]
        self.assertEqual((row["status"], row["owner"]), ("ready", None))


# ---------------------------------------------------------------------------
# Middleware and Django integration
# ---------------------------------------------------------------------------


class Request:
    """A stand-in request: the middleware never looks inside it."""


class WSGIMiddlewareTests(RegistryMixin, unittest.TestCase):
    def test_polls_then_calls_the_app(self):
        s, clock = self.memory_scheduler(min_interval=0)
        ran = []
        t = jits.task(name="t.w")(lambda: ran.append(1))
        s.enqueue(t, None, (), {})

        def app(environ, start_response):
            start_response("200 OK", [])
            return [b"ok:%d" % len(ran)]

        statuses = []
        body = jits.WSGIMiddleware(app, s)({}, lambda st, h: statuses.append(st))
        self.assertEqual((body, statuses), ([b"ok:1"], ["200 OK"]))

    def test_broken_store_never_breaks_the_response(self):
        bad = tempfile.mktemp(dir=TMP)
        with open(bad, "wb") as f:
            f.write(b"this is not a database" * 100)
        s = jits.Scheduler(jits.SQLiteStore(bad), min_interval=0)
        app = jits.WSGIMiddleware(lambda e, sr: sr("200 OK", []) or [b"fine"], s)
        with self.assertLogs("jits", "ERROR") as logs:
            for _ in range(20):
                self.assertEqual(app({}, lambda *a: None), [b"fine"])
        self.assertEqual(len(logs.output), 1)
        self.assertIn("not a database", logs.output[0])


@needs_django
class DjangoMiddlewareTests(RegistryMixin, unittest.TestCase):
    def setUp(self):
        super().setUp()
        scheduler = jits.Scheduler(jits.DjangoStore("default"), min_interval=0)
        old = jits._default
        jits._default = scheduler
        self.addCleanup(setattr, jits, "_default", old)
        self.scheduler = scheduler
        self.ran = []
        self.t = jits.task(name="t.dj")(lambda n: self.ran.append(n))

    def test_new_style_call(self):
        self.t.enqueue(1)
        mw = jits.JitsMiddleware(lambda request: "response")
        self.assertEqual(mw(Request()), "response")
        self.assertEqual(self.ran, [1])

    def test_old_style_process_request(self):
        self.t.enqueue(2)
        mw = jits.JitsMiddleware()
        self.assertIsNone(mw.process_request(Request()))
        self.assertEqual(self.ran, [2])

    def test_async_call(self):
        async def get_response(request):
            return "async response"

        self.t.enqueue(3)
        mw = jits.JitsMiddleware(get_response)
        self.assertTrue(asyncio.iscoroutinefunction(mw.__acall__))
        self.assertEqual(asyncio.run(mw(Request())), "async response")
        self.assertEqual(self.ran, [3])

    def test_request_through_django_test_client(self):
        from django.test import Client

        self.t.enqueue(4)
        response = Client().get("/")
        self.assertEqual((response.status_code, response.content), (200, b"hello"))
        self.assertEqual(self.ran, [4])

    def test_threaded_request_does_not_wait_for_tasks(self):
        from django.test import Client

        s = jits.Scheduler(jits.DjangoStore("default"), threaded=True, min_interval=0)
        jits._default = s
        self.addCleanup(s.shutdown, 2)
        gate = threading.Event()
        slow = jits.task(name="t.slow")(lambda: gate.wait(10))
        job = slow.enqueue()
        t0 = time.monotonic()
        self.assertEqual(Client().get("/").status_code, 200)
        self.assertLess(time.monotonic() - t0, 5)
        gate.set()
        self.assertTrue(wait_for(lambda: s.store.get(job)["status"] == "succeeded"))


@needs_django
class DjangoSettingsTests(unittest.TestCase):
    def test_app_config_is_found_for_old_and_short_names(self):
        from django.apps import AppConfig, apps

        config = apps.get_app_config("jits")
        self.assertEqual(type(config).__name__, "JitsConfig")
        self.assertIs(type(AppConfig.create("jits")), type(config))
        self.assertIs(type(AppConfig.create("jits.app")), type(config))

    def test_settings_become_scheduler_options(self):
        from django.test import override_settings

        with override_settings(JITS_THREADED=True, JITS_NUM_THREADS=4,
                               JITS_MIN_SECONDS=30, JITS_MIN_MINUTES=1.5):
            options = jits._django_options()
        self.assertEqual((options["threaded"], options["num_threads"],
                          options["min_interval"]), (True, 4, 120.0))
        self.assertEqual(options["store"].alias, "default")

    def test_defaults_are_those_of_2008(self):
        from django.test import override_settings

        with override_settings():
            for name in ("JITS_THREADED", "JITS_NUM_THREADS", "JITS_MIN_SECONDS",
                         "JITS_MIN_MINUTES"):
                with contextlib.suppress(AttributeError):
                    delattr(dj_settings, name)
            options = jits._django_options()
        self.assertEqual((options["threaded"], options["num_threads"],
                          options["min_interval"]), (False, 10, 5.0))

    def test_invalid_settings_are_system_check_errors(self):
        from django.core.checks import run_checks
        from django.test import override_settings

        cases = [
            (dict(JITS_THREADED="yes"), "jits.E001"),
            (dict(JITS_NUM_THREADS=0), "jits.E002"),
            (dict(JITS_NUM_THREADS=2.5), "jits.E002"),
            (dict(JITS_MIN_SECONDS=-1), "jits.E003"),
            (dict(JITS_MIN_SECONDS="5"), "jits.E003"),
            (dict(JITS_MIN_MINUTES=-0.5), "jits.E004"),
            (dict(JITS_DATABASE="nowhere"), "jits.E005"),
            (dict(JITS_DATABASE=["default"]), "jits.E005"),
            (dict(JITS_MIN_MINUTES=1e308), "jits.E004"),
        ]
        for values, check_id in cases:
            with self.subTest(values=values), override_settings(**values):
                errors = [e for e in run_checks() if e.id.startswith("jits.")]
                self.assertEqual([e.id for e in errors], [check_id])
                self.assertIn(list(values)[0], errors[0].msg)
        with override_settings(JITS_NUM_THREADS=0):
            from django.core.exceptions import ImproperlyConfigured

            with self.assertRaisesRegex(ImproperlyConfigured,
                                        "JITS_NUM_THREADS must be an int >= 1, got 0"):
                jits._django_options()


# ---------------------------------------------------------------------------
# Exactly once across OS processes
# ---------------------------------------------------------------------------

MP_WORKER = """
import json, os, sys, time
sys.path.insert(0, {here!r})
kind, target, ledger_path, seconds, mode = sys.argv[1:6]
if kind == "django":
    import django
    from django.conf import settings
    settings.configure(DATABASES={{"default": json.loads(target)}}, USE_TZ=True,
                       TIME_ZONE="UTC", INSTALLED_APPS=[])
    django.setup()
import logging
import jits

logging.basicConfig(level=logging.WARNING, format="%(process)d %(levelname)s %(message)s")
store = jits.DjangoStore() if kind == "django" else jits.SQLiteStore(target, timeout=30)
ledger = open(ledger_path, "a", buffering=1)

def record(*parts):
    ledger.write(" ".join(str(p) for p in parts) + "\\n")

@jits.task(name="mp.job")
def job(n):
    record("job", n)

for period in (0.5, 1, 1.5):
    jits.task(name="mp.tick%s" % period, every=period, takes_context=True)(
        lambda ctx: record(ctx.task_name, repr(ctx.scheduled.timestamp())))

s = jits.Scheduler(store, threaded=(mode == "threaded"), num_threads=4,
                   min_interval=0.02)
end = time.monotonic() + float(seconds)
while time.monotonic() < end:
    if mode == "threaded":
        s.maybe_poll()
    else:
        s.poll()
    time.sleep(0.005)
s.shutdown(grace=10)
print("worker done", flush=True)
"""


class MultiProcessMixin:
    """Several OS processes poll one store while jobs and periodic runs come due."""

    def run_processes(self, kind, target, store, jobs=1200, seconds=8, processes=4):
        folder = tempfile.mkdtemp(dir=TMP)
        script = os.path.join(folder, "worker.py")
        with open(script, "w") as f:
            f.write(MP_WORKER.format(here=HERE))
        store.ensure_schema()
        with store._transaction(write=True) as cur:
            cur.execute("DELETE FROM jits_job")
            cur.execute("DELETE FROM jits_run")
        now = time.time()
        first = jobs // 4
        for n in range(first):
            store.enqueue("job-%d" % n, "mp.job", json.dumps([[n], {}]), now, "default",
                          0, now)
        ledgers = [os.path.join(folder, "ledger-%d.txt" % i) for i in range(processes)]
        procs = [subprocess.Popen(
            [sys.executable, script, kind, target, ledgers[i], str(seconds),
             "threaded" if i % 2 else "blocking"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(processes)]
        started = time.time()
        # The rest come due while the workers run, spread over the window.
        for n in range(first, jobs):
            due = started + (seconds - 3) * (n - first) / (jobs - first)
            store.enqueue("job-%d" % n, "mp.job", json.dumps([[n], {}]), due, "default",
                          0, time.time())
        errors = []
        for proc in procs:
            out, err = proc.communicate(timeout=seconds + 90)
            self.assertEqual(proc.returncode, 0, err[-3000:])
            self.assertIn("worker done", out)
            errors.append(err)
        self.assertEqual("".join(errors), "", "workers should log no warning")
        elapsed = time.time() - started
        lines = []
        for path in ledgers:
            with open(path) as f:
                lines.extend(line.split() for line in f)
        job_runs = sorted(int(n) for kind_, n in lines if kind_ == "job")
        self.assertEqual(job_runs, list(range(jobs)), "each job must run exactly once")
        periodic = {}
        for name, value in lines:
            if name != "job":
                periodic.setdefault(name, []).append(float(value))
        for period in (0.5, 1, 1.5):
            name = "mp.tick%s" % period
            slots = periodic.get(name, [])
            self.assertEqual(len(slots), len(set(slots)), "%s ran an occurrence twice"
                             % name)
            # Slots that pass while the workers are busy with older jobs are
            # merged (due order), so on a loaded 2-core machine only a share
            # of them runs; but the task must keep running through the window.
            self.assertGreaterEqual(len(slots), max(2, (seconds - 2) / period / 4),
                                    name)
            for a, b in zip(sorted(slots), sorted(slots)[1:]):
                self.assertAlmostEqual((b - a) / period, round((b - a) / period), 6)
        history = store.runs()
        self.assertEqual(len(history), len(lines))
        self.assertFalse([r for r in store.rows() if r["status"] == "running"])
        return {"processes": processes, "jobs": jobs, "runs": len(lines),
                "periodic": {k: len(v) for k, v in periodic.items()},
                "seconds": round(elapsed, 1)}


class MultiProcessSQLiteTests(MultiProcessMixin, unittest.TestCase):
    def test_four_processes_run_everything_exactly_once(self):
        path = tempfile.mktemp(dir=TMP, suffix=".sqlite3")
        figures = self.run_processes("sqlite", path, jits.SQLiteStore(path))
        sys.stderr.write("\n[multi-process sqlite] %s\n" % figures)


@skip_unless_db(HAVE_PG, "PostgreSQL")
class MultiProcessPostgresTests(MultiProcessMixin, unittest.TestCase):
    def test_four_processes_run_everything_exactly_once(self):
        # A database of its own: the shared "test" database may be in use by
        # another run, whose clean-up would delete this test's jobs.
        database = private_database(self, "postgresql")
        figures = self.run_processes("django", json.dumps(database),
                                     jits.DjangoStore(django_alias(self, database)))
        sys.stderr.write("\n[multi-process postgresql] %s\n" % figures)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

CLI_TASKS = """
import jits

@jits.task(name="cli.hourly", every=3600)
def hourly():
    return "tick"

@jits.task(name="cli.add")
def add(a, b):
    return a + b

@jits.task(name="cli.boom")
def boom():
    raise RuntimeError("kaboom")
"""


class CommandLineTests(unittest.TestCase):
    def jits(self, *args, cwd=None, timeout=60):
        env = dict(os.environ, PYTHONPATH=HERE)
        env.pop("DJANGO_SETTINGS_MODULE", None)
        return subprocess.run([sys.executable, "-m", "jits"] + list(args),
                              capture_output=True, text=True, timeout=timeout,
                              cwd=cwd or self.folder, env=env)

    def setUp(self):
        self.folder = tempfile.mkdtemp(dir=TMP)
        with open(os.path.join(self.folder, "clitasks.py"), "w") as f:
            f.write(CLI_TASKS)

    def test_list_run_and_poll(self):
        db = os.path.join(self.folder, "cli.sqlite3")
        out = self.jits("--database", db, "--import", "clitasks", "list")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertRegex(out.stdout, r"cli\.hourly\s+every 1h\s+\d{4}-\d\d-\d\d")
        self.assertRegex(out.stdout, r"cli\.boom\s+on demand")
        out = self.jits("--database", db, "--import", "clitasks", "run", "cli.hourly")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn('cli.hourly: succeeded', out.stdout)
        self.assertIn('result: "tick"', out.stdout)
        out = self.jits("--database", db, "--import", "clitasks", "run", "cli.boom")
        self.assertEqual(out.returncode, 1)
        self.assertIn("RuntimeError: kaboom", out.stderr)
        out = self.jits("--database", db, "--import", "clitasks", "run", "cli.add",
                        "--args", "[2]", "--kwargs", '{"b": 40}')
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("result: 42", out.stdout)
        out = self.jits("--database", db, "--import", "clitasks", "run", "cli.add")
        self.assertEqual(out.returncode, 1)
        self.assertIn("cannot take these arguments", out.stderr)
        out = self.jits("--database", db, "--import", "clitasks", "poll")
        self.assertEqual((out.returncode, out.stdout.strip()), (0, "0 run(s) started"))
        out = self.jits("--database", db, "--import", "clitasks", "list")
        self.assertRegex(out.stdout, r"cli\.boom\s+on demand\s+-\s+\d{4}-\d\d-\d\d "
                         r"[\d:]+ UTC\s+failed \(1 failed of 1\)")
        out = self.jits("--database", db, "run", "cli.nothing")
        self.assertEqual(out.returncode, 1)
        self.assertIn("no task is registered as 'cli.nothing'", out.stderr)

    def test_demo_runs_periodic_and_enqueued_tasks_then_exits(self):
        out = self.jits("demo", "--seconds", "5", timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("periodic task demo.heartbeat ran", out.stdout)
        self.assertIn("job demo.greet('visitor') ran", out.stdout)
        self.assertRegex(out.stdout, r"done: \d+ requests served")


# ---------------------------------------------------------------------------
# A Django project set up as in the 2008 guide, under gunicorn
# ---------------------------------------------------------------------------

PROJECT_SETTINGS = """
import json, os
SECRET_KEY = "jits-project"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "jits.app",
                  "shop"]
MIDDLEWARE = ["jits.middleware.JitsMiddleware"]
ROOT_URLCONF = "mysite.urls"
DATABASES = {"default": json.loads(os.environ["PROJECT_DATABASE"])}
USE_TZ = True
TIME_ZONE = "UTC"
JITS_THREADED = os.environ.get("PROJECT_THREADED", "1") == "1"
JITS_NUM_THREADS = 4
JITS_MIN_SECONDS = float(os.environ.get("PROJECT_MIN_SECONDS", "1"))
LEDGER = os.environ["PROJECT_LEDGER"]
LOGGING = {"version": 1, "disable_existing_loggers": False,
           "handlers": {"err": {"class": "logging.StreamHandler"}},
           "loggers": {"jits": {"handlers": ["err"], "level": "WARNING"}}}
"""

PROJECT_URLS = """
from django.http import HttpResponse
from django.urls import path

def index(request):
    return HttpResponse("home")

def enqueue(request, n):
    from shop.tasks import job
    return HttpResponse(job.enqueue(n))

def enqueue_many(request, start, count):
    # The view's own database work: when the database is down this view
    # answers 503 itself, so that any 500 can only come from elsewhere.
    from django.db import DatabaseError, transaction
    from shop.tasks import job
    try:
        with transaction.atomic():
            ids = [job.enqueue(n) for n in range(start, start + count)]
    except DatabaseError as exc:
        return HttpResponse("database unavailable: %s" % exc, status=503)
    return HttpResponse(str(len(ids)))

def slow(request, n, seconds):
    from shop.tasks import slow
    return HttpResponse(slow.enqueue(n, seconds))

urlpatterns = [path("", index), path("enqueue/<int:n>/", enqueue),
               path("enqueue/<int:start>/<int:count>/", enqueue_many),
               path("slow/<int:n>/<int:seconds>/", slow)]
"""

PROJECT_TASKS = """
import os
import time
import jits
from django.conf import settings

def record(*parts):
    with open(settings.LEDGER, "a") as f:
        f.write(" ".join(str(p) for p in parts) + "\\n")

@jits.task(every=1, takes_context=True)
def tick(ctx):
    record("tick", repr(ctx.scheduled.timestamp()), os.getpid())

@jits.task(every=2, takes_context=True)
def tock(ctx):
    record("tock", repr(ctx.scheduled.timestamp()), os.getpid())

@jits.task
def job(n):
    record("job", n, os.getpid())

@jits.task(lease=float(os.environ.get("PROJECT_LEASE", "3")), takes_context=True)
def slow(ctx, n, seconds):
    record("start", "%d:%d" % (n, ctx.attempt), os.getpid())
    time.sleep(seconds)
    record("end", "%d:%d" % (n, ctx.attempt), os.getpid())
"""


def _write_project(folder):
    files = {
        "mysite/__init__.py": "",
        "mysite/settings.py": PROJECT_SETTINGS,
        "mysite/urls.py": PROJECT_URLS,
        "mysite/wsgi.py": ("import os\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', "
                           "'mysite.settings')\nfrom django.core.wsgi import "
                           "get_wsgi_application\napplication = get_wsgi_application()\n"),
        "shop/__init__.py": "",
        "shop/tasks.py": PROJECT_TASKS,
    }
    for name, text in files.items():
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _have_gunicorn():
    return _driver("gunicorn")


class ProjectMixin:
    """Run a generated Django project under gunicorn and drive it with requests."""

    def start_project(self, database, threaded=True, worker_class="sync",
                      min_seconds=1, lease=3, graceful_timeout=10, env_extra=None):
        folder = tempfile.mkdtemp(dir=TMP)
        _write_project(folder)
        ledger = os.path.join(folder, "ledger.txt")
        open(ledger, "w").close()
        env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + folder,
                   PROJECT_DATABASE=json.dumps(database), PROJECT_LEDGER=ledger,
                   PROJECT_THREADED="1" if threaded else "0",
                   PROJECT_MIN_SECONDS=str(min_seconds), PROJECT_LEASE=str(lease),
                   DJANGO_SETTINGS_MODULE="mysite.settings", **(env_extra or {}))
        migrate = subprocess.run([sys.executable, "-m", "django", "migrate", "-v0"],
                                 cwd=folder, env=env, capture_output=True, text=True,
                                 timeout=180)
        self.assertEqual(migrate.returncode, 0, migrate.stderr)
        port = _free_port()
        args = [sys.executable, "-m", "gunicorn", "-w", "4", "-b", "127.0.0.1:%d" % port,
                "--worker-class", worker_class, "--timeout", "120",
                "--graceful-timeout", str(graceful_timeout), "mysite.wsgi"]
        if worker_class == "gthread":
            args[5:5] = ["--threads", "4"]
        self.gunicorn_log = os.path.join(folder, "gunicorn.log")
        log = open(self.gunicorn_log, "w")
        self.addCleanup(log.close)
        server = subprocess.Popen(args, cwd=folder, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        self.addCleanup(_stop_process, server)
        base = "http://127.0.0.1:%d" % port
        self.assertTrue(wait_for(lambda: self.get(base + "/")[0] == 200, 60, 0.2),
                        "gunicorn did not start")
        return folder, env, server, base, ledger

    @staticmethod
    def get(url):
        import urllib.error
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(url, timeout=60) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except OSError as exc:
            return None, str(exc)

    def drive(self, base, ledger, jobs, seconds, clients=8, batch=1, pause=0.01,
              drain=90, stats=None):
        """Send requests for at least *seconds*, enqueueing *jobs* jobs on the
        way (*batch* per request), then until every job has run; return the
        count of each status."""
        statuses = {}
        lock = threading.Lock()
        counter = iter(range(0, jobs, batch))
        enqueued = []
        latencies = []
        end = time.monotonic() + seconds
        give_up = end + 300

        def client():
            while time.monotonic() < give_up:
                with lock:
                    n = next(counter, None)
                if n is None and time.monotonic() >= end:
                    return
                if n is None:
                    url = base + "/"
                elif batch == 1:
                    url = base + "/enqueue/%d/" % n
                else:
                    url = base + "/enqueue/%d/%d/" % (n, min(batch, jobs - n))
                t0 = time.monotonic()
                status, body = self.get(url)
                took = time.monotonic() - t0
                with lock:
                    latencies.append(took)
                    statuses[status] = statuses.get(status, 0) + 1
                    if status is not None and status >= 500 and stats is not None:
                        stats.setdefault("bodies", []).append(body[:300])
                    if n is not None and status == 200:
                        enqueued.extend(range(n, min(n + batch, jobs)))
                time.sleep(pause)

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 400)
        self.assertEqual(len(enqueued), jobs, (statuses, (stats or {}).get("bodies")))

        def all_ran():
            self.get(base + "/")
            return len(self.read_ledger(ledger)["job"]) >= jobs

        wait_for(all_ran, drain, 0.1)
        if stats is not None:
            latencies.sort()
            stats.update(requests=len(latencies),
                         p99_ms=round(1000 * latencies[int(len(latencies) * .99)]),
                         max_ms=round(1000 * latencies[-1]))
        return statuses

    @staticmethod
    def read_ledger(ledger):
        found = {"job": [], "tick": [], "tock": [], "start": [], "end": []}
        with open(ledger) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3:  # a line being written has fewer parts
                    found.setdefault(parts[0], []).append(parts[1])
        return found

    def check_exactly_once(self, ledger, jobs, seconds, share=2):
        found = self.read_ledger(ledger)
        ran = sorted(int(n) for n in found["job"])
        self.assertEqual(len(ran), len(set(ran)), "a job ran twice")
        self.assertEqual(ran, list(range(jobs)), "a job was lost")
        for kind, period in (("tick", 1), ("tock", 2)):
            slots = [float(v) for v in found[kind]]
            self.assertEqual(len(slots), len(set(slots)), "%s ran a slot twice" % kind)
            self.assertGreaterEqual(len(slots), seconds / period / share, kind)
        return {k: len(v) for k, v in found.items() if v}

    def stop(self, server):
        server.terminate()
        self.assertEqual(server.wait(90), 0)

    def log_text(self):
        with open(self.gunicorn_log) as f:
            return f.read()


def _stop_process(proc):
    """Kill a process the test started, if it still runs (cleanup)."""
    if proc.poll() is None:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)


@unittest.skipUnless(django is not None and _have_gunicorn(), "needs Django and gunicorn")
class GunicornProjectTests(ProjectMixin, unittest.TestCase):
    def test_2008_project_threaded_under_four_workers(self):
        database = {"ENGINE": "django.db.backends.sqlite3",
                    "NAME": os.path.join(tempfile.mkdtemp(dir=TMP), "site.sqlite3"),
                    "OPTIONS": {"timeout": 20}}
        folder, env, server, base, ledger = self.start_project(database, threaded=True)
        seconds, jobs = 12, 400
        statuses = self.drive(base, ledger, jobs, seconds)
        self.stop(server)
        self.assertEqual(set(statuses), {200}, statuses)
        counts = self.check_exactly_once(ledger, jobs, seconds)
        pids = {line.split()[2] for line in open(ledger)}
        self.assertGreater(len(pids), 1, "the work should spread over the workers")
        sys.stderr.write("\n[gunicorn -w 4 threaded, sqlite] requests=%d runs=%s "
                         "workers that ran tasks=%d\n"
                         % (sum(statuses.values()), counts, len(pids)))
        out = subprocess.run([sys.executable, "-m", "jits", "list"], cwd=folder, env=env,
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("shop.tasks.tick", out.stdout)
        self.assertIn("shop.tasks.tock", out.stdout)


# ---------------------------------------------------------------------------
# Retries of jits tasks, result TTL pruning, schema upgrade
# ---------------------------------------------------------------------------


class RetryTests(RegistryMixin, unittest.TestCase):
    def setUp(self):
        super().setUp()
        self.scheduler, self.clock = self.memory_scheduler()

    def test_each_error_attempt_count_and_final_failure_are_kept(self):
        @jits.task(name="t.flaky", retries=3, retry_delay=1000)
        def flaky():
            raise ValueError("failure %d" % (len(self.scheduler.store.runs()) + 1))

        s = self.scheduler
        job = s.enqueue(flaky, None, (), {})
        delays = []
        with self.assertLogs("jits", "WARNING") as logs:
            for _ in range(4):
                self.assertEqual(s.poll(), 1)
                row = s.store.get(job)
                if row["due"] is not None:
                    delays.append(row["due"] - self.clock.wall)
                    self.clock.advance(row["due"] - self.clock.wall)
        # Exponential backoff from retry_delay, capped at MAX_RETRY_DELAY.
        self.assertEqual(delays, [1000, 2000, jits.MAX_RETRY_DELAY])
        self.assertEqual(sum("will be retried" in line for line in logs.output), 3)
        row = s.store.get(job)
        self.assertEqual((row["status"], row["outcome"], row["attempts"],
                          row["failures"], row["runs"]), ("failed", "failed", 4, 4, 4))
        self.assertIn("ValueError: failure 4", row["error"])
        runs = s.store.runs(job)
        self.assertEqual([r["attempt"] for r in runs], [1, 2, 3, 4])
        for n, run in enumerate(runs, 1):
            self.assertEqual(run["outcome"], "failed")
            self.assertIn("ValueError: failure %d" % n, run["error"])
        self.assertEqual(s.poll(), 0)

    def test_success_after_retries_keeps_the_earlier_errors(self):
        @jits.task(name="t.second", retries=2, retry_delay=5, takes_context=True)
        def second(ctx):
            if ctx.attempt == 1:
                raise RuntimeError("first try")
            return ctx.attempt

        s = self.scheduler
        job = s.enqueue(second, None, (), {})
        with self.assertLogs("jits", "WARNING"):
            s.poll()
        self.clock.advance(5)
        s.poll()
        row = s.store.get(job)
        self.assertEqual((row["status"], row["attempts"], row["failures"],
                          row["result"]), ("succeeded", 2, 1, "2"))
        self.assertEqual([(r["attempt"], r["outcome"]) for r in s.store.runs(job)],
                         [(1, "failed"), (2, "succeeded")])
        self.assertIn("RuntimeError: first try", s.store.runs(job)[0]["error"])


class ResultTTLTests(RegistryMixin, unittest.TestCase):
    def setUp(self):
        super().setUp()
        self.scheduler, self.clock = self.memory_scheduler(result_ttl=100)
        self.task = jits.task(name="t.job")(lambda: None)

    def finished_jobs(self, count):
        s = self.scheduler
        jobs = [s.enqueue(self.task, None, (), {}) for _ in range(count)]
        s.poll()
        if s._pruner is not None:
            s._pruner.join(10)
        self.assertEqual({s.store.get(j)["status"] for j in jobs}, {"succeeded"})
        return jobs

    def test_prune_keeps_recent_results_and_periodic_rows(self):
        jits.task(name="t.tick", every=10)(lambda: None)
        s = self.scheduler
        s.poll()
        self.clock.advance(10)
        old = self.finished_jobs(3)
        self.clock.advance(60)
        recent = self.finished_jobs(2)
        self.assertEqual(s.prune(), (0, 0))
        self.clock.advance(50)
        self.assertEqual(s.prune(), (3, 4))  # three jobs, their runs and a tick's
        self.assertTrue(all(s.store.get(j) is None for j in old))
        self.assertTrue(all(s.store.get(j) is not None for j in recent))
        self.assertIsNotNone(s.store.get("t.tick"))
        self.assertEqual(len(s.store.runs()), 3)  # the recent jobs' and a tick's

    def test_pruning_goes_in_small_batches(self):
        self.finished_jobs(250)
        self.clock.advance(101)
        self.assertEqual(self.scheduler.prune(limit=100), (100, 100))
        self.assertEqual(self.scheduler.prune(limit=100), (100, 100))
        self.assertEqual(self.scheduler.prune(limit=100), (50, 50))
        self.assertEqual(self.scheduler.prune(limit=100), (0, 0))

    def test_poll_prunes_one_batch_off_the_request_thread(self):
        s = self.scheduler
        self.finished_jobs(jits.PRUNE_BATCH + 20)  # these polls found nothing old
        self.clock.advance(jits.PRUNE_INTERVAL)
        seen = []
        original = s.prune

        def watched(*args, **kwargs):
            seen.append(threading.current_thread().name)
            return original(*args, **kwargs)

        s.prune = watched

        def poll_and_wait():
            s.poll()
            if s._pruner is not None:
                s._pruner.join(10)
            return len(s.store.rows())

        self.assertEqual(poll_and_wait(), 20)  # one full batch per poll
        self.assertEqual(poll_and_wait(), 0)  # a full batch: more next poll
        self.assertEqual(seen, ["jits-prune", "jits-prune"])
        poll_and_wait()
        self.assertEqual(len(seen), 2)  # caught up: waits PRUNE_INTERVAL
        self.clock.advance(jits.PRUNE_INTERVAL)
        poll_and_wait()
        self.assertEqual(len(seen), 3)

    def test_none_keeps_everything(self):
        scheduler, clock = self.memory_scheduler(result_ttl=None)
        scheduler.enqueue(self.task, None, (), {})
        scheduler.poll()
        clock.advance(10 ** 8)
        self.assertEqual(scheduler.prune(), (0, 0))
        self.assertEqual(len(scheduler.store.rows()), 1)
        with self.assertRaisesRegex(ValueError, "result_ttl must be a number >= 0"):
            jits.Scheduler(jits.SQLiteStore(":memory:"), result_ttl=-1)

    def test_prune_queries_use_indexes(self):
        store = self.scheduler.store
        store.ensure_schema()
        for sql in (jits._SQL_OLD_JOBS, jits._SQL_OLD_RUNS):
            with store._transaction(write=False) as cur:
                cur.execute("EXPLAIN QUERY PLAN " + store._sql(sql), [1.0, 10])
                plan = " ".join(str(row[-1]) for row in cur.fetchall())
            self.assertRegex(plan, r"USING (COVERING )?INDEX "
                                   r"(jits_job_done|jits_run_finished)")
            self.assertNotIn("TEMP B-TREE", plan)  # no sort: the index is in order
        with store._transaction(write=False) as cur:
            cur.execute("EXPLAIN QUERY PLAN SELECT * FROM jits_run WHERE job = ?",
                        ["x"])
            self.assertIn("jits_run_job", " ".join(str(r[-1]) for r in cur.fetchall()))


class SchemaUpgradeTests(unittest.TestCase):
    def test_tables_of_an_older_jits_get_the_new_column_and_indexes(self):
        path = tempfile.mktemp(dir=TMP, suffix=".sqlite3")
        ddl = jits._VENDOR_DDL["sqlite"]
        conn = sqlite3.connect(path)
        conn.execute(jits._DDL_JOB.format(**ddl))
        conn.execute(jits._DDL_RUN.format(**ddl).replace(
            ",\n    error_class VARCHAR(255) NULL", ""))
        conn.execute("CREATE INDEX jits_job_due ON jits_job (due)")
        conn.commit()
        conn.close()
        store = jits.SQLiteStore(path)
        with self.assertLogs("jits", "INFO") as logs:
            store.ensure_schema()
        self.assertIn("ALTER TABLE jits_run ADD COLUMN error_class", logs.output[0])
        self.assertEqual(store._missing_schema(), [])
        with store._transaction(write=False) as cur:
            self.assertTrue({"jits_job_done", "jits_run_job"}
                            <= store._index_names(cur))


@needs_django
class ResultTTLSettingTests(unittest.TestCase):
    def test_setting_default_and_check(self):
        from django.core.checks import run_checks
        from django.test import override_settings

        self.assertEqual(jits._django_options()["result_ttl"], 7 * 86400)
        with override_settings(JITS_RESULT_TTL=None):
            self.assertIsNone(jits._django_options()["result_ttl"])
        for bad in (-1, "7d"):
            with self.subTest(bad=bad), override_settings(JITS_RESULT_TTL=bad):
                errors = [e for e in run_checks() if e.id.startswith("jits.")]
                self.assertEqual([e.id for e in errors], ["jits.E006"])
                self.assertIn("JITS_RESULT_TTL must be a number of seconds >= 0",
                              errors[0].msg)


# ---------------------------------------------------------------------------
# Django Tasks backend (Django 6): enqueue through Django, run on requests
# ---------------------------------------------------------------------------

needs_tasks = unittest.skipUnless(
    HAVE_TASKS, "django.tasks needs Django 6.0 or newer (found %s)"
    % (django.get_version() if django is not None else "no Django"))


def _subprocess_env():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, TMP]),
               DJANGO_SETTINGS_MODULE="jits_tasks_settings")
    env.pop("JITS_DATABASE", None)
    return env


def _write_tasks_settings():
    """Write settings for other processes: same database, apps and TASKS."""
    path = os.path.join(TMP, "jits_tasks_settings.py")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(textwrap.dedent("""
                SECRET_KEY = "jits-tests"
                USE_TZ = True
                TIME_ZONE = "UTC"
                DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                                         "NAME": %r, "OPTIONS": {"timeout": 20}}}
                INSTALLED_APPS = ["django.contrib.contenttypes", "jits.app",
                                  "jitstasks"]
                MIDDLEWARE = ["jits.middleware.JitsMiddleware"]
                TASKS = %r
                JITS_MIN_SECONDS = 0
            """ % (dj_settings.DATABASES["default"]["NAME"], TASKS_SETTING)))


@needs_tasks
class DjangoTasksTests(RegistryMixin, unittest.TestCase):
    def setUp(self):
        super().setUp()
        from django.test import Client
        from jitstasks import tasks

        self.tasks = tasks
        tasks.CALLS.clear()
        self.scheduler = self.use_scheduler()
        store = self.scheduler.store
        store.ensure_schema()
        with store._transaction(write=True) as cur:
            cur.execute("DELETE FROM jits_job")
            cur.execute("DELETE FROM jits_run")
        self.client = Client()

    def use_scheduler(self, **options):
        options.setdefault("min_interval", 0)
        options.setdefault("django_tasks", True)
        scheduler = jits.Scheduler(jits.DjangoStore("default"), **options)
        old = jits._default
        jits._default = scheduler
        self.addCleanup(setattr, jits, "_default", old)
        self.addCleanup(scheduler.shutdown, 1)
        return scheduler

    def request(self):
        self.assertEqual(self.client.get("/").status_code, 200)

    def test_backend_declares_what_it_supports(self):
        from django.tasks import task_backends
        from django.tasks.backends.base import BaseTaskBackend

        default_task_backend = task_backends["default"]
        self.assertIsInstance(default_task_backend, jits.TasksBackend)
        self.assertIsInstance(default_task_backend, BaseTaskBackend)
        for feature in ("supports_defer", "supports_async_task", "supports_get_result",
                        "supports_priority"):
            self.assertIs(getattr(default_task_backend, feature), True, feature)
        self.assertEqual(default_task_backend.queues, {"default", "mail"})
        self.assertTrue(jits._django_options()["django_tasks"])

    def test_enqueue_returns_ready_and_a_later_request_runs_it(self):
        from django.tasks import TaskResultStatus, default_task_backend

        result = self.tasks.add.enqueue(2, 3)
        self.assertEqual(result.status, TaskResultStatus.READY)
        self.assertEqual((result.args, result.kwargs, result.backend),
                         ([2, 3], {}, "default"))
        self.assertIsNotNone(result.enqueued_at)
        self.assertEqual(self.tasks.CALLS, [])
        stored = default_task_backend.get_result(result.id)
        self.assertEqual((stored.status, stored.attempts), (TaskResultStatus.READY, 0))
        self.request()
        self.assertEqual(self.tasks.CALLS, [("add", 2, 3)])
        result.refresh()
        self.assertEqual(result.status, TaskResultStatus.SUCCESSFUL)
        self.assertEqual(result.return_value, 5)
        self.assertEqual((result.attempts, result.worker_ids),
                         (1, [self.scheduler.owner]))
        self.assertLessEqual(result.enqueued_at, result.started_at)
        self.assertEqual(result.started_at, result.last_attempted_at)
        self.assertLessEqual(result.started_at, result.finished_at)
        self.assertEqual(self.tasks.add.get_result(result.id).return_value, 5)
        self.request()  # exactly once: nothing runs it again
        self.assertEqual(len(self.tasks.CALLS), 1)

    def test_async_function_and_async_api(self):
        from django.tasks import TaskResultStatus

        first = self.tasks.double.enqueue(21)
        second = asyncio.run(self.tasks.double.aenqueue(x=4))
        self.request()
        self.assertEqual(self.tasks.double.get_result(first.id).return_value, 42)
        again = asyncio.run(self.tasks.double.aget_result(second.id))
        self.assertEqual((again.status, again.return_value, again.kwargs),
                         (TaskResultStatus.SUCCESSFUL, 8, {"x": 4}))

    def test_run_after_defers_the_run(self):
        from django.tasks import TaskResultStatus
        from django.utils import timezone as dj_timezone

        clock = FakeClock(start=time.time())
        self.use_scheduler(now=clock.now)
        when = dj_timezone.now() + timedelta(hours=1)
        later = self.tasks.record.using(run_after=when).enqueue("later")
        now = self.tasks.record.enqueue("now")
        self.request()
        self.assertEqual(self.tasks.CALLS, [("record", "now")])
        pending = self.tasks.record.get_result(later.id)
        self.assertEqual(pending.status, TaskResultStatus.READY)
        self.assertEqual(pending.task.run_after.timestamp(),
                         round(when.timestamp(), 6))
        self.assertEqual(self.tasks.record.get_result(now.id).task.run_after, None)
        clock.advance(3601)
        self.request()
        self.assertEqual(self.tasks.CALLS[-1], ("record", "later"))
        self.assertEqual(self.tasks.record.get_result(later.id).return_value, "later")

    def test_higher_priority_runs_first(self):
        for label, priority in (("low", -5), ("top", 100), ("plain", 0),
                                ("bottom", -100), ("high", 10)):
            self.tasks.record.using(priority=priority).enqueue(label)
        self.request()
        self.assertEqual([c[1] for c in self.tasks.CALLS],
                         ["top", "high", "plain", "low", "bottom"])

    def test_queue_name_selects_among_queues(self):
        from django.tasks import TaskResultStatus

        mail = self.tasks.send.enqueue("a@example.com")
        plain = self.tasks.add.enqueue(1, 1)
        moved = self.tasks.add.using(queue_name="mail").enqueue(2, 2)
        self.assertEqual((mail.task.queue_name, mail.task.priority), ("mail", 5))
        self.use_scheduler(queues=("mail",))
        self.request()
        self.assertEqual(sorted(self.tasks.CALLS),
                         [("add", 2, 2), ("send", "a@example.com")])
        self.assertEqual(self.tasks.add.get_result(plain.id).status,
                         TaskResultStatus.READY)
        self.assertEqual(self.tasks.add.get_result(moved.id).task.queue_name, "mail")
        self.use_scheduler()
        self.request()
        self.assertEqual(self.tasks.add.get_result(plain.id).return_value, 2)

    def test_failure_records_exception_class_and_traceback(self):
        from django.tasks import TaskResultStatus

        result = self.tasks.fail.enqueue("bad input")
        with self.assertLogs("jits", "ERROR"):
            self.request()
        result.refresh()
        self.assertEqual(result.status, TaskResultStatus.FAILED)
        self.assertIsNotNone(result.finished_at)
        self.assertEqual(len(result.errors), 1)
        error = result.errors[0]
        self.assertEqual(error.exception_class_path, "builtins.ValueError")
        self.assertIs(error.exception_class, ValueError)
        self.assertIn("Traceback (most recent call last)", error.traceback)
        self.assertIn("ValueError: bad input", error.traceback)
        with self.assertRaisesRegex(ValueError, "Task failed"):
            result.return_value
        run = self.scheduler.store.runs(result.id)[0]
        self.assertEqual((run["outcome"], run["error_class"]),
                         ("failed", "builtins.ValueError"))

    def test_context_gives_attempt_and_own_result(self):
        result = self.tasks.with_context.enqueue("ctx")
        self.request()
        value = self.tasks.with_context.get_result(result.id).return_value
        self.assertEqual(value, {"attempt": 1, "id": result.id,
                                 "status_seen": "RUNNING", "label": "ctx"})

    def test_retries_from_backend_options(self):
        from django.tasks import TaskResultStatus

        recovers = self.tasks.flaky.enqueue(2)
        gives_up = self.tasks.flaky.enqueue(5)
        self.assertEqual(recovers.backend, "retrying")
        with self.assertLogs("jits", "WARNING"):
            self.request()
        ok = self.tasks.flaky.get_result(recovers.id)
        self.assertEqual((ok.status, ok.return_value, ok.attempts),
                         (TaskResultStatus.SUCCESSFUL, 3, 3))
        self.assertEqual([e.traceback.strip().splitlines()[-1] for e in ok.errors],
                         ["RuntimeError: attempt 1 fails",
                          "RuntimeError: attempt 2 fails"])
        bad = self.tasks.flaky.get_result(gives_up.id)
        self.assertEqual((bad.status, bad.attempts, len(bad.errors)),
                         (TaskResultStatus.FAILED, 3, 3))

    def test_signals_are_sent(self):
        from django.tasks.signals import task_enqueued, task_finished, task_started

        seen = []
        for signal in (task_enqueued, task_started, task_finished):
            def receiver(sender, task_result, signal=signal, **kwargs):
                seen.append((signal, sender, task_result.task.name,
                             str(task_result.status)))

            signal.connect(receiver, weak=False, dispatch_uid="jits-test-%d" % id(signal))
            self.addCleanup(signal.disconnect, dispatch_uid="jits-test-%d" % id(signal))
        self.tasks.add.enqueue(1, 2)
        self.tasks.fail.enqueue("no")
        with self.assertLogs("jits", "ERROR"):
            self.request()
        backend = type(jits.TasksBackend("x", {}))
        self.assertEqual(seen, [
            (task_enqueued, backend, "add", "READY"),
            (task_enqueued, backend, "fail", "READY"),
            (task_started, backend, "add", "RUNNING"),
            (task_finished, backend, "add", "SUCCESSFUL"),
            (task_started, backend, "fail", "RUNNING"),
            (task_finished, backend, "fail", "FAILED"),
        ])

    def test_invalid_tasks_are_rejected_with_djangos_errors(self):
        from django.tasks import task
        from django.tasks.exceptions import InvalidTask, InvalidTaskBackend

        def local():
            pass

        with self.assertRaisesRegex(InvalidTask, "must be defined at a module level"):
            task(local)
        with self.assertRaisesRegex(InvalidTask, "first argument of 'context'"):
            task(takes_context=True)(self.tasks.plain)
        with self.assertRaisesRegex(InvalidTask, "priority must be a whole number"):
            self.tasks.add.using(priority=101)
        with self.assertRaisesRegex(InvalidTask, "Queue 'nope' is not valid"):
            self.tasks.add.using(queue_name="nope")
        with self.assertRaisesRegex(InvalidTask, "must be an aware datetime"):
            self.tasks.add.using(run_after=datetime(2030, 1, 1))
        with self.assertRaisesRegex(InvalidTask, "it is a function, not a Django task"):
            task(self.tasks.plain).enqueue("x")
        with self.assertRaises(TypeError):
            self.tasks.add.enqueue(object(), 1)
        with self.assertRaisesRegex(TypeError, "a key of argument 0 is 1"):
            self.tasks.add.enqueue({1: "one"}, 1)
        with self.assertRaisesRegex(InvalidTaskBackend, r"unknown key\(s\) 'RETRYS' "
                                    r"\(allowed: RETRIES, RETRY_DELAY\)"):
            jits.TasksBackend("x", {"OPTIONS": {"RETRYS": 1}})
        with self.assertRaisesRegex(InvalidTaskBackend, "RETRIES'] must be an int"):
            jits.TasksBackend("x", {"OPTIONS": {"RETRIES": -1}})
        self.assertEqual(self.scheduler.store.rows(), [])

    def test_tampered_rows_are_refused_and_recorded_failed(self):
        from django.tasks import default_task_backend
        from django.tasks.exceptions import TaskResultDoesNotExist

        store = self.scheduler.store
        marker = os.path.join(tempfile.mkdtemp(dir=TMP), "ran")
        side_effect = os.path.join(os.path.dirname(marker), "imported")
        os.environ["JITS_SIDE_EFFECT"] = side_effect
        self.addCleanup(os.environ.pop, "JITS_SIDE_EFFECT", None)
        rows = {
            "plain": ("jitstasks.tasks.plain", [marker]),
            "system": ("os.system", ["touch " + marker]),
            "import": ("jits_side_effect.boom", []),
            "walk": ("jitstasks.tasks.os.remove", [marker]),
        }
        for job_id, (path, args) in rows.items():
            payload = json.dumps([args, {}, {"backend": "default", "run_after": None}])
            store.enqueue(job_id, "django:" + path, payload, 0.0, "default", 0, 0.0)
        with self.assertLogs("jits", "ERROR") as logs:
            self.request()
        self.assertEqual(len(logs.output), 4)
        self.assertFalse(os.path.exists(marker))
        self.assertFalse(os.path.exists(side_effect))
        self.assertNotIn("jits_side_effect", sys.modules)
        for job_id in rows:
            row = store.get(job_id)
            self.assertEqual((row["status"], row["outcome"], row["attempts"]),
                             ("failed", "failed", 1), job_id)
            run = store.runs(job_id)[0]
            self.assertEqual(run["error_class"], "jits.JitsError")
            self.assertIn("refused to run", run["error"])
            with self.assertRaises(TaskResultDoesNotExist):
                default_task_backend.get_result(job_id)
        self.assertIn("neither imported nor part of an installed app",
                      store.runs("import")[0]["error"])
        self.assertIn("not a Django task", store.runs("system")[0]["error"])
        with self.assertRaises(TaskResultDoesNotExist):
            default_task_backend.get_result("no-such-id")

    def test_scheduler_without_django_tasks_leaves_the_rows_alone(self):
        result = self.tasks.add.enqueue(1, 1)
        self.use_scheduler(django_tasks=False)
        with self.assertLogs("jits", "WARNING") as logs:
            self.request()
        self.assertIn("not registered in this process", logs.output[0])
        self.assertEqual(self.tasks.CALLS, [])
        self.assertEqual(self.scheduler.store.get(result.id)["status"], "ready")

    def test_missing_middleware_is_a_check_warning(self):
        from django.test import override_settings

        with override_settings(MIDDLEWARE=[]):
            warnings = jits.TasksBackend("x", {}).check()
        self.assertEqual([w.id for w in warnings], ["jits.W001"])
        self.assertEqual(jits.TasksBackend("x", {}).check(), [])

    def test_results_are_read_back_from_another_process(self):
        from django.utils import timezone as dj_timezone

        _write_tasks_settings()
        done = self.tasks.add.enqueue(20, 22)
        failed = self.tasks.fail.enqueue("elsewhere")
        waiting = self.tasks.record.using(
            run_after=dj_timezone.now() + timedelta(days=1)).enqueue("tomorrow")
        with self.assertLogs("jits", "ERROR"):
            self.request()
        code = textwrap.dedent("""
            import json, sys
            import django
            django.setup()
            from django.tasks import default_task_backend
            out = []
            for result_id in sys.argv[1:]:
                r = default_task_backend.get_result(result_id)
                out.append({
                    "status": str(r.status), "path": r.task.module_path,
                    "value": r.return_value if r.status == "SUCCESSFUL" else None,
                    "attempts": r.attempts, "workers": r.worker_ids,
                    "errors": [e.exception_class_path for e in r.errors],
                    "traceback": [e.traceback for e in r.errors],
                    "times": [None if t is None else t.isoformat() for t in (
                        r.enqueued_at, r.started_at, r.finished_at,
                        r.last_attempted_at)],
                })
            print(json.dumps(out))
        """)
        out = subprocess.run([sys.executable, "-c", code, done.id, failed.id,
                              waiting.id], capture_output=True, text=True, timeout=60,
                             cwd=TMP, env=_subprocess_env())
        self.assertEqual(out.returncode, 0, out.stderr)
        first, second, third = json.loads(out.stdout)
        self.assertEqual((first["status"], first["value"], first["attempts"],
                          first["workers"], first["path"]),
                         ("SUCCESSFUL", 42, 1, [self.scheduler.owner],
                          "jitstasks.tasks.add"))
        self.assertTrue(all(first["times"]))
        self.assertEqual((second["status"], second["errors"]),
                         ("FAILED", ["builtins.ValueError"]))
        self.assertIn("ValueError: elsewhere", second["traceback"][0])
        self.assertEqual((third["status"], third["attempts"], third["times"][1:]),
                         ("READY", 0, [None, None, None]))


@needs_tasks
class WorkerCommandTests(unittest.TestCase):
    def setUp(self):
        _write_tasks_settings()
        store = jits.DjangoStore("default")
        store.ensure_schema()
        with store._transaction(write=True) as cur:
            cur.execute("DELETE FROM jits_job")
            cur.execute("DELETE FROM jits_run")
        scheduler = jits.Scheduler(store, min_interval=0, django_tasks=True)
        old = jits._default
        jits._default = scheduler
        self.addCleanup(setattr, jits, "_default", old)
        self.addCleanup(scheduler.shutdown, 1)
        self.scheduler = scheduler

    def start_worker(self, *args):
        worker = subprocess.Popen(
            [sys.executable, "-m", "jits", "worker"] + list(args), cwd=TMP,
            env=_subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)

        def stop():
            if worker.poll() is None:
                worker.kill()
            worker.communicate(timeout=30)

        self.addCleanup(stop)
        return worker

    def test_worker_runs_due_jobs_alongside_requests_and_stops_on_sigterm(self):
        import signal

        from django.test import Client
        from jitstasks import tasks

        path = os.path.join(tempfile.mkdtemp(dir=TMP), "ledger")
        worker = self.start_worker("--interval", "0.2")
        # With no request at all, the worker alone runs a job.
        alone = tasks.ledger.enqueue(path, -1)
        self.assertTrue(wait_for(
            lambda: tasks.ledger.get_result(alone.id).is_finished, timeout=30))
        self.assertEqual(tasks.ledger.get_result(alone.id).worker_ids[0].split(":")[-1],
                         str(worker.pid))
        # Then requests and the worker share a batch: each job runs once.
        results = [tasks.ledger.enqueue(path, n) for n in range(60)]
        client = Client()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.assertEqual(client.get("/").status_code, 200)
            if all(tasks.ledger.get_result(r.id).is_finished for r in results):
                break
        self.assertTrue(all(tasks.ledger.get_result(r.id).status == "SUCCESSFUL"
                            for r in results))
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
        self.assertEqual(worker.returncode, 0, err)
        self.assertIn("jits worker", out)
        self.assertRegex(out, r"jits worker stopped after \d+ run\(s\)")
        with open(path) as f:
            lines = [line.split() for line in f]
        self.assertEqual(sorted(int(n) for n, _ in lines), list(range(-1, 60)))
        sys.stderr.write("\n[worker + requests] jobs=61 by pid: %s\n" % {
            pid: sum(1 for _, p in lines if p == pid) for pid in {p for _, p in lines}})

    def test_worker_rejects_a_bad_interval(self):
        worker = self.start_worker("--interval", "0")
        out, err = worker.communicate(timeout=30)
        self.assertEqual(worker.returncode, 2)
        self.assertIn("--interval must be a number of seconds > 0", err)


@unittest.skipIf(HAVE_TASKS, "django.tasks is available here")
class TasksBackendWithoutDjangoTasksTests(unittest.TestCase):
    def test_backend_explains_what_it_needs(self):
        with self.assertRaisesRegex(jits.JitsError,
                                    r"needs Django 6\.0 or newer \(django\.tasks\)"):
            jits.TasksBackend("default", {})



# ---------------------------------------------------------------------------
# Production proof: real databases, load, crashes, outages, shutdown.
# Databases on the shared servers are private to each test (created and
# dropped here), so runs never disturb one another.
# ---------------------------------------------------------------------------

LONG_TESTS = os.environ.get("JITS_LONG_TESTS") == "1"
long_test = unittest.skipUnless(
    LONG_TESTS, "long load/outage test: set JITS_LONG_TESTS=1 to run it (CI does, "
    "with Python 3.13)")
needs_project = unittest.skipUnless(django is not None and _have_gunicorn(),
                                    "needs Django and gunicorn")


def _figures(label, **values):
    text = " ".join("%s=%s" % item for item in values.items())
    sys.stderr.write("\n[%s] %s\n" % (label, text))


def private_database(test, vendor):
    """Create an empty database on a shared server for *test* (dropped at
    cleanup); return its Django DATABASES entry."""
    import uuid

    name = "jits_t%d_%s" % (os.getpid(), uuid.uuid4().hex[:8])
    if vendor == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3",
                "NAME": os.path.join(tempfile.mkdtemp(dir=TMP), "site.sqlite3"),
                "OPTIONS": {"timeout": 20}}
    if vendor == "postgresql":
        import psycopg

        def admin(sql):
            with psycopg.connect(host=PG["host"], port=PG["port"], user=PG["user"],
                                 dbname="postgres", autocommit=True) as conn:
                conn.execute(sql)

        admin('CREATE DATABASE "%s"' % name)
        test.addCleanup(admin, 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
        return {"ENGINE": "django.db.backends.postgresql", "NAME": name,
                "USER": PG["user"], "HOST": PG["host"], "PORT": PG["port"]}
    import MySQLdb

    def admin(sql):
        conn = MySQLdb.connect(host=MY["host"], port=MY["port"], user=MY["user"],
                               passwd="")
        try:
            conn.cursor().execute(sql)
        finally:
            conn.close()

    admin("CREATE DATABASE `%s`" % name)
    test.addCleanup(admin, "DROP DATABASE IF EXISTS `%s`" % name)
    return {"ENGINE": "django.db.backends.mysql", "NAME": name, "USER": MY["user"],
            "PASSWORD": "", "HOST": MY["host"], "PORT": MY["port"]}


def django_alias(test, database):
    """Make *database* reachable in this process as a Django alias; return it."""
    import uuid

    from django.db import connections

    alias = "t_" + uuid.uuid4().hex[:8]
    both = {"default": dict(connections.settings["default"]), alias: dict(database)}
    connections.settings[alias] = connections.configure_settings(both)[alias]

    def forget():
        with contextlib.suppress(Exception):
            connections[alias].close()
        with contextlib.suppress(AttributeError):
            delattr(connections._connections, alias)
        connections.settings.pop(alias, None)

    test.addCleanup(forget)
    return alias


def need_vendor(vendor):
    if vendor == "postgresql":
        return skip_unless_db(HAVE_PG, "PostgreSQL")
    if vendor == "mysql":
        return skip_unless_db(HAVE_MY, "MariaDB")
    return needs_django


def _pg_binaries():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


class PrivatePostgres:
    """A PostgreSQL server of our own (initdb in a temp dir), to stop at will."""

    def __init__(self):
        self.bin = _pg_binaries()
        self.dir = tempfile.mkdtemp(prefix="jits-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = _free_port()
        self.as_user = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(self.dir, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def run(self, *args, timeout=120):
        out = subprocess.run(self.as_user + list(args), capture_output=True, text=True,
                             timeout=timeout, cwd=self.dir)
        if out.returncode != 0:
            raise RuntimeError("%s failed: %s %s" % (args[0], out.stdout, out.stderr))
        return out

    def init(self):
        self.run(os.path.join(self.bin, "initdb"), "-D", self.data, "-U", "postgres",
                 "--auth=trust", "-E", "UTF8", "--no-sync")

    def start(self):
        options = ("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c max_connections=100" % (self.port, self.dir))
        self.run(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-o", options,
                 "-l", os.path.join(self.dir, "log"), "-w", "-t", "60", "start")

    def stop(self):
        self.run(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", "fast",
                 "-w", "-t", "60", "stop")

    def destroy(self):
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            with contextlib.suppress(Exception):
                self.run(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m",
                         "immediate", "-w", "-t", "30", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    def create_database(self, name):
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                             dbname="postgres", autocommit=True) as conn:
            conn.execute('CREATE DATABASE "%s"' % name)
        return {"ENGINE": "django.db.backends.postgresql", "NAME": name,
                "USER": "postgres", "HOST": "127.0.0.1", "PORT": self.port,
                "OPTIONS": {"connect_timeout": 5}}


def private_postgres(test):
    """Start a private PostgreSQL server for *test*; skip (or fail when CI
    requires databases) if PostgreSQL's server binaries are missing."""
    if not _driver("psycopg") or _pg_binaries() is None or (
            os.geteuid() == 0 and shutil.which("runuser") is None):
        if REQUIRE_DATABASES:
            test.fail("initdb/pg_ctl or psycopg is missing: cannot start a private "
                      "PostgreSQL server")
        test.skipTest("initdb/pg_ctl or psycopg is missing: cannot start a private "
                      "PostgreSQL server")
    server = PrivatePostgres()
    test.addCleanup(server.destroy)
    server.init()
    server.start()
    return server



def ledger_lines(ledger):
    """Return the complete lines of a ledger file, split into fields."""
    with open(ledger) as f:
        return [line.split() for line in f if line.endswith("\n")]


# -- Under load: gunicorn, 4 workers, every database --------------------------


class LoadMixin(ProjectMixin):
    """gunicorn -w 4 on one database, driven by a load generator on 127.0.0.1."""

    vendor = "sqlite"

    def run_load(self, worker_class, threaded, seconds, jobs, batch=10):
        database = private_database(self, self.vendor)
        folder, env, server, base, ledger = self.start_project(
            database, threaded=threaded, worker_class=worker_class)
        stats = {}
        t0 = time.monotonic()
        statuses = self.drive(base, ledger, jobs, seconds, clients=6, batch=batch,
                              pause=0.005, drain=300, stats=stats)
        took = time.monotonic() - t0
        self.stop(server)
        self.assertEqual(set(statuses), {200}, (statuses, stats.get("bodies")))
        # Periodic rows queue behind a backlog of older jobs, so under load
        # their missed slots coalesce: fewer runs, never a slot twice.
        counts = self.check_exactly_once(ledger, jobs, seconds, share=12)
        store = jits.DjangoStore(django_alias(self, database))
        self.assertEqual([r["id"] for r in store.rows() if r["status"] == "running"],
                         [], "nothing may stay running")
        self.assertEqual(len(store.runs()), sum(counts.values()),
                         "the run history must match the runs")
        log = self.log_text()
        self.assertNotIn("Traceback", log)
        pids = {parts[2] for parts in ledger_lines(ledger)}
        _figures("load %s %s threaded=%s" % (self.vendor, worker_class, threaded),
                 seconds=round(took, 1), requests=stats["requests"],
                 p99_ms=stats["p99_ms"], max_ms=stats["max_ms"], jobs=jobs,
                 runs=counts, statuses=statuses, workers_that_ran_tasks=len(pids))


@long_test
@needs_project
@need_vendor("sqlite")
class LoadSQLiteTests(LoadMixin, unittest.TestCase):
    vendor = "sqlite"

    def test_gthread_threaded_60s_5000_jobs(self):
        self.run_load("gthread", True, 60, 5000)

    def test_sync_blocking_15s(self):
        self.run_load("sync", False, 15, 1000)


@long_test
@needs_project
@need_vendor("postgresql")
class LoadPostgresTests(LoadMixin, unittest.TestCase):
    vendor = "postgresql"

    def test_sync_blocking_60s_5000_jobs(self):
        self.run_load("sync", False, 60, 5000)

    def test_gthread_threaded_15s(self):
        self.run_load("gthread", True, 15, 1000)


@long_test
@needs_project
@need_vendor("mysql")
class LoadMySQLTests(LoadMixin, unittest.TestCase):
    vendor = "mysql"

    def test_sync_threaded_60s_5000_jobs(self):
        self.run_load("sync", True, 60, 5000)

    def test_gthread_blocking_15s(self):
        self.run_load("gthread", False, 15, 1000)


class Background:
    """Requests to "/" from a few threads until stopped; counts statuses."""

    def __init__(self, test, base, clients=2, pause=0.05):
        self.statuses = {}
        self.bodies = []
        self._stop = threading.Event()
        self._lock = threading.Lock()

        def client():
            while not self._stop.is_set():
                status, body = test.get(base + "/")
                with self._lock:
                    self.statuses[status] = self.statuses.get(status, 0) + 1
                    if status != 200:
                        self.bodies.append(body[:300])
                time.sleep(pause)

        self._threads = [threading.Thread(target=client, daemon=True)
                         for _ in range(clients)]
        for t in self._threads:
            t.start()
        test.addCleanup(self.stop)

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(90)
        return self.statuses


# -- kill -9 of a worker that runs a task -------------------------------------


@needs_project
class WorkerKillTests(ProjectMixin, unittest.TestCase):
    def test_task_of_a_killed_worker_runs_once_more_elsewhere(self):
        import signal

        lease, seconds = 3, 6  # the task outlives its lease: it must renew it
        database = private_database(self, "sqlite")
        folder, env, server, base, ledger = self.start_project(
            database, threaded=True, lease=lease)
        load = Background(self, base)
        self.assertEqual(self.get(base + "/slow/1/%d/" % seconds)[0], 200)

        def started(attempt):
            return [p for p in ledger_lines(ledger)
                    if p[0] == "start" and p[1] == "1:%d" % attempt]

        self.assertTrue(wait_for(lambda: started(1), 60), "the task did not start")
        victim = int(started(1)[0][2])
        time.sleep(lease + 1)  # past the first lease: renewals keep it ours
        self.assertEqual(len([p for p in ledger_lines(ledger) if p[0] == "start"]), 1,
                         "a task longer than its lease got a second copy")
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        self.assertTrue(wait_for(lambda: started(2), 90), "the task was not run again")
        rerun_after = time.monotonic() - killed
        self.assertTrue(wait_for(
            lambda: [p for p in ledger_lines(ledger) if p[0] == "end"], 90))
        time.sleep(2 * lease + 1)  # time enough for a wrong third copy
        statuses = load.stop()
        self.stop(server)
        lines = ledger_lines(ledger)
        starts = [p for p in lines if p[0] == "start"]
        ends = [p for p in lines if p[0] == "end"]
        self.assertEqual([p[1] for p in starts], ["1:1", "1:2"])
        self.assertEqual([p[1] for p in ends], ["1:2"])
        self.assertNotEqual(starts[1][2], str(victim), "it must run in another process")
        self.assertFalse([s for s in statuses if s is not None and s >= 500], statuses)
        store = jits.DjangoStore(django_alias(self, database))
        rows = [r for r in store.rows() if r["task"] == "shop.tasks.slow"]
        self.assertEqual(len(rows), 1)
        self.assertEqual((rows[0]["status"], rows[0]["owner"], rows[0]["attempts"]),
                         ("succeeded", None, 2))
        self.assertEqual([r["attempt"] for r in store.runs(rows[0]["id"])], [2])
        self.assertFalse([r for r in store.rows() if r["status"] == "running"])
        _figures("kill -9", lease=lease, task_seconds=seconds,
                 rerun_after_kill_s=round(rerun_after, 1), statuses=statuses,
                 worker_restarts=1)


# -- Database outage: a private PostgreSQL server, stopped for 30 s ------------


@long_test
@needs_project
class DatabaseOutageTests(ProjectMixin, unittest.TestCase):
    def test_postgresql_stopped_for_30s_under_load(self):
        pg = private_postgres(self)
        database = pg.create_database("site")
        folder, env, server, base, ledger = self.start_project(
            database, threaded=False, worker_class="sync")
        phase = ["before"]
        results = []  # (phase, kind, status, first job or None)
        lock = threading.Lock()
        done = threading.Event()
        counter = iter(range(0, 10 ** 6, 5))

        def client(i):
            turn = 0
            while not done.is_set():
                turn += 1
                if turn % 2:
                    n, url = None, base + "/"
                else:
                    with lock:
                        n = next(counter)
                    url = base + "/enqueue/%d/5/" % n
                current = phase[0]
                status, body = self.get(url)
                with lock:
                    results.append((current, n, status, body[:200]))
                time.sleep(0.02)

        threads = [threading.Thread(target=client, args=(i,), daemon=True)
                   for i in range(4)]
        for t in threads:
            t.start()
        self.addCleanup(done.set)
        time.sleep(10)
        pg.stop()
        phase[0] = "down"
        stopped_wall = time.time()
        time.sleep(30)
        phase[0] = "restarting"
        pg.start()
        phase[0] = "after"
        restarted_wall = time.time()
        time.sleep(15)
        done.set()
        for t in threads:
            t.join(120)
        ok = set()
        for _, n, status, _ in results:
            if n is not None and status == 200:
                ok.update(range(n, n + 5))

        def all_ran():
            self.get(base + "/")
            return ok <= {int(v) for v in self.read_ledger(ledger)["job"]}

        self.assertTrue(wait_for(all_ran, 180, 0.2), "jobs were lost")
        self.stop(server)
        by_phase = {}
        for current, n, status, _ in results:
            key = "%s %s %s" % (current, "home" if n is None else "enqueue", status)
            by_phase[key] = by_phase.get(key, 0) + 1
        home_bad = [r for r in results if r[1] is None and r[2] != 200]
        self.assertEqual(home_bad, [], "a page that needs no database failed")
        self.assertFalse([r for r in results if r[2] is None or r[2] == 500],
                         "every request must be answered, without a 500")
        self.assertTrue(by_phase.get("down enqueue 503"), "the database was not down?")
        found = self.read_ledger(ledger)
        ran = [int(v) for v in found["job"]]
        self.assertEqual(len(ran), len(set(ran)), "a job ran twice")
        attempted = {n + k for _, n, _, _ in results if n is not None for k in range(5)}
        self.assertLessEqual(set(ran), attempted)
        ticks = [float(v) for v in found["tick"]]
        self.assertEqual(len(ticks), len(set(ticks)), "a periodic slot ran twice")
        self.assertTrue([t for t in ticks if t > restarted_wall],
                        "the scheduler did not resume by itself")
        store = jits.DjangoStore(django_alias(self, database))
        self.assertFalse([r for r in store.rows() if r["status"] == "running"])
        errors = self.log_text().count("jits could not")
        self.assertLess(errors, 4 * (30 / 5 + 6) * 3, "store errors must be rate-limited")
        gap = sorted(t for t in ticks if stopped_wall - 2 < t < restarted_wall + 30)
        _figures("database outage (private postgresql, sync, blocking)",
                 outage_s=round(restarted_wall - stopped_wall, 1),
                 requests=len(results), by_phase=by_phase, jobs_enqueued=len(ok),
                 jobs_ran=len(ran), jits_error_lines=errors,
                 first_tick_after_restart_s=round(
                     min(t for t in gap if t > restarted_wall) - restarted_wall, 1))


# -- SQLite write contention ---------------------------------------------------

HOG = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
end = time.monotonic() + float(sys.argv[2])
held = 0
while time.monotonic() < end:
    conn.execute("BEGIN EXCLUSIVE")
    time.sleep(0.3)
    conn.execute("COMMIT")
    held += 1
    time.sleep(0.1)
print(held, flush=True)
"""


@needs_project
class SQLiteContentionTests(ProjectMixin, unittest.TestCase):
    def test_database_is_locked_never_reaches_a_response(self):
        database = private_database(self, "sqlite")
        database["OPTIONS"] = {"timeout": 0.1}
        folder, env, server, base, ledger = self.start_project(
            database, threaded=False, min_seconds=0)
        jobs, seconds = 300, 12
        hog = subprocess.Popen([sys.executable, "-c", HOG, database["NAME"],
                                str(seconds)], stdout=subprocess.PIPE, text=True)
        self.addCleanup(_stop_process, hog)
        load = Background(self, base, clients=3, pause=0.01)
        statuses, bodies, retried = {}, [], 0
        for n in range(0, jobs, 10):
            while True:  # the view's own insert may time out: it answers 503
                status, body = self.get(base + "/enqueue/%d/10/" % n)
                statuses[status] = statuses.get(status, 0) + 1
                bodies.append(body)
                if status == 200:
                    break
                retried += 1
                time.sleep(0.05)
            time.sleep(seconds / (jobs / 10) / 2)
        held = int(hog.communicate(timeout=seconds + 60)[0])

        def all_ran():
            self.get(base + "/")
            return len(self.read_ledger(ledger)["job"]) >= jobs

        self.assertTrue(wait_for(all_ran, 120, 0.1), "jobs were lost")
        home = load.stop()
        self.stop(server)
        self.assertEqual(set(home), {200}, load.bodies[:3])
        self.assertLessEqual(set(statuses), {200, 503}, statuses)
        # The enqueue view's own insert may time out (0.1 s here): it
        # answers 503 itself.  Everything else must never see the lock.
        self.assertFalse([b for b in load.bodies if "locked" in b],
                         "'database is locked' reached a response")
        self.assertFalse([b for b in bodies if "locked" in b and "unavailable" not in b])
        log = self.log_text()
        self.assertIn("database is locked", log, "the test made no contention?")
        self.check_exactly_once(ledger, jobs, 0)
        _figures("sqlite contention", exclusive_locks_held=held,
                 home_requests=sum(home.values()), enqueue_statuses=statuses,
                 jits_locked_log_lines=log.count("database is locked"), jobs=jobs)


# -- The standalone store file deleted or corrupted -----------------------------

WSGI_SITE = """
import logging, os, sys, time
import jits

logging.basicConfig(level=logging.WARNING, format="%(process)d %(levelname)s %(message)s")
LEDGER = os.environ["SITE_LEDGER"]
scheduler = jits.Scheduler(jits.SQLiteStore(os.environ["SITE_STORE"], timeout=10),
                           min_interval=0.2)

def record(*parts):
    with open(LEDGER, "a") as f:
        f.write(" ".join(str(p) for p in parts) + "\\n")

@jits.task(name="site.job")
def job(n):
    record("job", n, os.getpid())

@jits.task(name="site.tick", every=1, takes_context=True)
def tick(ctx):
    record("tick", repr(ctx.scheduled.timestamp()), os.getpid())

def inner(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    body = b"home"
    if path.startswith("/enqueue/"):
        n = int(path.split("/")[2])
        body = scheduler.enqueue(job, None, (n,), {}).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]

application = jits.WSGIMiddleware(inner, scheduler)
"""


@unittest.skipUnless(_have_gunicorn(), "needs gunicorn")
class StoreFileFaultTests(ProjectMixin, unittest.TestCase):
    def start_site(self):
        folder = tempfile.mkdtemp(dir=TMP)
        with open(os.path.join(folder, "wsgisite.py"), "w") as f:
            f.write(WSGI_SITE)
        store = os.path.join(folder, "jits.sqlite3")
        ledger = os.path.join(folder, "ledger.txt")
        open(ledger, "w").close()
        env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + folder, SITE_STORE=store,
                   SITE_LEDGER=ledger)
        env.pop("DJANGO_SETTINGS_MODULE", None)
        port = _free_port()
        self.gunicorn_log = os.path.join(folder, "gunicorn.log")
        log = open(self.gunicorn_log, "w")
        self.addCleanup(log.close)
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-w", "4", "-b", "127.0.0.1:%d" % port,
             "--timeout", "120", "wsgisite:application"],
            cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.addCleanup(_stop_process, server)
        base = "http://127.0.0.1:%d" % port
        self.assertTrue(wait_for(lambda: self.get(base + "/")[0] == 200, 60, 0.2))
        return store, ledger, server, base

    def enqueue_and_wait(self, base, ledger, numbers):
        for n in numbers:
            status, body = self.get(base + "/enqueue/%d/" % n)
            self.assertEqual(status, 200, body)

        def ran():
            self.get(base + "/")
            return set(numbers) <= {int(v) for v in self.read_ledger(ledger)["job"]}

        self.assertTrue(wait_for(ran, 60, 0.05), "enqueued jobs did not run")

    def test_deleted_then_corrupted_store_file(self):
        store, ledger, server, base, = self.start_site()
        load = Background(self, base, clients=3, pause=0.01)
        self.enqueue_and_wait(base, ledger, range(0, 50))
        for suffix in ("", "-wal", "-shm"):  # rm jits.sqlite3*, as README says
            os.remove(store + suffix)
        time.sleep(3)
        self.enqueue_and_wait(base, ledger, range(50, 100))
        self.assertIn("was deleted or replaced", self.log_text())
        with open(store + ".bad", "wb") as f:  # a damaged copy put in its place
            f.write(b"this is no database" + os.urandom(8192))
        for suffix in ("-wal", "-shm"):
            os.remove(store + suffix)
        os.replace(store + ".bad", store)
        time.sleep(4)
        corrupt_log = self.log_text()
        self.assertRegex(corrupt_log, r"jits store .*%s.* (is corrupt|is not a "
                         r"database)" % os.path.basename(store))
        for suffix in ("", "-wal", "-shm"):  # the operator moves the file away
            with contextlib.suppress(FileNotFoundError):
                os.remove(store + suffix)
        time.sleep(2)
        self.enqueue_and_wait(base, ledger, range(100, 150))
        statuses = load.stop()
        self.stop(server)
        self.assertEqual(set(statuses), {200}, load.bodies[:3])
        self.assertLess(corrupt_log.count("was deleted or replaced"), 4 * 3,
                        "the reopen warning must not repeat on every poll")
        ran = [int(v) for v in self.read_ledger(ledger)["job"]]
        self.assertEqual(sorted(ran), list(range(150)), "each job runs exactly once")
        self.assertNotIn("Traceback", self.log_text())
        _figures("store file deleted/corrupted", requests=sum(statuses.values()),
                 statuses=statuses, jobs=len(ran))



# -- Long tasks: leases renewed across processes, per-task lease ----------------

LEASE_WORKER = """
import json, logging, os, sys, time
sys.path.insert(0, {here!r})
kind, target, ledger_path, seconds = sys.argv[1:5]
if kind == "django":
    import django
    from django.conf import settings
    settings.configure(DATABASES={{"default": json.loads(target)}}, USE_TZ=True,
                       TIME_ZONE="UTC", INSTALLED_APPS=[])
    django.setup()
import jits

logging.basicConfig(level=logging.WARNING, format="%(process)d %(levelname)s %(message)s")
store = jits.DjangoStore() if kind == "django" else jits.SQLiteStore(target, timeout=30)

def record(*parts):
    with open(ledger_path, "a") as f:
        f.write(" ".join(str(p) for p in parts) + "\\n")

@jits.task(name="lt.long", lease=2.0, takes_context=True)
def long_task(ctx, n, secs):
    record("start", n, ctx.attempt, os.getpid())
    time.sleep(secs)
    record("end", n, ctx.attempt, os.getpid())

s = jits.Scheduler(store, threaded=True, num_threads=2, min_interval=0.05)
end = time.monotonic() + float(seconds)
while time.monotonic() < end:
    s.maybe_poll()
    time.sleep(0.02)
s.shutdown(grace=30)
print("worker done", flush=True)
"""


class LongTaskMixin:
    """Tasks longer than their (short, per-task) lease, among 3 processes."""

    vendor = "sqlite"

    def test_long_task_keeps_its_lease_and_never_gets_a_second_copy(self):
        lease, task_seconds, jobs = 2.0, 7, 4
        if self.vendor == "sqlite":
            kind = "sqlite"
            target = tempfile.mktemp(dir=TMP, suffix=".sqlite3")
            store = jits.SQLiteStore(target)
        else:
            kind = "django"
            database = private_database(self, self.vendor)
            target = json.dumps(database)
            store = jits.DjangoStore(django_alias(self, database))
        store.ensure_schema()
        now = time.time()
        for n in range(jobs):
            store.enqueue("long-%d" % n, "lt.long", json.dumps([[n, task_seconds], {}]),
                          now, "default", 0, now)
        folder = tempfile.mkdtemp(dir=TMP)
        script = os.path.join(folder, "worker.py")
        with open(script, "w") as f:
            f.write(LEASE_WORKER.format(here=HERE))
        ledger = os.path.join(folder, "ledger.txt")
        procs = [subprocess.Popen([sys.executable, script, kind, target, ledger, "14"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(3)]
        for proc in procs:
            self.addCleanup(_stop_process, proc)
        leases = {}  # job -> lease ends seen while it ran
        ahead = 0.0  # the most a lease end was seen ahead of the clock
        while any(p.poll() is None for p in procs):
            seen = time.time()
            for row in store.rows():
                if row["status"] == "running":
                    leases.setdefault(row["id"], set()).add(row["due"])
                    ahead = max(ahead, row["due"] - seen)
            time.sleep(0.2)
        errors = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            self.assertEqual(proc.returncode, 0, err[-3000:])
            errors.append(err)
        self.assertEqual("".join(errors), "", "no lease may be lost")
        lines = ledger_lines(ledger)
        starts = sorted((p[1], p[2]) for p in lines if p[0] == "start")
        self.assertEqual(starts, [(str(n), "1") for n in range(jobs)],
                         "each long task runs once, at its first attempt")
        self.assertEqual(len([p for p in lines if p[0] == "end"]), jobs)
        for row in store.rows():
            self.assertEqual((row["status"], row["attempts"]), ("succeeded", 1))
            self.assertEqual(len(store.runs(row["id"])), 1)
        # The lease is the task's 2 s, not the 60 s default, and was renewed.
        self.assertTrue(leases)
        self.assertLess(ahead, lease + 0.5)
        self.assertGreaterEqual(min(len(v) for v in leases.values()), 3, leases)
        _figures("long tasks, %s" % self.vendor, processes=3, jobs=jobs,
                 lease_s=lease, task_s=task_seconds, lease_ahead_max_s=round(ahead, 2),
                 lease_ends_seen_per_job=sorted(len(v) for v in leases.values()),
                 processes_that_ran=len({p[3] for p in lines if p[0] == "start"}))


class LongTaskSQLiteTests(LongTaskMixin, unittest.TestCase):
    vendor = "sqlite"


@need_vendor("postgresql")
class LongTaskPostgresTests(LongTaskMixin, unittest.TestCase):
    vendor = "postgresql"


@need_vendor("mysql")
class LongTaskMySQLTests(LongTaskMixin, unittest.TestCase):
    vendor = "mysql"


class LeaseOptionTests(RegistryMixin, unittest.TestCase):
    def test_claim_uses_the_lease_of_its_task(self):
        scheduler, clock = self.memory_scheduler()
        short = jits.task(name="t.short", lease=1.5)(lambda: None)
        default = jits.task(name="t.default")(lambda: None)
        for obj in (short, default):
            scheduler.enqueue(obj, None, (), {})
        names = scheduler._sync(clock.now())
        claims = scheduler.store.claim(names, clock.now(), 10, "w", scheduler._leases)
        ends = {c.task: scheduler.store.get(c.id)["due"] - clock.now() for c in claims}
        self.assertEqual(ends, {"t.short": 1.5, "t.default": jits.DEFAULT_LEASE})


# -- Graceful shutdown on SIGTERM -------------------------------------------------

SHUTDOWN_WORKER = """
import logging, os, sys, time
sys.path.insert(0, {here!r})
import jits

path, ledger_path, mode = sys.argv[1:4]
logging.basicConfig(level=logging.WARNING, format="%(process)d %(levelname)s %(message)s")

def record(*parts):
    with open(ledger_path, "a") as f:
        f.write(" ".join(str(p) for p in parts) + "\\n")

@jits.task(name="gs.finisher")
def finisher():
    record("start", "finisher")
    time.sleep(2)
    record("end", "finisher")

@jits.task(name="gs.holdout")
def holdout():
    record("start", "holdout")
    time.sleep(120)
    record("end", "holdout")

s = jits.Scheduler(jits.SQLiteStore(path), threaded=(mode == "threaded"), grace=4,
                   min_interval=0.05)
while True:
    s.maybe_poll()
    time.sleep(0.02)
"""


class GracefulShutdownTests(RegistryMixin, unittest.TestCase):
    def run_until_sigterm(self, mode, names):
        import signal

        folder = tempfile.mkdtemp(dir=TMP)
        path = os.path.join(folder, "store.sqlite3")
        ledger = os.path.join(folder, "ledger.txt")
        open(ledger, "w").close()
        store = jits.SQLiteStore(path)
        store.ensure_schema()
        now = time.time()
        for name in names:
            store.enqueue(name, "gs." + name, "[[],{}]", now, "default", 0, now)
        script = os.path.join(folder, "worker.py")
        with open(script, "w") as f:
            f.write(SHUTDOWN_WORKER.format(here=HERE))
        proc = subprocess.Popen([sys.executable, script, path, ledger, mode],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(_stop_process, proc)
        self.assertTrue(wait_for(lambda: len(ledger_lines(ledger)) >= len(names), 60),
                        "the tasks did not start")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - t0
        rows = {r["id"]: r for r in store.rows()}
        return proc.returncode, took, rows, ledger_lines(ledger), store, err

    def test_threaded_process_finishes_in_grace_or_gives_claims_back(self):
        code, took, rows, lines, store, err = self.run_until_sigterm(
            "threaded", ["finisher", "holdout"])
        self.assertEqual(code, 143, err)  # exit status of a SIGTERM, after cleanup
        self.assertIn(["end", "finisher"], lines)
        self.assertNotIn(["end", "holdout"], lines)
        self.assertEqual((rows["finisher"]["status"], rows["finisher"]["outcome"]),
                         ("succeeded", "succeeded"))
        holdout = rows["holdout"]
        self.assertEqual((holdout["status"], holdout["owner"]), ("ready", None))
        self.assertLessEqual(holdout["due"], time.time(), "given back: due at once")
        self.assertGreater(took, 3, "the grace period (4 s) was not waited for")
        self.assertLess(took, 30)
        # Any other process takes the given-back job at once, not after its lease.
        ran = []
        jits.task(name="gs.holdout")(lambda: ran.append(1))
        self.assertEqual(jits.Scheduler(store, min_interval=0).poll(), 1)
        self.assertEqual(ran, [1])
        self.assertEqual(store.get("holdout")["attempts"], 2)
        _figures("SIGTERM, plain threaded process", grace_s=4,
                 exit_after_s=round(took, 1), finished=1, given_back=1)

    def test_blocking_process_gives_the_running_claim_back(self):
        code, took, rows, lines, store, err = self.run_until_sigterm(
            "blocking", ["holdout"])
        self.assertEqual(code, 143, err)
        self.assertEqual((rows["holdout"]["status"], rows["holdout"]["owner"]),
                         ("ready", None))
        self.assertLess(took, 20)


@needs_project
class GunicornShutdownTests(ProjectMixin, unittest.TestCase):
    def test_sigterm_lets_tasks_finish_in_grace_or_gives_them_back(self):
        import signal

        database = private_database(self, "sqlite")
        folder, env, server, base, ledger = self.start_project(
            database, threaded=True, lease=30, graceful_timeout=40)
        self.assertEqual(self.get(base + "/slow/1/3/")[0], 200)
        self.assertEqual(self.get(base + "/slow/2/120/")[0], 200)

        def both_started():
            self.get(base + "/")
            return len([p for p in ledger_lines(ledger) if p[0] == "start"]) == 2

        self.assertTrue(wait_for(both_started, 60, 0.2))
        t0 = time.monotonic()
        server.send_signal(signal.SIGTERM)
        self.assertEqual(server.wait(90), 0)
        took = time.monotonic() - t0
        ends = [p[1] for p in ledger_lines(ledger) if p[0] == "end"]
        self.assertEqual(ends, ["1:1"], "the short task must finish, the long not")
        store = jits.DjangoStore(django_alias(self, database))
        rows = {json.loads(r["args"])[0][0]: r for r in store.rows()
                if r["task"] == "shop.tasks.slow"}
        self.assertEqual(rows[1]["status"], "succeeded")
        self.assertEqual((rows[2]["status"], rows[2]["owner"]), ("ready", None),
                         "the long task's claim must be given back")
        self.assertLess(rows[2]["due"], time.time(), "not held until its 30 s lease")
        self.assertLess(took, 40)
        _figures("SIGTERM, gunicorn -w 4", grace_s=jits.DEFAULT_GRACE,
                 stopped_after_s=round(took, 1), finished=1, given_back=1)


# -- Several hosts on one database: processes with their own connections --------


class MultiHostMixin(MultiProcessMixin):
    vendor = "postgresql"

    def test_processes_with_own_connections_run_everything_exactly_once(self):
        database = private_database(self, self.vendor)
        store = jits.DjangoStore(django_alias(self, database))
        figures = self.run_processes("django", json.dumps(database), store)
        _figures("several hosts, %s" % self.vendor, **figures)


@need_vendor("postgresql")
class MultiHostPostgresTests(MultiHostMixin, unittest.TestCase):
    vendor = "postgresql"


@need_vendor("mysql")
class MultiHostMySQLTests(MultiHostMixin, unittest.TestCase):
    vendor = "mysql"


if __name__ == "__main__":
    unittest.main()
