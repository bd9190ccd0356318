"""Booking, check-in and its undo, package choice, deletion and no-shows
(SPEC.md rules 2, 3, 4, 6, 7, 8, 13)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tally.clinic.actions import billing, catalog, visits
from tally.clinic.errors import Conflict, Forbidden, Invalid
from tally.clinic.ledger import verify
from tally.clinic.models import Appointment, AuditEvent, Invoice, InvoiceLine, Tombstone
from tally.clinic.models.billing import LineKind
from tally.clinic.rules import (
    CHARGED_BEFORE_PURCHASE,
    PACKAGE_EXHAUSTED,
    PACKAGE_EXPIRED,
    PACKAGE_NOT_PAID,
    SERVICE_NOT_IN_PACKAGE,
)

from .helpers import (
    fresh,
    ledger_of,
    make_package,
    ny,
    pay,
    sell,
    utc,
    visit,
    writes_nothing,
    writes_one_audit_event,
)

# --- rule 2: when a session is used ---


def test_booking_deducts_nothing(desk, patient, ten_pack, acu60):
    pp, _ = sell(desk, patient, ten_pack)
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11))
    assert appointment.status == "booked"
    assert fresh(pp).sessions_used == 0
    assert not Invoice.objects.filter(lines__appointment=appointment).exists()


def test_a_visit_is_booked_or_moved_only_with_staff_who_see_patients(desk, owner, patient, acu60):
    """The staff site offers practitioners and owners who sign in, never the front desk nor an
    integration's account (an owner made without a password: tokens only, never at the clinic);
    booking and rescheduling by the API took the integration's account all the same. A
    practitioner with no password of their own still sees patients."""
    from tally.clinic.actions.staff_accounts import do_create_staff

    sync = do_create_staff(acting_user=None, username="billing-sync", role="owner", password=None)
    locum = do_create_staff(acting_user=None, username="locum", role="practitioner", password=None)
    for someone in (sync, desk):
        with pytest.raises(Invalid, match="does not see patients"):
            visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11),
                           practitioner=someone)
    visit = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11),
                           practitioner=locum)
    with pytest.raises(Invalid, match="does not see patients"):
        visits.do_reschedule(acting_user=desk, appointment=visit, starts_at=ny(2026, 6, 12), practitioner=sync)
    moved = visits.do_reschedule(acting_user=desk, appointment=visit, starts_at=ny(2026, 6, 12), practitioner=owner)
    assert moved.practitioner == owner


def test_check_in_charges_the_booked_service_on_a_new_invoice_dated_at_the_appointment_start(
    desk, patient, ten_pack, acu60
):
    pp, sale = sell(desk, patient, ten_pack)
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11, 14))
    appointment, invoice, line = visits.do_check_in(acting_user=desk, appointment=appointment)
    assert appointment.status == "attended"
    assert invoice.pk != sale.pk
    assert invoice.issued_at == ny(2026, 6, 11, 14)
    assert (line.service_id, line.appointment_id, line.kind) == (acu60.pk, appointment.pk, "service")
    assert (line.covered_by_id, line.session_number, line.amount) == (pp.pk, 1, Decimal("0.00"))
    assert line.list_price == Decimal("95.00")
    assert line.coverage_decision["covered_by"] == pp.pk
    assert fresh(pp).sessions_used == 1
    [entry] = ledger_of(pp)
    assert (entry.kind, entry.invoice_line_id, entry.appointment_id) == ("use", line.pk, appointment.pk)


def test_check_in_can_charge_another_service_which_a_package_for_the_booked_one_does_not_cover(
    desk, patient, ten_pack, acu60, acu90
):
    pp, _ = sell(desk, patient, ten_pack)
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11))
    _, invoice, line = visits.do_check_in(acting_user=desk, appointment=appointment, service=acu90)
    assert line.service_id == acu90.pk
    assert line.covered_by_id is None
    assert line.not_covered_reason == SERVICE_NOT_IN_PACKAGE
    assert line.amount == invoice.balance == Decimal("130.00")
    assert fresh(pp).sessions_used == 0


def test_check_in_with_no_charges_creates_no_invoice_and_uses_nothing(desk, patient, ten_pack, acu60):
    pp, _ = sell(desk, patient, ten_pack)
    invoices_before = Invoice.objects.count()
    appointment, invoice, line = visit(desk, patient, acu60, ny(2026, 6, 11), no_charges=True)
    assert (appointment.status, appointment.no_charges) == ("attended", True)
    assert invoice is None and line is None
    assert Invoice.objects.count() == invoices_before
    assert fresh(pp).sessions_used == 0


def test_check_in_can_charge_onto_an_existing_invoice(desk, patient, ten_pack, acu60):
    pp, _ = sell(desk, patient, ten_pack)
    _, invoice, _ = visit(desk, patient, acu60, ny(2026, 6, 11))
    _, same, line = visit(desk, patient, acu60, ny(2026, 6, 11, 15), invoice=invoice)
    assert same.pk == invoice.pk
    assert len(same.live_lines()) == 2
    assert line.session_number == 2


def test_it_refuses_to_check_in_twice(desk, patient, acu60):
    appointment, _, _ = visit(desk, patient, acu60, ny(2026, 6, 11))
    with writes_nothing(), pytest.raises(Conflict):
        visits.do_check_in(acting_user=desk, appointment=appointment)


def test_a_practitioner_checks_in_only_their_own_appointments(desk, practitioner, other_practitioner, patient, acu60):
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11),
                                 practitioner=practitioner)
    with pytest.raises(Forbidden):
        visits.do_check_in(acting_user=other_practitioner, appointment=appointment)
    visits.do_check_in(acting_user=practitioner, appointment=appointment)


def test_a_failed_check_in_leaves_no_invoice_and_the_appointment_still_booked(owner, desk, patient, ten_pack, acu60,
                                                                              acu90):
    pp, _ = sell(desk, patient, ten_pack)
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11))
    catalog.do_update_service(acting_user=owner, service=acu90, changes={"active": False})
    invoices_before = Invoice.objects.count()
    with writes_nothing(), pytest.raises(Invalid, match="no longer offered"):
        visits.do_check_in(acting_user=desk, appointment=appointment, service=acu90)
    assert Invoice.objects.count() == invoices_before
    assert not InvoiceLine.objects.filter(appointment=appointment).exists()
    assert Appointment.objects.get(pk=appointment.pk).status == "booked"
    assert fresh(pp).sessions_used == 0


def test_a_visit_booked_before_its_service_was_archived_is_checked_in_with_it(owner, desk, patient, ten_pack,
                                                                              acu60):
    pp, _ = sell(desk, patient, ten_pack)
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11))
    catalog.do_update_service(acting_user=owner, service=acu60, changes={"active": False})
    _, _, line = visits.do_check_in(acting_user=desk, appointment=Appointment.objects.get(pk=appointment.pk))
    assert (line.service_id, line.covered_by_id) == (acu60.pk, pp.pk)
    with pytest.raises(Invalid, match="no longer offered"):  # not charged anew on anything else
        billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(acu60, None)])
    with pytest.raises(Invalid, match="no longer offered"):
        visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 12))


def test_a_check_in_onto_another_patients_invoice_changes_nothing(desk, patient, acu60):
    other = catalog.do_create_patient(acting_user=desk, first_name="Other", last_name="Person")
    _, their_invoice, _ = visit(desk, other, acu60, ny(2026, 6, 11))
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11))
    with writes_nothing(), pytest.raises(Invalid):
        visits.do_check_in(acting_user=desk, appointment=appointment, invoice=their_invoice)
    assert Appointment.objects.get(pk=appointment.pk).status == "booked"
    assert len(billing.load_invoice(their_invoice.pk).live_lines()) == 1


def test_the_check_in_and_its_audit_event_commit_or_roll_back_together(desk, patient, ten_pack, acu60, monkeypatch):
    pp, _ = sell(desk, patient, ten_pack)
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11))
    invoices_before = Invoice.objects.count()

    def audit_fails(*args, **kwargs):
        raise RuntimeError("audit log unavailable")

    monkeypatch.setattr(visits, "record", audit_fails)
    with writes_nothing(), pytest.raises(RuntimeError):
        visits.do_check_in(acting_user=desk, appointment=appointment)
    assert Invoice.objects.count() == invoices_before
    assert Appointment.objects.get(pk=appointment.pk).status == "booked"
    assert fresh(pp).sessions_used == 0



# --- rule 2: a visit charged on a manual invoice, then checked in ---


def charged_on_a_manual_invoice(desk, patient, service, starts_at):
    """A booked visit whose service staff charged on a manual invoice before checking it in."""
    appointment = visits.do_book(acting_user=desk, patient=patient, service=service, starts_at=starts_at)
    invoice = billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(service, appointment)],
                                        issued_at=starts_at)
    return appointment, invoice, invoice.live_lines()[0]


def test_checking_in_a_visit_charged_on_a_manual_invoice_charges_it_once(desk, patient, ten_pack, acu60):
    """Rule 2: the manual invoice used the visit's session; the check-in records the visit and
    answers with that charge, instead of charging it (and using a session) a second time."""
    pp, _ = sell(desk, patient, ten_pack)
    appointment, invoice, line = charged_on_a_manual_invoice(desk, patient, acu60, ny(2026, 6, 11))
    assert (line.covered_by_id, fresh(pp).sessions_used) == (pp.pk, 1)
    entries, invoices = len(ledger_of(pp)), Invoice.objects.count()
    with writes_one_audit_event("appointment.check_in"):
        checked_in, on_file, same = visits.do_check_in(acting_user=desk, appointment=appointment)
    assert checked_in.status == "attended" and checked_in.checked_in_at is not None
    assert (on_file.pk, same.pk, same.session_number) == (invoice.pk, line.pk, 1)
    assert len(ledger_of(pp)) == entries and fresh(pp).sessions_used == 1
    assert Invoice.objects.count() == invoices
    assert list(billing.live_charges(appointment)) == [line]
    event = AuditEvent.objects.order_by("-id").first()
    assert event.after["line_id"] == line.pk and event.after["already_charged_on"] == invoice.number


def test_checking_in_a_visit_whose_line_was_added_to_an_invoice_charges_it_once(desk, patient, ten_pack, acu60):
    pp, _ = sell(desk, patient, ten_pack)
    invoice = billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(acu60, None)],
                                        issued_at=ny(2026, 6, 11))
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11, 15))
    line = billing.do_add_line(acting_user=desk, invoice=invoice, service=acu60, appointment=appointment)
    _, on_file, same = visits.do_check_in(acting_user=desk, appointment=appointment, service=acu60,
                                          invoice=invoice)
    assert (on_file.pk, same.pk) == (invoice.pk, line.pk)
    assert fresh(pp).sessions_used == 2  # the invoice's two lines, and no third for the check-in


def test_an_uncovered_manual_charge_is_not_charged_again_at_check_in(desk, patient, acu60):
    appointment, invoice, line = charged_on_a_manual_invoice(desk, patient, acu60, ny(2026, 6, 11))
    _, on_file, same = visits.do_check_in(acting_user=desk, appointment=appointment)
    assert (on_file.pk, same.pk, on_file.balance) == (invoice.pk, line.pk, Decimal("95.00"))
    assert Invoice.objects.filter(patient=patient).count() == 1


def test_a_visit_charged_with_a_service_other_than_the_booked_one_keeps_that_charge(desk, patient, acu60, acu90):
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11))
    invoice = billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(acu90, appointment)])
    _, on_file, line = visits.do_check_in(acting_user=desk, appointment=appointment)
    assert (on_file.pk, line.service_id) == (invoice.pk, acu90.pk)


@pytest.mark.parametrize("asked", ["another service", "another invoice", "no charges"])
def test_check_in_refuses_to_charge_an_already_charged_visit_otherwise(desk, patient, ten_pack, acu60, acu90,
                                                                        asked):
    """Asked to charge the visit differently from the charge on file, the check-in says where it
    is charged (remove that line first) rather than charge it twice or leave the charge
    contradicting the request. No Charges with a charge on file would say "nothing charged"
    while the visit is charged, and maybe counted: refused too."""
    pp, _ = sell(desk, patient, ten_pack)
    appointment, invoice, _ = charged_on_a_manual_invoice(desk, patient, acu60, ny(2026, 6, 11))
    other_invoice = billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(acu90, None)])
    request = {"another service": {"service": acu90}, "another invoice": {"invoice": other_invoice},
               "no charges": {"no_charges": True}}[asked]
    with writes_nothing(), pytest.raises(Conflict, match=f"already charged on {invoice.number}"):
        visits.do_check_in(acting_user=desk, appointment=appointment, **request)
    assert Appointment.objects.get(pk=appointment.pk).status == "booked"
    assert fresh(pp).sessions_used == 1 and billing.live_charges(appointment).count() == 1


def test_a_visit_whose_manual_charge_was_removed_is_charged_at_check_in(desk, patient, ten_pack, acu60):
    pp, _ = sell(desk, patient, ten_pack)
    appointment, invoice, line = charged_on_a_manual_invoice(desk, patient, acu60, ny(2026, 6, 11))
    billing.do_remove_line(acting_user=desk, invoice=invoice, line_id=line.pk)
    _, new_invoice, new_line = visits.do_check_in(acting_user=desk, appointment=appointment)
    assert new_invoice.pk != invoice.pk and new_line.covered_by_id == pp.pk
    assert fresh(pp).sessions_used == 1


# --- rule 3: matching ---


def test_a_wrong_service_is_charged_normally_with_service_not_in_package(desk, patient, ten_pack, acu90):
    pp, _ = sell(desk, patient, ten_pack)
    _, _, line = visit(desk, patient, acu90, ny(2026, 6, 11))
    assert (line.covered_by_id, line.amount, line.not_covered_reason) == (None, Decimal("130.00"),
                                                                          SERVICE_NOT_IN_PACKAGE)
    assert line.coverage_decision["considered"] == [{"patient_package_id": pp.pk, "reason": SERVICE_NOT_IN_PACKAGE}]
    assert fresh(pp).sessions_used == 0


def test_a_patient_without_packages_has_no_not_covered_reason(desk, patient, acu60):
    _, _, line = visit(desk, patient, acu60, ny(2026, 6, 11))
    assert (line.covered_by_id, line.not_covered_reason, line.amount) == (None, None, Decimal("95.00"))


# --- rule 4: no retroactive use, by the clinic's calendar ---


def test_a_visit_invoiced_before_the_sale_date_is_never_covered(desk, patient, ten_pack, acu60):
    pp, _ = sell(desk, patient, ten_pack, sold_at=ny(2026, 6, 10, 9))
    invoice = billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(acu60, None)],
                                        issued_at=ny(2026, 6, 9, 16))
    [line] = invoice.live_lines()
    assert line.covered_by_id is None
    assert line.not_covered_reason == CHARGED_BEFORE_PURCHASE
    assert fresh(pp).sessions_used == 0


def test_a_visit_earlier_on_the_sale_day_is_covered(desk, patient, ten_pack, acu60):
    pp, _ = sell(desk, patient, ten_pack, sold_at=ny(2026, 6, 10, 17))
    _, _, line = visit(desk, patient, acu60, ny(2026, 6, 10, 9))
    assert line.covered_by_id == pp.pk


def test_the_sale_day_is_the_clinic_day_not_the_utc_day(desk, patient, ten_pack, acu60):
    # Sold at 21:00 in New York on 10 June, which is 01:00 on 11 June in UTC.
    pp, _ = sell(desk, patient, ten_pack, sold_at=utc(2026, 6, 11, 1))
    # 14:00 in New York on 10 June: the same clinic day, though an earlier UTC date.
    _, _, line = visit(desk, patient, acu60, ny(2026, 6, 10, 14))
    assert line.covered_by_id == pp.pk


def test_a_visit_the_clinic_evening_before_the_sale_is_not_covered_though_utc_says_same_day(
    desk, patient, ten_pack, acu60
):
    pp, _ = sell(desk, patient, ten_pack, sold_at=ny(2026, 6, 10, 10))  # 14:00 UTC on 10 June
    # 22:00 in New York on 9 June is 02:00 on 10 June in UTC.
    _, _, line = visit(desk, patient, acu60, ny(2026, 6, 9, 22))
    assert line.covered_by_id is None
    assert line.not_covered_reason == CHARGED_BEFORE_PURCHASE
    assert fresh(pp).sessions_used == 0


# --- rule 6: which package ---


def test_the_package_that_expires_first_is_used(owner, desk, patient, acu60):
    quarterly = make_package(owner, [acu60], valid_days=90, name="Quarterly")
    monthly = make_package(owner, [acu60], valid_days=30, name="Monthly")
    older, _ = sell(desk, patient, quarterly, sold_at=ny(2026, 6, 1))
    sooner, _ = sell(desk, patient, monthly, sold_at=ny(2026, 6, 5))
    _, _, line = visit(desk, patient, acu60, ny(2026, 6, 10))
    assert line.covered_by_id == sooner.pk
    assert (fresh(older).sessions_used, fresh(sooner).sessions_used) == (0, 1)


def test_between_packages_that_never_expire_the_oldest_is_used(desk, patient, ten_pack, acu60):
    newer, _ = sell(desk, patient, ten_pack, sold_at=ny(2026, 6, 5))
    older, _ = sell(desk, patient, ten_pack, sold_at=ny(2026, 6, 1))
    _, _, line = visit(desk, patient, acu60, ny(2026, 6, 10))
    assert line.covered_by_id == older.pk
    assert fresh(newer).sessions_used == 0


def test_an_exhausted_package_covers_nothing_and_the_next_one_takes_over(owner, desk, patient, acu60):
    two = make_package(owner, [acu60], sessions=2, price="180.00", name="Two")
    first, _ = sell(desk, patient, two, sold_at=ny(2026, 6, 1))
    covered = [visit(desk, patient, acu60, ny(2026, 6, d))[2] for d in (2, 3)]
    assert [ln.session_number for ln in covered] == [1, 2]
    assert fresh(first).status == "exhausted"
    _, _, line = visit(desk, patient, acu60, ny(2026, 6, 4))
    assert (line.covered_by_id, line.not_covered_reason) == (None, PACKAGE_EXHAUSTED)
    second, _ = sell(desk, patient, two, sold_at=ny(2026, 6, 5))
    _, _, line = visit(desk, patient, acu60, ny(2026, 6, 6))
    assert line.covered_by_id == second.pk
    assert fresh(first).sessions_used == 2


def test_an_expired_package_covers_nothing(owner, desk, patient, acu60):
    week = make_package(owner, [acu60], valid_days=7)
    sell(desk, patient, week, sold_at=ny(2026, 6, 1))
    _, _, line = visit(desk, patient, acu60, ny(2026, 6, 8))
    assert (line.covered_by_id, line.not_covered_reason) == (None, PACKAGE_EXPIRED)


def test_the_reason_quoted_is_that_of_the_most_recently_sold_eligible_package(owner, desk, patient, acu60, acu90):
    two = make_package(owner, [acu60], sessions=1, price="95.00", name="One")
    other_service = make_package(owner, [acu90], name="Long sessions")
    sell(desk, patient, two, sold_at=ny(2026, 6, 1))
    visit(desk, patient, acu60, ny(2026, 6, 2))  # exhausts it
    sell(desk, patient, two, sold_at=ny(2026, 6, 3), paid=False)  # newest eligible: not paid
    sell(desk, patient, other_service, sold_at=ny(2026, 6, 4))  # newest of all, but not eligible
    _, _, line = visit(desk, patient, acu60, ny(2026, 6, 5))
    assert (line.covered_by_id, line.not_covered_reason) == (None, PACKAGE_NOT_PAID)
    assert len(line.coverage_decision["considered"]) == 3


# --- rule 7: undo gives back ---


def test_undoing_a_check_in_writes_a_reversal_and_the_session_comes_back(desk, patient, ten_pack, acu60):
    pp, _ = sell(desk, patient, ten_pack)
    appointment, invoice, line = visit(desk, patient, acu60, ny(2026, 6, 11))
    appointment = visits.do_undo_check_in(acting_user=desk, appointment=appointment)
    assert appointment.status == "booked"
    use, reversal = ledger_of(pp)
    assert (reversal.kind, reversal.change, reversal.reverses_id) == ("reversal", 1, use.pk)
    assert fresh(pp).sessions_used == 0
    line.refresh_from_db()
    assert line.removed_at is not None
    assert Tombstone.objects.filter(invoice_line=line, kind="invoice_line").exists()


def test_undoing_a_check_in_voids_an_invoice_left_empty_with_no_payments(desk, patient, acu60):
    appointment, invoice, _ = visit(desk, patient, acu60, ny(2026, 6, 11))
    visits.do_undo_check_in(acting_user=desk, appointment=appointment)
    assert billing.load_invoice(invoice.pk).status == "void"


def test_undoing_a_check_in_keeps_an_invoice_that_has_payments_or_other_lines(desk, patient, acu60, acu90):
    paid_visit, paid_invoice, _ = visit(desk, patient, acu90, ny(2026, 6, 11))
    pay(desk, paid_invoice, "130.00")
    first, shared, _ = visit(desk, patient, acu60, ny(2026, 6, 12))
    visit(desk, patient, acu60, ny(2026, 6, 12, 15), invoice=shared)
    visits.do_undo_check_in(acting_user=desk, appointment=paid_visit)
    visits.do_undo_check_in(acting_user=desk, appointment=first)
    assert billing.load_invoice(paid_invoice.pk).voided_at is None
    shared = billing.load_invoice(shared.pk)
    assert shared.voided_at is None
    assert len(shared.live_lines()) == 1


def test_checking_in_again_after_an_undo_re_runs_the_rules(desk, patient, ten_pack, acu60):
    from tally.clinic.actions import sales

    pp, _ = sell(desk, patient, ten_pack)
    appointment, _, _ = visit(desk, patient, acu60, ny(2026, 6, 11))
    visits.do_undo_check_in(acting_user=desk, appointment=appointment)
    _, _, line = visits.do_check_in(acting_user=desk, appointment=appointment)
    assert (line.covered_by_id, line.session_number) == (pp.pk, 1)
    assert [e.kind for e in ledger_of(pp)] == ["use", "reversal", "use"]
    visits.do_undo_check_in(acting_user=desk, appointment=appointment)
    sales.do_cancel_package(acting_user=desk, patient_package=pp, reason="closed")
    _, _, line = visits.do_check_in(acting_user=desk, appointment=appointment)
    assert line.covered_by_id is None
    assert fresh(pp).sessions_used == 0
    assert verify() == []


# --- rule 8: deletion ---


def test_only_an_owner_may_delete_an_appointment_and_only_with_a_reason(owner, desk, patient, acu60):
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11))
    with writes_nothing(), pytest.raises(Forbidden):
        visits.do_delete_appointment(acting_user=desk, appointment=appointment, reason="duplicate")
    with writes_nothing(), pytest.raises(Invalid):
        visits.do_delete_appointment(acting_user=owner, appointment=appointment, reason=" ")
    assert Appointment.objects.filter(pk=appointment.pk).exists()
    assert not Tombstone.objects.exists()


def test_deleting_an_appointment_hides_it_and_leaves_a_tombstone(owner, desk, patient, acu60):
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11))
    tombstone = visits.do_delete_appointment(acting_user=owner, appointment=appointment, reason="booked twice")
    assert not Appointment.objects.filter(pk=appointment.pk).exists()
    assert Appointment.all_objects.get(pk=appointment.pk).deleted_at is not None
    assert (tombstone.kind, tombstone.reason, tombstone.removed_by_id) == ("appointment", "booked twice", owner.pk)
    assert tombstone.content["id"] == appointment.pk
    assert tombstone.content["service_name"] == "Acupuncture 60 min"
    assert tombstone.patient_id == patient.pk


def test_it_refuses_to_delete_a_visit_with_a_covered_charge_until_the_check_in_is_undone(
    owner, desk, patient, ten_pack, acu60
):
    pp, _ = sell(desk, patient, ten_pack)
    appointment, _, _ = visit(desk, patient, acu60, ny(2026, 6, 11))
    with writes_nothing(), pytest.raises(Conflict):
        visits.do_delete_appointment(acting_user=owner, appointment=appointment, reason="mistake")
    assert fresh(pp).sessions_used == 1
    visits.do_undo_check_in(acting_user=desk, appointment=appointment)
    visits.do_delete_appointment(acting_user=owner, appointment=appointment, reason="mistake")
    assert fresh(pp).sessions_used == 0
    assert verify() == []


def test_a_visit_can_be_deleted_once_its_covered_invoice_is_voided(owner, desk, patient, ten_pack, acu60):
    pp, _ = sell(desk, patient, ten_pack)
    appointment, invoice, _ = visit(desk, patient, acu60, ny(2026, 6, 11))
    billing.do_void_invoice(acting_user=desk, invoice=invoice, reason="wrong patient")
    visits.do_delete_appointment(acting_user=owner, appointment=appointment, reason="wrong patient")
    assert fresh(pp).sessions_used == 0


def test_cancelling_an_appointment_keeps_it_and_uses_nothing(desk, patient, ten_pack, acu60):
    pp, _ = sell(desk, patient, ten_pack)
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11))
    appointment = visits.do_cancel_appointment(acting_user=desk, appointment=appointment, reason="sick")
    assert Appointment.objects.get(pk=appointment.pk).status == "cancelled"
    assert fresh(pp).sessions_used == 0


# --- rule 13: no-show policy ---


def test_a_no_show_uses_nothing_by_default(desk, patient, ten_pack, acu60):
    pp, _ = sell(desk, patient, ten_pack)
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11))
    appointment = visits.do_mark_no_show(acting_user=desk, appointment=appointment)
    assert appointment.status == "no_show"
    assert fresh(pp).sessions_used == 0
    assert ledger_of(pp) == []


def test_a_no_show_uses_a_session_when_the_clinic_policy_says_so(owner, desk, patient, ten_pack, acu60):
    catalog.do_update_clinic(acting_user=owner, changes={"no_show_uses_session": True})
    pp, _ = sell(desk, patient, ten_pack)
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11))
    visits.do_mark_no_show(acting_user=desk, appointment=appointment)
    assert fresh(pp).sessions_used == 1
    [entry] = ledger_of(pp)
    assert (entry.kind, entry.appointment_id, entry.invoice_line_id) == ("use", appointment.pk, None)
    assert "no-show" in entry.reason
    event = AuditEvent.objects.filter(action="appointment.no_show").get()
    assert event.after["ledger_entry_id"] == entry.pk


def test_a_no_show_under_the_policy_still_follows_the_rules(owner, desk, patient, ten_pack, acu60, acu90):
    catalog.do_update_clinic(acting_user=owner, changes={"no_show_uses_session": True})
    pp, _ = sell(desk, patient, ten_pack, sold_at=ny(2026, 6, 10))
    wrong_service = visits.do_book(acting_user=desk, patient=patient, service=acu90, starts_at=ny(2026, 6, 11))
    before_sale = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 9))
    visits.do_mark_no_show(acting_user=desk, appointment=wrong_service)
    visits.do_mark_no_show(acting_user=desk, appointment=before_sale)
    assert fresh(pp).sessions_used == 0


@pytest.mark.parametrize("counted_by", ["manual_invoice", "first_session"])
def test_a_no_show_of_a_visit_already_counted_uses_no_second_session(owner, desk, patient, ten_pack, acu60,
                                                                    counted_by):
    # Rules 13 and 2/5: one visit uses one session. A visit charged on a manual invoice (still
    # booked) or named by a sale's first session is counted already; marking it a no-show under
    # the policy used a second session for the same visit.
    catalog.do_update_clinic(acting_user=owner, changes={"no_show_uses_session": True})
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11))
    if counted_by == "manual_invoice":
        pp, _ = sell(desk, patient, ten_pack)
        billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(acu60, appointment)],
                                  issued_at=ny(2026, 6, 11))
    else:
        pp, _ = sell(desk, patient, ten_pack, first=True, appointment=appointment, sold_at=ny(2026, 6, 11, 9))
    assert fresh(pp).sessions_used == 1
    with writes_one_audit_event("appointment.no_show"):
        visits.do_mark_no_show(acting_user=desk, appointment=appointment)
    assert fresh(pp).sessions_used == 1
    assert AuditEvent.objects.get(action="appointment.no_show").after["ledger_entry_id"] is None
    visits.do_undo_no_show(acting_user=desk, appointment=appointment)
    assert fresh(pp).sessions_used == 1
    assert verify() == []


def test_undoing_a_no_show_gives_the_sale_back_the_first_session_the_no_show_made_unneeded(
        owner, desk, patient, ten_pack, acu60):
    # Rule 5: a sale ticked for this visit, paid after the visit was marked a no-show under the
    # policy (another package's session counted the visit, so the activating payment dropped the
    # first session). Undoing the no-show gives that session back; the sale's first session must
    # then be used, as undoing a check-in does, or the paid, ticked sale is left with none used.
    catalog.do_update_clinic(acting_user=owner, changes={"no_show_uses_session": True})
    older, _ = sell(desk, patient, ten_pack, sold_at=ny(2026, 6, 1))
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11, 8))
    ticked, sale = sell(desk, patient, ten_pack, first=True, appointment=appointment, sold_at=ny(2026, 6, 11, 9),
                        paid=False)
    visits.do_mark_no_show(acting_user=desk, appointment=appointment)
    assert (fresh(older).sessions_used, fresh(ticked).sessions_used) == (1, 0)
    pay(desk, sale, "800.00", received_at=ny(2026, 6, 11, 12))
    assert (fresh(older).sessions_used, fresh(ticked).sessions_used) == (1, 0)  # counted once already
    visits.do_undo_no_show(acting_user=desk, appointment=appointment)
    assert (fresh(older).sessions_used, fresh(ticked).sessions_used) == (0, 1)
    [first] = InvoiceLine.objects.filter(invoice=sale, kind=LineKind.FIRST_SESSION, removed_at__isnull=True)
    assert first.covered_by_id == ticked.pk and first.appointment_id == appointment.pk
    visits.do_check_in(acting_user=desk, appointment=Appointment.objects.get(pk=appointment.pk))
    assert fresh(older).sessions_used + fresh(ticked).sessions_used == 1  # one visit, one session
    assert verify() == []


def test_only_an_owner_may_change_the_no_show_policy(desk, clinic):
    with pytest.raises(Forbidden):
        catalog.do_update_clinic(acting_user=desk, changes={"no_show_uses_session": True})
    clinic.refresh_from_db()
    assert clinic.no_show_uses_session is False


# --- undoing a cancellation or a no-show (additions: the visit is booked again) ---


def test_undoing_a_no_show_books_the_visit_again_so_a_late_patient_can_be_checked_in(desk, patient, ten_pack, acu60):
    pp, _ = sell(desk, patient, ten_pack)
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11))
    visits.do_mark_no_show(acting_user=desk, appointment=appointment, reason="not here at 10:15")
    appointment = visits.do_undo_no_show(acting_user=desk, appointment=appointment)
    assert (appointment.status, appointment.status_reason) == ("booked", "")
    assert ledger_of(pp) == []
    visits.do_check_in(acting_user=desk, appointment=appointment)
    assert fresh(pp).sessions_used == 1
    event = AuditEvent.objects.filter(action="appointment.undo_no_show").get()
    assert (event.before["status"], event.after["status"], event.after["ledger_entry_ids"]) == \
        ("no_show", "booked", [])


def test_undoing_a_no_show_gives_back_the_session_the_policy_used(owner, desk, patient, ten_pack, acu60):
    catalog.do_update_clinic(acting_user=owner, changes={"no_show_uses_session": True})
    pp, _ = sell(desk, patient, ten_pack)
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11))
    visits.do_mark_no_show(acting_user=desk, appointment=appointment)
    assert fresh(pp).sessions_used == 1
    visits.do_undo_no_show(acting_user=desk, appointment=appointment)
    assert fresh(pp).sessions_used == 0
    use, reversal = ledger_of(pp)
    assert (reversal.kind, reversal.reverses_id, reversal.appointment_id) == ("reversal", use.pk, appointment.pk)
    assert AuditEvent.objects.get(action="appointment.undo_no_show").after["ledger_entry_ids"] == [reversal.pk]
    # checked in after all: one session in all, not two
    visits.do_check_in(acting_user=desk, appointment=appointment)
    assert fresh(pp).sessions_used == 1
    assert verify() == []


def test_a_no_show_that_used_a_session_is_deleted_after_its_undo(owner, desk, patient, ten_pack, acu60):
    catalog.do_update_clinic(acting_user=owner, changes={"no_show_uses_session": True})
    pp, _ = sell(desk, patient, ten_pack)
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11))
    visits.do_mark_no_show(acting_user=desk, appointment=appointment)
    with pytest.raises(Conflict, match="undo the no-show first"):
        visits.do_delete_appointment(acting_user=owner, appointment=appointment, reason="booked in error")
    visits.do_undo_no_show(acting_user=desk, appointment=appointment)
    visits.do_delete_appointment(acting_user=owner, appointment=appointment, reason="booked in error")
    assert fresh(pp).sessions_used == 0
    assert Tombstone.objects.filter(appointment=appointment).exists()


def test_undoing_a_cancellation_books_the_visit_again(desk, patient, acu60):
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11))
    visits.do_cancel_appointment(acting_user=desk, appointment=appointment, reason="sick")
    appointment = visits.do_undo_cancel(acting_user=desk, appointment=appointment)
    assert Appointment.objects.values_list("status", "status_reason").get(pk=appointment.pk) == ("booked", "")
    assert AuditEvent.objects.filter(action="appointment.undo_cancel").get().before["status"] == "cancelled"


def test_only_a_cancelled_or_no_show_visit_can_be_undone_so(desk, patient, acu60):
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11))
    with writes_nothing():
        with pytest.raises(Conflict, match="not cancelled"):
            visits.do_undo_cancel(acting_user=desk, appointment=appointment)
        with pytest.raises(Conflict, match="not a no-show"):
            visits.do_undo_no_show(acting_user=desk, appointment=appointment)
    visits.do_mark_no_show(acting_user=desk, appointment=appointment)
    with pytest.raises(Conflict, match="no show, not cancelled"):
        visits.do_undo_cancel(acting_user=desk, appointment=appointment)


def test_undo_cancel_and_undo_no_show_follow_cancel_and_no_show_roles(desk, practitioner, other_practitioner,
                                                                        patient, acu60):
    cancelled = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11),
                               practitioner=practitioner)
    visits.do_cancel_appointment(acting_user=desk, appointment=cancelled)
    with pytest.raises(Forbidden):
        visits.do_undo_cancel(acting_user=practitioner, appointment=cancelled)
    missed = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 12),
                            practitioner=practitioner)
    visits.do_mark_no_show(acting_user=practitioner, appointment=missed)
    with pytest.raises(Forbidden):
        visits.do_undo_no_show(acting_user=other_practitioner, appointment=missed)
    assert visits.do_undo_no_show(acting_user=practitioner, appointment=missed).status == "booked"
