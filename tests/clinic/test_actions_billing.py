"""Invoices, lines, payments and voids (SPEC.md rules 2, 7, 9) and the audit trail of every action."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tally.clinic.actions import billing, catalog, sales, visits
from tally.clinic.errors import Conflict, Forbidden, Invalid, NotFound
from tally.clinic.ledger import verify
from tally.clinic.models import AuditEvent, InvoiceLine, PackageLedgerEntry, Tombstone
from tally.clinic.models.billing import LineKind
from tally.clinic.rules import PACKAGE_CANCELLED, PACKAGE_EXHAUSTED

from .helpers import (
    fresh,
    ledger_of,
    make_package,
    ny,
    pay,
    sell,
    visit,
    writes_nothing,
    writes_one_audit_event,
)

# --- rule 2: charging on a manual invoice ---


def test_charging_a_service_on_a_manual_invoice_uses_a_session(desk, patient, ten_pack, acu60):
    pp, _ = sell(desk, patient, ten_pack)
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11))
    invoice = billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(acu60, appointment)],
                                        issued_at=ny(2026, 6, 11))
    [line] = invoice.live_lines()
    assert (line.covered_by_id, line.appointment_id) == (pp.pk, appointment.pk)
    assert fresh(pp).sessions_used == 1


def test_each_line_of_one_invoice_sees_the_sessions_the_lines_before_it_used(owner, desk, patient, acu60):
    two = make_package(owner, [acu60], sessions=2, price="180.00")
    pp, _ = sell(desk, patient, two)
    invoice = billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(acu60, None)] * 3,
                                        issued_at=ny(2026, 6, 11))
    lines = invoice.live_lines()
    assert [ln.covered_by_id for ln in lines] == [pp.pk, pp.pk, None]
    assert [ln.session_number for ln in lines] == [1, 2, None]
    assert lines[2].not_covered_reason == PACKAGE_EXHAUSTED
    assert invoice.total == Decimal("95.00")
    assert fresh(pp).sessions_used == 2


@pytest.mark.parametrize("how", ["add_line", "create_invoice"])
def test_a_visit_deleted_after_it_was_read_is_not_charged(owner, desk, patient, ten_pack, acu60, how):
    """Rule 8 against a deletion that lands between reading the visit and charging it (the
    API reads it, then the action runs): the action locks the visit and finds it gone."""
    pp, sale = sell(desk, patient, ten_pack)
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11))
    invoice = billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(acu60, None)],
                                        issued_at=ny(2026, 6, 11))
    visits.do_delete_appointment(acting_user=owner, appointment=appointment, reason="duplicate")
    used = fresh(pp).sessions_used
    with writes_nothing(), pytest.raises(NotFound):
        if how == "add_line":
            billing.do_add_line(acting_user=desk, invoice=invoice, service=acu60, appointment=appointment)
        else:
            billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(acu60, appointment)],
                                      issued_at=ny(2026, 6, 11))
    assert fresh(pp).sessions_used == used
    assert not InvoiceLine.objects.filter(appointment=appointment).exists()


@pytest.mark.parametrize("how", ["add_line", "create_invoice"])
def test_a_no_show_whose_session_the_policy_used_is_not_charged_a_second_one(owner, desk, patient, ten_pack,
                                                                            acu60, acu90, how):
    """Rules 2 and 13: one visit, one session. A no-show the policy counted has used its session;
    charging its service on a manual invoice naming it used a second one for the same visit (the
    reverse order, charged then no-show, already used nothing more). Refused (409), nothing
    written; undoing the no-show gives the session back and the visit is then charged as usual."""
    catalog.do_update_clinic(acting_user=owner, changes={"no_show_uses_session": True})
    pp, _ = sell(desk, patient, ten_pack)
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11))
    visits.do_mark_no_show(acting_user=desk, appointment=appointment)
    invoice = None
    if how == "add_line":  # an open invoice of that day, with a service no package covers
        invoice = billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(acu90, None)],
                                            issued_at=ny(2026, 6, 11))
    used = fresh(pp).sessions_used
    lines = InvoiceLine.objects.count()
    with writes_nothing(), pytest.raises(Conflict, match="no-show") as refused:
        if invoice is not None:
            billing.do_add_line(acting_user=desk, invoice=invoice, service=acu60, appointment=appointment)
        else:
            billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(acu60, appointment)],
                                      issued_at=ny(2026, 6, 11))
    assert "undo the no-show" in refused.value.message and pp.name in refused.value.message
    assert refused.value.fields == {"appointment_id": "visit already counted"}
    assert (fresh(pp).sessions_used, InvoiceLine.objects.count()) == (used, lines)
    visits.do_undo_no_show(acting_user=desk, appointment=appointment)
    charged = billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(acu60, appointment)],
                                        issued_at=ny(2026, 6, 11))
    assert charged.live_lines()[0].covered_by_id == pp.pk
    assert fresh(pp).sessions_used == used  # the no-show's session given back, the charge's used
    assert verify() == []


def test_a_no_show_is_charged_as_usual_when_the_policy_used_nothing(owner, desk, patient, ten_pack, acu60):
    """With the policy off a no-show uses nothing, so a charge naming it (a clinic billing a
    missed visit by hand) uses the visit's one session (rule 2)."""
    pp, _ = sell(desk, patient, ten_pack)
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11))
    visits.do_mark_no_show(acting_user=desk, appointment=appointment)
    invoice = billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(acu60, appointment)],
                                        issued_at=ny(2026, 6, 11))
    assert invoice.live_lines()[0].covered_by_id == pp.pk and fresh(pp).sessions_used == 1


