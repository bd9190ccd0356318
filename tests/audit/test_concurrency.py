"""Concurrent writers and readers, each in its own thread and connection, still make one
intact chain: PostgreSQL serialises appends with an advisory lock, SQLite with BEGIN IMMEDIATE."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection

from tally.clinic.actions import catalog, visits
from tally.clinic.audit import record_read, verify_chain
from tally.clinic.models import AuditEvent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("triggers_off_for_flush")]

THREADS = 8
ROUNDS = 6


def test_concurrent_writes_and_reads_keep_one_intact_chain(desk, practitioner, patient, acu60):
    before = AuditEvent.objects.count()
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []
    starts = dt.datetime(2026, 6, 1, 9, tzinfo=dt.UTC)

    def worker(n: int) -> None:
        try:
            connection.ensure_connection()
            barrier.wait(timeout=60)
            for i in range(ROUNDS):
                if (n + i) % 3 == 0:
                    catalog.do_create_patient(acting_user=desk, first_name=f"T{n}", last_name=f"R{i}")
                elif (n + i) % 3 == 1:
                    visits.do_book(acting_user=desk, patient=patient, service=acu60,
                                   starts_at=starts + dt.timedelta(hours=n, minutes=i * 5))
                else:  # a read: outside any transaction, as a GET runs
                    record_read(practitioner, "patient.view", patient.pk, "patient", patient.pk, ip="10.0.0.1")
        except BaseException as error:  # every error goes back to the test
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert AuditEvent.objects.count() == before + THREADS * ROUNDS
    report = verify_chain()
    assert report.intact, report.problem
    assert report.events == before + THREADS * ROUNDS
    times = list(AuditEvent.objects.order_by("id").values_list("at", flat=True))
    assert times == sorted(times)  # time order is id order is commit order (polling by time is safe)
