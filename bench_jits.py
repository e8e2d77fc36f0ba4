"""Benchmarks of jits, the Just-In-Time Scheduler.

Each benchmark is a named function that prints its own table and returns
the goals it checks; the command line runs the ones named (all by default)
and ends with a summary of the goals::

    python bench_jits.py                     # everything (10-15 minutes)
    python bench_jits.py --quick             # smaller and shorter (2-3)
    python bench_jits.py middleware poll     # only these
    python bench_jits.py --list              # the benchmarks and their goals

Compared variants always run side by side in one run, interleaved and
repeated, and the figures are medians: the machines this runs on are shared
and noisy.  Every Django-dependent measurement runs in a child process of
this script (``--child ...``) so that each gets the settings it needs.

What it needs: Django and psycopg for the Django and PostgreSQL parts, and
the peers: django-background-tasks, django-q2 and huey for throughput,
croniter and cronsim for cron.  Install them in a virtualenv of their own, never beside a project::

    python -m venv /tmp/benchvenv
    /tmp/benchvenv/bin/pip install django "psycopg[binary]" \\
        django-background-tasks django-q2 huey croniter cronsim
    /tmp/benchvenv/bin/python bench_jits.py

A missing package or an unreachable database turns the parts that need it
into "n/a" with the reason; nothing else.  PostgreSQL is looked for on
127.0.0.1:5432 as user postgres; the benchmark uses a database of its own
(``--pg-db``, default ``jits_bench``, created if missing).  All traffic
stays on 127.0.0.1.
"""

import argparse
import gc
import http.client
import io
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

#: Registered benchmarks, in running order: name -> (function, goal text).
BENCHMARKS = {}


def benchmark(name, goal):
    """Register a benchmark function under *name* (its goal is shown by --list)."""

    def register(func):
        BENCHMARKS[name] = (func, goal)
        return func

    return register


# ---------------------------------------------------------------------------
# Helpers: statistics, tables, child processes.
# ---------------------------------------------------------------------------


def median(values):
    return statistics.median(values) if values else float("nan")


def percentile(values, p):
    """Return the *p*-th percentile (0-100) of *values*, linearly interpolated."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def out(text=""):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def table(title, header, rows, note=None):
    """Print a plain-text table (the README copies these)."""
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = "  ".join("%%-%ds" % w for w in widths)
    out()
    out(title)
    out((line % tuple(header)).rstrip())
    out((line % tuple("-" * w for w in widths)).rstrip())
    for row in rows:
        out((line % tuple(row)).rstrip())
    if note:
        for text in textwrap.wrap(note, 78):
            out("  " + text)


def fmt_us(seconds):
    return "%.2f us" % (seconds * 1e6)


def fmt_ms(seconds):
    return "%.3f ms" % (seconds * 1e3) if seconds < 0.1 else "%.0f ms" % (seconds * 1e3)


class Goal:
    """One checked goal: what was measured against what was wanted."""

    def __init__(self, bench, what, measured, wanted, met):
        self.bench, self.what = bench, what
        self.measured, self.wanted, self.met = measured, wanted, met

    def status(self):
        return {True: "met", False: "MISSED", None: "n/a"}[self.met]


class Env:
    """What the benchmarks share: options, a scratch folder, the databases."""

    def __init__(self, args):
        self.quick = args.quick
        self.instructions = args.instructions
        self.tmp = tempfile.mkdtemp(prefix="jits-bench-")
        self.pg = dict(host=args.pg_host, port=args.pg_port, user=args.pg_user,
                       dbname=args.pg_db)
        self.pg_problem = None
        self.django_problem = _missing("django")
        self.raw = {}  # benchmark name -> raw figures, for --json
        _write_project(self.tmp)

    def pg_database(self, options=None):
        """Return a Django DATABASES entry for the benchmark's PostgreSQL database."""
        entry = {"ENGINE": "django.db.backends.postgresql", "NAME": self.pg["dbname"],
                 "USER": self.pg["user"], "HOST": self.pg["host"],
                 "PORT": self.pg["port"]}
        if options:
            entry["OPTIONS"] = options
        return entry

    def sqlite_database(self, path):
        # The same options for every system on Django's SQLite: WAL (set on
        # the file itself) and a busy timeout long enough for 4 writers.
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": path,
                "OPTIONS": {"timeout": 30}}

    def child(self, name, *args, databases=None, apps=(), middleware=(), jits=None,
              timeout=600, extra_env=None):
        """Run ``bench_jits.py --child NAME ARGS``; return its JSON answer."""
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", name] + list(args),
            env=self.child_env(databases, apps, middleware, jits, extra_env),
            capture_output=True, text=True, timeout=timeout)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            raise RuntimeError("child %s failed (exit %s): %s" % (
                name, proc.returncode, (proc.stderr or proc.stdout)[-2000:]))
        return json.loads(lines[-1])

    def child_env(self, databases=None, apps=(), middleware=(), jits=None,
                  extra_env=None):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([self.tmp, HERE])
        env["BENCH_DATABASES"] = json.dumps(databases or {})
        env["BENCH_APPS"] = ",".join(apps)
        env["BENCH_MIDDLEWARE"] = json.dumps(list(middleware))
        env["BENCH_JITS"] = json.dumps(jits or {})
        if databases:
            env["DJANGO_SETTINGS_MODULE"] = "bench_settings"
        else:
            env.pop("DJANGO_SETTINGS_MODULE", None)
        env.update(extra_env or {})
        return env

    def check_pg(self):
        """Make sure the benchmark's database exists; return a problem or None."""
        if self.pg_problem is not None or getattr(self, "_pg_ok", False):
            return self.pg_problem
        missing = _missing("psycopg") or self.django_problem
        if missing:
            self.pg_problem = missing
            return missing
        try:
            import psycopg

            params = dict(self.pg, connect_timeout=5)
            params["dbname"] = "postgres"
            with psycopg.connect(**params, autocommit=True) as conn:
                found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                     (self.pg["dbname"],)).fetchone()
                if not found:
                    conn.execute('CREATE DATABASE "%s"' % self.pg["dbname"])
            self._pg_ok = True
        except Exception as exc:
            self.pg_problem = "PostgreSQL unreachable: %s" % str(exc).strip()[:120]
        return self.pg_problem