@pytest.mark.parametrize("how", ["add_line", "create_invoice"])
def test_a_visit_its_charge_counted_is_not_counted_again_by_another_line_naming_it(desk, patient, ten_pack, acu60,
                                                                                  how):
    """One visit, one session: a second charge naming a visit already counted by its own charge
    (its check-in's, or a manual one's) would use a second session for it. Refused (409), naming
    where the visit is charged; the fix apply_to_line refuses the same (`_visit_counted_elsewhere`)."""
    pp, _ = sell(desk, patient, ten_pack)
    appointment, checked_in, _ = visit(desk, patient, acu60, ny(2026, 6, 11))
    assert fresh(pp).sessions_used == 1
    with writes_nothing(), pytest.raises(Conflict, match="already counted") as refused:
        if how == "add_line":
            billing.do_add_line(acting_user=desk, invoice=checked_in, service=acu60, appointment=appointment)
        else:
            billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(acu60, appointment)],
                                      issued_at=ny(2026, 6, 11))
    assert checked_in.number in refused.value.message
    assert fresh(pp).sessions_used == 1
    assert InvoiceLine.objects.filter(appointment=appointment).count() == 1
    assert verify() == []


def test_an_add_on_no_package_covers_is_charged_beside_a_counted_visit(desk, patient, ten_pack, acu60, acu90):
    """What the refusal leaves alone: a charge naming a counted visit that uses no session (a
    service no package covers: an add-on) is charged normally, as before."""
    pp, _ = sell(desk, patient, ten_pack)
    appointment, checked_in, _ = visit(desk, patient, acu60, ny(2026, 6, 11))
    line = billing.do_add_line(acting_user=desk, invoice=checked_in, service=acu90, appointment=appointment)
    assert (line.covered_by_id, line.amount) == (None, acu90.price)
    assert fresh(pp).sessions_used == 1
    assert verify() == []


# --- rule 7: removing a line and voiding an invoice give the session back ---


def test_removing_a_covered_line_writes_a_reversal_and_a_tombstone(desk, patient, ten_pack, acu60):
    pp, _ = sell(desk, patient, ten_pack)
    _, invoice, line = visit(desk, patient, acu60, ny(2026, 6, 11))
    billing.do_remove_line(acting_user=desk, invoice=invoice, line_id=line.pk, reason="charged twice")
    use, reversal = ledger_of(pp)
    assert (reversal.kind, reversal.reverses_id, reversal.invoice_line_id) == ("reversal", use.pk, line.pk)
    assert fresh(pp).sessions_used == 0
    tombstone = Tombstone.objects.get(invoice_line=line)
    assert (tombstone.kind, tombstone.reason, tombstone.removed_by_id) == ("invoice_line", "charged twice", desk.pk)
    assert tombstone.content["covered_by"] == pp.pk
    assert InvoiceLine.objects.get(pk=line.pk).removed_at is not None
    with pytest.raises(NotFound):
        billing.do_remove_line(acting_user=desk, invoice=invoice, line_id=line.pk)


def test_a_line_can_be_removed_without_a_reason(desk, patient, acu60):
    _, invoice, line = visit(desk, patient, acu60, ny(2026, 6, 11))
    billing.do_remove_line(acting_user=desk, invoice=invoice, line_id=line.pk)
    assert Tombstone.objects.get(invoice_line=line).reason == ""


