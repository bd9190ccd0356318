"""One scenario per finding code of SPEC.md, through the actions, read back by the investigator."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
from django.db import connection

from tally.clinic import ledger
from tally.clinic.actions import billing, catalog, sales, visits
from tally.clinic.errors import Conflict
from tally.clinic.investigator.service import apply_fix, investigate_package
from tally.clinic.models import AuditEvent, InvoiceLine, PatientPackage


def fresh(package):
    return PatientPackage.objects.get(pk=package.pk)


def codes(investigation):
    return [f.code for f in investigation.findings]


def only(investigation, code):
    found = [f for f in investigation.findings if f.code == code]
    assert len(found) == 1, codes(investigation)
    return found[0]


@pytest.fixture
def counted_visits_charged_again(monkeypatch):
    """History an earlier release left (or imported data): a second charge naming a visit its
    charge counted already used a second session. The actions refuse that now (one visit, one
    session: `refuse_a_second_session`); the investigator still finds what is on file."""
    monkeypatch.setattr("tally.clinic.actions.coverage.refuse_a_second_session", lambda appointment_id: None)


def test_a_same_day_visit_left_uncounted_by_the_sale_is_first_session_not_used(history):
    _, _, line = history.visit(3, 4)
    pp, _ = history.sell(3, 4, first=False, hour=15)
    finding = only(history.investigate(pp)[0], "FIRST_SESSION_NOT_USED")
    assert finding.severity == "warning"
    assert finding.fix == {"action": "use_first_session", "params": {"line_id": line.pk}}
    assert "4 Mar 2026" in finding.message


def test_a_past_visit_still_booked_is_not_checked_in(history):
    pp, _ = history.sell(3, 1)
    appointment = history.book(3, 5)
    finding = only(history.investigate(pp)[0], "NOT_CHECKED_IN")
    assert finding.fix == {"action": "check_in_and_charge", "params": {"appointment_id": appointment.pk}}
    assert finding.severity == "warning"


def test_a_future_visit_still_booked_is_not_a_finding(history):
    pp, _ = history.sell(3, 1)
    visits.do_book(acting_user=history.desk, patient=history.patient, service=history.acu60,
                   starts_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=3))
    assert codes(history.investigate(pp)[0]) == []


def test_an_attended_visit_with_no_charges_is_named(history):
    pp, _ = history.sell(3, 1)
    appointment, _, _ = history.visit(3, 5, no_charges=True)
    finding = only(history.investigate(pp)[0], "NO_CHARGES")
    assert finding.appointment_id == appointment.pk


def test_an_attended_visit_whose_charge_was_removed_is_not_invoiced(history):
    pp, _ = history.sell(3, 1)
    appointment, invoice, line = history.visit(3, 5)
    billing.do_remove_line(acting_user=history.desk, invoice=invoice, line_id=line.pk)
    finding = only(history.investigate(pp)[0], "NOT_INVOICED")
    assert finding.appointment_id == appointment.pk


def test_a_deleted_visit_is_named_from_its_tombstone(history):
    pp, _ = history.sell(3, 1)
    appointment = history.book(3, 5)
    tombstone = visits.do_delete_appointment(acting_user=history.owner, appointment=appointment,
                                             reason="booked twice by mistake")
    finding = only(history.investigate(pp)[0], "APPOINTMENT_DELETED")
    assert finding.tombstone_id == tombstone.pk
    assert "booked twice by mistake" in finding.message
    assert finding.fix == {"action": "recreate_from_tombstone", "params": {"tombstone_id": tombstone.pk}}


def test_a_hole_in_a_weekly_rhythm_is_a_schedule_gap_raised_when_the_count_is_disputed(history):
    pp, _ = history.sell(1, 1)
    for month, day in [(1, 5), (1, 12), (1, 19), (1, 26), (4, 6), (4, 13)]:
        history.visit(month, day)
    gap = only(history.investigate(pp)[0], "SCHEDULE_GAP")
    assert gap.severity == "info"
    disputed = only(history.investigate(pp, expected_used=9)[0], "SCHEDULE_GAP")
    assert disputed.severity == "warning"


def test_a_regular_rhythm_has_no_schedule_gap(history):
    pp, _ = history.sell(1, 1)
    for day in (5, 12, 19, 26):
        history.visit(1, day)
    assert "SCHEDULE_GAP" not in codes(history.investigate(pp)[0])


def test_a_wrong_service_names_the_nearest_eligible_one(history):
    pp, _ = history.sell(3, 1)
    _, _, line = history.visit(3, 4, charge=history.acu90)
    finding = only(history.investigate(pp)[0], "SERVICE_NOT_IN_PACKAGE")
    assert finding.message == ("Visit on 4 Mar 2026 was charged Acupuncture 90 min; 10 x Acupuncture 60 covers "
                               "only Acupuncture 60 min.")
    assert finding.fix == {"action": "apply_to_line", "params": {"line_id": line.pk, "service_id": history.acu60.pk}}


def test_an_unrelated_treatment_is_not_a_wrong_service(history, owner):
    from tally.clinic.actions import catalog

    massage = catalog.do_create_service(acting_user=owner, name="Massage 60 min", duration_minutes=60, price="80.00")
    pp, _ = history.sell(3, 1)
    history.visit(3, 4, service=massage)
    assert codes(history.investigate(pp)[0]) == []


def test_visits_charged_while_unpaid_name_the_balance_and_when_it_was_paid(history):
    pp, sale = history.sell(3, 1, paid="300.00")
    _, _, line = history.visit(3, 4)
    history.pay(sale, "500.00", 3, 10)
    finding = only(investigate_package(pp.pk), "PACKAGE_NOT_PAID")
    assert "$300.00 of $800.00 paid" in finding.message
    assert "paid in full on 10 Mar 2026" in finding.message
    assert finding.fix == {"action": "apply_to_line", "params": {"line_id": line.pk}}


def test_late_billing_dated_before_the_sale_is_charged_before_purchase(history):
    pp, _ = history.sell(3, 10)
    invoice = billing.do_create_invoice(acting_user=history.desk, patient=history.patient,
                                        lines=[(history.acu60, None)], issued_at=history.at(3, 5))
    finding = only(history.investigate(pp)[0], "CHARGED_BEFORE_PURCHASE")
    assert finding.severity == "info" and finding.fix is None
    assert finding.invoice_id == invoice.pk


def test_a_visit_used_by_another_package_is_covered_by_other_package(history):
    first, _ = history.sell(3, 1)
    second, _ = history.sell(3, 2)
    history.visit(3, 4)
    finding = only(history.investigate(second)[0], "COVERED_BY_OTHER_PACKAGE")
    assert finding.severity == "info" and finding.fix is None
    assert codes(history.investigate(first)[0]) == []


def test_visits_after_the_last_session_are_package_exhausted(history):
    single = history.package("Single session", 1)
    pp, _ = history.sell(3, 1, package=single, paid="100.00")
    history.visit(3, 2)
    history.visit(3, 9)
    finding = only(history.investigate(pp)[0], "PACKAGE_EXHAUSTED")
    assert finding.severity == "info"


def test_visits_after_expiry_are_package_expired(history):
    monthly = history.package("Monthly", 5, valid_days=30)
    pp, _ = history.sell(3, 1, package=monthly, paid="100.00")
    history.visit(3, 30)
    history.visit(3, 31)
    finding = only(history.investigate(pp)[0], "PACKAGE_EXPIRED")
    assert "30 Mar 2026" in finding.message


def test_visits_after_cancellation_are_package_cancelled(history):
    pp, _ = history.sell(3, 1)
    sales.do_cancel_package(acting_user=history.desk, patient_package=pp, reason="moved away")
    history.visit(3, 5)
    only(history.investigate(pp)[0], "PACKAGE_CANCELLED")


def test_two_sessions_for_one_visit_are_a_possible_double_use(history, counted_visits_charged_again):
    pp, _ = history.sell(3, 1)
    appointment, invoice, _ = history.visit(3, 5)
    billing.do_add_line(acting_user=history.desk, invoice=invoice, service=history.acu60, appointment=appointment)
    finding = only(history.investigate(pp)[0], "POSSIBLE_DOUBLE_USE")
    assert finding.severity == "warning"


def test_a_double_use_names_the_invoice_of_the_charge_to_remove(history, counted_visits_charged_again):
    pp, _ = history.sell(3, 1)
    appointment, invoice, _ = history.visit(3, 5)
    extra = billing.do_add_line(acting_user=history.desk, invoice=invoice, service=history.acu60,
                                appointment=appointment)
    finding = only(history.investigate(pp)[0], "POSSIBLE_DOUBLE_USE")
    assert (finding.line_id, finding.invoice_id) == (extra.pk, invoice.pk)


def test_a_first_session_and_a_check_in_on_its_day_name_the_first_session_as_the_duplicate(history):
    """The demo's P-000014: the sale used its first session (no visit named) and that day's
    visit was checked in and covered too. The charge to remove is the first session's, which
    no visit owns: removing the visit's own charge leaves it uncharged (NOT_INVOICED), whose
    fix charges it again, and the double use is back."""
    pp, sale_invoice = history.sell(3, 5, first=True, hour=9)
    history.visit(3, 5, hour=10)
    first = sale_invoice.lines.get(kind="first_session")
    finding = only(history.investigate(pp)[0], "POSSIBLE_DOUBLE_USE")
    assert (finding.line_id, finding.invoice_id) == (first.pk, sale_invoice.pk)
    billing.do_remove_line(acting_user=history.desk, invoice=sale_invoice, line_id=first.pk, reason="duplicate")
    assert codes(history.investigate(pp)[0]) == []


def test_a_corrupted_cached_count_is_a_ledger_mismatch(history):
    pp, _ = history.sell(3, 1)
    history.visit(3, 5)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE clinic_patientpackage SET sessions_used = 3 WHERE id = %s", [pp.pk])
    finding = only(history.investigate(pp)[0], "LEDGER_MISMATCH")
    assert finding.severity == "error"
    assert "3 used" in finding.message and "adds up to 1" in finding.message


def test_a_clean_history_has_no_findings(history):
    pp, _ = history.sell(3, 1, first=True)
    for day in (8, 15, 22):
        history.visit(3, day)
    investigation, orphans = history.investigate(pp)
    assert codes(investigation) == [] and orphans == []
    assert investigation.summary["sessions_used"] == 4


def test_expected_used_puts_the_findings_that_account_for_it_first(history, counted_visits_charged_again):
    pp, _ = history.sell(3, 1)
    history.visit(3, 20, charge=history.acu90)
    appointment, invoice, _ = history.visit(3, 5)
    billing.do_add_line(acting_user=history.desk, invoice=invoice, service=history.acu60, appointment=appointment)
    more = history.investigate(pp, expected_used=1)[0]
    assert more.summary["difference"] == -1
    assert codes(more)[0] == "POSSIBLE_DOUBLE_USE"
    fewer = history.investigate(pp, expected_used=5)[0]
    assert codes(fewer)[0] == "SERVICE_NOT_IN_PACKAGE"


def test_visit_findings_with_no_package_belong_to_the_patient(history):
    history.visit(3, 5, no_charges=True)
    investigations, orphans = history.investigate()
    assert investigations == {}
    assert [f.code for f in orphans] == ["NO_CHARGES"]


def test_every_finding_fix_makes_it_go_away(history, owner):
    pp, sale = history.sell(3, 1, paid="400.00")
    history.visit(3, 2)  # unpaid
    history.pay(sale, "400.00", 3, 3)
    history.visit(3, 4, charge=history.acu90)  # wrong service
    history.visit(3, 5, no_charges=True)
    history.book(3, 6)  # never checked in
    doomed = history.book(3, 7)
    visits.do_delete_appointment(acting_user=owner, appointment=doomed, reason="mistake")
    _, invoice, line = history.visit(3, 8)
    billing.do_remove_line(acting_user=history.desk, invoice=invoice, line_id=line.pk)
    before = investigate_package(pp.pk)
    assert sorted(codes(before)) == sorted(["PACKAGE_NOT_PAID", "SERVICE_NOT_IN_PACKAGE", "NO_CHARGES",
                                            "NOT_CHECKED_IN", "APPOINTMENT_DELETED", "NOT_INVOICED"])
    for finding in before.findings:
        result = apply_fix(acting_user=history.desk, context=pp, **finding.fix)
        assert result.applied, finding.code
        again = apply_fix(acting_user=history.desk, context=pp, **finding.fix)
        assert not again.applied, f"repeating the fix for {finding.code} changed something"
    after = investigate_package(pp.pk)
    assert codes(after) == []
    assert after.summary["sessions_used"] == 6  # each of the six visits now counted once


def test_a_renewal_covering_visits_after_the_old_package_ran_out_is_not_reported_on_the_old_one(history):
    single = history.package("Single session", 1)
    old, _ = history.sell(3, 1, package=single, paid="100.00")
    history.visit(3, 2)
    renewal, _ = history.sell(3, 3, package=single, paid="100.00")
    history.visit(3, 9)
    assert codes(history.investigate(old)[0]) == []
    assert codes(history.investigate(renewal)[0]) == []


def test_no_shows_marked_on_one_day_are_not_a_double_use_of_that_day(history, clinic):
    # Under the no-show policy each no-show uses a session with no invoice line: the use
    # belongs to the no-show's own day, not to the day staff marked it.
    clinic.no_show_uses_session = True
    clinic.save()
    pp, _ = history.sell(3, 1)
    for day in (5, 12):
        visits.do_mark_no_show(acting_user=history.desk, appointment=history.book(3, day))
    assert "POSSIBLE_DOUBLE_USE" not in codes(history.investigate(pp)[0])


def test_a_no_show_and_a_visit_on_the_same_day_are_a_possible_double_use_of_that_day(history, clinic):
    clinic.no_show_uses_session = True
    clinic.save()
    pp, _ = history.sell(3, 1)
    visits.do_mark_no_show(acting_user=history.desk, appointment=history.book(3, 5, hour=9))
    history.visit(3, 5, hour=15)
    assert only(history.investigate(pp)[0], "POSSIBLE_DOUBLE_USE").date == dt.date(2026, 3, 5)


@pytest.mark.parametrize("deleted_as", ["booked", "no_charges"])
def test_a_deleted_visit_is_restored_with_its_booked_service_though_that_service_is_archived_since(
        history, deleted_as):
    # SPEC "Fixes": restore "as attended, its booked service charged". The clinic stopped
    # offering the service after the visit: the restore (and so the finding's one fix) was a 422
    # "no longer offered", and the deleted visit could not be brought back at all.
    pp, _ = history.sell(3, 1)
    if deleted_as == "booked":
        appointment = history.book(3, 5)
    else:
        appointment, _, _ = history.visit(3, 5, no_charges=True)
    tombstone = visits.do_delete_appointment(acting_user=history.owner, appointment=appointment, reason="tidy up")
    assert tombstone.appointment_id == appointment.pk
    catalog.do_update_service(acting_user=history.owner, service=history.acu60, changes={"active": False})
    fix = only(history.investigate(pp)[0], "APPOINTMENT_DELETED").fix
    result = apply_fix(acting_user=history.desk, action=fix["action"], params=fix["params"], context=pp)
    assert result.applied
    line = InvoiceLine.objects.get(appointment=appointment, removed_at__isnull=True)
    assert (line.service_id, line.covered_by_id) == (history.acu60.pk, pp.pk)
    assert fresh(pp).sessions_used == 1
    assert not apply_fix(acting_user=history.desk, action=fix["action"], params=fix["params"], context=pp).applied
    assert fresh(pp).sessions_used == 1


def test_a_past_visit_never_checked_in_is_charged_its_booked_service_though_archived_since(history):
    pp, _ = history.sell(3, 1)
    appointment = history.book(3, 5)
    catalog.do_update_service(acting_user=history.owner, service=history.acu60, changes={"active": False})
    fix = only(history.investigate(pp)[0], "NOT_CHECKED_IN").fix
    assert apply_fix(acting_user=history.desk, action=fix["action"], params=fix["params"], context=pp).applied
    assert InvoiceLine.objects.get(appointment=appointment).covered_by_id == pp.pk
    assert fresh(pp).sessions_used == 1


def test_a_deleted_booking_that_was_never_a_visit_is_not_a_deleted_visit(history):
    pp, _ = history.sell(3, 1)
    cancelled, no_show = history.book(3, 5), history.book(3, 6)
    visits.do_cancel_appointment(acting_user=history.desk, appointment=cancelled)
    visits.do_mark_no_show(acting_user=history.desk, appointment=no_show)
    future = visits.do_book(acting_user=history.desk, patient=history.patient, service=history.acu60,
                            starts_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=3))
    tombstones = [visits.do_delete_appointment(acting_user=history.owner, appointment=a, reason="tidy up")
                  for a in (cancelled, no_show, future)]
    investigation = history.investigate(pp)[0]
    assert "APPOINTMENT_DELETED" not in codes(investigation)
    assert sum(e["kind"] == "tombstone" for e in investigation.timeline) == 3  # still shown as history
    for tombstone in tombstones:  # and restoring one "as attended, charged" is refused
        with pytest.raises(Conflict):
            apply_fix(acting_user=history.desk, action="recreate_from_tombstone",
                      params={"tombstone_id": tombstone.pk}, context=pp)
    assert fresh(pp).sessions_used == 0


def test_a_visit_charged_after_expiry_keeps_its_date_when_the_expiry_is_extended_later(history):
    monthly = history.package("Monthly", 5, valid_days=30)
    pp, _ = history.sell(3, 1, package=monthly, paid="100.00")
    history.visit(3, 31)
    sales.do_set_expiry(acting_user=history.owner, patient_package=pp, expires_at=history.at(4, 30))
    finding = only(history.investigate(pp)[0], "PACKAGE_EXPIRED")
    assert "expired on 30 Apr" not in finding.message  # not after a date later than the visit
    assert "later extended to 30 Apr 2026" in finding.message


def test_one_visit_counted_by_two_packages_is_a_possible_double_use_on_both(history, counted_visits_charged_again):
    # The visit used the last session of the first package; a second package sold the same day
    # covered a second charge of that visit on a manual invoice, so the one visit is counted
    # twice across packages. (A sale naming the counted visit as its first session no longer
    # uses it: test_a_first_session_sold_for_a_visit_another_package_already_counted_is_not_used_twice.)
    first, _ = history.sell(3, 1, package=history.package("1 x Acupuncture 60", 1), paid="100.00")
    appointment, _, line = history.visit(3, 5)
    assert line.covered_by_id == first.pk
    second, _ = history.sell(3, 5, hour=11)
    billing.do_create_invoice(acting_user=history.desk, patient=history.patient,
                              lines=[(history.acu60, appointment)], issued_at=history.at(3, 5, 12))
    assert fresh(first).sessions_used + fresh(second).sessions_used == 2
    investigations, _ = history.investigate()
    for pp, other_sold in ((first, "5 Mar 2026"), (second, "1 Mar 2026")):
        finding = only(investigations[pp.pk], "POSSIBLE_DOUBLE_USE")
        assert (finding.appointment_id, finding.date, finding.severity) == (appointment.pk, dt.date(2026, 3, 5),
                                                                            "warning")
        assert "2 sessions were used" in finding.message and f"(sold {other_sold})" in finding.message


def test_a_first_session_visit_charged_another_service_gets_a_fix_that_resolves_it(history):
    # Booked as the package's service, charged another, then the package sold that day without
    # "Use first session": the fix charges the booked service (use_first_session alone was a 409).
    appointment, _, line = history.visit(3, 4, charge=history.acu90)
    pp, _ = history.sell(3, 4, first=False, hour=15)
    finding = only(history.investigate(pp)[0], "FIRST_SESSION_NOT_USED")
    assert finding.fix == {"action": "use_first_session",
                           "params": {"line_id": line.pk, "service_id": history.acu60.pk}}
    result = apply_fix(acting_user=history.desk, action=finding.fix["action"], params=finding.fix["params"],
                       context=pp)
    assert result.applied and fresh(pp).sessions_used == 1
    assert codes(history.investigate(pp)[0]) == []


def test_a_voided_sale_had_no_first_session_to_use(history):
    history.visit(3, 4)
    pp, sale = history.sell(3, 4, first=False, hour=15, paid="0")
    billing.do_void_invoice(acting_user=history.desk, invoice=sale, reason="sold to the wrong patient")
    assert "FIRST_SESSION_NOT_USED" not in codes(history.investigate(pp)[0])


def test_a_first_session_not_used_on_an_unpaid_sale_offers_no_fix_that_would_be_refused(history):
    _, _, line = history.visit(3, 4)
    pp, sale = history.sell(3, 4, first=False, hour=15, paid="0")
    assert only(history.investigate(pp)[0], "FIRST_SESSION_NOT_USED").fix is None
    history.pay(sale, "800.00", 3, 5)  # paid: now the fix can use it
    finding = only(history.investigate(pp)[0], "FIRST_SESSION_NOT_USED")
    assert finding.fix == {"action": "use_first_session", "params": {"line_id": line.pk}}


def test_an_owners_adjustment_inside_a_gap_is_a_record_that_explains_it(history, monkeypatch):
    pp, _ = history.sell(1, 1)
    for month, day in [(1, 5), (1, 12), (1, 19), (1, 26), (4, 6), (4, 13)]:
        history.visit(month, day)
    only(history.investigate(pp)[0], "SCHEDULE_GAP")
    # The owner records it in the gap (the ledger stamps an entry with the time it is written).
    monkeypatch.setattr(ledger, "timezone", SimpleNamespace(now=lambda: history.at(3, 1)))
    sales.do_adjust(acting_user=history.owner, patient_package=pp, change=-2,
                    reason="paper card: 2 visits while the system was down")
    assert "SCHEDULE_GAP" not in codes(history.investigate(pp)[0])


def test_a_visit_charged_before_a_package_was_sold_is_not_covered_by_other_package_on_it(history):
    # Rule 6 never weighed the later package for it: nothing to say about that package.
    first, _ = history.sell(3, 1)
    history.visit(3, 4, hour=8)
    second, _ = history.sell(3, 4, first=False, hour=15)
    assert "COVERED_BY_OTHER_PACKAGE" not in codes(history.investigate(second)[0])


def test_a_wrong_service_on_a_package_that_cannot_cover_it_offers_no_fix_and_the_fix_changes_nothing(history):
    # Unpaid: the package covers nothing (rule 1), so replacing the service would only re-price
    # the visit (a 90-minute treatment billed as 60) and still use no session.
    pp, sale = history.sell(3, 1, paid="0")
    _, invoice, line = history.visit(3, 4, charge=history.acu90)
    finding = only(history.investigate(pp)[0], "SERVICE_NOT_IN_PACKAGE")
    assert finding.fix is None
    with pytest.raises(Conflict):
        apply_fix(acting_user=history.desk, context=pp, action="apply_to_line",
                  params={"line_id": line.pk, "service_id": history.acu60.pk})
    line.refresh_from_db()
    assert (line.service_id, line.amount) == (history.acu90.pk, history.acu90.price)


def test_a_wrong_service_on_an_exhausted_package_offers_no_fix(history):
    two = history.package("2 x Acupuncture 60", 2)
    pp, _ = history.sell(3, 1, package=two, paid="100.00")
    history.visit(3, 2)
    history.visit(3, 3)
    history.visit(3, 4, charge=history.acu90)
    finding = only(history.investigate(pp)[0], "SERVICE_NOT_IN_PACKAGE")
    assert finding.fix is None


def test_a_visit_charged_while_unpaid_on_a_package_cancelled_since_offers_no_fix(history):
    pp, sale = history.sell(3, 1, paid="300.00")
    history.visit(3, 4)
    history.pay(sale, "500.00", 3, 10)
    sales.do_cancel_package(acting_user=history.desk, patient_package=pp, reason="moving away")
    assert only(investigate_package(pp.pk), "PACKAGE_NOT_PAID").fix is None


def test_a_ticked_first_session_given_back_leaves_the_sale_day_visit_uncounted_and_says_so(history):
    # Seen at 10:00 and charged; the package sold at 15:00 with "Use first session", whose line
    # the desk later removed as a duplicate: the visit of the sale day is counted by nothing.
    _, _, line = history.visit(3, 4)
    pp, sale = history.sell(3, 4, first=True, hour=15)
    first = sale.lines.get(kind="first_session")
    billing.do_remove_line(acting_user=history.desk, invoice=sale, line_id=first.pk, reason="duplicate")
    assert fresh(pp).sessions_used == 0
    finding = only(history.investigate(pp)[0], "FIRST_SESSION_NOT_USED")
    assert finding.fix == {"action": "use_first_session", "params": {"line_id": line.pk}}
    apply_fix(acting_user=history.desk, context=pp, **finding.fix)
    assert fresh(pp).sessions_used == 1
    assert codes(history.investigate(pp)[0]) == []


def test_a_ticked_first_session_in_use_is_not_first_session_not_used(history):
    history.visit(3, 4)
    pp, _ = history.sell(3, 4, first=True, hour=15)
    assert fresh(pp).sessions_used == 1
    assert "FIRST_SESSION_NOT_USED" not in codes(history.investigate(pp)[0])


def test_a_visit_deleted_restored_and_deleted_again_is_one_deleted_visit(history):
    pp, _ = history.sell(3, 1)
    appointment = history.book(3, 5)
    first = visits.do_delete_appointment(acting_user=history.owner, appointment=appointment, reason="mistake")
    apply_fix(acting_user=history.desk, context=pp, action="recreate_from_tombstone",
              params={"tombstone_id": first.pk})
    billing.do_void_invoice(acting_user=history.desk,
                            invoice=billing.Invoice.objects.filter(lines__appointment=appointment).get(),
                            reason="charged in error")
    appointment.refresh_from_db()
    second = visits.do_delete_appointment(acting_user=history.owner, appointment=appointment, reason="again")
    finding = only(history.investigate(pp)[0], "APPOINTMENT_DELETED")
    assert finding.tombstone_id == second.pk


def test_a_no_charges_visit_counted_by_the_sales_first_session_is_not_a_finding(history):
    # Sold with "Use first session" for this visit, which was then checked in with No Charges
    # (nothing left to charge): the visit is counted, and no fix has anything to do.
    appointment = history.book(3, 4, hour=10)
    pp, _ = sales.do_sell_package(acting_user=history.desk, patient=history.patient, package=history.ten_pack,
                                  use_first_session=True, first_session_appointment=appointment,
                                  sold_at=history.at(3, 4, 9), payment=("800.00", "card"))
    visits.do_check_in(acting_user=history.desk, appointment=appointment, no_charges=True)
    assert fresh(pp).sessions_used == 1
    assert codes(history.investigate(pp)[0]) == []


def test_checking_in_a_booked_visit_already_charged_on_a_manual_invoice_does_not_charge_it_again(history):
    # Rule 2: charging a visit on a manual invoice uses its session; the appointment stayed booked.
    pp, _ = history.sell(3, 1)
    appointment = history.book(3, 5)
    billing.do_create_invoice(acting_user=history.desk, patient=history.patient,
                              lines=[(history.acu60, appointment)], issued_at=history.at(3, 5, 12))
    assert fresh(pp).sessions_used == 1
    finding = only(history.investigate(pp)[0], "NOT_CHECKED_IN")
    result = apply_fix(acting_user=history.desk, context=pp, **finding.fix)
    assert result.applied
    appointment.refresh_from_db()
    assert appointment.status == "attended"
    assert fresh(pp).sessions_used == 1  # counted once, not charged a second time
    assert codes(history.investigate(pp)[0]) == []
    assert not apply_fix(acting_user=history.desk, context=pp, **finding.fix).applied


def test_a_wrong_service_names_the_nearest_eligible_one_among_several(history, owner):
    from tally.clinic.actions import catalog

    acu30 = catalog.do_create_service(acting_user=owner, name="Acupuncture 30 min", duration_minutes=30,
                                      price="60.00")
    both = history.package("5 x Acupuncture", 5, services=[history.acu60, history.acu90])
    pp, _ = history.sell(3, 1, package=both, paid="100.00")
    _, _, line = history.visit(3, 4, charge=acu30)
    finding = only(history.investigate(pp)[0], "SERVICE_NOT_IN_PACKAGE")
    assert finding.fix == {"action": "apply_to_line", "params": {"line_id": line.pk, "service_id": history.acu60.pk}}
    assert "the nearest is Acupuncture 60 min" in finding.message  # what the fix will charge instead


def test_a_visit_charged_while_a_sale_was_unpaid_says_the_sale_was_voided_not_that_money_is_due(history):
    pp, sale = history.sell(3, 1, paid="0")
    history.visit(3, 4)
    billing.do_void_invoice(acting_user=history.desk, invoice=sale, reason="sold to the wrong patient")
    finding = only(investigate_package(pp.pk), "PACKAGE_NOT_PAID")
    assert "due" not in finding.message
    assert f"{sale.number} was voided" in finding.message
    assert finding.fix is None


def test_an_owner_override_that_used_the_last_session_changes_nothing_when_repeated(history):
    # SPEC "Fixes": idempotent, a repeat changes nothing. The override's repeat was refused as
    # "cannot cover this line even by override: PACKAGE_EXHAUSTED", about the very line it covers.
    older, _ = history.sell(3, 1)
    single, _ = history.sell(3, 2, package=history.package("Single", 1), paid="100.00")
    _, _, line = history.visit(3, 5)
    assert line.covered_by_id == older.pk
    params = {"line_id": line.pk, "override": True, "reason": "the patient asked to use the single"}
    first = apply_fix(acting_user=history.owner, action="apply_to_line", params=params, context=single)
    assert first.applied
    assert (fresh(older).sessions_used, fresh(single).sessions_used) == (0, 1)
    again = apply_fix(acting_user=history.owner, action="apply_to_line", params=params, context=single)
    assert not again.applied
    assert (fresh(older).sessions_used, fresh(single).sessions_used) == (0, 1)


@pytest.mark.parametrize("how", ["booked", "no_charges"])
def test_the_check_in_and_charge_fix_is_audited_as_a_fix(history, how):
    # SPEC "Fixes": one action each, audited. On a visit still booked the fix was recorded only
    # as an ordinary check-in: the audit log did not say a fix had charged the visit.
    pp, _ = history.sell(3, 1)
    if how == "booked":
        appointment = history.book(3, 5)
    else:
        appointment, _, _ = history.visit(3, 5, no_charges=True)
    last = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()
    apply_fix(acting_user=history.desk, action="check_in_and_charge", params={"appointment_id": appointment.pk},
              context=pp)
    events = list(AuditEvent.objects.filter(id__gt=last).values_list("action", flat=True))
    assert "fix.check_in_and_charge" in events, events
    event = AuditEvent.objects.filter(action="fix.check_in_and_charge").get()
    assert event.after["status"] == "attended" and event.after["line_id"] is not None
    assert fresh(pp).sessions_used == 1


def test_a_sale_day_visit_charged_on_an_older_invoice_offers_no_first_session_fix_that_is_refused(history):
    # Checked in onto an open invoice of the day before: its line is dated before the sale, so
    # no package can cover it (rule 4) and use_first_session refuses a line not of the sale day.
    older = billing.do_create_invoice(acting_user=history.desk, patient=history.patient,
                                      lines=[(history.acu90, None)], issued_at=history.at(3, 3))
    pp, _ = history.sell(3, 4, first=False, hour=9)
    appointment = history.book(3, 4, hour=10)
    visits.do_check_in(acting_user=history.desk, appointment=appointment, invoice=older)
    assert only(history.investigate(pp)[0], "FIRST_SESSION_NOT_USED").fix is None


def test_a_fix_never_applies_a_package_to_the_charge_of_a_deleted_visit(history):
    # Rule 8: a deleted visit never holds a covered charge. Its charge (made while the sale was
    # unpaid) stays on file; restoring the visit from its tombstone is the fix that counts it.
    pp, sale = history.sell(3, 1, paid="0")
    appointment, _, line = history.visit(3, 4)
    visits.do_delete_appointment(acting_user=history.owner, appointment=appointment, reason="mistake")
    history.pay(sale, "800.00", 3, 10)
    findings = history.investigate(pp)[0].findings
    assert all(f.fix is None or f.fix["action"] != "apply_to_line" for f in findings), findings
    with pytest.raises(Conflict):
        apply_fix(acting_user=history.desk, context=pp, action="apply_to_line", params={"line_id": line.pk})
    assert fresh(pp).sessions_used == 0


def test_a_second_service_on_a_visit_already_counted_is_no_wrong_service_and_cannot_be_applied(history):
    """An add-on charged on a visit whose session is already used (acupuncture covered, then a
    90-minute treatment added to the same visit) is not a wrong service: offering to turn it into
    the eligible service and apply the package counted the visit twice (found by the state machine)."""
    pp, _ = history.sell(3, 1)
    appointment, invoice, covered = history.visit(3, 4)
    extra = billing.do_add_line(acting_user=history.desk, invoice=invoice, service=history.acu90,
                                appointment=appointment)
    assert extra.covered_by_id is None and fresh(pp).sessions_used == 1
    assert "SERVICE_NOT_IN_PACKAGE" not in codes(history.investigate(pp)[0])
    with pytest.raises(Conflict, match="already counted"):
        apply_fix(acting_user=history.desk, context=pp, action="apply_to_line",
                  params={"line_id": extra.pk, "service_id": history.acu60.pk})
    extra.refresh_from_db()
    assert (extra.service_id, extra.covered_by_id, fresh(pp).sessions_used) == (history.acu90.pk, None, 1)


def test_a_visit_charged_while_unpaid_and_counted_since_offers_no_fix(history):
    """The visit's charge while the sale was unpaid stays uncovered, and a later line of the same
    visit used the session: applying the package to the first as well would count it twice."""
    pp, sale = history.sell(3, 1, paid="300.00")
    appointment, invoice, unpaid_line = history.visit(3, 4)
    history.pay(sale, "500.00", 3, 10)
    billing.do_add_line(acting_user=history.desk, invoice=invoice, service=history.acu60, appointment=appointment)
    assert fresh(pp).sessions_used == 1
    finding = only(investigate_package(pp.pk), "PACKAGE_NOT_PAID")
    assert finding.line_id == unpaid_line.pk and finding.fix is None


def test_a_wrong_service_on_a_paid_invoice_says_to_refund_first_and_offers_the_fix_once_refunded(history):
    pp, _ = history.sell(3, 1)
    _, invoice, line = history.visit(3, 4, charge=history.acu90)
    history.pay(invoice, "130.00", 3, 4)
    finding = only(history.investigate(pp)[0], "SERVICE_NOT_IN_PACKAGE")
    # Applying the package would be refused (409: refund that payment first): no button for it.
    assert finding.fix is None
    assert f"{invoice.number} is already paid ($130.00): refund that payment first" in finding.message
    billing.do_record_payment(acting_user=history.desk, invoice=invoice, amount="-130.00", method="card",
                              reason="to apply the package")
    finding = only(history.investigate(pp)[0], "SERVICE_NOT_IN_PACKAGE")
    assert finding.fix == {"action": "apply_to_line", "params": {"line_id": line.pk, "service_id": history.acu60.pk}}
    assert apply_fix(acting_user=history.desk, context=pp, **finding.fix).applied
    after = investigate_package(pp.pk)
    assert codes(after) == [] and after.summary["sessions_used"] == 1


def test_a_sale_day_visit_paid_for_offers_no_first_session_fix_that_is_refused(history):
    _, invoice, _ = history.visit(3, 4)
    history.pay(invoice, "95.00", 3, 4)
    pp, _ = history.sell(3, 4, first=False, hour=15)
    finding = only(history.investigate(pp)[0], "FIRST_SESSION_NOT_USED")
    assert finding.fix is None
    assert "refund that payment first" in finding.message


def test_a_visit_charged_while_unpaid_and_paid_for_since_offers_no_fix_that_is_refused(history):
    pp, sale = history.sell(3, 1, paid="300.00")
    _, invoice, _ = history.visit(3, 5)
    history.pay(invoice, "95.00", 3, 5)
    history.pay(sale, "500.00", 3, 6)
    finding = only(history.investigate(pp)[0], "PACKAGE_NOT_PAID")
    assert finding.fix is None
    assert "refund that payment first" in finding.message


def test_amounts_in_findings_are_written_as_everywhere_else_in_the_clinics_currency(history, clinic):
    clinic.currency = "EUR"
    clinic.save()
    pp, sale = history.sell(3, 1, paid="300.00")
    history.visit(3, 4)
    finding = only(history.investigate(pp)[0], "PACKAGE_NOT_PAID")
    assert "(€300.00 of €800.00 paid on" in finding.message and "(€500.00 due)" in finding.message


def test_two_visits_on_two_days_are_no_double_use_when_one_was_invoiced_the_next_day(history):
    pp, _ = history.sell(3, 1)
    monday = history.book(3, 5)
    billing.do_create_invoice(acting_user=history.desk, patient=history.patient,
                              lines=[(history.acu60, monday)], issued_at=history.at(3, 6, 18))
    visits.do_check_in(acting_user=history.desk, appointment=monday)  # keeps the charge on file
    history.visit(3, 6)
    investigation = history.investigate(pp)[0]
    assert investigation.summary["sessions_used"] == 2
    assert "POSSIBLE_DOUBLE_USE" not in codes(investigation)


def test_a_visit_booked_for_earlier_today_is_not_called_upcoming(history):
    from tally.clinic.investigator.explain import explain
    from tally.clinic.investigator.loader import load_history

    pp, _ = history.sell(3, 1)
    appointment = history.book(3, 5)  # 10:00

    def seen_at(now):
        investigations, _ = explain(load_history(history.patient.pk, now=now))
        investigation = investigations[pp.pk]
        (visit,) = [e for e in investigation.timeline if e["kind"] == "visit" and e["appointment_id"] == appointment.pk]
        return visit["reason"], codes(investigation)

    assert seen_at(history.at(3, 5, 8)) == ("UPCOMING", [])
    # Past its time the same day: not checked in yet. Not a finding while the day lasts (the desk
    # checks visits in all day long), but not "upcoming" either.
    assert seen_at(history.at(3, 5, 15)) == ("NOT_CHECKED_IN_YET", [])
    assert seen_at(history.at(3, 6, 8)) == ("NOT_CHECKED_IN", ["NOT_CHECKED_IN"])


def test_a_patient_with_several_packages_sees_each_visit_finding_once_and_every_tombstone_everywhere(history):
    monthly = history.package("Monthly", 5, valid_days=30)
    soon, _ = history.sell(3, 1, package=monthly, paid="100.00")
    later, _ = history.sell(3, 1, hour=10)
    free, _, _ = history.visit(3, 5, no_charges=True)
    doomed = history.book(3, 6)
    tombstone = visits.do_delete_appointment(acting_user=history.owner, appointment=doomed, reason="typo")
    investigations, orphans = history.investigate()
    assert orphans == []
    # Rule 6's order: the package that expires first owns the visit-level findings.
    assert sorted(codes(investigations[soon.pk])) == ["APPOINTMENT_DELETED", "NO_CHARGES"]
    assert codes(investigations[later.pk]) == []
    assert investigations[soon.pk].findings[-1].appointment_id in (free.pk, doomed.pk)
    for investigation in investigations.values():
        assert [e["tombstone_id"] for e in investigation.timeline if e["kind"] == "tombstone"] == [tombstone.pk]


@pytest.mark.parametrize("why", ["expired", "before_purchase"])
def test_an_override_past_expiry_or_the_sale_date_is_refused_onto_a_package_used_up(history, why):
    # An override may set aside the sale date or the expiry, never the count: onto a package with
    # no session left it is a 409, like any override onto a used-up package. Rules were checked
    # in order and the first reason (expired, before purchase) was the only one looked at, so the
    # fix got past it and the ledger's bound refused the use (a 422 "would leave 3 of 2 used").
    # Found by the state machine's override step.
    two = history.package("Two, 5 days", 2, valid_days=5)
    pp, _ = history.sell(3, 10, package=two, paid="100.00")
    history.visit(3, 10)
    history.visit(3, 11)
    assert fresh(pp).sessions_remaining == 0
    day = (3, 20) if why == "expired" else (3, 2)
    _, _, line = history.visit(*day)
    assert line.covered_by_id is None
    params = {"line_id": line.pk, "override": True, "reason": "the owner's call"}
    with pytest.raises(Conflict, match="cannot cover this line even by override: PACKAGE_EXHAUSTED"):
        apply_fix(acting_user=history.owner, action="apply_to_line", params=params, context=pp)
    assert fresh(pp).sessions_used == 2
