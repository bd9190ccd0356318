"""Selling, paying for, cancelling, refunding and expiring packages (SPEC.md rules 1, 5, 11, 12)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from tally.clinic.actions import billing, catalog, sales, visits
from tally.clinic.errors import Conflict, Forbidden, Invalid
from tally.clinic.ledger import verify
from tally.clinic.models import Invoice, InvoiceLine, PatientPackage
from tally.clinic.models.billing import LineKind
from tally.clinic.rules import PACKAGE_CANCELLED, PACKAGE_EXPIRED, PACKAGE_NOT_PAID, end_of_day

from .helpers import (
    NY,
    fresh,
    ledger_of,
    make_package,
    ny,
    pay,
    sell,
    sell_live,
    utc,
    visit,
    writes_nothing,
    writes_one_audit_event,
)

# --- rule 1: activation ---


def test_a_partial_payment_does_not_activate_the_package(desk, patient, ten_pack):
    pp, invoice = sell(desk, patient, ten_pack, paid="300.00")
    assert pp.activated_at is None
    assert pp.status == "pending_payment"
    pay(desk, invoice, "200.00", received_at=ny(2026, 6, 11))
    assert fresh(pp).activated_at is None
    assert fresh(pp).status == "pending_payment"


def test_the_payment_that_completes_the_sale_activates_it_at_its_received_at(desk, patient, ten_pack):
    pp, invoice = sell(desk, patient, ten_pack, paid="300.00")
    completing = pay(desk, invoice, "500.00", received_at=ny(2026, 6, 12, 15))
    pp = fresh(pp)
    assert pp.activated_at == completing.received_at == ny(2026, 6, 12, 15)
    assert pp.status == "active"
    assert Invoice.objects.get(pk=invoice.pk).status == "paid"


def test_a_payment_for_a_sale_cannot_be_dated_before_the_sale(desk, patient, ten_pack):
    """Rule 1 dates activation by the completing payment; one backdated before the sale would
    make a package active before it was sold, and a dated one expired from its first day."""
    pp, invoice = sell(desk, patient, ten_pack, paid=False, sold_at=ny(2026, 6, 10, 9))
    with writes_nothing(), pytest.raises(Invalid) as refused:
        pay(desk, invoice, "800.00", received_at=ny(2026, 6, 1))
    assert "received_at" in refused.value.fields
    assert fresh(pp).status == "pending_payment"
    pay(desk, invoice, "800.00", received_at=ny(2026, 6, 10, 9))  # at the sale itself: fine
    assert fresh(pp).activated_at == ny(2026, 6, 10, 9)


def test_a_sale_paid_in_full_is_active_from_the_sale(desk, patient, ten_pack):
    pp, invoice = sell(desk, patient, ten_pack, sold_at=ny(2026, 6, 10, 9))
    assert pp.status == "active"
    assert pp.activated_at == ny(2026, 6, 10, 9)
    assert invoice.status == "paid"
    assert pp.sessions_used == 0


def test_a_pending_package_deducts_nothing(desk, patient, ten_pack, acu60):
    pp, invoice = sell(desk, patient, ten_pack, paid=False)
    _, _, line = visit(desk, patient, acu60, ny(2026, 6, 11))
    assert line.covered_by_id is None
    assert line.amount == Decimal("95.00")
    assert line.not_covered_reason == PACKAGE_NOT_PAID
    assert fresh(pp).sessions_used == 0
    assert ledger_of(pp) == []


def test_paying_later_does_not_reach_back_to_visits_charged_while_unpaid(desk, patient, ten_pack, acu60):
    pp, invoice = sell(desk, patient, ten_pack, paid=False)
    _, _, line = visit(desk, patient, acu60, ny(2026, 6, 11))
    pay(desk, invoice, "800.00")
    line.refresh_from_db()
    assert line.covered_by_id is None
    assert fresh(pp).sessions_used == 0
    _, _, later = visit(desk, patient, acu60, ny(2026, 6, 12))
    assert later.covered_by_id == pp.pk


def test_selling_a_package_snapshots_the_template(owner, desk, patient, ten_pack, acu60, acu90):
    from tally.clinic.actions import catalog

    pp, _ = sell(desk, patient, ten_pack)
    catalog.do_update_package(acting_user=owner, package=ten_pack,
                              changes={"name": "Renamed", "sessions": 3, "service_ids": [acu90.pk]})
    pp = fresh(pp)
    assert (pp.name, pp.sessions_total) == ("10 x Acupuncture 60", 10)
    assert list(pp.eligible_services.values_list("pk", flat=True)) == [acu60.pk]


# --- rule 5: use first session ---


def test_use_first_session_must_be_answered(desk, patient, ten_pack):
    with writes_nothing(), pytest.raises(Invalid):
        sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=None)
    assert not PatientPackage.objects.exists()


def test_a_ticked_first_session_is_used_at_the_sale(desk, patient, ten_pack):
    pp, invoice = sell(desk, patient, ten_pack, first=True)
    assert fresh(pp).sessions_used == 1
    line = InvoiceLine.objects.get(invoice=invoice, kind=LineKind.FIRST_SESSION)
    assert (line.covered_by_id, line.session_number, line.amount) == (pp.pk, 1, Decimal("0.00"))
    [entry] = ledger_of(pp)
    assert (entry.kind, entry.change, entry.invoice_line_id) == ("use", -1, line.pk)


def test_an_unticked_first_session_uses_nothing_at_the_sale(desk, patient, ten_pack):
    pp, invoice = sell(desk, patient, ten_pack, first=False)
    assert fresh(pp).sessions_used == 0
    assert not InvoiceLine.objects.filter(invoice=invoice, kind=LineKind.FIRST_SESSION).exists()
    assert ledger_of(pp) == []


def test_a_ticked_first_session_on_an_unpaid_sale_is_used_by_the_activating_payment(desk, patient, ten_pack):
    pp, invoice = sell(desk, patient, ten_pack, first=True, paid=False)
    assert fresh(pp).sessions_used == 0
    pay(desk, invoice, "100.00")
    assert fresh(pp).sessions_used == 0
    pay(desk, invoice, "700.00", received_at=ny(2026, 6, 15))
    pp = fresh(pp)
    assert pp.sessions_used == 1
    assert pp.activated_at == ny(2026, 6, 15)
    [entry] = ledger_of(pp)
    assert entry.kind == "use"
    assert entry.invoice_line.kind == LineKind.FIRST_SESSION


def test_a_first_session_visit_checked_in_later_counts_once(desk, patient, ten_pack, acu60):
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 10, 8))
    pp, sale = sell(desk, patient, ten_pack, first=True, appointment=appointment, sold_at=ny(2026, 6, 10, 9))
    assert fresh(pp).sessions_used == 1
    _, invoice, line = visits.do_check_in(acting_user=desk, appointment=appointment)
    assert line.covered_by_id == pp.pk
    assert fresh(pp).sessions_used == 1
    first_line = InvoiceLine.objects.get(invoice=sale, kind=LineKind.FIRST_SESSION)
    assert first_line.removed_at is not None
    assert [e.kind for e in ledger_of(pp)] == ["use", "reversal", "use"]
    assert verify() == []


def test_undoing_the_check_in_of_a_first_session_visit_gives_the_sale_its_first_session_back(
        desk, patient, ten_pack, acu60):
    # Rule 5 used one session at the sale; checking the visit in moved it to the visit's line.
    # Undoing the check-in returns to the state before it: the sale's session is used again.
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 10, 8))
    pp, sale = sell(desk, patient, ten_pack, first=True, appointment=appointment, sold_at=ny(2026, 6, 10, 9))
    for _ in range(2):  # and again: one first session, never two
        visits.do_check_in(acting_user=desk, appointment=appointment)
        assert fresh(pp).sessions_used == 1
        visits.do_undo_check_in(acting_user=desk, appointment=appointment)
        assert fresh(pp).sessions_used == 1
        [first] = InvoiceLine.objects.filter(invoice=sale, kind=LineKind.FIRST_SESSION, removed_at__isnull=True)
        assert first.covered_by_id == pp.pk and first.appointment_id == appointment.pk
    assert verify() == []


@pytest.mark.parametrize("paid_at_the_sale", [True, False])
def test_undoing_the_check_in_of_a_visit_whose_charge_took_the_first_session_gives_it_back_to_the_sale(
        desk, patient, ten_pack, acu60, paid_at_the_sale):
    # The same facts as above in the other order: the visit was checked in (and charged) before
    # the sale, whose first session then covered that charge (rule 5). Undoing the check-in gave
    # the session back and left the sale's ticked first session unused: 0 used where the other
    # order leaves 1, for a sale that says "the patient is treated that day".
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 10, 8))
    _, _, charge = visits.do_check_in(acting_user=desk, appointment=appointment)
    pp, sale = sell(desk, patient, ten_pack, first=True, appointment=appointment, sold_at=ny(2026, 6, 10, 9),
                    paid=paid_at_the_sale)
    if not paid_at_the_sale:
        pay(desk, sale, "800.00", received_at=ny(2026, 6, 10, 12))
    charge.refresh_from_db()
    assert charge.covered_by_id == pp.pk and fresh(pp).sessions_used == 1
    visits.do_undo_check_in(acting_user=desk, appointment=appointment)
    assert fresh(pp).sessions_used == 1
    [first] = InvoiceLine.objects.filter(invoice=sale, kind=LineKind.FIRST_SESSION, removed_at__isnull=True)
    assert first.covered_by_id == pp.pk and first.appointment_id == appointment.pk
    visits.do_check_in(acting_user=desk, appointment=appointment)  # and back: one session, never two
    assert fresh(pp).sessions_used == 1
    assert verify() == []


def test_undoing_a_check_in_leaves_no_unused_first_session_line_on_a_package_used_up_since(
        owner, desk, patient, ten_pack, acu60):
    # Rule 5 at the undo: the sale's first session comes back only if the package can still use
    # it. Used up meanwhile (an owner's adjustment), the restored line was left on the sale
    # uncovered: a "first session" that used nothing, on an active package, which a later check-in
    # of the visit took for a sale not yet paid.
    week = make_package(owner, [acu60], sessions=5, price="300.00", valid_days=7)
    expiring, _ = sell(desk, patient, week, sold_at=ny(2026, 6, 9))
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 10, 8))
    pp, sale = sell(desk, patient, ten_pack, first=True, appointment=appointment, sold_at=ny(2026, 6, 10, 9))
    visits.do_check_in(acting_user=desk, appointment=appointment)
    assert (fresh(expiring).sessions_used, fresh(pp).sessions_used) == (1, 0)  # rule 6: expires first
    sales.do_adjust(acting_user=owner, patient_package=pp, change=-10, reason="paper card: all used")
    visits.do_undo_check_in(acting_user=desk, appointment=appointment)
    assert (fresh(expiring).sessions_used, fresh(pp).sessions_used) == (0, 10)
    assert not InvoiceLine.objects.filter(invoice=sale, kind=LineKind.FIRST_SESSION, removed_at__isnull=True,
                                          covered_by__isnull=True).exists()
    assert verify() == []


def test_undoing_the_check_in_of_a_pending_first_session_visit_leaves_it_to_the_activating_payment(
        desk, patient, ten_pack, acu60):
    older, _ = sell(desk, patient, ten_pack, sold_at=ny(2026, 6, 1, 9))
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 10, 8))
    pp, sale = sell(desk, patient, ten_pack, first=True, appointment=appointment, paid=False,
                    sold_at=ny(2026, 6, 10, 9))
    visits.do_check_in(acting_user=desk, appointment=appointment)  # covered by the older package
    visits.do_undo_check_in(acting_user=desk, appointment=appointment)
    assert (fresh(older).sessions_used, fresh(pp).sessions_used) == (0, 0)
    pay(desk, sale, "800.00", received_at=ny(2026, 6, 10, 12))
    assert (fresh(older).sessions_used, fresh(pp).sessions_used) == (0, 1)
    assert verify() == []


def test_a_first_session_visit_checked_in_before_the_sale_is_paid_is_counted_by_the_activating_payment(
        desk, patient, ten_pack, acu60):
    # Rule 5: the ticked first session of an unpaid sale is used by the payment that activates it,
    # even when its visit was checked in (and charged normally, PACKAGE_NOT_PAID) in between.
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 10, 8))
    pp, sale = sell(desk, patient, ten_pack, first=True, appointment=appointment, paid=False,
                    sold_at=ny(2026, 6, 10, 9))
    _, _, line = visits.do_check_in(acting_user=desk, appointment=appointment)
    assert line.covered_by_id is None and line.not_covered_reason == PACKAGE_NOT_PAID
    pay(desk, sale, "800.00", received_at=ny(2026, 6, 10, 12))
    line.refresh_from_db()
    assert fresh(pp).sessions_used == 1
    assert line.covered_by_id == pp.pk and line.amount == Decimal("0.00")
    assert verify() == []


def test_a_pending_first_session_is_dropped_when_another_package_covers_its_visit(desk, patient, ten_pack, acu60):
    older, _ = sell(desk, patient, ten_pack, sold_at=ny(2026, 6, 1, 9))
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 10, 8))
    pp, sale = sell(desk, patient, ten_pack, first=True, appointment=appointment, paid=False,
                    sold_at=ny(2026, 6, 10, 9))
    _, _, line = visits.do_check_in(acting_user=desk, appointment=appointment)
    assert line.covered_by_id == older.pk
    pay(desk, sale, "800.00", received_at=ny(2026, 6, 10, 12))
    assert (fresh(older).sessions_used, fresh(pp).sessions_used) == (1, 0)  # the visit counts once
    assert verify() == []


def test_a_first_session_appointment_must_be_the_patients_and_needs_the_box_ticked(desk, patient, ten_pack, acu60):
    from tally.clinic.actions import catalog

    other = catalog.do_create_patient(acting_user=desk, first_name="Other", last_name="Person")
    theirs = visits.do_book(acting_user=desk, patient=other, service=acu60, starts_at=ny(2026, 6, 10, 8))
    ours = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 10, 8))
    with pytest.raises(Invalid):
        sell(desk, patient, ten_pack, first=True, appointment=theirs)
    with pytest.raises(Invalid):
        sell(desk, patient, ten_pack, first=False, appointment=ours)


# --- rule 11: cancellation and refund ---


def test_cancelling_keeps_used_sessions_used_and_nothing_more_can_be_used(desk, patient, ten_pack, acu60):
    pp, _ = sell(desk, patient, ten_pack)
    first, _, _ = visit(desk, patient, acu60, ny(2026, 6, 11))
    visit(desk, patient, acu60, ny(2026, 6, 12))
    pp = sales.do_cancel_package(acting_user=desk, patient_package=pp, reason="moving away")
    assert (pp.status, pp.sessions_used, pp.sessions_remaining) == ("cancelled", 2, 8)
    _, _, line = visit(desk, patient, acu60, ny(2026, 6, 13))
    assert line.covered_by_id is None
    assert line.not_covered_reason == PACKAGE_CANCELLED
    assert line.amount == Decimal("95.00")
    assert fresh(pp).sessions_used == 2


def test_undoing_a_covered_charge_on_a_cancelled_package_gives_the_session_back_but_it_stays_closed(
    desk, patient, ten_pack, acu60
):
    pp, _ = sell(desk, patient, ten_pack)
    appointment, _, _ = visit(desk, patient, acu60, ny(2026, 6, 11))
    sales.do_cancel_package(acting_user=desk, patient_package=pp, reason="moving away")
    visits.do_undo_check_in(acting_user=desk, appointment=appointment)
    assert [e.kind for e in ledger_of(pp)] == ["use", "reversal"]
    assert (fresh(pp).sessions_used, fresh(pp).status) == (0, "cancelled")
    _, _, line = visits.do_check_in(acting_user=desk, appointment=appointment)
    assert line.not_covered_reason == PACKAGE_CANCELLED


def test_a_refund_is_a_credit_line_and_a_negative_payment_and_the_invoice_stays_balanced(desk, patient, ten_pack):
    pp, invoice = sell(desk, patient, ten_pack)
    sales.do_cancel_package(acting_user=desk, patient_package=pp, reason="moving away",
                            refund=(Decimal("-400.00"), "card"))
    invoice = billing.load_invoice(invoice.pk)
    [credit] = [ln for ln in invoice.lines.all() if ln.kind == LineKind.PACKAGE_REFUND]
    [refund] = [p for p in invoice.payments.all() if p.amount < 0]
    assert credit.amount == refund.amount == Decimal("-400.00")
    assert "moving away" in refund.reason
    assert (invoice.total, invoice.paid, invoice.balance) == (Decimal("400.00"), Decimal("400.00"), Decimal("0.00"))
    assert invoice.status == "paid"


def refund(desk, invoice, amount: str):
    return billing.do_record_payment(acting_user=desk, invoice=invoice, amount=Decimal(amount), method="card",
                                     reason="patient asked")


@pytest.mark.parametrize("state", ["active", "exhausted", "expired"])
def test_a_plain_refund_that_unpays_a_live_packages_sale_is_refused(owner, desk, patient, acu60, state):
    """Rules 1 and 11: a package is active only while its sale is fully paid, and a package's
    money comes back by cancelling it with a refund. A plain negative payment on the sale
    left the package usable while its sale was no longer paid for."""
    pp, invoice = sell_live(owner, desk, patient, acu60, state)
    with writes_nothing(), pytest.raises(Conflict, match="cancel it with a refund"):
        refund(desk, invoice, "-40.00")
    current = billing.load_invoice(invoice.pk)
    assert (current.paid, current.balance, fresh(pp).cancelled_at) == (Decimal("100.00"), Decimal("0.00"), None)


def test_a_partial_payment_returned_before_activation_is_a_plain_refund(desk, patient, ten_pack):
    pp, invoice = sell(desk, patient, ten_pack, paid="300.00")
    refund(desk, invoice, "-300.00")
    assert billing.load_invoice(invoice.pk).paid == Decimal("0.00") and fresh(pp).status == "pending_payment"


def test_a_cancelled_packages_sale_takes_a_plain_refund(desk, patient, ten_pack):
    pp, invoice = sell(desk, patient, ten_pack)
    sales.do_cancel_package(acting_user=desk, patient_package=pp, reason="moving away")
    refund(desk, invoice, "-800.00")  # the owner settled the refund outside Tally's cancel flow
    assert billing.load_invoice(invoice.pk).balance == Decimal("800.00")


def test_an_overpayment_on_a_sale_invoice_is_refunded_while_the_package_stays_paid(desk, patient, ten_pack, acu90):
    """The sale invoice can carry other lines (a visit charged on it before it was paid): once
    that line is removed the invoice is overpaid, and refunding the difference leaves the sale
    fully paid."""
    pp, invoice = sell(desk, patient, ten_pack, paid=False)
    line = billing.do_add_line(acting_user=desk, invoice=invoice, service=acu90)
    pay(desk, invoice, "930.00")
    billing.do_remove_line(acting_user=desk, invoice=invoice, line_id=line.pk, reason="charged in error")
    with pytest.raises(Conflict):
        refund(desk, invoice, "-130.01")
    refund(desk, invoice, "-130.00")
    current = billing.load_invoice(invoice.pk)
    assert (current.paid, current.balance, fresh(pp).status) == (Decimal("800.00"), Decimal("0.00"), "active")


def test_it_refuses_a_refund_larger_than_what_was_paid(desk, patient, ten_pack):
    pp, _ = sell(desk, patient, ten_pack, paid="300.00")
    with writes_nothing(), pytest.raises(Invalid):
        sales.do_cancel_package(acting_user=desk, patient_package=pp, reason="x", refund=(Decimal("-300.01"), "card"))
    with pytest.raises(Invalid):
        sales.do_cancel_package(acting_user=desk, patient_package=pp, reason="x", refund=(Decimal("50.00"), "card"))
    assert fresh(pp).cancelled_at is None


def test_it_refuses_to_cancel_without_a_reason_or_twice(desk, patient, ten_pack):
    pp, _ = sell(desk, patient, ten_pack)
    with pytest.raises(Invalid):
        sales.do_cancel_package(acting_user=desk, patient_package=pp, reason="  ")
    sales.do_cancel_package(acting_user=desk, patient_package=pp, reason="asked to")
    with pytest.raises(Conflict):
        sales.do_cancel_package(acting_user=desk, patient_package=pp, reason="again")


def test_a_sale_invoice_can_be_voided_while_nothing_is_paid_and_nothing_is_used(desk, patient, ten_pack, acu60):
    pp, invoice = sell(desk, patient, ten_pack, paid=False, first=True)
    voided = billing.do_void_invoice(acting_user=desk, invoice=invoice, reason="sold by mistake")
    assert voided.status == "void"
    assert fresh(pp).status == "cancelled"
    _, _, line = visit(desk, patient, acu60, ny(2026, 6, 11))
    assert line.covered_by_id is None
    with pytest.raises(Conflict):
        pay(desk, invoice, "800.00")
    assert fresh(pp).activated_at is None


def test_it_refuses_to_void_a_sale_invoice_with_a_payment(desk, patient, ten_pack):
    pp, invoice = sell(desk, patient, ten_pack, paid="100.00")
    with writes_nothing(), pytest.raises(Conflict):
        billing.do_void_invoice(acting_user=desk, invoice=invoice, reason="mistake")
    assert Invoice.objects.get(pk=invoice.pk).voided_at is None
    assert fresh(pp).cancelled_at is None


def test_it_refuses_to_void_a_sale_invoice_once_a_session_is_used(owner, desk, patient, acu60):
    free_trial = make_package(owner, [acu60], sessions=2, price="0.00", name="Free trial")
    pp, invoice = sell(desk, patient, free_trial, paid=False, first=True)
    assert (fresh(pp).status, fresh(pp).sessions_used) == ("active", 1)
    with writes_nothing(), pytest.raises(Conflict):
        billing.do_void_invoice(acting_user=desk, invoice=invoice, reason="mistake")
    assert fresh(pp).cancelled_at is None


# --- rule 12: expiry ---


def test_valid_n_days_means_the_activation_day_and_n_minus_1_days_after_it(owner, desk, patient, acu60):
    monthly = make_package(owner, [acu60], valid_days=30)
    pp, _ = sell(desk, patient, monthly, sold_at=ny(2026, 6, 10, 9))
    assert pp.expires_at.astimezone(NY).date().isoformat() == "2026-07-09"
    # Late evening of the last day, already the next day in UTC: still covered.
    _, _, last_day = visit(desk, patient, acu60, ny(2026, 7, 9, 22, 30))
    assert last_day.covered_by_id == pp.pk
    _, _, day_after = visit(desk, patient, acu60, ny(2026, 7, 10, 8))
    assert day_after.covered_by_id is None
    assert day_after.not_covered_reason == PACKAGE_EXPIRED
    assert day_after.amount == Decimal("95.00")
    assert fresh(pp).sessions_used == 1


def test_the_validity_starts_on_the_activation_day_in_the_clinic_time_zone(owner, desk, patient, acu60):
    one_day = make_package(owner, [acu60], valid_days=1)
    # 21:30 in New York on 10 June is already 11 June in UTC.
    pp, _ = sell(desk, patient, one_day, sold_at=utc(2026, 6, 11, 1, 30))
    assert pp.expires_at.astimezone(NY).date().isoformat() == "2026-06-10"
    _, _, same_evening = visit(desk, patient, acu60, ny(2026, 6, 10, 23))
    assert same_evening.covered_by_id == pp.pk
    _, _, next_morning = visit(desk, patient, acu60, ny(2026, 6, 11, 9))
    assert next_morning.not_covered_reason == PACKAGE_EXPIRED


def test_an_owner_extension_covers_later_visits_but_not_ones_already_charged(owner, desk, patient, acu60):
    monthly = make_package(owner, [acu60], valid_days=30)
    pp, _ = sell(desk, patient, monthly, sold_at=ny(2026, 6, 10, 9))
    _, _, late = visit(desk, patient, acu60, ny(2026, 7, 12))
    assert late.not_covered_reason == PACKAGE_EXPIRED
    sales.do_set_expiry(acting_user=owner, patient_package=pp, expires_at=ny(2026, 8, 31, 23, 59))
    late.refresh_from_db()
    assert late.covered_by_id is None
    assert late.not_covered_reason == PACKAGE_EXPIRED
    _, _, later = visit(desk, patient, acu60, ny(2026, 7, 20))
    assert later.covered_by_id == pp.pk
    assert fresh(pp).status_at(ny(2026, 8, 1)) == "active"


def test_only_an_owner_may_change_the_expiry(owner, desk, patient, acu60):
    monthly = make_package(owner, [acu60], valid_days=30)
    pp, _ = sell(desk, patient, monthly)
    with writes_nothing(), pytest.raises(Forbidden):
        sales.do_set_expiry(acting_user=desk, patient_package=pp, expires_at=ny(2026, 12, 31))
    with pytest.raises(Invalid):
        sales.do_set_expiry(acting_user=owner, patient_package=pp, expires_at=ny(2026, 6, 1))


def test_an_expired_package_keeps_its_count(owner, desk, patient, acu60):
    monthly = make_package(owner, [acu60], valid_days=30)
    pp, _ = sell(desk, patient, monthly)
    visit(desk, patient, acu60, ny(2026, 6, 20))
    pp = fresh(pp)
    assert pp.status_at(ny(2026, 7, 10, 0, 0)) == "expired"
    assert (pp.sessions_used, pp.sessions_remaining) == (1, 9)


def test_a_first_session_sold_for_a_visit_already_charged_covers_that_charge(desk, patient, ten_pack, acu60):
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 3, 4, 10))
    _, visit_invoice, line = visits.do_check_in(acting_user=desk, appointment=appointment)
    assert line.amount == Decimal("95.00")
    sold, sale = sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=True,
                                       first_session_appointment=appointment, sold_at=ny(2026, 3, 4, 11),
                                       payment=(Decimal("800.00"), "card"))
    line.refresh_from_db()
    assert line.covered_by_id == sold.pk and line.amount == Decimal("0.00") and line.session_number == 1
    assert sold.sessions_used == 1
    assert not InvoiceLine.objects.filter(invoice=sale, kind=LineKind.FIRST_SESSION, removed_at__isnull=True).exists()
    assert verify() == []


def test_a_first_session_for_a_visit_whose_charge_is_paid_uses_the_sales_own_line(desk, patient, ten_pack, acu60):
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 3, 4, 10))
    _, visit_invoice, line = visits.do_check_in(acting_user=desk, appointment=appointment)
    billing.do_record_payment(acting_user=desk, invoice=visit_invoice, amount="95.00", method="card")
    sold, sale = sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=True,
                                       first_session_appointment=appointment, sold_at=ny(2026, 3, 4, 11),
                                       payment=(Decimal("800.00"), "card"))
    line.refresh_from_db()
    assert line.covered_by_id is None  # already paid: not silently turned into a credit
    first = InvoiceLine.objects.get(invoice=sale, kind=LineKind.FIRST_SESSION)
    assert first.covered_by_id == sold.pk and sold.sessions_used == 1


def test_an_extended_expiry_is_the_end_of_that_clinic_day(owner, desk, patient, acu60):
    package = make_package(owner, [acu60], valid_days=30)
    sold, _ = sell(desk, patient, package, sold_at=ny(2026, 3, 1))
    extended = sales.do_set_expiry(acting_user=owner, patient_package=sold, expires_at=ny(2026, 5, 1, 9))
    local = extended.expires_at.astimezone(NY)
    assert (local.date(), local.hour, local.minute) == (dt.date(2026, 5, 1), 23, 59)


@pytest.mark.parametrize("zone", ["Asia/Tokyo", "America/Los_Angeles"])
def test_a_clinic_moving_time_zone_keeps_each_packages_last_valid_day(owner, desk, patient, acu60, zone):
    # Rule 12: a package expires at the end of its last valid day in the clinic's time zone. Sold
    # in New York on 10 June, valid 5 days: the 14th is its last day. After the clinic moves to
    # another zone, the 14th stays the last day and the expiry is the end of it there: coverage
    # (by date) and the package's status (by the instant) agree again. The instant kept from New
    # York was the 15th in Tokyo, so a visit on the 15th was covered by an "expired" package;
    # in Los Angeles it came at 21:00 on the 14th, "expired" while that evening was still covered.
    five_days = make_package(owner, [acu60], valid_days=5)
    pp, _ = sell(desk, patient, five_days, sold_at=ny(2026, 6, 10, 9))
    assert pp.expires_at.astimezone(NY).date() == dt.date(2026, 6, 14)
    with writes_one_audit_event("clinic.update"):
        catalog.do_update_clinic(acting_user=owner, changes={"time_zone": zone})
    there = ZoneInfo(zone)
    moved = fresh(pp)
    assert moved.expires_at == end_of_day(dt.date(2026, 6, 14), there)
    evening_of_last_day = dt.datetime(2026, 6, 14, 22, tzinfo=there)
    assert moved.status_at(evening_of_last_day) == "active"
    _, _, last_evening = visit(desk, patient, acu60, evening_of_last_day)
    assert last_evening.covered_by_id == pp.pk
    day_after = dt.datetime(2026, 6, 15, 14, tzinfo=there)
    assert fresh(pp).status_at(day_after) == "expired"
    _, _, late = visit(desk, patient, acu60, day_after)
    assert late.not_covered_reason == PACKAGE_EXPIRED
    assert fresh(pp).sessions_used == 1
    assert verify() == []


def test_a_first_session_visit_of_the_day_before_checked_in_after_the_sale_keeps_its_session(
        desk, patient, ten_pack, acu60):
    # Rule 5, "the patient ... already was" treated: sold on the 11th for the visit of the 10th.
    # Checked in before the sale, the sale's first session covers the visit's charge; checked in
    # after it, the first session moved to the visit's line must not be lost to rule 4 (the visit's
    # invoice is dated the 10th, before the sale), leaving 0 used and the visit billed in full.
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 10, 17))
    pp, sale = sell(desk, patient, ten_pack, first=True, appointment=appointment, sold_at=ny(2026, 6, 11, 9))
    assert fresh(pp).sessions_used == 1
    _, invoice, line = visits.do_check_in(acting_user=desk, appointment=appointment)
    assert (line.covered_by_id, line.amount) == (pp.pk, Decimal("0.00"))
    assert fresh(pp).sessions_used == 1
    assert line.coverage_decision["covered_by"] == pp.pk
    assert {c["patient_package_id"]: c["reason"] for c in line.coverage_decision["considered"]}[pp.pk] is None
    visits.do_undo_check_in(acting_user=desk, appointment=appointment)  # and back: the sale's line again
    assert fresh(pp).sessions_used == 1
    assert verify() == []


def test_a_first_session_sold_for_a_visit_another_package_already_counted_is_not_used_twice(
        desk, patient, ten_pack, acu60):
    # The visit is counted once (rule 10's promise, as when the sale is paid after the check-in:
    # test_a_pending_first_session_is_dropped_when_another_package_covers_its_visit).
    older, _ = sell(desk, patient, ten_pack, sold_at=ny(2026, 6, 1, 9))
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 10, 8))
    _, _, line = visits.do_check_in(acting_user=desk, appointment=appointment)
    assert line.covered_by_id == older.pk
    pp, sale = sell(desk, patient, ten_pack, first=True, appointment=appointment, sold_at=ny(2026, 6, 10, 9))
    assert (fresh(older).sessions_used, fresh(pp).sessions_used) == (1, 0)
    visits.do_undo_check_in(acting_user=desk, appointment=appointment)  # the sale's first session is back
    assert (fresh(older).sessions_used, fresh(pp).sessions_used) == (0, 1)
    assert verify() == []


def test_the_activating_payment_never_covers_the_charge_of_a_first_session_visit_deleted_since(
        desk, owner, patient, ten_pack, acu60):
    # Rule 8: a deleted visit holds no covered charge. Rule 5's session is still the sale's.
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 10, 8))
    pp, sale = sell(desk, patient, ten_pack, first=True, appointment=appointment, paid=False,
                    sold_at=ny(2026, 6, 10, 9))
    _, _, line = visits.do_check_in(acting_user=desk, appointment=appointment)
    assert line.covered_by_id is None  # PACKAGE_NOT_PAID
    visits.do_delete_appointment(acting_user=owner, appointment=appointment, reason="wrong patient's visit")
    pay(desk, sale, "800.00", received_at=ny(2026, 6, 10, 12))
    line.refresh_from_db()
    assert line.covered_by_id is None
    first = InvoiceLine.objects.get(invoice=sale, kind=LineKind.FIRST_SESSION)
    assert first.covered_by_id == pp.pk and fresh(pp).sessions_used == 1
    assert verify() == []


def test_a_cancelled_packages_first_session_moves_to_its_visit_and_stays_used(desk, patient, ten_pack, acu60):
    # Rule 11: sessions already used stay used. The sale used its first session for this visit
    # (rule 5); the package is cancelled before the visit is checked in. Checking the visit in
    # moves that session to the visit's own line, as for an open package: the count stays, and
    # the visit is not billed a second time for a session the patient already used. Undoing the
    # check-in moves it back to the sale. Neither direction is a new use of a closed package.
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 10, 8))
    pp, sale = sell(desk, patient, ten_pack, first=True, appointment=appointment, sold_at=ny(2026, 6, 10, 9))
    sales.do_cancel_package(acting_user=desk, patient_package=pp, reason="moving away",
                            refund=(Decimal("-720.00"), "card"))
    assert (fresh(pp).status, fresh(pp).sessions_used) == ("cancelled", 1)
    for _ in range(2):  # and again: one session, never two, never none
        _, _, line = visits.do_check_in(acting_user=desk, appointment=appointment)
        assert (line.covered_by_id, line.amount) == (pp.pk, Decimal("0.00"))
        assert (fresh(pp).status, fresh(pp).sessions_used) == ("cancelled", 1)
        visits.do_undo_check_in(acting_user=desk, appointment=appointment)
        assert (fresh(pp).status, fresh(pp).sessions_used) == ("cancelled", 1)
        [first] = InvoiceLine.objects.filter(invoice=sale, kind=LineKind.FIRST_SESSION, removed_at__isnull=True)
        assert first.covered_by_id == pp.pk
    assert verify() == []


def test_a_visit_moved_from_a_first_session_before_the_cancel_keeps_its_session_when_undone(
        desk, patient, ten_pack, acu60):
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 10, 8))
    pp, sale = sell(desk, patient, ten_pack, first=True, appointment=appointment, sold_at=ny(2026, 6, 10, 9))
    visits.do_check_in(acting_user=desk, appointment=appointment)
    sales.do_cancel_package(acting_user=desk, patient_package=pp, reason="moving away")
    visits.do_undo_check_in(acting_user=desk, appointment=appointment)
    assert (fresh(pp).status, fresh(pp).sessions_used) == ("cancelled", 1)
    [first] = InvoiceLine.objects.filter(invoice=sale, kind=LineKind.FIRST_SESSION, removed_at__isnull=True)
    assert first.covered_by_id == pp.pk
    # A visit the sale's first session never named is still charged normally (rule 11).
    _, _, other = visit(desk, patient, acu60, ny(2026, 6, 12))
    assert (other.covered_by_id, other.not_covered_reason) == (None, PACKAGE_CANCELLED)
    assert fresh(pp).sessions_used == 1
    assert verify() == []


def test_a_cancelled_packages_first_session_is_moved_to_its_visit_even_where_another_package_would_cover(
        desk, patient, ten_pack, acu60):
    # Rule 6 would pick the open package; the closed one's session was used for this visit and
    # could never be used again if given back.
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 10, 8))
    pp, _ = sell(desk, patient, ten_pack, first=True, appointment=appointment, sold_at=ny(2026, 6, 10, 9))
    other, _ = sell(desk, patient, ten_pack, sold_at=ny(2026, 6, 10, 9, 30))
    sales.do_cancel_package(acting_user=desk, patient_package=pp, reason="bought the wrong one")
    _, _, line = visits.do_check_in(acting_user=desk, appointment=appointment)
    assert line.covered_by_id == pp.pk
    assert (fresh(pp).sessions_used, fresh(other).sessions_used) == (1, 0)
    visits.do_undo_check_in(acting_user=desk, appointment=appointment)
    assert (fresh(pp).sessions_used, fresh(other).sessions_used) == (1, 0)
    assert verify() == []


def test_a_cancelled_packages_first_session_stays_on_the_sale_when_its_visit_is_charged_another_service(
        desk, owner, patient, ten_pack, acu60):
    massage = catalog.do_create_service(acting_user=owner, name="Massage 60", duration_minutes=60,
                                        price=Decimal("80.00"))
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 10, 8))
    pp, sale = sell(desk, patient, ten_pack, first=True, appointment=appointment, sold_at=ny(2026, 6, 10, 9))
    sales.do_cancel_package(acting_user=desk, patient_package=pp, reason="moving away")
    _, _, line = visits.do_check_in(acting_user=desk, appointment=appointment, service=massage)
    assert (line.covered_by_id, line.amount) == (None, Decimal("80.00"))
    assert fresh(pp).sessions_used == 1
    [first] = InvoiceLine.objects.filter(invoice=sale, kind=LineKind.FIRST_SESSION, removed_at__isnull=True)
    assert first.covered_by_id == pp.pk
    visits.do_undo_check_in(acting_user=desk, appointment=appointment)
    assert fresh(pp).sessions_used == 1
    assert InvoiceLine.objects.filter(invoice=sale, kind=LineKind.FIRST_SESSION, removed_at__isnull=True).count() == 1
    assert verify() == []
