"""Statements compiled once per connection (tally.clinic.compiled) give what the ORM gives."""

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tally.clinic.actions import visits
from tally.clinic.compiled import Compiled
from tally.clinic.models import Appointment, ClinicSettings, Service


@pytest.fixture
def booked(desk, patient, acu60):
    return visits.do_book(acting_user=desk, patient=patient, service=acu60,
                          starts_at=dt.datetime(2026, 3, 4, 14, tzinfo=dt.UTC))


def test_it_gives_the_instances_the_orm_gives_with_their_related_rows(booked, acu60, patient):
    compiled = Compiled(lambda pk: Appointment.objects.select_related("service", "patient").filter(pk=pk)[:2], int)
    orm = Appointment.objects.select_related("service", "patient").get(pk=booked.pk)
    for _ in range(2):  # compiled on the first call, reused on the second
        got = compiled.get(booked.pk)
        with CaptureQueriesContext(connection) as queries:
            assert (got.service, got.patient) == (acu60, patient)  # no query: populated
            assert got.service.price == Decimal("95.00") and isinstance(got.service.price, Decimal)
        assert queries.captured_queries == []
        assert {f.attname: getattr(got, f.attname) for f in Appointment._meta.concrete_fields} == \
               {f.attname: getattr(orm, f.attname) for f in Appointment._meta.concrete_fields}
        assert got.starts_at.tzinfo is not None and got._state.adding is False


def test_it_runs_one_statement_per_call_with_that_calls_arguments(booked, desk, patient, acu60):
    other = visits.do_book(acting_user=desk, patient=patient, service=acu60,
                           starts_at=dt.datetime(2026, 3, 5, 14, tzinfo=dt.UTC))
    compiled = Compiled(lambda pk: Appointment.objects.filter(pk=pk).values_list("pk", "starts_at")[:2], int)
    compiled.get(booked.pk)
    with CaptureQueriesContext(connection) as queries:
        assert compiled.get(other.pk) == (other.pk, other.starts_at)
        assert compiled.all(booked.pk) == [(booked.pk, booked.starts_at)]
    assert len(queries.captured_queries) == 2


def test_get_raises_as_the_orm_does(booked, desk, patient, acu60):
    compiled = Compiled(lambda pk: Appointment.objects.filter(pk__gte=pk).order_by("pk")[:2], int)
    with pytest.raises(Appointment.DoesNotExist):
        compiled.get(booked.pk + 1)
    assert compiled.first(booked.pk + 1) is None
    visits.do_book(acting_user=desk, patient=patient, service=acu60,
                   starts_at=dt.datetime(2026, 3, 5, 14, tzinfo=dt.UTC))
    with pytest.raises(Appointment.MultipleObjectsReturned):
        compiled.get(booked.pk)


def test_it_refuses_an_argument_the_lookup_changes(clinic):
    # icontains wraps the value in %...%: the stand-in is not found, so nothing is compiled.
    compiled = Compiled(lambda name: ClinicSettings.objects.filter(name__icontains=name), str)
    with pytest.raises(ValueError, match="appear once"):
        compiled.all("Clinic")


def test_it_refuses_an_argument_it_cannot_stand_in_for():
    with pytest.raises(TypeError):
        Compiled(lambda day: Service.objects.filter(pk=day), dt.date).all(dt.date(2026, 1, 1))


def test_insert_writes_the_row_save_would_write(patient, desk, acu60):
    from tally.clinic.compiled import insert
    from tally.clinic.models import Invoice, InvoiceLine

    invoice = Invoice(patient=patient, issued_at=dt.datetime(2026, 3, 4, 14, tzinfo=dt.UTC), created_by=desk)
    insert(invoice)
    assert invoice.pk is not None and invoice._state.adding is False and invoice.created_at is not None
    line = InvoiceLine(invoice=invoice, kind="service", service=acu60, description=acu60.name,
                       list_price=acu60.price, amount=Decimal("95.00"), coverage_decision={"covered_by": None})
    insert(line)
    saved = InvoiceLine.objects.get(pk=line.pk)
    assert (saved.invoice_id, saved.amount, saved.coverage_decision, saved.created_at) == \
           (invoice.pk, Decimal("95.00"), {"covered_by": None}, line.created_at)
    with pytest.raises(ValueError):
        insert(line)  # not a new row


def test_update_fields_writes_those_columns_and_refuses_a_missing_row(booked):
    from django.db import DatabaseError
    from django.db.models import F

    from tally.clinic.compiled import update_fields

    booked.status, booked.no_charges = "attended", True
    booked.checked_in_at = dt.datetime(2026, 3, 4, 15, tzinfo=dt.UTC)
    update_fields(booked, ["status", "no_charges", "checked_in_at"])
    saved = Appointment.objects.get(pk=booked.pk)
    assert (saved.status, saved.no_charges, saved.checked_in_at) == ("attended", True, booked.checked_in_at)
    booked.status = F("status")
    with pytest.raises(ValueError):
        update_fields(booked, ["status"])
    missing = Appointment(pk=booked.pk + 1000, status="booked")
    with pytest.raises(DatabaseError):
        update_fields(missing, ["status"])


def test_each_thread_compiles_on_its_own_connection():
    import threading

    from tally.clinic.compiled import _connection

    here = _connection()
    there: list = []
    thread = threading.Thread(target=lambda: there.append(_connection()))
    thread.start()
    thread.join()
    assert here[0] is not there[0][0] and here[1] is not there[0][1]
    assert _connection()[1] is here[1]


@pytest.mark.postgres_only  # SQLite takes no row locks (it locks the whole database on write)
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("triggers_off_for_flush")
def test_a_compiled_lock_is_refused_outside_a_transaction_on_every_call():
    """The ORM refuses FOR UPDATE in autocommit when it compiles; compiled once, the refusal
    must still come on every call, or a later call would run and lock nothing."""
    from django.db import transaction
    from django.db.transaction import TransactionManagementError

    from tally.clinic.errors import NotFound
    from tally.clinic.locking import lock_appointment

    with transaction.atomic(), pytest.raises(NotFound):  # compiled here, in a transaction
        lock_appointment(1)
    for _ in range(2):
        with pytest.raises(TransactionManagementError):
            lock_appointment(1)


def test_an_action_error_caught_inside_a_transaction_that_ends_on_error_is_not_answered_as_success(desk, patient):
    from django.db import transaction
    from django.db.transaction import TransactionManagementError

    from tally.clinic.actions import catalog
    from tally.clinic.actions.common import transaction_ends_on_error
    from tally.clinic.errors import ClinicError

    with pytest.raises(TransactionManagementError, match="error was caught"):
        with transaction.atomic(), transaction_ends_on_error():
            try:
                catalog.do_create_patient(acting_user=desk, first_name="", last_name="")
            except ClinicError:
                pass  # a caller that carries on: the rule this guards against
