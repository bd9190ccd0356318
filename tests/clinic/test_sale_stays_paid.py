"""Rule 1 after activation: a package that was activated and is not cancelled (active,
exhausted or expired) keeps its sale fully paid, whatever is done to the sale invoice.

Every path that could leave that invoice with a balance, or change what was paid for the
package, is here, with what it does: refused with a 409 naming the invoice and the way out,
or harmless (the invoice stays paid, or is overpaid and can be refunded down to paid). The
plain refund is in test_actions_sales.py (`..._unpays_a_live_packages_sale_is_refused`).
"""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection

from tally.clinic.actions import billing, catalog, fixes, sales, visits
from tally.clinic.consistency import verify_database
from tally.clinic.errors import Conflict
from tally.clinic.investigator.service import investigate_package
from tally.clinic.models import AuditEvent, InvoiceLine, PatientPackage
from tally.clinic.models.billing import LineKind

from .helpers import fresh, ny, sell, sell_live, writes_nothing


def balance_of(invoice) -> Decimal:
    return billing.load_invoice(invoice.pk).balance


@pytest.mark.parametrize("state", ["active", "exhausted", "expired"])
def test_a_charge_that_would_unpay_a_live_packages_sale_is_refused(owner, desk, patient, acu60, acu90, state):
    """Adding a line to the sale invoice after it was paid left the package usable while its
    sale had a balance again: the charge goes on a new invoice instead."""
    pp, invoice = sell_live(owner, desk, patient, acu60, state)
    with writes_nothing(), pytest.raises(Conflict, match="Charge it on a new invoice") as refused:
        billing.do_add_line(acting_user=desk, invoice=invoice, service=acu90)
    assert invoice.number in refused.value.message and pp.name in refused.value.message
    assert balance_of(invoice) == Decimal("0.00") and fresh(pp).activated_at is not None
    assert len(billing.load_invoice(invoice.pk).live_lines()) == 1


def test_a_charge_the_package_covers_may_go_on_its_paid_sale_invoice(desk, patient, ten_pack, acu60):
    """Paid via the package, the line costs nothing: the sale stays paid (one receipt for the
    day a patient buys a package and is treated)."""
    pp, invoice = sell(desk, patient, ten_pack)
    line = billing.do_add_line(acting_user=desk, invoice=invoice, service=acu60)
    assert line.covered_by_id == pp.pk and line.amount == Decimal("0.00")
    assert balance_of(invoice) == Decimal("0.00") and fresh(pp).sessions_used == 1


def test_checking_a_visit_in_on_a_live_packages_sale_invoice_is_refused_when_it_would_unpay_it(
        desk, patient, ten_pack, acu60, acu90):
    pp, invoice = sell(desk, patient, ten_pack)
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu90, starts_at=ny(2026, 6, 10, 11))
    with writes_nothing(), pytest.raises(Conflict, match="Charge it on a new invoice") as refused:
        visits.do_check_in(acting_user=desk, appointment=appointment, invoice=invoice)
    assert refused.value.fields == {"invoice_id": "charge it on a new invoice"}
    appointment.refresh_from_db()
    assert appointment.status == "booked" and balance_of(invoice) == Decimal("0.00")
    # Without the invoice, the visit is charged on a new one, as usual.
    _, other, line = visits.do_check_in(acting_user=desk, appointment=appointment)
    assert other.pk != invoice.pk and line.amount == Decimal("130.00")


def test_a_visit_the_package_covers_is_checked_in_on_its_sale_invoice_and_undone(desk, patient, ten_pack, acu60):
    pp, invoice = sell(desk, patient, ten_pack)
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 10, 11))
    _, _, line = visits.do_check_in(acting_user=desk, appointment=appointment, invoice=invoice)
    assert line.invoice_id == invoice.pk and line.covered_by_id == pp.pk
    visits.do_undo_check_in(acting_user=desk, appointment=appointment)
    assert balance_of(invoice) == Decimal("0.00") and fresh(pp).sessions_used == 0 and fresh(pp).status == "active"