def test_re_adding_a_removed_line_re_runs_the_rules(desk, patient, ten_pack, acu60):
    pp, _ = sell(desk, patient, ten_pack)
    appointment, invoice, line = visit(desk, patient, acu60, ny(2026, 6, 11))
    billing.do_remove_line(acting_user=desk, invoice=invoice, line_id=line.pk)
    again = billing.do_add_line(acting_user=desk, invoice=invoice, service=acu60, appointment=appointment)
    assert (again.covered_by_id, again.session_number) == (pp.pk, 1)
    billing.do_remove_line(acting_user=desk, invoice=invoice, line_id=again.pk)
    sales.do_cancel_package(acting_user=desk, patient_package=pp, reason="closed")
    closed = billing.do_add_line(acting_user=desk, invoice=invoice, service=acu60, appointment=appointment)
    assert (closed.covered_by_id, closed.not_covered_reason) == (None, PACKAGE_CANCELLED)
    assert fresh(pp).sessions_used == 0
    assert verify() == []


def live_session_numbers(package) -> list[int]:
    return sorted(InvoiceLine.objects.filter(covered_by=package, removed_at__isnull=True,
                                             invoice__voided_at__isnull=True).values_list("session_number", flat=True))


def test_a_line_charged_after_a_covered_line_was_removed_takes_its_freed_session_number(desk, patient, ten_pack,
                                                                                          acu60):
    """"Session 3 of 10" names one session: a line removed gives its session back (rule 7),
    and the next charge takes that session, not the number a live line already shows. No
    line already charged is renumbered (its invoice may have been printed); "left" is what
    the ledger left after the charge."""
    pp, _ = sell(desk, patient, ten_pack)
    lines = [visit(desk, patient, acu60, ny(2026, 6, 11 + day))[2] for day in range(3)]
    billing.do_remove_line(acting_user=desk, invoice=lines[1].invoice, line_id=lines[1].pk)
    _, _, fourth = visit(desk, patient, acu60, ny(2026, 6, 15))
    assert fourth.session_number == 2 and fourth.sessions_left == 7
    assert live_session_numbers(pp) == [1, 2, 3]
    _, _, fifth = visit(desk, patient, acu60, ny(2026, 6, 16))
    assert (fifth.session_number, fifth.sessions_left) == (4, 6)
    assert [(ln.session_number, ln.sessions_left) for ln in InvoiceLine.objects.filter(pk__in=[
        lines[0].pk, lines[2].pk]).order_by("pk")] == [(1, 9), (3, 7)]


def test_sessions_used_before_any_line_keep_their_numbers(owner, desk, patient, ten_pack, acu60):
    """An owner's adjustment (sessions used before Tally) has no line: the next line is the
    session after them, not the first free number."""
    pp, _ = sell(desk, patient, ten_pack)
    sales.do_adjust(acting_user=owner, patient_package=pp, change=-3, reason="used before the import")
    _, _, line = visit(desk, patient, acu60, ny(2026, 6, 11))
    assert (line.session_number, line.sessions_left) == (4, 6)


def test_lines_charged_before_sessions_left_was_kept_get_what_their_invoices_showed(desk, patient, ten_pack, acu60,
                                                                                   acu90):
    """Migration 0006: until then a line's number was the count after its charge."""
    import importlib

    from django.apps import apps

    migration = importlib.import_module("tally.clinic.migrations.0007_invoice_line_sessions_left")
    sell(desk, patient, ten_pack)
    lines = [visit(desk, patient, acu60, ny(2026, 6, 11 + day))[2] for day in range(2)]
    visit(desk, patient, acu90, ny(2026, 6, 14))  # not covered: nothing to keep
    InvoiceLine.objects.update(sessions_left=None)
    migration.fill_sessions_left(apps, None)
    assert list(InvoiceLine.objects.filter(kind=LineKind.SERVICE).order_by("pk").values_list(
        "session_number", "sessions_left")) == [(1, 9), (2, 8), (None, None)]
    assert [ln.pk for ln in lines] == list(InvoiceLine.objects.filter(sessions_left__isnull=False).values_list(
        "pk", flat=True))