def _missing(module):
    """Return why *module* cannot be imported, or None."""
    try:
        __import__(module)
    except ImportError as exc:
        return "%s not installed (%s)" % (module, exc)
    return None


def _start_group(argv, env, log):
    """Start *argv* as the leader of a new process group (to stop it whole)."""
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop_group(proc, grace=10.0):
    """Stop a process group this script started: SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        with _suppress():
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    # Workers the leader forked may outlive it; the group id is the
    # leader's pid, which is ours.
    with _suppress():
        os.killpg(proc.pid, signal.SIGKILL)
    with _suppress():
        proc.wait(5)


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], Exception)


# ---------------------------------------------------------------------------
# The Django project every child uses, written into the scratch folder.
# Settings come from environment variables, so one project serves all.
# ---------------------------------------------------------------------------

_PROJECT = {
    "bench_settings.py": '''
import json
import os

SECRET_KEY = "jits-bench"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "bench_urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
DATABASES = json.loads(os.environ.get("BENCH_DATABASES") or "{}")
INSTALLED_APPS = ["django.contrib.contenttypes", "benchtasks"] + [
    a for a in os.environ.get("BENCH_APPS", "").split(",") if a]
MIDDLEWARE = json.loads(os.environ.get("BENCH_MIDDLEWARE") or "[]")
for _name, _value in json.loads(os.environ.get("BENCH_JITS") or "{}").items():
    globals()[_name] = _value
# django-q2: its ORM broker, 4 worker processes, otherwise its defaults
# (poll lowered from 0.2 s to the 0.05 s the other workers use when idle).
Q_CLUSTER = {"name": "bench", "orm": "default", "workers": 4, "timeout": 60,
             "retry": 120, "poll": 0.05, "catch_up": False}
LOGGING = {"version": 1, "disable_existing_loggers": False,
           "handlers": {"err": {"class": "logging.StreamHandler"}},
           "root": {"handlers": ["err"], "level": "WARNING"}}
''',
    "bench_urls.py": '''
from django.http import HttpResponse
from django.urls import path


def ok(request):
    return HttpResponse(b"ok", content_type="text/plain")


def passthrough(get_response):
    """The smallest Django middleware: what any middleware costs."""
    def middleware(request):
        return get_response(request)
    return middleware


import time


def passclock(get_response):
    mono = time.monotonic
    def middleware(request):
        mono()
        return get_response(request)
    return middleware


class PassClass:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)


urlpatterns = [path("", ok)]
''',
    "benchtasks/__init__.py": "",
    "benchtasks/tasks.py": '''
"""The benchmark's tasks, the same work for jits and every peer: append the
job's number to this process's ledger (one unbuffered write), so that the
parent can count completions and check that each job ran exactly once."""
import os
import time

_ledger = [None, None]


def record(n):
    if _ledger[1] != os.getpid():
        path = os.path.join(os.environ["BENCH_LEDGER"], "%d.txt" % os.getpid())
        _ledger[0], _ledger[1] = open(path, "ab", buffering=0), os.getpid()
    _ledger[0].write(b"%08d\\n" % n)


def record_latency(ctx):
    """Append start - due (seconds) for the latency benchmark."""
    late = time.time() - ctx.scheduled.timestamp()
    if _ledger[1] != os.getpid():
        path = os.path.join(os.environ["BENCH_LEDGER"], "%d.txt" % os.getpid())
        _ledger[0], _ledger[1] = open(path, "ab", buffering=0), os.getpid()
    _ledger[0].write(b"%.6f\\n" % late)


import jits

jits_noop = jits.task(name="bench.noop")(record)
jits_latency = jits.task(name="bench.latency", takes_context=True)(record_latency)

dbt_noop = None
try:
    from django.apps import apps
    if apps.is_installed("background_task"):
        from background_task import background
        dbt_noop = background(schedule=0, name="bench.dbt_noop")(record)
except Exception:  # Django absent or not configured (standalone workers)
    pass


def q2_noop(n):
    record(n)
''',
    "bench_huey.py": '''
import os

from huey import SqliteHuey

from benchtasks.tasks import record

huey = SqliteHuey("bench", filename=os.environ["BENCH_HUEY_DB"])
huey_noop = huey.task(name="bench.huey_noop")(record)
''',
}


def _write_project(folder):
    for name, text in _PROJECT.items():
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text.lstrip())


def _django_setup():
    import django

    django.setup()


# ---------------------------------------------------------------------------
# 0. Cron: Cron.next_after against croniter and cronsim.
# ---------------------------------------------------------------------------

CRON_EXPRESSIONS = (
    "* * * * *", "*/5 * * * *", "*/15 9-17 * * *", "0 * * * *", "0 0 * * *",
    "30 2 * * *", "30 2 * * 1-5", "0 9 * * MON-FRI", "15,45 8,12,18 * * *",
    "5-55/10 */2 * * *", "0 0 1 * *", "0 12 1,15 * *", "0 0 1 JAN,APR,JUL,OCT *",
    "0 0 * * SUN", "0 0 13 * 5", "0 0 L * *", "0 0 * * 5L", "0 0 * * 1#2",
    "0 0 LW * *", "0 0 15W * *", "0 0 29 2 *",
)
#: How many of the first fire times must agree with jits's for a peer to count.
CRON_AGREE = 50


def _cron_steppers():
    """Return (name, make) for jits and each installed peer; make(expr, start)
    returns a function giving the next fire time on each call."""
    from jits import Cron

    def ours(expression, start):
        cron, current = Cron(expression, start.tzinfo), [start]

        def step():
            current[0] = cron.next_after(current[0])
            return current[0]

        return step

    makers = [("jits", ours)]
    if not _missing("croniter"):
        from croniter import croniter

        makers.append(("croniter", lambda expression, start: croniter(
            expression, start, ret_type=__import__("datetime").datetime).get_next))
    if not _missing("cronsim"):
        from cronsim import CronSim

        makers.append(("cronsim", lambda expression, start:
                       CronSim(expression, start).__next__))
    return makers


def _time_cron(make, expression, start, calls, repeat):
    """Return (best seconds per call, first fire times), or None if refused."""
    try:
        step = make(expression, start)
        first = [step().timestamp() for _ in range(CRON_AGREE)]
    except Exception:  # the peer does not support this expression
        return None
    best = math.inf
    for _ in range(repeat):
        step = make(expression, start)
        began = time.perf_counter()
        for _ in range(calls):
            step()
        best = min(best, (time.perf_counter() - began) / calls)
    return best, first


@benchmark("cron", "Cron.next_after at least 10x faster than croniter and 4x "
           "faster than cronsim (median over ~20 expressions, UTC and London)")
def bench_cron(env):
    from datetime import datetime, timezone
    from zoneinfo import ZoneInfo

    calls, repeat = (200, 3) if env.quick else (1000, 5)
    makers = _cron_steppers()
    peers = [name for name, _ in makers[1:]]
    ratios = {name: [] for name in peers}
    for zone_name, zone in (("UTC", timezone.utc),
                            ("Europe/London", ZoneInfo("Europe/London"))):
        start = datetime(2024, 1, 1, tzinfo=zone)
        rows = []
        for expression in CRON_EXPRESSIONS:
            # The variants take turns, expression by expression.
            timed = {name: _time_cron(make, expression, start, calls, repeat)
                     for name, make in makers}
            ours, reference = timed["jits"]
            row = [expression, fmt_us(ours)]
            for name in peers:
                if timed[name] is None:
                    row += ["n/a", "n/a"]
                    continue
                took, values = timed[name]
                if values != reference:
                    row += [fmt_us(took), "differs"]
                    continue
                ratios[name].append(took / ours)
                row += [fmt_us(took), "%.1fx" % (took / ours)]
            rows.append(row)
        header = ["expression (%s)" % zone_name, "jits"]
        for name in peers:
            header += [name, "ratio"]
        table("Cron.next_after, %d chained calls, best of %d" % (calls, repeat),
              header, rows, note="n/a: the peer rejects the expression; differs: "
              "its first %d fire times are not jits's (left out)" % CRON_AGREE)
    goals = []
    for name, wanted in (("croniter", 10.0), ("cronsim", 4.0)):
        if name not in ratios or not ratios[name]:
            goals.append(Goal("cron", "median speed-up vs " + name, "n/a",
                              ">= %gx" % wanted, None))
            continue
        got = median(ratios[name])
        goals.append(Goal("cron", "median speed-up vs %s (%d runs)"
                          % (name, len(ratios[name])), "%.1fx" % got,
                          ">= %gx" % wanted, got >= wanted))
    return goals


# ---------------------------------------------------------------------------
# 1. Middleware: time added to a request when no poll is due.
# ---------------------------------------------------------------------------

MIDDLEWARE_VARIANTS = (
    ("without middleware", []),
    ("without middleware (A/A control)", []),
    ("passthrough middleware", ["bench_urls.passthrough"]),
    ("passthrough + clock", ["bench_urls.passclock"]),
    ("class passthrough", ["bench_urls.PassClass"]),
    ("JitsMiddleware", ["jits.middleware.JitsMiddleware"]),
)


@benchmark("middleware", "JitsMiddleware adds < 1 us per request when no poll is "
           "due; ratio <= 1.01 on a minimal view")
def bench_middleware(env):
    if env.django_problem:
        return [Goal("middleware", "added time per request", "n/a", "< 1 us", None)]
    rounds, per_block = (60, 100) if env.quick else (250, 100)
    db = env.sqlite_database(os.path.join(env.tmp, "middleware.sqlite3"))
    settings = dict(databases={"default": db}, jits={"JITS_MIN_MINUTES": 60})
    res = _run_middleware(env, rounds, per_block, settings)
    env.raw["middleware"] = res
    counted = None
    if env.instructions:
        counted = _count_instructions(env, settings)
        env.raw["middleware"]["instructions"] = counted
    rows = []
    for name, _ in MIDDLEWARE_VARIANTS:
        row = [name]
        for clock in ("wall", "cpu"):
            row.append(fmt_us(res[clock]["medians"][name]))
            added = res[clock]["added"].get(name)
            row.append("-" if added is None else "%+.3f us" % (added * 1e6))
            row.append("-" if added is None else "%.4f" % res[clock]["ratios"][name])
        if counted is not None:
            count = counted.get(name)
            base = counted["without middleware"]
            row.append("-" if count is None else "%d" % count)
            row.append("-" if count is None or name.startswith("without") else
                       "%+d (%.4f)" % (count - base, count / base))
        rows.append(row)
    header = ["variant", "wall median", "wall added", "wall ratio", "CPU median",
              "CPU added", "CPU ratio"]
    if counted is not None:
        header += ["instructions", "added (ratio)"]
    table("Middleware: GET / through Django's WSGIHandler, minimal view, no poll "
          "due (%d rounds x %d requests per variant, random order)"
          % (rounds, per_block), header, rows,
          note="Each variant runs in two processes of its own (one hash seed); "
          "the parent alternates blocks between them in random order.  'added' "
          "is the median over rounds of (variant - without), 'ratio' the median "
          "of variant/without; CPU is the serving thread's CPU time, which "
          "waiting for a core does not inflate.  Django %s, "
          "Python %s.  Scheduler.maybe_poll() alone when not due: %.0f ns per "
          "call (a Python method returning 0: %.0f ns; time.monotonic(): %.0f "
          "ns).  Polls during the measurement: %d." % (
              res["django"], res["python"], res["maybe_poll_ns"],
              res["empty_call_ns"], res["monotonic_ns"], res["polls"]))
    goals = []
    for clock in ("wall", "cpu"):
        added = res[clock]["added"]["JitsMiddleware"]
        ratio = res[clock]["ratios"]["JitsMiddleware"]
        goals.append(Goal("middleware", "added per request, %s time" % clock,
                          "%.3f us" % (added * 1e6), "< 1 us", added < 1e-6))
        goals.append(Goal("middleware", "ratio with/without, %s time" % clock,
                          "%.4f" % ratio, "<= 1.01", ratio <= 1.01))
    if counted is not None:
        ratio = counted["JitsMiddleware"] / counted["without middleware"]
        goals.append(Goal("middleware", "ratio with/without, instructions",
                          "%.4f" % ratio, "<= 1.01", ratio <= 1.01))
    return goals


def _count_instructions(env, settings):
    """Instructions per request under callgrind (deterministic, but slow)."""
    if not shutil.which("valgrind"):
        return None
    counts = {}
    for name, middleware in MIDDLEWARE_VARIANTS[:1] + MIDDLEWARE_VARIANTS[2:]:
        totals = []
        for n in (100, 400):
            proc = subprocess.run(
                ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                 sys.executable, os.path.abspath(__file__), "--child",
                 "middleware-count", name, str(n)],
                env=dict(env.child_env(**settings), PYTHONHASHSEED="0"),
                capture_output=True, text=True, timeout=600)
            found = [line for line in proc.stderr.splitlines() if "Collected" in line]
            if proc.returncode != 0 or not found:
                raise RuntimeError("callgrind failed: %s" % proc.stderr[-1000:])
            totals.append(int(found[-1].split()[-1]))
        counts[name] = (totals[1] - totals[0]) / 300.0
    return counts


_BASE_ENVIRON = {
    "REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": "",
    "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "HTTP_HOST": "127.0.0.1",
    "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
    "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
    "wsgi.multithread": False, "wsgi.multiprocess": True,
    "wsgi.run_once": False, "wsgi.version": (1, 0)}


def _start_response(status, headers, exc_info=None):
    assert status.startswith("200"), status


def _requests(handler, n):
    """Send *n* GET / through a WSGI handler, as a WSGI server would."""
    for _ in range(n):
        environ = dict(_BASE_ENVIRON)
        environ["wsgi.input"] = io.BytesIO(b"")
        response = handler(environ, _start_response)
        b"".join(response)
        response.close()


def _handlers(names):
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler

    handlers = {}
    for name, middleware in MIDDLEWARE_VARIANTS:
        if name in names:
            settings.MIDDLEWARE = middleware
            handlers[name] = WSGIHandler()
    # Warm up.  The first request through JitsMiddleware polls (creating the
    # tables); no poll is due after it for JITS_MIN_MINUTES.  The database is
    # touched first in every case, as any real site does: from then on
    # Django's request signals check that connection on every request, and
    # each variant runs the same Django code.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    connection.close()
    for handler in handlers.values():
        _requests(handler, 200)
    return handlers


def _run_middleware(env, rounds, per_block, settings, copies=2):
    """Time the variants, each in processes of its own, in lockstep.

    Separate processes keep each variant's interpreter state (CPython's
    specialised call sites, caches) its own, as on a real site.  Each
    variant gets *copies* processes, used in turn, with one hash seed for
    all, so that no variant owes its figure to one process's memory layout.
    The parent interleaves the variants block by block, in random order.
    """
    procs = {}
    child_env = dict(env.child_env(**settings), PYTHONHASHSEED="0")
    try:
        for name, _ in MIDDLEWARE_VARIANTS:
            procs[name] = [subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--child",
                 "middleware-server", name],
                env=child_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                text=True, bufsize=1) for _ in range(copies)]
        info = {}
        for name, group in procs.items():
            for proc in group:
                info[name] = json.loads(proc.stdout.readline())
        wall = {name: [] for name in procs}
        cpu = {name: [] for name in procs}
        names = list(procs)
        shuffle = random.Random(4).shuffle
        for r in range(rounds):
            shuffle(names)
            for name in names:
                proc = procs[name][r % copies]
                proc.stdin.write("%d\n" % per_block)
                w, c = map(float, proc.stdout.readline().split())
                wall[name].append(w)
                cpu[name].append(c)
        for name, group in procs.items():
            for proc in group:  # one at a time: these loops time single calls
                proc.stdin.write("stats\n")
                info[name].update(json.loads(proc.stdout.readline()))
    finally:
        for group in procs.values():
            for proc in group:
                with _suppress():
                    proc.stdin.close()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()

    def summary(times):
        base = times["without middleware"]
        return {
            "medians": {name: median(values) for name, values in times.items()},
            "added": {n: median([a - b for a, b in zip(times[n], base)])
                      for n in times if n != "without middleware"},
            "ratios": {n: median([a / b for a, b in zip(times[n], base)])
                       for n in times if n != "without middleware"},
        }

    jits_info = info["JitsMiddleware"]
    return {"wall": summary(wall), "cpu": summary(cpu), "raw_wall": wall,
            "raw_cpu": cpu, "maybe_poll_ns": jits_info["maybe_poll_ns"],
            "empty_call_ns": jits_info["empty_call_ns"],
            "monotonic_ns": jits_info["monotonic_ns"], "polls": jits_info["polls"],
            "django": jits_info["django"], "python": jits_info["python"]}


def child_middleware_server(name):
    """Serve blocks of requests through one variant, on the parent's cue."""
    _django_setup()
    import django

    import jits

    handler = _handlers([name])[name]
    scheduler = jits.default_scheduler()
    next_poll = scheduler._next_poll
    sys.stdout.write(json.dumps({"django": django.get_version(),
                                 "python": sys.version.split()[0]}) + "\n")
    sys.stdout.flush()
    gc.collect()
    gc.disable()
    for line in sys.stdin:
        if line.strip() == "stats":
            break
        n = int(line)
        c0, t0 = time.thread_time(), time.perf_counter()
        _requests(handler, n)
        wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
        gc.collect()
        sys.stdout.write("%r %r\n" % (wall / n, cpu / n))
        sys.stdout.flush()
    gc.enable()

    # The hot path on its own: maybe_poll() when not due.
    class Empty:
        def method(self):
            return 0

    loops = {"maybe_poll": scheduler.maybe_poll, "empty": Empty().method,
             "monotonic": time.monotonic}
    per_call = {key: [] for key in loops}
    for _ in range(21):
        for key, call in loops.items():
            t0 = time.perf_counter()
            for _ in range(20000):
                call()
            per_call[key].append((time.perf_counter() - t0) / 20000)
    polls = 0 if scheduler._next_poll == next_poll else 1
    sys.stdout.write(json.dumps({
        "maybe_poll_ns": median(per_call["maybe_poll"]) * 1e9,
        "empty_call_ns": median(per_call["empty"]) * 1e9,
        "monotonic_ns": median(per_call["monotonic"]) * 1e9,
        "polls": polls}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:  # wait for the parent to close the pipe
        pass
    return None


def child_middleware_count(name, n):
    """Serve 200 warm-up requests then *n* more (run under callgrind)."""
    _django_setup()
    handler = _handlers([name])[name]
    _requests(handler, int(n))
    return {}


# ---------------------------------------------------------------------------
# 2. Poll cost with nothing due, 100 against 100,000 stored jobs.
# ---------------------------------------------------------------------------

POLL_SIZES = (100, 100000)


@benchmark("poll", "a poll with nothing due costs the same with 100 and 100,000 "
           "stored jobs (ratio <= 1.5): the due-check is index-backed")
def bench_poll(env):
    rounds = 20 if env.quick else 60
    rows, goals = [], []
    results = {}
    # SQLiteStore needs neither Django nor a server.
    folder = os.path.join(env.tmp, "poll")
    os.makedirs(folder, exist_ok=True)
    results["SQLite (SQLiteStore)"] = env.child(
        "poll", "sqlite", folder, str(rounds))
    problem = env.check_pg()
    if problem:
        results["PostgreSQL (DjangoStore)"] = {"problem": problem}
    else:
        databases = {
            "small": env.pg_database({"options": "-c search_path=bench_poll_small"}),
            "large": env.pg_database({"options": "-c search_path=bench_poll_large"}),
        }
        databases["default"] = databases["small"]
        results["PostgreSQL (DjangoStore)"] = env.child(
            "poll", "django", "", str(rounds), databases=databases)
    env.raw["poll"] = results
    for label, res in results.items():
        if "problem" in res:
            rows.append([label, "n/a", "n/a", "n/a", res["problem"]])
            goals.append(Goal("poll", "100k/100 jobs, " + label, "n/a", "<= 1.5",
                              None))
            continue
        small, large = (res["medians"][str(n)] for n in POLL_SIZES)
        ratio = res["ratio"]
        rows.append([label, fmt_us(small), fmt_us(large), "%.3f" % ratio,
                     res["plan"]])
        goals.append(Goal("poll", "100k/100 jobs, " + label, "%.3f" % ratio,
                          "<= 1.5", ratio <= 1.5))
    table("Poll with nothing due (future due times), %d rounds x 50 polls per "
          "store, interleaved" % rounds,
          ["store", "100 jobs", "100,000 jobs", "ratio", "plan of the due-check"],
          rows, note="Medians of single Scheduler.poll() calls; ratio = median "
          "over rounds of (100,000 / 100).  PostgreSQL tables were ANALYZEd after "
          "loading, as autovacuum would do.")
    return goals


def _fill(store, n, now):
    """Store *n* jobs of bench.noop due in the future (in one transaction)."""
    import uuid

    import jits

    store.ensure_schema()
    with store._transaction(write=True) as cur:
        cur.execute("DELETE FROM jits_job")
        cur.execute("DELETE FROM jits_run")
    sql = store._sql(jits._SQL_INSERT_JOB)
    span = 30 * 86400.0
    rows = [(uuid.uuid4().hex, "bench.noop", None, "default", 0, "[[%d],{}]" % i,
             now + 3600 + span * i / n, now + 3600 + span * i / n, now)
            for i in range(n)]
    with store._transaction(write=True) as cur:
        for start in range(0, n, 10000):
            cur.executemany(sql, rows[start:start + 10000])


def child_poll(kind, folder, rounds):
    rounds = int(rounds)
    import jits

    if kind == "django":
        _django_setup()
        from django.db import connections

        for alias in ("small", "large"):
            with connections[alias].cursor() as cur:
                cur.execute("CREATE SCHEMA IF NOT EXISTS bench_poll_%s" % alias)
        stores = {n: jits.DjangoStore(alias) for n, alias in zip(POLL_SIZES,
                                                                  ("small", "large"))}
    else:
        stores = {}
        for n in POLL_SIZES:
            path = os.path.join(folder, "poll-%d.sqlite3" % n)
            for suffix in ("", "-wal", "-shm"):
                with _suppress():
                    os.remove(path + suffix)
            stores[n] = jits.SQLiteStore(path)
    import benchtasks.tasks  # noqa: F401  registers bench.noop

    now = time.time()
    filled = {}
    for n, store in stores.items():
        t0 = time.perf_counter()
        _fill(store, n, now)
        filled[n] = time.perf_counter() - t0
    probe = ("SELECT 1 FROM jits_job WHERE due <= %s AND task IN (%s, %s) LIMIT 1")
    params = [now, "bench.latency", "bench.noop"]
    large = stores[POLL_SIZES[-1]]
    if kind == "django":
        with large._transaction(write=False) as cur:
            cur.execute("ANALYZE jits_job")
            cur.execute("EXPLAIN " + probe, params)
            plan = " / ".join(r[0].split("(cost")[0].replace("->", "").strip()
                              for r in cur.fetchall()[:2])
    else:
        with large._transaction(write=False) as cur:
            cur.execute("EXPLAIN QUERY PLAN " + large._sql(probe), params)
            plan = " / ".join(str(r[-1]) for r in cur.fetchall())
    schedulers = {n: jits.Scheduler(store, min_interval=0) for n, store in
                  stores.items()}
    for scheduler in schedulers.values():
        for _ in range(20):
            assert scheduler.poll() == 0
    times = {n: [] for n in schedulers}
    blocks = {n: [] for n in schedulers}
    order = list(schedulers)
    shuffle = random.Random(5).shuffle
    for _ in range(rounds):
        shuffle(order)
        for n in order:
            poll = schedulers[n].poll
            block = []
            for _ in range(50):
                t0 = time.perf_counter()
                poll()
                block.append(time.perf_counter() - t0)
            times[n].extend(block)
            blocks[n].append(median(block))
    small, large_n = POLL_SIZES
    return {
        "medians": {str(n): median(v) for n, v in times.items()},
        "p90": {str(n): percentile(v, 90) for n, v in times.items()},
        "ratio": median([b / a for a, b in zip(blocks[small], blocks[large_n])]),
        "fill_seconds": {str(n): t for n, t in filled.items()},
        "plan": plan,
    }


# ---------------------------------------------------------------------------
# 3. Dispatch throughput: N no-op jobs drained by 4 processes, against peers.
# ---------------------------------------------------------------------------

#: (label, database, system, jits mode).  The peers use their own workers:
#: 4 ``process_tasks`` commands, one ``qcluster`` with 4 workers, one
#: ``huey_consumer -w 4 -k process``.
THROUGHPUT_RUNS = (
    ("jits SQLiteStore, blocking", "sqlite", "jits-sqlite", "blocking"),
    ("jits SQLiteStore, threaded", "sqlite", "jits-sqlite", "threaded"),
    ("jits DjangoStore, blocking", "sqlite", "jits-django", "blocking"),
    ("django-background-tasks", "sqlite", "dbt", None),
    ("django-q2, ORM broker", "sqlite", "q2", None),
    ("huey, SqliteHuey", "sqlite", "huey", None),
    ("jits DjangoStore, blocking", "pg", "jits-django", "blocking"),
    ("jits DjangoStore, threaded", "pg", "jits-django", "threaded"),
    ("django-background-tasks", "pg", "dbt", None),
    ("django-q2, ORM broker", "pg", "q2", None),
)
_PEER_MODULES = {"dbt": "background_task", "q2": "django_q", "huey": "huey"}
_LINE = 9  # bytes per ledger line: b"%08d\n"


@benchmark("throughput", "10,000 no-op jobs drained by 4 processes: jits "
           "fastest against django-background-tasks, django-q2 (ORM) and huey "
           "(SQLite), on SQLite and PostgreSQL")
def bench_throughput(env):
    jobs, rounds, cap = (500, 1, 6.0) if env.quick else (10000, 2, 15.0)
    apps = ["jits.app"] + [m for k, m in _PEER_MODULES.items()
                           if k != "huey" and not _missing(m)]
    results = {}
    problems = {}
    if env.django_problem:
        problems["django"] = env.django_problem
    for key, module in _PEER_MODULES.items():
        missing = _missing(module)
        if missing:
            problems[key] = missing
    pg_problem = env.check_pg()
    template = os.path.join(env.tmp, "template.sqlite3")
    if not env.django_problem:
        env.child("migrate", databases={"default": env.sqlite_database(template)},
                  apps=apps)
        import sqlite3

        with sqlite3.connect(template) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
        if not pg_problem:
            env.child("migrate", databases={"default": env.pg_database()}, apps=apps)
    runs = list(enumerate(THROUGHPUT_RUNS))
    for r in range(rounds):
        for i, (label, db, system, mode) in runs if r % 2 == 0 else runs[::-1]:
            key = (label, db)
            problem = problems.get(system) or (
                pg_problem if db == "pg" else None) or (
                problems.get("django") if system != "jits-sqlite" and
                system != "huey" else None)
            if problem:
                results[key] = {"problem": problem}
                continue
            try:
                res = _throughput_run(env, i, r, db, system, mode, jobs, cap, apps,
                                      template)
            except Exception as exc:
                res = {"problem": "failed: %s" % str(exc).splitlines()[-1][:100]}
            if "problem" in res:
                results[key] = res
            else:
                results.setdefault(key, {"runs": []})["runs"].append(res)
    env.raw["throughput"] = {"%s on %s" % k: v for k, v in results.items()}
    rows, goals = [], []
    best = {}
    for label, db, system, _ in THROUGHPUT_RUNS:
        res = results.get((label, db), {"problem": "not run"})
        name = {"sqlite": "SQLite", "pg": "PostgreSQL"}[db]
        if "problem" in res:
            rows.append([name, label, "n/a", "n/a", "n/a", "n/a", res["problem"]])
            continue
        rates = [x["rate"] for x in res["runs"]]
        rate = median(rates)
        done = min(x["done"] for x in res["runs"])
        dupes = sum(x["duplicates"] for x in res["runs"])
        missing = max(x["missing"] for x in res["runs"])
        capped = any(x["capped"] for x in res["runs"])
        res["rate"] = rate
        rows.append([name, label, "%.0f" % rate,
                     " / ".join("%.0f" % x for x in rates),
                     "%.1f s" % median([x["wall"] for x in res["runs"]]),
                     "%d/%d" % (done, jobs),
                     "%d dup, %d lost%s" % (dupes, missing if not capped else 0,
                                            ", capped at %.0f s" % cap
                                            if capped else "")])
        group = "jits" if system.startswith("jits") else "peer"
        if rate > best.get((db, group), (0, ""))[0]:
            best[(db, group)] = (rate, label)
    table("Throughput: %d no-op jobs, 4 worker processes, %d round(s) in "
          "alternating order" % (jobs, rounds),
          ["database", "system", "jobs/s", "per round", "wall", "done",
           "exactly once"], rows,
          note="jobs/s is the steady rate from 10%% of the jobs done to the "
          "last one (sampled every 20 ms from the ledger each task appends to), "
          "so process start-up is left out; 'wall' counts from starting the "
          "workers.  A run still going after %.0f s is stopped and rated on the "
          "jobs done by then.  Peers: 4 process_tasks --sleep 0.05; qcluster "
          "with workers=4, poll=0.05; huey_consumer -w 4 -k process -d 0.05.  "
          "jits: 4 processes looping over Scheduler.poll() (blocking) or "
          "maybe_poll() (threaded, 10 threads)." % cap)
    for db in ("sqlite", "pg"):
        name = {"sqlite": "SQLite", "pg": "PostgreSQL"}[db]
        jits_best, peer_best = best.get((db, "jits")), best.get((db, "peer"))
        if not jits_best:
            goals.append(Goal("throughput", "jits fastest on " + name, "n/a",
                              "fastest", None))
            continue
        if not peer_best:
            goals.append(Goal("throughput", "jits fastest on " + name,
                              "%.0f jobs/s, no peer ran" % jits_best[0], "fastest",
                              None))
            continue
        goals.append(Goal(
            "throughput", "jits fastest on " + name,
            "%.0f vs %.0f jobs/s (%s), x%.2f" % (jits_best[0], peer_best[0],
                                                  peer_best[1],
                                                  jits_best[0] / peer_best[0]),
            "fastest", jits_best[0] > peer_best[0]))
    return goals


def _throughput_run(env, index, round_no, db, system, mode, jobs, cap, apps,
                    template):
    folder = os.path.join(env.tmp, "run-%d-%d" % (round_no, index))
    ledger = os.path.join(folder, "ledger")
    os.makedirs(ledger)
    extra = {"BENCH_LEDGER": ledger}
    databases = None
    if system == "jits-sqlite":
        extra["BENCH_JITS_DB"] = os.path.join(folder, "jits.sqlite3")
    elif system == "huey":
        extra["BENCH_HUEY_DB"] = os.path.join(folder, "huey.sqlite3")
    elif db == "sqlite":
        path = os.path.join(folder, "django.sqlite3")
        shutil.copy(template, path)
        databases = {"default": env.sqlite_database(path)}
    else:
        databases = {"default": env.pg_database()}
    kwargs = dict(databases=databases, apps=apps if databases else (),
                  extra_env=extra)
    env.child("enqueue", system, str(jobs), **kwargs)
    child_env = env.child_env(**kwargs)
    me = [sys.executable, os.path.abspath(__file__), "--child"]
    if system.startswith("jits"):
        store = "django" if system == "jits-django" else extra["BENCH_JITS_DB"]
        commands = [me + ["jits-worker", store, mode] for _ in range(4)]
    elif system == "dbt":
        commands = [[sys.executable, "-m", "django", "process_tasks", "--sleep",
                     "0.05"] for _ in range(4)]
    elif system == "q2":
        commands = [[sys.executable, "-m", "django", "qcluster"]]
    else:
        commands = [[sys.executable, "-m", "huey.bin.huey_consumer",
                     "bench_huey.huey", "-w", "4", "-k", "process", "-d", "0.05"]]
    log = open(os.path.join(folder, "workers.log"), "wb")
    procs = []
    started = time.monotonic()
    try:
        procs = [_start_group(c, child_env, log) for c in commands]
        samples = _sample_ledger(ledger, jobs, cap, procs, started)
    finally:
        for proc in procs:
            _stop_group(proc)
        log.close()
    numbers = []
    for name in os.listdir(ledger):
        with open(os.path.join(ledger, name), "rb") as f:
            numbers.extend(int(x) for x in f.read().split())
    done = len(set(numbers))
    if not numbers:
        with open(os.path.join(folder, "workers.log"), "rb") as f:
            tail = f.read().decode(errors="replace").strip().splitlines()[-1:]
        return {"problem": "no job ran: %s" % (tail[0][:100] if tail else "?")}
    t_end, c_end = samples[-1]
    first = next(((t, c) for t, c in samples if c >= jobs * 0.1), None)
    if first is not None and t_end > first[0]:
        rate = (c_end - first[1]) / (t_end - first[0])
    else:
        t_first = next(t for t, c in samples if c > 0)
        rate = c_end / max(t_end - t_first, 1e-3)
    return {"rate": rate, "wall": t_end - started, "done": done,
            "duplicates": len(numbers) - done, "missing": jobs - done,
            "capped": c_end < jobs}


def _sample_ledger(ledger, jobs, cap, procs, started):
    """Return (time, jobs done) samples until all are done or *cap* passes."""
    samples = []
    while True:
        count = 0
        for entry in os.scandir(ledger):
            count += entry.stat().st_size // _LINE
        now = time.monotonic()
        samples.append((now, count))
        if count >= jobs or now - started > cap:
            return samples
        if all(proc.poll() is not None for proc in procs):
            return samples
        time.sleep(0.02)


def child_migrate():
    _django_setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    return {}


def child_enqueue(system, jobs):
    jobs = int(jobs)
    if system == "huey":
        from bench_huey import huey_noop

        for n in range(jobs):
            huey_noop(n)
        return {}
    import jits

    if system == "jits-sqlite":
        import benchtasks.tasks as tasks

        scheduler = jits.Scheduler(jits.SQLiteStore(os.environ["BENCH_JITS_DB"]))
        for n in range(jobs):
            scheduler.enqueue(tasks.jits_noop, None, (n,), {})
        return {}
    _django_setup()
    from django.db import connection, transaction

    import benchtasks.tasks as tasks

    tables = {"jits-django": ["jits_job", "jits_run"],
              "dbt": ["background_task", "background_task_completedtask"],
              "q2": ["django_q_ormq", "django_q_task"]}[system]
    with connection.cursor() as cur:
        existing = set(connection.introspection.table_names(cur))
        for table_name in tables:
            if table_name in existing:
                cur.execute("DELETE FROM %s" % table_name)
    with transaction.atomic():
        if system == "jits-django":
            scheduler = jits.Scheduler(jits.DjangoStore())
            for n in range(jobs):
                scheduler.enqueue(tasks.jits_noop, None, (n,), {})
        elif system == "dbt":
            for n in range(jobs):
                tasks.dbt_noop(n)
        else:
            from django_q.tasks import async_task

            for n in range(jobs):
                async_task("benchtasks.tasks.q2_noop", n)
    return {}


def child_jits_worker(store, mode):
    """One jits worker process: poll in a loop until SIGTERM."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *args: stop.append(True))
    import jits

    if store == "django":
        _django_setup()
        store = jits.DjangoStore()
    else:
        store = jits.SQLiteStore(store)
    import benchtasks.tasks  # noqa: F401  registers bench.noop

    scheduler = jits.Scheduler(store, threaded=mode == "threaded", min_interval=0.05)
    while not stop:
        if mode == "threaded":
            scheduler.maybe_poll()
            time.sleep(0.05)
        elif not scheduler.poll():
            time.sleep(0.05)
    scheduler.shutdown(grace=5)
    return None


# ---------------------------------------------------------------------------
# 4. Scheduling latency: due time to start, at a steady 20 requests/second.
# ---------------------------------------------------------------------------

LATENCY_CONFIGS = (
    ("blocking, JITS_MIN_SECONDS=5 (default)", {"JITS_MIN_SECONDS": 5}),
    ("blocking, JITS_MIN_SECONDS=1", {"JITS_MIN_SECONDS": 1}),
    ("threaded, JITS_MIN_SECONDS=1", {"JITS_THREADED": True, "JITS_MIN_SECONDS": 1}),
)
LATENCY_RPS = 20.0
LATENCY_JOBS_PER_SECOND = 10.0


@benchmark("latency", "scheduling latency (due time to start), p50 and p99, at "
           "20 requests per second (reported, no set goal)")
def bench_latency(env):
    if env.django_problem:
        return [Goal("latency", "due to start", "n/a", "reported", None)]
    seconds = 10.0 if env.quick else 20.0
    configs = LATENCY_CONFIGS[1:] if env.quick else LATENCY_CONFIGS
    rows, goals, raw = [], [], {}
    for i, (label, jits_settings) in enumerate(configs):
        res = _latency_run(env, i, jits_settings, seconds)
        raw[label] = res
        late = res["late"]
        rows.append([label, "%d/%d" % (len(late), res["jobs"]),
                     fmt_ms(percentile(late, 50)), fmt_ms(percentile(late, 99)),
                     fmt_ms(max(late)) if late else "n/a",
                     "%.1f" % res["rps"], fmt_ms(percentile(res["responses"], 50)),
                     fmt_ms(percentile(res["responses"], 99))])
        goals.append(Goal("latency", "due->start p50/p99, " + label,
                          "%s / %s" % (fmt_ms(percentile(late, 50)),
                                       fmt_ms(percentile(late, 99))),
                          "reported", None))
    env.raw["latency"] = raw
    table("Scheduling latency: Django + JitsMiddleware under wsgiref on "
          "127.0.0.1, %.0f requests/s for %.0f s, %.0f jobs/s due (Django's "
          "SQLite)" % (LATENCY_RPS, seconds, LATENCY_JOBS_PER_SECOND),
          ["configuration", "jobs run", "p50 due->start", "p99", "max",
           "requests/s", "response p50", "response p99"], rows,
          note="Latency is measured inside the task: time.time() minus the "
          "job's due time.  Polls come at most once per JITS_MIN_SECONDS per "
          "process, so the expected p50 is about half that interval.")
    return goals


def _latency_run(env, index, jits_settings, seconds):
    folder = os.path.join(env.tmp, "latency-%d" % index)
    ledger = os.path.join(folder, "ledger")
    os.makedirs(ledger)
    db = env.sqlite_database(os.path.join(folder, "site.sqlite3"))
    child_env = env.child_env(
        databases={"default": db}, apps=["jits.app"],
        middleware=["jits.middleware.JitsMiddleware"], jits=jits_settings,
        extra_env={"BENCH_LEDGER": ledger})
    interval = jits_settings.get("JITS_MIN_SECONDS", 5)
    jobs = int(LATENCY_JOBS_PER_SECOND * max(seconds - interval - 2, 1))
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--child", "latency-server",
         str(jobs), str(seconds - interval - 1)],
        env=child_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        start_new_session=True)
    responses = []
    try:
        port = int(proc.stdout.readline())
        start = time.monotonic()
        n = 0
        while True:
            due = start + n / LATENCY_RPS
            now = time.monotonic()
            if due - start >= seconds:
                break
            if due > now:
                time.sleep(due - now)
            t0 = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/")
            body = conn.getresponse().read()
            conn.close()
            responses.append(time.perf_counter() - t0)
            assert body == b"ok", body
            n += 1
        rps = n / (time.monotonic() - start)
    finally:
        with _suppress():
            proc.stdin.close()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
    late = []
    for name in os.listdir(ledger):
        with open(os.path.join(ledger, name), "rb") as f:
            late.extend(float(x) for x in f.read().split())
    return {"jobs": jobs, "late": late, "responses": responses, "rps": rps}


def child_latency_server(jobs, span):
    """Serve the bench site on 127.0.0.1 with jobs due over the next *span* s."""
    jobs, span = int(jobs), float(span)
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    _django_setup()
    from django.core.wsgi import get_wsgi_application

    import jits

    import benchtasks.tasks as tasks

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    app = get_wsgi_application()
    scheduler = jits.default_scheduler()
    scheduler.store.ensure_schema()
    start = time.time() + 1.0
    rng = random.Random(7)
    for _ in range(jobs):
        when = timedelta_seconds(start + rng.random() * span - time.time())
        scheduler.enqueue(tasks.jits_latency, when, (), {})
    server = make_server("127.0.0.1", 0, app, handler_class=Quiet)
    import threading

    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdout.write("%d\n" % server.server_port)
    sys.stdout.flush()
    sys.stdin.read()  # until the parent closes the pipe
    server.shutdown()
    scheduler.shutdown(grace=5)
    return None


def timedelta_seconds(seconds):
    from datetime import timedelta

    return timedelta(seconds=max(seconds, 0.0))


# ---------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------

CHILDREN = {
    "middleware-server": child_middleware_server,
    "middleware-count": child_middleware_count,
    "poll": child_poll,
    "migrate": child_migrate,
    "enqueue": child_enqueue,
    "jits-worker": child_jits_worker,
    "latency-server": child_latency_server,
}


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python bench_jits.py",
        description="Benchmarks of jits, measured side by side in one run.")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="benchmarks to run (default: all): %s"
                        % ", ".join(BENCHMARKS))
    parser.add_argument("--quick", action="store_true",
                        help="smaller loads and fewer rounds (2-3 minutes)")
    parser.add_argument("--list", action="store_true",
                        help="list the benchmarks and their goals")
    parser.add_argument("--json", metavar="FILE", help="also write raw figures here")
    parser.add_argument("--instructions", action="store_true",
                        help="middleware: also count instructions per request "
                        "under valgrind's callgrind (deterministic; adds minutes)")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--pg-db", default="jits_bench",
                        help="PostgreSQL database of the benchmark (created if "
                        "missing; default jits_bench)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = CHILDREN[args.child[0]](*args.child[1:])
        if result is not None:
            sys.stdout.write("\n" + json.dumps(result) + "\n")
        return 0
    if args.list:
        for name, (_, goal) in BENCHMARKS.items():
            out("%-12s %s" % (name, goal))
        return 0
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error("unknown benchmark(s): %s (known: %s)"
                     % (", ".join(unknown), ", ".join(BENCHMARKS)))
    env = Env(args)
    started = time.monotonic()
    goals = []
    try:
        import jits

        out("jits %s benchmarks%s; Python %s; %d CPUs; load average %s" % (
            jits.__version__, " (--quick)" if args.quick else "",
            sys.version.split()[0], os.cpu_count(),
            " ".join("%.2f" % x for x in os.getloadavg())))
        for name in args.names or list(BENCHMARKS):
            func = BENCHMARKS[name][0]
            t0 = time.monotonic()
            try:
                goals.extend(func(env))
            except Exception as exc:  # one broken benchmark must not hide the rest
                out("\n%s: failed: %s: %s" % (name, type(exc).__name__, exc))
                goals.append(Goal(name, "benchmark ran", "failed", "ran", False))
            out("(%s took %.0f s)" % (name, time.monotonic() - t0))
    finally:
        shutil.rmtree(env.tmp, ignore_errors=True)
    table("Summary (%.0f s in all)" % (time.monotonic() - started),
          ["benchmark", "goal", "measured", "wanted", "status"],
          [[g.bench, g.what, g.measured, g.wanted, g.status()] for g in goals])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"raw": env.raw, "goals": [vars(g) for g in goals]}, f,
                      indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
