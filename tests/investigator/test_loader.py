"""The loader reads a whole history in a fixed number of queries, whatever its length."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from tally.clinic.actions import visits
from tally.clinic.investigator.explain import explain
from tally.clinic.investigator.loader import load_history
from tally.clinic.models import Appointment, Invoice, InvoiceLine, Payment


def add_history(history, visits: int) -> None:
    """Many visits, each charged on its own invoice and paid (bulk rows, no package use:
    the loader's query count cannot depend on what the rows say)."""
    start = dt.datetime(2020, 1, 6, 15, tzinfo=dt.UTC)
    appointments = Appointment.objects.bulk_create(
        Appointment(patient=history.patient, service=history.acu90, starts_at=start + dt.timedelta(days=7 * i),
                    ends_at=start + dt.timedelta(days=7 * i, hours=1), status="attended")
        for i in range(visits)
    )
    invoices = Invoice.objects.bulk_create(Invoice(patient=history.patient, issued_at=a.starts_at)
                                           for a in appointments)
    InvoiceLine.objects.bulk_create(
        InvoiceLine(invoice=inv, kind="service", service=history.acu90, appointment=a, description="Acupuncture 90",
                    list_price=Decimal("130.00"), amount=Decimal("130.00"))
        for inv, a in zip(invoices, appointments, strict=True)
    )
    Payment.objects.bulk_create(Payment(invoice=inv, amount=Decimal("130.00"), method="card",
                                        received_at=inv.issued_at) for inv in invoices)


def queries_to_investigate(patient_id: int) -> int:
    with CaptureQueriesContext(connection) as ctx:
        explain(load_history(patient_id))
    return len(ctx.captured_queries)


@pytest.mark.parametrize("visits", [10, 1000])
def test_the_loader_reads_a_history_in_a_fixed_number_of_queries(history, visits):
    history.sell(1, 1)
    history.visit(3, 3)
    add_history(history, visits)
    assert queries_to_investigate(history.patient.pk) <= 11  # inside a transaction: no snapshot of its own


def test_ten_and_a_thousand_visits_cost_the_same_queries(history, desk, clinic):
    from tally.clinic.actions import catalog

    history.sell(1, 1)
    other = catalog.do_create_patient(acting_user=desk, first_name="Ana", last_name="Silva")
    add_history(history, 10)
    small = queries_to_investigate(history.patient.pk)
    history.patient = other
    history.sell(1, 1)
    add_history(history, 1000)
    assert queries_to_investigate(other.pk) == small


def test_the_fast_path_reads_the_same_values_as_the_orm(history):
    """The loader reads raw rows (its own timestamp loader on PostgreSQL, its own money and
    JSON conversion): every value must equal what the ORM gives for the same row."""
    history.sell(1, 1, paid="400.00")
    history.visit(1, 3)
    history.visit(1, 10, service=history.acu90)
    loaded = load_history(history.patient.pk)
    for visit in loaded.visits:
        row = Appointment.all_objects.get(pk=visit.id)
        assert (visit.starts_at, visit.status, visit.no_charges) == (row.starts_at, row.status, row.no_charges)
        assert visit.starts_at.utcoffset() == dt.timedelta(0)
    lines = [ln for inv in loaded.invoices for ln in inv.lines]
    assert lines
    for line in lines:
        row = InvoiceLine.objects.get(pk=line.id)
        assert (line.amount, line.list_price, line.created_at, line.removed_at) == (
            row.amount, row.list_price, row.created_at, row.removed_at)
        assert line.considered == (row.coverage_decision or {}).get("considered", [])
    for invoice in loaded.invoices:
        row = Invoice.objects.get(pk=invoice.id)
        assert (invoice.issued_at, invoice.total, invoice.paid) == (row.issued_at, row.total, row.paid)
        for payment in invoice.payments:
            assert (payment.amount, payment.received_at) == (
                Payment.objects.get(pk=payment.id).amount, Payment.objects.get(pk=payment.id).received_at)
    (package,) = loaded.packages
    assert package.price == Decimal("800.00") and package.sold_at.utcoffset() == dt.timedelta(0)


def test_a_check_in_committed_in_the_middle_of_a_read_cannot_look_like_a_ledger_fault(
        triggers_off_for_flush, history, monkeypatch):
    """The loader reads a history in one snapshot: a check-in committed by someone else
    between its packages query and its ledger query must not show a count that disagrees
    with its ledger (a false LEDGER_MISMATCH, an error telling staff to call support)."""
    import threading

    from django.db import connections

    from tally.clinic.investigator import loader
    from tally.clinic.investigator.explain import LEDGER_MISMATCH

    history.sell(1, 1)
    booked = history.book(1, 3)
    compile_sql = loader.sql_for

    def check_in_elsewhere() -> None:
        try:
            visits.do_check_in(acting_user=history.desk, appointment=booked)
        finally:
            connections.close_all()

    def sql_with_a_check_in_after_the_packages(name, ids, *args, **kwargs):
        if name == "entries":  # the packages were read (or, in a pipeline, sent) before
            raw = connections["default"].connection
            if connections["default"].vendor == "postgresql" and raw.info.pipeline_status:
                with raw.pipeline():  # a nested block's end makes the server run what was sent
                    pass
            other = threading.Thread(target=check_in_elsewhere)
            other.start()
            other.join()
        return compile_sql(name, ids, *args, **kwargs)

    monkeypatch.setattr(loader, "sql_for", sql_with_a_check_in_after_the_packages)
    loaded = load_history(history.patient.pk)
    assert Appointment.objects.get(pk=booked.pk).status == "attended"  # it did commit meanwhile
    (package,) = loaded.packages
    assert package.sessions_used == 0 and not loaded.entries  # the view from before it, all of it
    investigations, _ = explain(loaded)
    assert LEDGER_MISMATCH not in {f.code for f in investigations[package.id].findings}


@pytest.mark.django_db(transaction=True)
def test_a_read_that_fails_ends_its_snapshot_and_leaves_the_connection_usable(
        triggers_off_for_flush, history, monkeypatch):
    """A failed read (here, a query the database refuses) raises Django's DatabaseError; the
    snapshot is rolled back, so the next request on the same connection is served."""
    from django.db import DatabaseError

    from tally.clinic.investigator import loader

    history.sell(1, 1)
    history.visit(1, 3)
    compile_sql = loader.sql_for

    def broken(name, ids, *args, **kwargs):
        if name == "entries":
            return "SELECT no_such_column FROM clinic_packageledgerentry", []
        return compile_sql(name, ids, *args, **kwargs)

    monkeypatch.setattr(loader, "sql_for", broken)
    with pytest.raises(DatabaseError):
        load_history(history.patient.pk)
    monkeypatch.setattr(loader, "sql_for", compile_sql)
    assert not connection.in_atomic_block
    loaded = load_history(history.patient.pk)
    assert len(loaded.visits) == 1 and Appointment.objects.count() == 1
    # A successful read ends its snapshot too: the next write can open its transaction (a
    # COMMIT skipped inside a pipeline once left PostgreSQL connections "in transaction").
    if connection.vendor == "postgresql":
        import psycopg

        assert connection.connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    else:
        assert not connection.connection.in_transaction
    with transaction.atomic():
        assert Appointment.objects.count() == 1
