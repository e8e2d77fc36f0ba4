"""Tests for jits.  Run: python -m unittest -v test_jits  (or pytest).

Django, when installed, is configured once for the whole module (SQLite
file database, plus PostgreSQL and MariaDB aliases when those servers
answer on 127.0.0.1).  Tests that need a missing piece are skipped with the
reason; JITS_REQUIRE_DATABASES=1 turns skips for unreachable databases into
failures.
"""

import asyncio
import contextlib
import glob
import json
import logging
import os
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
from datetime import datetime, timedelta, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import jits  # noqa: E402

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


def _databases():
    databases = {
        "default": {"ENGINE": "django.db.backends.sqlite3",
                    "NAME": os.path.join(TMP, "django.sqlite3"),
                    "OPTIONS": {"timeout": 20}},
    }
    if HAVE_PG:
        databases["pg"] = {"ENGINE": "django.db.backends.postgresql", "NAME": PG["name"],
                           "USER": PG["user"], "HOST": PG["host"], "PORT": PG["port"],
                           "TEST": {"NAME": "test"}}
    if HAVE_MY:
        databases["mysql"] = {"ENGINE": "django.db.backends.mysql", "NAME": MY["name"],
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
            (dict(lease=0), ValueError, "lease must be a number > 0"),
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
            ((object(),), {}, r"argument 0 is a object"),
            ((), {"when": datetime(2026, 1, 1)}, r"keyword argument 'when' is a datetime"),
            (({1: "x"},), {}, r"a key of argument 0 is 1"),
            (([1, {2, 3}],), {}, r"argument 0\[1\] is a set"),
            ((float("nan"),), {}, r"float nan"),
            ((b"bytes",), {}, r"is a bytes"),
        ]
        for args, kwargs, pattern in cases:
            with self.subTest(args=args, kwargs=kwargs):
                with self.assertRaisesRegex(TypeError, pattern):
                    self.enqueue(*args, **kwargs)
        self.assertEqual(self.scheduler.store.rows(), [])

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
        folder = tempfile.mkdtemp(dir=TMP)
        broken = jits.Scheduler(jits.SQLiteStore(folder), clock=self.clock.monotonic,
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
        with self.assertRaisesRegex(TypeError, "threaded must be True or False"):
            jits.Scheduler(store, threaded="yes")
        with self.assertRaisesRegex(ValueError, "num_threads must be an int >= 1"):
            jits.Scheduler(store, num_threads=0)
        with self.assertRaisesRegex(TypeError, "num_threads"):
            jits.Scheduler(store, num_threads=2.0)
        with self.assertRaisesRegex(ValueError, "min_interval must be a number >= 0"):
            jits.Scheduler(store, min_interval=-1)

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
            # Workers poll every few ms, so most slots of the window run
            # (a slot passed while the workers were busy is coalesced).
            self.assertGreaterEqual(len(slots), (seconds - 2) / period / 2, name)
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
        target = json.dumps({"ENGINE": "django.db.backends.postgresql", "NAME": "test",
                             "USER": "postgres", "HOST": "127.0.0.1", "PORT": 5432})
        figures = self.run_processes("django", target, jits.DjangoStore("pg"))
        sys.stderr.write("\n[multi-process postgresql] %s\n" % figures)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

CLI_TASKS = """
import jits

@jits.task(name="cli.hourly", every=3600)
def hourly():
    return "tick"

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
        out = self.jits("--database", db, "--import", "clitasks", "poll")
        self.assertEqual((out.returncode, out.stdout.strip()), (0, "0 run(s) started"))
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
JITS_MIN_SECONDS = 1
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

urlpatterns = [path("", index), path("enqueue/<int:n>/", enqueue)]
"""

PROJECT_TASKS = """
import os
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

    def start_project(self, database, threaded=True, worker_class="sync"):
        folder = tempfile.mkdtemp(dir=TMP)
        _write_project(folder)
        ledger = os.path.join(folder, "ledger.txt")
        open(ledger, "w").close()
        env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + folder,
                   PROJECT_DATABASE=json.dumps(database), PROJECT_LEDGER=ledger,
                   PROJECT_THREADED="1" if threaded else "0",
                   DJANGO_SETTINGS_MODULE="mysite.settings")
        migrate = subprocess.run([sys.executable, "-m", "django", "migrate", "-v0"],
                                 cwd=folder, env=env, capture_output=True, text=True,
                                 timeout=120)
        self.assertEqual(migrate.returncode, 0, migrate.stderr)
        port = _free_port()
        args = [sys.executable, "-m", "gunicorn", "-w", "4", "-b", "127.0.0.1:%d" % port,
                "--worker-class", worker_class, "--graceful-timeout", "10",
                "mysite.wsgi"]
        if worker_class == "gthread":
            args[5:5] = ["--threads", "4"]
        log = open(os.path.join(folder, "gunicorn.log"), "w")
        server = subprocess.Popen(args, cwd=folder, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        self.addCleanup(lambda: server.poll() is None and server.kill())
        base = "http://127.0.0.1:%d" % port
        self.assertTrue(wait_for(lambda: self.get(base + "/")[0] == 200, 30),
                        "gunicorn did not start")
        return folder, env, server, base, ledger

    @staticmethod
    def get(url):
        import urllib.error
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(url, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""
        except OSError as exc:
            return None, str(exc)

    def drive(self, base, ledger, jobs, seconds, clients=8):
        """Send requests for at least *seconds*, enqueueing *jobs* jobs on the
        way, then until every job has run; return the count of each status."""
        statuses = {}
        lock = threading.Lock()
        counter = iter(range(jobs))
        enqueued = []
        end = time.monotonic() + seconds
        give_up = end + 120

        def client():
            while time.monotonic() < give_up:
                with lock:
                    n = next(counter, None)
                if n is None and time.monotonic() >= end:
                    return
                url = base + ("/enqueue/%d/" % n if n is not None else "/")
                status, _ = self.get(url)
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                    if n is not None and status == 200:
                        enqueued.append(n)
                time.sleep(0.01)

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 180)
        self.assertEqual(len(enqueued), jobs, statuses)

        def all_ran():
            self.get(base + "/")
            return len(self.read_ledger(ledger)["job"]) >= jobs

        wait_for(all_ran, 60, 0.2)
        return statuses

    @staticmethod
    def read_ledger(ledger):
        found = {"job": [], "tick": [], "tock": []}
        with open(ledger) as f:
            for line in f:
                kind, value, _pid = line.split()
                found[kind].append(value)
        return found

    def check_exactly_once(self, ledger, jobs, seconds):
        found = self.read_ledger(ledger)
        self.assertEqual(sorted(int(n) for n in found["job"]), list(range(jobs)))
        for kind, period in (("tick", 1), ("tock", 2)):
            slots = [float(v) for v in found[kind]]
            self.assertEqual(len(slots), len(set(slots)), "%s ran a slot twice" % kind)
            self.assertGreaterEqual(len(slots), seconds / period / 2, kind)
        return {k: len(v) for k, v in found.items()}

    def stop(self, server):
        server.terminate()
        self.assertEqual(server.wait(60), 0)


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


if __name__ == "__main__":
    unittest.main()
