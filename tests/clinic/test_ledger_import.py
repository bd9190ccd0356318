"""ledger.import_entries: historical entries in bulk, replayed and refused on any fault."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from tally.clinic.actions import catalog, sales, visits
from tally.clinic.errors import ClinicError, Conflict
from tally.clinic.ledger import import_entries, verify
from tally.clinic.models import Invoice, InvoiceLine, PackageLedgerEntry, PatientPackage

AT = dt.datetime(2025, 3, 4, 15, tzinfo=dt.UTC)


@pytest.fixture
def sold(desk, patient, ten_pack):
    pp, _ = sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False,
                                  sold_at=AT, payment=(Decimal("800.00"), "card"))
    return pp


@pytest.fixture
def lines(patient, acu60):
    invoice = Invoice.objects.create(patient=patient, issued_at=AT)
    return [InvoiceLine.objects.create(invoice=invoice, kind="service", service=acu60, description=acu60.name,
                                       list_price=acu60.price, amount=Decimal("0.00"))
            for _ in range(2)]


def use(pp, seq, line=None, **extra):
    return {"patient_package_id": pp.pk, "seq": seq, "kind": "use", "change": -1, "at": AT,
            "invoice_line_id": line.pk if line else None, **extra}


def reversal(pp, seq, of, **extra):
    return {"patient_package_id": pp.pk, "seq": seq, "kind": "reversal", "change": 1, "at": AT,
            "reverses_seq": of, **extra}


def adjustment(pp, seq, change):
    return {"patient_package_id": pp.pk, "seq": seq, "kind": "adjustment", "change": change, "at": AT,
            "reason": "imported"}


def test_a_clean_history_is_imported_and_the_cached_count_follows(sold, lines):
    written = import_entries([
        use(sold, 1, lines[0], used_after=1),
        use(sold, 2, lines[1]),
        reversal(sold, 3, of=1, invoice_line_id=lines[0].pk),
        adjustment(sold, 4, -2),
    ])
    assert written == 4
    entries = list(PackageLedgerEntry.objects.filter(patient_package=sold).order_by("seq"))
    assert [(e.kind, e.used_after) for e in entries] == [("use", 1), ("use", 2), ("reversal", 1), ("adjustment", 3)]
    assert entries[2].reverses_id == entries[0].pk
    fresh = PatientPackage.objects.get(pk=sold.pk)
    assert (fresh.sessions_used, fresh.ledger_seq) == (3, 4)
    assert verify() == []


@pytest.mark.parametrize("rows, says", [
    (lambda pp, ln: [use(pp, 1), use(pp, 3)], "expected seq 2"),
    (lambda pp, ln: [use(pp, 2)], "expected seq 1"),
    (lambda pp, ln: [adjustment(pp, 1, 1)], "count would be -1"),
    (lambda pp, ln: [adjustment(pp, 1, -11)], "count would be 11 of 10"),
    (lambda pp, ln: [use(pp, 1), reversal(pp, 2, of=1), reversal(pp, 3, of=1)], "already reversed"),
    (lambda pp, ln: [use(pp, 1), reversal(pp, 2, of=2)], "earlier use"),
    (lambda pp, ln: [adjustment(pp, 1, -1), reversal(pp, 2, of=1)], "earlier use"),
    (lambda pp, ln: [use(pp, 1, used_after=2)], "replay gives 1"),
    (lambda pp, ln: [{**use(pp, 1), "change": -2}], "by -1"),
    (lambda pp, ln: [adjustment(pp, 1, -2), {**adjustment(pp, 2, 1), "change": True}], "whole number"),
    (lambda pp, ln: [{**use(pp, 1), "change": -1.0}], "whole number"),
    (lambda pp, ln: [use(pp, 1, ln[0]), use(pp, 2, ln[0])], "2 live uses"),
])
def test_it_refuses_a_history_that_does_not_replay_and_writes_nothing(sold, lines, rows, says):
    with pytest.raises(ClinicError) as refused:
        import_entries(rows(sold, lines))
    assert says in refused.value.message
    assert not PackageLedgerEntry.objects.exists()
    assert PatientPackage.objects.get(pk=sold.pk).sessions_used == 0


def test_one_bad_package_refuses_the_whole_import(desk, patient, ten_pack, sold, lines):
    other, _ = sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False,
                                     sold_at=AT, payment=(Decimal("800.00"), "card"))
    with pytest.raises(ClinicError):
        import_entries([use(sold, 1, lines[0]), use(other, 1), reversal(other, 2, of=2)])
    assert not PackageLedgerEntry.objects.exists()


def test_it_refuses_a_package_that_already_has_entries(desk, patient, acu60, sold):
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=AT + dt.timedelta(days=1))
    visits.do_check_in(acting_user=desk, appointment=appointment)
    with pytest.raises(Conflict):
        import_entries([use(sold, 2)])
    assert PackageLedgerEntry.objects.filter(patient_package=sold).count() == 1


def test_it_refuses_an_unknown_package(sold):
    with pytest.raises(ClinicError, match="No such patient package"):
        import_entries([{**use(sold, 1), "patient_package_id": sold.pk + 1000}])


def test_a_line_moved_from_one_package_to_another_is_imported(desk, patient, ten_pack, sold, lines):
    # An owner's override moved the line: its use in `sold` was reversed, then `other` used it.
    # Each package's rows are in order, but the other package's use is its first entry: inserted
    # by seq alone, it came before the reversal it follows, and the database refused the import
    # (two live uses of the line at once), a history that replays cleanly.
    other, _ = sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False,
                                     sold_at=AT, payment=(Decimal("800.00"), "card"))
    written = import_entries([
        use(sold, 1, lines[0]),
        reversal(sold, 2, of=1, invoice_line_id=lines[0].pk),
        use(other, 1, lines[0]),
    ])
    assert written == 3
    assert [(e.patient_package_id, e.kind) for e in PackageLedgerEntry.objects.filter(
        invoice_line=lines[0], kind="use", reversed_by__isnull=True)] == [(other.pk, "use")]
    assert verify() == []


def test_it_refuses_a_use_of_a_line_another_package_already_holds(desk, patient, acu60, ten_pack, sold):
    held, _ = sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False,
                                    sold_at=AT - dt.timedelta(days=1), payment=(Decimal("800.00"), "card"))
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=AT + dt.timedelta(days=1))
    _, _, line = visits.do_check_in(acting_user=desk, appointment=appointment)
    assert line.covered_by_id == held.pk
    with pytest.raises(ClinicError, match="live use"):
        import_entries([use(sold, 1, line)])
    assert not PackageLedgerEntry.objects.filter(patient_package=sold).exists()


@pytest.mark.parametrize("field, says", [
    ("invoice_line_id", "No such invoice line"),
    ("appointment_id", "No such appointment"),
    ("by_id", "No such staff member"),
])
def test_it_refuses_an_entry_naming_something_that_does_not_exist(sold, field, says):
    # Refused by the database only at the commit (a foreign key error naming no row) before.
    with pytest.raises(ClinicError, match=says):
        import_entries([use(sold, 1, **{field: 999_999})])
    assert not PackageLedgerEntry.objects.exists()


def test_it_refuses_a_use_of_another_patients_charge(desk, sold, acu60):
    other = catalog.do_create_patient(acting_user=desk, first_name="Other", last_name="Patient")
    invoice = Invoice.objects.create(patient=other, issued_at=AT)
    theirs = InvoiceLine.objects.create(invoice=invoice, kind="service", service=acu60, description=acu60.name,
                                        list_price=acu60.price, amount=Decimal("0.00"))
    with pytest.raises(ClinicError, match="another patient's"):
        import_entries([use(sold, 1, theirs)])
    assert not PackageLedgerEntry.objects.exists()
