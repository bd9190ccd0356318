#!/usr/bin/env python
"""What one check-in costs in-process: SQL statements and milliseconds, without a server.

    python bench/checkin_cost.py --db sqlite      [--iterations 300] [--profile 25]
    python bench/checkin_cost.py --db postgresql://postgres@127.0.0.1:5432/postgres

It builds a scratch database (as bench/load.py does), seeds a few patients with active
packages and booked visits (covered and uncovered), then sends
`POST /api/v1/appointments/{id}/check-in` through Django's test client with a bearer token
and an Idempotency-Key, exactly as a client would, and reports:

  - the statements of one covered check-in, listed (CaptureQueriesContext);
  - the mean and median milliseconds per check-in over --iterations, and the same for
    `GET /api/v1/me` (the load bench's baseline), so the ratio is comparable;
  - on PostgreSQL, the database server's own CPU for this connection (its backend process,
    from /proc/PID/schedstat, in nanoseconds), per check-in and per `GET /me`, and split by
    statement (BEGIN and COMMIT are what is left over: psycopg sends them, not Django);
  - with --profile N, the cProfile of N check-ins, top functions by cumulative time.

Deterministic where it matters (the statement count); the timings depend on the machine's
load, so the script prints `uptime` beside them.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import os
import pstats
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import scratch_database, uptime  # noqa: E402


def seed(patients: int, visits: int):
    from django.db import transaction

    from tally.clinic.actions import catalog, sales
    from tally.clinic.models import ApiToken, Appointment, ClinicSettings, Staff

    owner = Staff.objects.create_user("cost-owner", password="a long benchmarking password 3", role="owner",
                                      first_name="Cost", last_name="Owner")
    settings = ClinicSettings.load()
    settings.time_zone = "America/New_York"
    settings.save()
    acu = catalog.do_create_service(acting_user=owner, name="Acupuncture 60 min", duration_minutes=60,
                                    price=Decimal("95.00"))
    massage = catalog.do_create_service(acting_user=owner, name="Massage 30 min", duration_minutes=30,
                                        price=Decimal("55.00"))
    template = catalog.do_create_package(acting_user=owner, name="Acupuncture x 500", price=Decimal("9000.00"),
                                         sessions=500, service_ids=[acu.pk])
    ids = []
    for i in range(patients):
        patient = catalog.do_create_patient(acting_user=owner, first_name=f"Cost{i}", last_name="Patient")
        sales.do_sell_package(acting_user=owner, patient=patient, package=template, use_first_session=False,
                              sold_at=dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC), payment=(Decimal("9000.00"), "card"))
        ids.append(patient.pk)
    start = dt.datetime(2026, 2, 2, 13, tzinfo=dt.UTC)
    rng = random.Random(7)
    rows = []
    for v in range(visits):
        service = acu if rng.random() < 0.7 else massage
        starts = start + dt.timedelta(hours=v)
        rows.append(Appointment(patient_id=ids[v % patients], service=service, starts_at=starts,
                                ends_at=starts + dt.timedelta(minutes=service.duration_minutes)))
    with transaction.atomic():
        Appointment.objects.bulk_create(rows)
    _, token = ApiToken.issue(owner)
    covered = list(Appointment.objects.filter(service=acu).values_list("pk", flat=True))
    uncovered = list(Appointment.objects.filter(service=massage).values_list("pk", flat=True))
    return token, covered, uncovered


def backend_cpu_ns(pid: int | None) -> int:
    """CPU time the PostgreSQL backend `pid` has used so far (Linux /proc; 0 elsewhere)."""
    if pid is None:
        return 0
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def statement_label(sql: str) -> str:
    words = sql.split()
    verb = words[0].upper()
    table = next((after.strip('"') for w, after in zip(words, words[1:], strict=False)
                  if w.upper() in ("FROM", "INTO", "UPDATE") and after), "")
    if verb == "UPDATE":
        table = words[1].strip('"')
    elif verb in ("INSERT",):
        table = words[2].strip('"')
    elif "pg_advisory" in sql:
        return "SELECT pg_advisory_xact_lock"
    return f"{verb} {table}".strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="sqlite")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--profile", type=int, default=0, help="cProfile this many check-ins")
    parser.add_argument("--sort", default="cumulative")
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--quiet", action="store_true", help="do not list the statements")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tally-cost-"))
    try:
        with scratch_database(args.db, workdir) as url:
            os.environ.update({"TALLY_DATABASE_URL": url, "TALLY_SECRET_KEY": "cost-" + uuid.uuid4().hex,
                               "DJANGO_SETTINGS_MODULE": "tally.settings"})
            os.environ.pop("TALLY_DEBUG", None)
            tally = str(Path(sys.executable).parent / "tally")
            subprocess.run([tally, "init"], check=True, capture_output=True, cwd=workdir)
            import django

            django.setup()
            from django.db import connection, connections
            from django.test import Client
            from django.test.utils import CaptureQueriesContext

            n = args.iterations + args.profile + 1
            token, covered, uncovered = seed(patients=20, visits=int(n / 0.6) + 50)
            # The test client says Host: testserver, which only the test runner allows.
            client = Client(headers={"Authorization": f"Bearer {token}", "Host": "localhost"})

            def check_in(pk: int) -> None:
                response = client.post(f"/api/v1/appointments/{pk}/check-in", "{}", content_type="application/json",
                                       headers={"Idempotency-Key": uuid.uuid4().hex})
                assert response.status_code == 200, response.content

            def me() -> None:
                assert client.get("/api/v1/me").status_code == 200

            check_in(covered.pop())  # warm up
            me()
            for kind, pool in (("covered", covered), ("not covered", uncovered)):
                with CaptureQueriesContext(connection) as queries:
                    check_in(pool.pop())
                verbs = Counter(q["sql"].split()[0].upper() for q in queries)
                print(f"check-in ({kind}): {len(queries)} statements: {dict(verbs)}")
                if not args.quiet and kind == "covered":
                    for q in queries:
                        print(f"    {q['sql'][:160]}")
            with CaptureQueriesContext(connection) as queries:
                me()
            print(f"GET /me: {len(queries)} statements")

            visits = [covered.pop() if i % 10 < 7 or not uncovered else uncovered.pop()
                      for i in range(args.iterations)]
            # Interleaved, so that the machine's load changes both alike; CPU time of this
            # process beside the wall time (the database server's own time is only in the wall).
            times, me_times, cpu, me_cpu = [], [], [], []
            for pk in visits:
                c0, t0 = time.process_time(), time.perf_counter()
                check_in(pk)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                c0, t0 = time.process_time(), time.perf_counter()
                me()
                me_times.append(time.perf_counter() - t0)
                me_cpu.append(time.process_time() - c0)
            ci, base = statistics.median(times) * 1000, statistics.median(me_times) * 1000
            print(f"check-in: median {ci:.2f} ms wall, mean {statistics.mean(times) * 1000:.2f}; "
                  f"CPU mean {statistics.mean(cpu) * 1000:.2f} ms, over {len(times)} (70% covered)")
            print(f"GET /me:  median {base:.2f} ms wall, mean {statistics.mean(me_times) * 1000:.2f}; "
                  f"CPU mean {statistics.mean(me_cpu) * 1000:.2f} ms")
            print(f"in-process ratio GET /me / check-in: wall (medians) {base / ci:.2f}, "
                  f"CPU (means) {statistics.mean(me_cpu) / statistics.mean(cpu):.2f}")
            if connection.vendor == "postgresql" and Path("/proc").is_dir():
                pg_cpu_split(connection, check_in, me, covered, uncovered, args.iterations)
            print(f"uptime: {uptime()}")
            if args.profile:
                profiler = cProfile.Profile()
                profiler.enable()
                for _ in range(args.profile):
                    check_in(covered.pop())
                profiler.disable()
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats(args.sort).print_stats(args.top)
                print(out.getvalue())
            connections.close_all()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def pg_cpu_split(connection, check_in, me, covered: list, uncovered: list, iterations: int) -> None:
    """The database server's CPU: what the backend serving this connection used, per request
    and per statement (same 70/30 mix of covered and uncovered check-ins)."""
    pid = connection.connection.info.backend_pid
    by_statement: Counter = Counter()
    counts: Counter = Counter()

    def measure(execute, sql, params, many, context):
        before = backend_cpu_ns(pid)
        try:
            return execute(sql, params, many, context)
        finally:
            label = statement_label(sql)
            by_statement[label] += backend_cpu_ns(pid) - before
            counts[label] += 1

    n = min(iterations, len(covered) + len(uncovered))
    visits = [covered.pop() if i % 10 < 7 or not uncovered else uncovered.pop() for i in range(n)]
    with connection.execute_wrapper(measure):
        total = backend_cpu_ns(pid)
        for pk in visits:
            check_in(pk)
        total = backend_cpu_ns(pid) - total
        statements = sum(by_statement.values())
        me_total = backend_cpu_ns(pid)
        for _ in range(n):
            me()
        me_total = backend_cpu_ns(pid) - me_total
    print(f"PostgreSQL backend CPU: check-in {total / n / 1e6:.2f} ms, GET /me {me_total / n / 1e6:.3f} ms "
          f"(mean of {n}); per check-in by statement:")
    by_statement.pop("SELECT clinic_apitoken", None)  # /me's too, measured above with /me
    rows = [*by_statement.items(), ("BEGIN + COMMIT (left over)", total - statements)]
    for label, ns in sorted(rows, key=lambda row: -row[1]):
        print(f"    {ns / n / 1e6:6.3f} ms  {label}" + (f"  (x{counts[label] / n:.1f})" if label in counts else ""))


if __name__ == "__main__":
    sys.exit(main())