def test_a_charge_on_a_pending_sale_is_added_and_the_payment_completing_the_invoice_activates_it(
        desk, patient, ten_pack, acu90):
    """Before activation nothing is at stake: the invoice's payment in full activates (rule 1)."""
    pp, invoice = sell(desk, patient, ten_pack, paid=False)
    billing.do_add_line(acting_user=desk, invoice=invoice, service=acu90)
    billing.do_record_payment(acting_user=desk, invoice=invoice, amount="800.00", method="card")
    assert fresh(pp).status == "pending_payment" and balance_of(invoice) == Decimal("130.00")
    billing.do_record_payment(acting_user=desk, invoice=invoice, amount="130.00", method="card")
    assert fresh(pp).status == "active"


def test_a_cancelled_packages_sale_takes_new_charges(desk, patient, ten_pack, acu90):
    pp, invoice = sell(desk, patient, ten_pack)
    sales.do_cancel_package(acting_user=desk, patient_package=pp, reason="moving away")
    billing.do_add_line(acting_user=desk, invoice=invoice, service=acu90)
    assert balance_of(invoice) == Decimal("130.00")


def test_an_overpaid_sale_invoice_takes_a_charge_its_overpayment_pays_and_no_more(desk, patient, ten_pack, acu90):
    """Removing a line from a paid sale invoice leaves it overpaid and the package active; a
    charge up to that overpayment keeps it paid (as a refund of it may give it back)."""
    pp, invoice = sell(desk, patient, ten_pack, paid=False)
    extra = billing.do_add_line(acting_user=desk, invoice=invoice, service=acu90)
    billing.do_record_payment(acting_user=desk, invoice=invoice, amount="930.00", method="card")
    billing.do_remove_line(acting_user=desk, invoice=invoice, line_id=extra.pk, reason="charged in error")
    assert balance_of(invoice) == Decimal("-130.00") and fresh(pp).status == "active"
    billing.do_add_line(acting_user=desk, invoice=invoice, service=acu90)
    assert balance_of(invoice) == Decimal("0.00")
    with writes_nothing(), pytest.raises(Conflict, match="Charge it on a new invoice"):
        billing.do_add_line(acting_user=desk, invoice=invoice, service=acu90)


def test_the_sale_line_is_not_removed_and_a_paid_sale_is_not_voided(desk, patient, ten_pack):
    """What was paid for the package changes only by cancelling it (rule 11)."""
    pp, invoice = sell(desk, patient, ten_pack)
    sale_line = billing.load_invoice(invoice.pk).live_lines()[0]
    with writes_nothing(), pytest.raises(Conflict, match="cancel the package"):
        billing.do_remove_line(acting_user=desk, invoice=invoice, line_id=sale_line.pk)
    with writes_nothing(), pytest.raises(Conflict, match="cancel the package"):
        billing.do_void_invoice(acting_user=desk, invoice=invoice, reason="mistake")
    assert balance_of(invoice) == Decimal("0.00") and fresh(pp).status == "active"


def test_new_prices_change_no_sold_package_or_its_sale(owner, desk, patient, ten_pack, acu60):
    """A package is a snapshot (SPEC "Patient package"), and a line keeps the price it was charged."""
    pp, invoice = sell(desk, patient, ten_pack)
    catalog.do_update_package(acting_user=owner, package=ten_pack, changes={"price": Decimal("900.00")})
    catalog.do_update_service(acting_user=owner, service=acu60, changes={"price": Decimal("120.00")})
    current = billing.load_invoice(invoice.pk)
    assert (current.total, current.balance, fresh(pp).price) == (Decimal("800.00"), Decimal("0.00"),
                                                                 Decimal("800.00"))


def test_a_fix_never_charges_a_paid_sale_invoice(desk, patient, ten_pack, acu60):
    """The investigator's fixes add lines only on new invoices (check_in_and_charge,
    recreate_from_tombstone) and re-price a line only to cover it, which a paid invoice refuses
    (SPEC "Fixes": refund that payment first)."""
    pp, invoice = sell(desk, patient, ten_pack, paid=False)
    line = billing.do_add_line(acting_user=desk, invoice=invoice, service=acu60)  # PACKAGE_NOT_PAID
    billing.do_record_payment(acting_user=desk, invoice=invoice, amount="895.00", method="card")
    assert fresh(pp).status == "active"
    with writes_nothing(), pytest.raises(Conflict, match="refund that payment first"):
        fixes.do_apply_to_line(acting_user=desk, line_id=line.pk, patient_id=patient.pk, context=pp)
    assert balance_of(invoice) == Decimal("0.00")