def test_voiding_an_invoice_gives_back_every_session_its_lines_used(desk, patient, ten_pack, acu60):
    pp, _ = sell(desk, patient, ten_pack)
    _, invoice, _ = visit(desk, patient, acu60, ny(2026, 6, 11))
    visit(desk, patient, acu60, ny(2026, 6, 11, 15), invoice=invoice)
    assert fresh(pp).sessions_used == 2
    voided = billing.do_void_invoice(acting_user=desk, invoice=invoice, reason="wrong patient")
    assert voided.status == "void"
    assert [e.kind for e in ledger_of(pp)] == ["use", "use", "reversal", "reversal"]
    assert fresh(pp).sessions_used == 0
    assert verify() == []


def test_it_refuses_to_void_an_invoice_with_money_on_it_or_twice(desk, patient, acu90):
    _, invoice, _ = visit(desk, patient, acu90, ny(2026, 6, 11))
    pay(desk, invoice, "50.00")
    with writes_nothing(), pytest.raises(Conflict):
        billing.do_void_invoice(acting_user=desk, invoice=invoice, reason="oops")
    billing.do_record_payment(acting_user=desk, invoice=invoice, amount="-50.00", method="card", reason="oops")
    billing.do_void_invoice(acting_user=desk, invoice=invoice, reason="oops")
    with pytest.raises(Conflict):
        billing.do_void_invoice(acting_user=desk, invoice=invoice, reason="oops")
    with pytest.raises(Invalid):
        billing.do_void_invoice(acting_user=desk, invoice=billing.load_invoice(invoice.pk), reason="")


def test_a_void_invoice_takes_no_new_lines(desk, patient, acu60):
    _, invoice, _ = visit(desk, patient, acu60, ny(2026, 6, 11))
    billing.do_void_invoice(acting_user=desk, invoice=invoice, reason="oops")
    with writes_nothing(), pytest.raises(Conflict):
        billing.do_add_line(acting_user=desk, invoice=invoice, service=acu60)


def test_a_package_sale_line_cannot_be_removed_on_its_own(desk, patient, ten_pack):
    pp, invoice = sell(desk, patient, ten_pack, paid=False)
    sale_line = InvoiceLine.objects.get(invoice=invoice, kind=LineKind.PACKAGE_SALE)
    with writes_nothing(), pytest.raises(Conflict):
        billing.do_remove_line(acting_user=desk, invoice=invoice, line_id=sale_line.pk)


# --- payments and refunds ---


def test_it_refuses_to_take_more_than_the_balance(desk, patient, acu90):
    _, invoice, _ = visit(desk, patient, acu90, ny(2026, 6, 11))
    with writes_nothing(), pytest.raises(Invalid):
        pay(desk, invoice, "130.01")
    pay(desk, invoice, "30.00")
    with pytest.raises(Invalid):
        pay(desk, invoice, "100.01")
    pay(desk, invoice, "100.00")
    assert billing.load_invoice(invoice.pk).status == "paid"


def test_it_refuses_a_payment_of_nothing_or_with_fractions_of_a_cent(desk, patient, acu90):
    _, invoice, _ = visit(desk, patient, acu90, ny(2026, 6, 11))
    with pytest.raises(Invalid):
        pay(desk, invoice, "0")
    with pytest.raises(Invalid):
        pay(desk, invoice, "10.001")


def test_a_refund_needs_a_reason_and_cannot_exceed_what_was_paid(desk, patient, acu90):
    _, invoice, _ = visit(desk, patient, acu90, ny(2026, 6, 11))
    pay(desk, invoice, "130.00")
    with writes_nothing(), pytest.raises(Invalid):
        billing.do_record_payment(acting_user=desk, invoice=invoice, amount="-30.00", method="card")
    with writes_nothing(), pytest.raises(Invalid):
        billing.do_record_payment(acting_user=desk, invoice=invoice, amount="-130.01", method="card",
                                  reason="goodwill")
    refund = billing.do_record_payment(acting_user=desk, invoice=invoice, amount="-30.00", method="card",
                                       reason="goodwill")
    assert (refund.amount, refund.reason) == (Decimal("-30.00"), "goodwill")
    invoice = billing.load_invoice(invoice.pk)
    assert (invoice.paid, invoice.balance, invoice.status) == (Decimal("100.00"), Decimal("30.00"),
                                                               "partially_paid")


# --- rule 9: owner adjustments ---