def test_old_data_with_a_live_package_on_an_unpaid_sale_shows_the_balance_in_its_investigation(
        desk, patient, ten_pack, acu90):
    """Data from before this rule (a line added after the sale was paid) is not refused
    retroactively: the investigation's summary shows the package active beside its balance.
    No finding of SPEC's list names the situation (PACKAGE_NOT_PAID is about visits charged
    while the sale was unpaid); staff collect it with a payment, or cancel the package."""
    pp, invoice = sell(desk, patient, ten_pack)
    InvoiceLine.objects.create(invoice=invoice, kind=LineKind.SERVICE, service=acu90, description=acu90.name,
                               list_price=acu90.price, amount=acu90.price)  # as the old code did
    summary = investigate_package(pp.pk).summary
    assert (summary["status"], summary["paid"], summary["balance"]) == ("active", Decimal("800.00"),
                                                                        Decimal("130.00"))
    billing.do_record_payment(acting_user=desk, invoice=invoice, amount="130.00", method="card")
    assert balance_of(invoice) == Decimal("0.00") and fresh(pp).status == "active"


# Rule 1 the other way: the sale invoice can become fully paid by its total going down, not
# only by a payment. The package then activates at that moment; before, it stayed pending
# with nothing left to pay, and no payment could finish it ("more than the balance of 0.00").

def test_removing_the_charge_that_kept_a_paid_sale_pending_activates_the_package(desk, patient, ten_pack, acu90):
    pp, invoice = sell(desk, patient, ten_pack, paid=False)
    extra = billing.do_add_line(acting_user=desk, invoice=invoice, service=acu90)
    billing.do_record_payment(acting_user=desk, invoice=invoice, amount="800.00", method="card")
    assert fresh(pp).status == "pending_payment"
    billing.do_remove_line(acting_user=desk, invoice=invoice, line_id=extra.pk, reason="charged in error")
    assert balance_of(invoice) == Decimal("0.00")
    removed_at = InvoiceLine.objects.get(pk=extra.pk).removed_at
    assert fresh(pp).status == "active" and fresh(pp).activated_at == removed_at
    event = AuditEvent.objects.filter(action="invoice.remove_line").latest("id")
    assert event.after["activated_packages"] == [pp.pk]


def test_activated_by_a_removal_the_ticked_first_session_is_used(desk, patient, ten_pack, acu90):
    pp, invoice = sell(desk, patient, ten_pack, paid=False, first=True)
    extra = billing.do_add_line(acting_user=desk, invoice=invoice, service=acu90)
    billing.do_record_payment(acting_user=desk, invoice=invoice, amount="800.00", method="card")
    assert fresh(pp).sessions_used == 0
    billing.do_remove_line(acting_user=desk, invoice=invoice, line_id=extra.pk, reason="charged in error")
    assert fresh(pp).status == "active" and fresh(pp).sessions_used == 1  # rule 5


def test_undoing_the_check_in_that_kept_a_paid_sale_pending_activates_the_package(desk, patient, ten_pack, acu90):
    pp, invoice = sell(desk, patient, ten_pack, paid=False)
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu90, starts_at=ny(2026, 6, 10, 11))
    visits.do_check_in(acting_user=desk, appointment=appointment, invoice=invoice)
    billing.do_record_payment(acting_user=desk, invoice=invoice, amount="800.00", method="card")
    assert fresh(pp).status == "pending_payment"
    visits.do_undo_check_in(acting_user=desk, appointment=appointment)
    assert balance_of(invoice) == Decimal("0.00") and fresh(pp).status == "active"