def test_an_owner_adjusts_the_count_within_its_bounds(owner, desk, patient, ten_pack):
    pp, _ = sell(desk, patient, ten_pack)
    entry = sales.do_adjust(acting_user=owner, patient_package=pp, change=-3, reason="paper card: 3 visits")
    assert (entry.kind, entry.change, entry.reason, entry.by_id) == ("adjustment", -3, "paper card: 3 visits", owner.pk)
    assert fresh(pp).sessions_used == 3
    sales.do_adjust(acting_user=owner, patient_package=pp, change=2, reason="two counted twice")
    assert fresh(pp).sessions_used == 1
    sales.do_adjust(acting_user=owner, patient_package=pp, change=-9, reason="all used")
    assert fresh(pp).sessions_remaining == 0
    sales.do_adjust(acting_user=owner, patient_package=pp, change=10, reason="back to new")
    assert fresh(pp).sessions_used == 0
    assert verify() == []


@pytest.mark.parametrize("change", [1, -11])
def test_it_refuses_an_adjustment_outside_0_to_total(owner, desk, patient, ten_pack, change):
    pp, _ = sell(desk, patient, ten_pack)
    with writes_nothing(), pytest.raises(Invalid):
        sales.do_adjust(acting_user=owner, patient_package=pp, change=change, reason="typo")
    assert fresh(pp).sessions_used == 0


def test_it_refuses_an_adjustment_from_anyone_but_an_owner(desk, practitioner, patient, ten_pack):
    pp, _ = sell(desk, patient, ten_pack)
    for user in (desk, practitioner):
        with writes_nothing(), pytest.raises(Forbidden):
            sales.do_adjust(acting_user=user, patient_package=pp, change=-1, reason="seen")


@pytest.mark.parametrize(("change", "reason"), [(0, "nothing"), (-1, ""), (True, "bool"), (1.5, "float")])
def test_it_refuses_an_adjustment_without_a_reason_or_a_whole_non_zero_change(owner, desk, patient, ten_pack,
                                                                               change, reason):
    pp, _ = sell(desk, patient, ten_pack)
    sales.do_adjust(acting_user=owner, patient_package=pp, change=-2, reason="setup")
    with writes_nothing(), pytest.raises(Invalid):
        sales.do_adjust(acting_user=owner, patient_package=pp, change=change, reason=reason)


# --- the audit trail ---


def test_every_action_writes_one_audit_event(owner, desk, patient, ten_pack, acu60, acu90):
    with writes_one_audit_event("service.create"):
        massage = catalog.do_create_service(acting_user=owner, name="Massage", duration_minutes=60, price="70.00")
    with writes_one_audit_event("service.update"):
        catalog.do_update_service(acting_user=owner, service=massage, changes={"price": "75.00"})
    with writes_one_audit_event("package_template.create"):
        five = make_package(owner, [acu60], sessions=5, price="400.00")
    with writes_one_audit_event("package_template.update"):
        catalog.do_update_package(acting_user=owner, package=five, changes={"price": "420.00"})
    with writes_one_audit_event("patient.create"):
        catalog.do_create_patient(acting_user=desk, first_name="Ana", last_name="Ruiz")
    with writes_one_audit_event("clinic.update"):
        catalog.do_update_clinic(acting_user=owner, changes={"currency": "CAD"})
    with writes_one_audit_event("package.sell"):
        pp, sale = sell(desk, patient, ten_pack, paid="400.00")
    with writes_one_audit_event("invoice.payment"):
        pay(desk, sale, "400.00")
    with writes_one_audit_event("appointment.book"):
        appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 11))
    with writes_one_audit_event("appointment.check_in"):
        _, invoice, line = visits.do_check_in(acting_user=desk, appointment=appointment)
    with writes_one_audit_event("appointment.undo_check_in"):
        visits.do_undo_check_in(acting_user=desk, appointment=appointment)
    with writes_one_audit_event("invoice.create"):
        invoice = billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(acu90, None)],
                                            issued_at=ny(2026, 6, 12))
    with writes_one_audit_event("invoice.add_line"):
        line = billing.do_add_line(acting_user=desk, invoice=invoice, service=acu60)
    with writes_one_audit_event("invoice.remove_line"):
        billing.do_remove_line(acting_user=desk, invoice=invoice, line_id=line.pk)
    with writes_one_audit_event("invoice.void"):
        billing.do_void_invoice(acting_user=desk, invoice=invoice, reason="test")
    with writes_one_audit_event("package.adjust"):
        sales.do_adjust(acting_user=owner, patient_package=pp, change=-1, reason="paper card")
    with writes_one_audit_event("package.set_expiry"):
        sales.do_set_expiry(acting_user=owner, patient_package=pp, expires_at=ny(2027, 6, 1))
    later = [visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, d))
             for d in (13, 14, 15)]
    with writes_one_audit_event("appointment.cancel"):
        visits.do_cancel_appointment(acting_user=desk, appointment=later[0])
    with writes_one_audit_event("appointment.no_show"):
        visits.do_mark_no_show(acting_user=desk, appointment=later[1])
    with writes_one_audit_event("appointment.delete"):
        visits.do_delete_appointment(acting_user=owner, appointment=later[2], reason="duplicate")
    with writes_one_audit_event("package.cancel"):
        sales.do_cancel_package(acting_user=desk, patient_package=pp, reason="moving")