def test_a_fix_that_covers_the_charge_keeping_a_paid_sale_pending_activates_the_package(
        owner, desk, patient, ten_pack, acu60):
    """Another package pays the visit charged on the new package's sale invoice: the sale is
    then paid in full."""
    older, _ = sell(desk, patient, ten_pack, sold_at=ny(2026, 6, 1, 9))
    sales.do_adjust(acting_user=owner, patient_package=older, change=-10, reason="all used elsewhere")
    pp, invoice = sell(desk, patient, ten_pack, paid=False)
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=ny(2026, 6, 10, 11))
    _, _, line = visits.do_check_in(acting_user=desk, appointment=appointment, invoice=invoice)
    assert line.covered_by_id is None and line.amount == Decimal("95.00")  # the older one had none left
    billing.do_record_payment(acting_user=desk, invoice=invoice, amount="800.00", method="card")
    assert fresh(pp).status == "pending_payment"
    sales.do_adjust(acting_user=owner, patient_package=older, change=1, reason="one given back")
    result = fixes.do_apply_to_line(acting_user=desk, line_id=line.pk)
    assert result.applied and InvoiceLine.objects.get(pk=line.pk).covered_by_id == older.pk
    assert balance_of(invoice) == Decimal("0.00") and fresh(pp).status == "active"


# `tally verify` checks rule 1 both ways, so that data an older release left (or a bug would
# leave) is found: an activated package whose sale has a balance, a pending one whose sale
# has nothing left to pay.

def test_verify_finds_a_live_package_whose_sale_has_a_balance(desk, patient, ten_pack, acu90):
    pp, invoice = sell(desk, patient, ten_pack)
    assert verify_database() == []
    with connection.cursor() as cursor:  # what a release before the 409 could write
        cursor.execute("UPDATE clinic_invoiceline SET amount = 900 WHERE invoice_id = %s", [invoice.pk])
    [problem] = verify_database()
    assert (problem.kind, problem.subject) == ("packages", f"patient package {pp.pk}")
    assert f"its sale {invoice.number} has a balance of 100.00" in problem.message


def test_verify_finds_a_pending_package_whose_sale_is_paid_off(desk, patient, ten_pack):
    pp, invoice = sell(desk, patient, ten_pack, paid="800.00")
    PatientPackage.objects.filter(pk=pp.pk).update(activated_at=None)  # as an older release left one
    [problem] = verify_database()
    assert (problem.kind, problem.subject) == ("packages", f"patient package {pp.pk}")
    assert f"its sale {invoice.number} is paid in full but the package was never activated" in problem.message


def test_verify_is_quiet_about_pending_partly_paid_and_cancelled_packages(desk, patient, ten_pack):
    sell(desk, patient, ten_pack, paid="400.00")
    cancelled, _ = sell(desk, patient, ten_pack)
    sales.do_cancel_package(acting_user=desk, patient_package=cancelled, reason="moving away",
                            refund=(Decimal("-800.00"), "card"))
    assert verify_database() == []


def test_tally_activatepaid_activates_what_an_older_release_left_pending_and_audits_it(
        desk, patient, ten_pack, acu90, monkeypatch):
    pp, invoice = sell(desk, patient, ten_pack, paid=False, first=True)
    extra = billing.do_add_line(acting_user=desk, invoice=invoice, service=acu90)
    billing.do_record_payment(acting_user=desk, invoice=invoice, amount="800.00", method="card")
    with monkeypatch.context() as old_release:  # which did not activate on a lower total
        old_release.setattr(billing, "activate_paid_off_sales", lambda *args, **kwargs: [])
        billing.do_remove_line(acting_user=desk, invoice=invoice, line_id=extra.pk, reason="charged in error")
    assert fresh(pp).status == "pending_payment" and fresh(pp).sessions_used == 0
    [problem] = verify_database()
    assert "tally activatepaid" in problem.message
    out = io.StringIO()
    call_command("activatepaid", stdout=out)
    assert f"Activated {pp.name} (patient package {pp.pk})" in out.getvalue()
    assert fresh(pp).status == "active" and fresh(pp).sessions_used == 1  # rule 5, as a payment would
    assert verify_database() == []
    event = AuditEvent.objects.filter(action="package.activate").get()
    assert (event.actor_id, event.object_id, event.patient_id) == (None, str(pp.pk), patient.pk)
    again = io.StringIO()
    call_command("activatepaid", stdout=again)
    assert "Nothing to activate" in again.getvalue()
    assert AuditEvent.objects.filter(action="package.activate").count() == 1