def test_the_audit_event_says_who_did_what_to_which_patient(desk, patient, acu60):
    appointment, _, line = visit(desk, patient, acu60, ny(2026, 6, 11))
    event = AuditEvent.objects.filter(action="appointment.check_in").get()
    assert (event.actor_id, event.role, event.patient_id) == (desk.pk, "front_desk", patient.pk)
    assert (event.object_type, event.object_id) == ("appointment", str(appointment.pk))
    assert event.before["status"] == "booked"
    assert event.after["status"] == "attended"
    assert event.after["line_id"] == line.pk


def test_a_refused_action_writes_no_audit_event_and_no_ledger_entry(owner, desk, patient, ten_pack, acu60):
    pp, _ = sell(desk, patient, ten_pack)
    appointment, _, _ = visit(desk, patient, acu60, ny(2026, 6, 11))
    entries = PackageLedgerEntry.objects.count()
    with writes_nothing(), pytest.raises(Conflict):
        visits.do_delete_appointment(acting_user=owner, appointment=appointment, reason="x")
    with writes_nothing(), pytest.raises(Invalid):
        sales.do_adjust(acting_user=owner, patient_package=pp, change=-10, reason="too many")
    assert PackageLedgerEntry.objects.count() == entries


def test_an_adjustment_cannot_give_back_sessions_that_charged_visits_hold(owner, desk, patient, ten_pack, acu60):
    pp, _ = sell(desk, patient, ten_pack)
    visit(desk, patient, acu60, ny(2026, 6, 11))
    with pytest.raises(Invalid, match="belong to charged visits"):
        sales.do_adjust(acting_user=owner, patient_package=pp, change=1, reason="counted twice?")
    sales.do_adjust(acting_user=owner, patient_package=pp, change=-2, reason="paper card: 2 visits")
    sales.do_adjust(acting_user=owner, patient_package=pp, change=2, reason="paper card was wrong")
    assert fresh(pp).sessions_used == 1


def test_an_adjustment_cannot_give_back_a_session_a_no_show_holds_undoing_the_no_show_does(
        owner, desk, patient, ten_pack, acu60, clinic):
    # Rules 9 and 13 with rule 7: a no-show's session comes back by undoing the no-show. An
    # adjustment that gave it back too let the undo give it back a second time, and then the
    # visit's own undo was refused (its reversal would leave -1 used).
    clinic.no_show_uses_session = True
    clinic.save()
    pp, _ = sell(desk, patient, ten_pack)
    checked_in, _, _ = visit(desk, patient, acu60, ny(2026, 6, 11))
    no_show = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 12))
    visits.do_mark_no_show(acting_user=desk, appointment=no_show)
    assert fresh(pp).sessions_used == 2
    with writes_nothing(), pytest.raises(Invalid, match="undo those no-shows"):
        sales.do_adjust(acting_user=owner, patient_package=pp, change=1, reason="the no-show was our mistake")
    visits.do_undo_no_show(acting_user=desk, appointment=no_show)
    assert fresh(pp).sessions_used == 1
    visits.do_undo_check_in(acting_user=desk, appointment=checked_in)
    assert fresh(pp).sessions_used == 0
    assert verify() == []


def test_an_adjustment_gives_back_only_what_adjustments_took(owner, desk, patient, ten_pack, acu60, clinic):
    clinic.no_show_uses_session = True
    clinic.save()
    pp, _ = sell(desk, patient, ten_pack)
    sales.do_adjust(acting_user=owner, patient_package=pp, change=-2, reason="paper card: 2 visits")
    no_show = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 12))
    visits.do_mark_no_show(acting_user=desk, appointment=no_show)
    with pytest.raises(Invalid, match="at most 2"):
        sales.do_adjust(acting_user=owner, patient_package=pp, change=3, reason="all of them")
    sales.do_adjust(acting_user=owner, patient_package=pp, change=2, reason="paper card was wrong")
    visits.do_undo_no_show(acting_user=desk, appointment=no_show)
    assert fresh(pp).sessions_used == 0
    assert verify() == []
