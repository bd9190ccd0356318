from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.urls import reverse

from tally.clinic.actions.catalog import do_create_package
from tally.clinic.actions.sales import do_cancel_package, do_sell_package
from tally.clinic.actions.visits import do_book, do_reschedule
from tally.clinic.models import Appointment, AuditEvent, InvoiceLine, Tombstone
from tally.clinic.models.scheduling import AppointmentStatus

from .conftest import today_at


def test_today_lists_each_practitioners_visits(desk_client, visit, other_practitioner, patient, acu60, desk, clinic):
    do_book(acting_user=desk, patient=patient, service=acu60, starts_at=today_at(clinic, 11),
            practitioner=other_practitioner)
    page = desk_client.get(reverse("staff:today")).content.decode()
    assert "Pat Needle" in page and "Quinn Hands" in page
    assert "10:00" in page and "11:00" in page  # clinic time (America/New_York), not UTC


def test_a_practitioner_sees_only_their_own_visits(practitioner_client, visit, other_practitioner, patient, acu60,
                                                   desk, clinic):
    theirs = do_book(acting_user=desk, patient=patient, service=acu60, starts_at=today_at(clinic, 11),
                     practitioner=other_practitioner)
    page = practitioner_client.get(reverse("staff:today")).content.decode()
    assert "Quinn Hands" not in page
    assert practitioner_client.get(reverse("staff:check_in", args=[theirs.pk])).status_code == 403
    assert practitioner_client.post(reverse("staff:check_in", args=[theirs.pk]),
                                    {"charge": "none"}).status_code == 403
    assert Appointment.objects.get(pk=theirs.pk).status == AppointmentStatus.BOOKED


def test_desk_books_a_visit_by_patient_number(desk_client, patient, acu60, practitioner, clinic):
    day = today_at(clinic, 9, days=1).date()
    response = desk_client.post(reverse("staff:book"), {
        "patient": patient.patient_number, "service": acu60.pk, "practitioner": practitioner.pk,
        "day": day.isoformat(), "time": "14:30",
    })
    assert response.status_code == 302
    appointment = Appointment.objects.get()
    assert appointment.starts_at == dt.datetime.combine(day, dt.time(14, 30), tzinfo=clinic.tz)


def test_booking_an_unknown_patient_number_is_a_form_error(desk_client, acu60, clinic):
    response = desk_client.post(reverse("staff:book"), {
        "patient": "P-999999", "service": acu60.pk, "day": "2030-01-02", "time": "10:00"})
    assert response.status_code == 422
    assert b"No patient has that number" in response.content


def test_reschedule_moves_a_booked_visit_and_is_audited(desk_client, visit, clinic, practitioner):
    response = desk_client.post(reverse("staff:reschedule", args=[visit.pk]), {
        "day": (visit.starts_at.astimezone(clinic.tz).date() + dt.timedelta(days=2)).isoformat(),
        "time": "15:00", "duration_minutes": 90, "practitioner": practitioner.pk})
    assert response.status_code == 302
    visit.refresh_from_db()
    assert visit.starts_at.astimezone(clinic.tz).time() == dt.time(15, 0)
    assert visit.ends_at - visit.starts_at == dt.timedelta(minutes=90)
    assert AuditEvent.objects.filter(action="appointment.reschedule", object_id=str(visit.pk)).exists()


def test_do_reschedule_refuses_a_visit_that_is_not_booked(desk, visit, clinic):
    from tally.clinic.actions.visits import do_check_in
    from tally.clinic.errors import Conflict

    do_check_in(acting_user=desk, appointment=visit, no_charges=True)
    try:
        do_reschedule(acting_user=desk, appointment=visit, starts_at=today_at(clinic, 12))
    except Conflict as exc:
        assert "Only a booked appointment" in exc.message
    else:
        raise AssertionError("rescheduling an attended visit must be refused")


def test_check_in_charges_the_booked_service_via_the_package(desk_client, visit, sold_pack):
    page = desk_client.get(reverse("staff:check_in", args=[visit.pk])).content.decode()
    assert "will be paid via 10 x Acupuncture 60: session 1 of 10 · 9 left" in page
    response = desk_client.post(reverse("staff:check_in", args=[visit.pk]), {"charge": "booked"}, follow=True)
    assert "session 1 of 10 · 9 left" in response.content.decode()
    line = InvoiceLine.objects.get(appointment=visit)
    assert line.covered_by_id == sold_pack.pk


def test_check_in_with_a_service_the_package_does_not_cover_warns_before_saving(desk_client, visit, sold_pack,
                                                                                acu90):
    url = reverse("staff:check_in", args=[visit.pk])
    preview = desk_client.get(reverse("staff:check_in_preview", args=[visit.pk]),
                              {"charge": "other", "service": acu90.pk}, HTTP_HX_REQUEST="true")
    assert "does not include Acupuncture 90 min" in preview.content.decode()

    first = desk_client.post(url, {"charge": "other", "service": acu90.pk})
    page = first.content.decode()
    assert first.status_code == 200
    assert "Not covered by a package." in page
    assert "10 x Acupuncture 60 does not include Acupuncture 90 min; it covers only Acupuncture 60 min." in page
    assert "$130.00" in page
    visit.refresh_from_db()
    assert visit.status == AppointmentStatus.BOOKED  # nothing saved yet
    assert not InvoiceLine.objects.filter(appointment=visit).exists()

    confirmed = desk_client.post(url, {"charge": "other", "service": acu90.pk, "confirmed": f"other:{acu90.pk}"})
    assert confirmed.status_code == 302
    line = InvoiceLine.objects.get(appointment=visit)
    assert line.covered_by_id is None and line.not_covered_reason == "SERVICE_NOT_IN_PACKAGE"


def test_confirming_one_charge_does_not_confirm_another(desk_client, visit, sold_pack, acu90, patient, ten_pack):
    url = reverse("staff:check_in", args=[visit.pk])
    response = desk_client.post(url, {"charge": "other", "service": acu90.pk, "confirmed": "booked:"})
    assert "Not covered by a package." in response.content.decode()
    assert Appointment.objects.get(pk=visit.pk).status == AppointmentStatus.BOOKED


def test_check_in_with_no_charges_charges_nothing(desk_client, visit, sold_pack):
    response = desk_client.post(reverse("staff:check_in", args=[visit.pk]), {"charge": "none"})
    assert response.status_code == 302
    visit.refresh_from_db()
    assert visit.status == AppointmentStatus.ATTENDED and visit.no_charges
    assert not InvoiceLine.objects.filter(appointment=visit).exists()


def test_choosing_no_charges_says_which_package_would_have_counted_the_visit(desk_client, visit, sold_pack):
    """No Charges beside a package that covers the booked service used nothing and said nothing:
    the investigator then lists the visit as a missed step (NO_CHARGES, a warning). The page says
    so as it is chosen, before anything is saved; the choice stays the desk's, in one click."""
    preview = desk_client.get(reverse("staff:check_in_preview", args=[visit.pk]), {"charge": "none"})
    text = preview.content.decode()
    assert 'role="alert"' in text
    assert "No Charges: no session of 10 x Acupuncture 60 is used" in text
    assert "would pay Acupuncture 60 min" in text


def test_no_charges_for_a_patient_without_a_package_says_nothing(desk_client, visit):
    preview = desk_client.get(reverse("staff:check_in_preview", args=[visit.pk]), {"charge": "none"})
    assert "alert" not in preview.content.decode()


def test_picking_another_service_without_choosing_one_is_a_form_error(desk_client, visit):
    response = desk_client.post(reverse("staff:check_in", args=[visit.pk]), {"charge": "other"})
    assert response.status_code == 422
    assert b"Pick the service to charge." in response.content


def test_checking_in_twice_shows_the_refusal_not_a_500(desk_client, visit):
    desk_client.post(reverse("staff:check_in", args=[visit.pk]), {"charge": "none"})
    response = desk_client.post(reverse("staff:check_in", args=[visit.pk]), {"charge": "none"})
    assert response.status_code == 422
    assert b"it cannot be checked in" in response.content


def test_undo_check_in_gives_the_session_back(desk_client, charged_visit, sold_pack):
    appointment, _, _ = charged_visit
    sold_pack.refresh_from_db()
    assert sold_pack.sessions_used == 1
    response = desk_client.post(reverse("staff:undo_check_in", args=[appointment.pk]))
    assert response.status_code == 302
    appointment.refresh_from_db()
    sold_pack.refresh_from_db()
    assert appointment.status == AppointmentStatus.BOOKED
    assert sold_pack.sessions_used == 0


def test_cancel_and_no_show(desk_client, visit, patient, acu60, desk, clinic):
    other = do_book(acting_user=desk, patient=patient, service=acu60, starts_at=today_at(clinic, 12))
    assert desk_client.post(reverse("staff:cancel", args=[visit.pk]), {"reason": "called in sick"}).status_code == 302
    assert desk_client.post(reverse("staff:no_show", args=[other.pk]), {}).status_code == 302
    assert Appointment.objects.get(pk=visit.pk).status == AppointmentStatus.CANCELLED
    assert Appointment.objects.get(pk=other.pk).status == AppointmentStatus.NO_SHOW


def test_the_day_offers_to_undo_a_cancel_and_a_no_show_and_both_book_the_visit_again(
        desk_client, visit, patient, acu60, desk, clinic):
    other = do_book(acting_user=desk, patient=patient, service=acu60, starts_at=today_at(clinic, 12))
    desk_client.post(reverse("staff:cancel", args=[visit.pk]), {"reason": "called in sick"})
    desk_client.post(reverse("staff:no_show", args=[other.pk]), {})
    day = desk_client.get(reverse("staff:today")).content.decode()
    assert reverse("staff:undo_cancel", args=[visit.pk]) in day
    assert reverse("staff:undo_no_show", args=[other.pk]) in day
    assert desk_client.post(reverse("staff:undo_cancel", args=[visit.pk]), {}).status_code == 302
    assert desk_client.post(reverse("staff:undo_no_show", args=[other.pk]), {}).status_code == 302
    assert set(Appointment.objects.filter(pk__in=[visit.pk, other.pk]).values_list("status", flat=True)) == \
        {AppointmentStatus.BOOKED}
    again = desk_client.post(reverse("staff:undo_no_show", args=[other.pk]), {})
    assert again.status_code == 422 and b"not a no-show" in again.content


def test_owner_deletes_a_visit_with_a_reason(owner_client, visit):
    url = reverse("staff:delete", args=[visit.pk])
    missing = owner_client.post(url, {"reason": ""})
    assert missing.status_code == 422
    assert Appointment.objects.filter(pk=visit.pk).exists()
    response = owner_client.post(url, {"reason": "booked twice by mistake"})
    assert response.status_code == 302
    assert not Appointment.objects.filter(pk=visit.pk).exists()
    assert Tombstone.objects.get(appointment_id=visit.pk).reason == "booked twice by mistake"


def test_desk_cannot_delete(desk_client, visit):
    assert desk_client.post(reverse("staff:delete", args=[visit.pk]), {"reason": "x"}).status_code == 403
    assert Appointment.objects.filter(pk=visit.pk).exists()


def test_deleting_a_visit_that_used_a_session_is_refused_on_the_form(owner_client, charged_visit):
    appointment, _, _ = charged_visit
    response = owner_client.post(reverse("staff:delete", args=[appointment.pk]), {"reason": "oops"})
    assert response.status_code == 422
    assert b"remove or void its charge first" in response.content


def test_a_patient_id_of_other_digits_is_ignored_not_a_500(desk_client, patient):
    """'²' is a digit to str.isdigit() but not a number to int(): the booking form took it for a
    patient id and the lookup failed (a 500)."""
    for typed in ("²", "١٢"):
        response = desk_client.get(reverse("staff:book"), {"patient": typed})
        assert response.status_code == 200, typed


@pytest.mark.parametrize("sessions", [10, 1])
def test_the_check_in_preview_counts_the_first_session_the_sale_used_for_this_visit(desk_client, desk, owner, patient,
                                                                                   acu60, visit, sessions):
    """The sale used its first session for today's visit; checking the visit in moves that
    session to the visit's own line (one session, not two). The preview said 'session 2 of 10',
    and for a one-session package 'has no session left', asking to charge the visit in full,
    while the check-in then counted it as session 1."""
    package = do_create_package(acting_user=owner, name=f"{sessions} x Acupuncture 60", price=Decimal("80.00"),
                                sessions=sessions, service_ids=[acu60.pk])
    do_sell_package(acting_user=desk, patient=patient, package=package, use_first_session=True,
                    first_session_appointment=visit, payment=(Decimal("80.00"), "card"))
    url = reverse("staff:check_in", args=[visit.pk])
    page = desk_client.get(url).content.decode()
    expected = f"will be paid via {package.name}: session 1 of {sessions} · {sessions - 1} left."
    assert expected in page
    assert "will not cover this visit" not in page
    response = desk_client.post(url, {"charge": "booked"})
    assert response.status_code == 302
    line = InvoiceLine.objects.get(appointment=visit, kind="service", removed_at__isnull=True)
    assert line.session_number == 1 and line.covered_by.name == package.name


def test_the_check_in_preview_of_a_cancelled_packages_first_session_visit_says_it_is_paid_via_the_package(
        desk_client, desk, owner, patient, acu60, visit):
    """Cancelled after the sale used its first session for this visit: the check-in moves that
    session to the visit's line (rule 11: used stays used), so the preview must not ask to
    charge the visit in full."""
    package = do_create_package(acting_user=owner, name="10 x Acupuncture 60", price=Decimal("800.00"),
                                sessions=10, service_ids=[acu60.pk])
    sold, _ = do_sell_package(acting_user=desk, patient=patient, package=package, use_first_session=True,
                              first_session_appointment=visit, payment=(Decimal("800.00"), "card"))
    do_cancel_package(acting_user=desk, patient_package=sold, reason="moving away")
    url = reverse("staff:check_in", args=[visit.pk])
    page = desk_client.get(url).content.decode()
    assert "will be paid via 10 x Acupuncture 60: session 1 of 10" in page
    assert "will not cover this visit" not in page
    assert desk_client.post(url, {"charge": "booked"}).status_code == 302
    line = InvoiceLine.objects.get(appointment=visit, kind="service", removed_at__isnull=True)
    assert (line.covered_by_id, line.session_number) == (sold.pk, 1)


def test_the_check_in_page_says_a_visit_is_already_charged_and_does_not_charge_it_again(
        desk_client, desk, patient, acu60, acu90, visit, sold_pack):
    """Rule 2: staff charged the visit on a manual invoice (its session used); the check-in page
    says where, and checking in keeps that charge rather than charging the visit twice."""
    from tally.clinic.actions.billing import do_create_invoice

    invoice = do_create_invoice(acting_user=desk, patient=patient, lines=[(acu60, visit)])
    url = reverse("staff:check_in", args=[visit.pk])
    page = desk_client.get(url).content.decode()
    assert (f"This visit is already charged on {invoice.number}: Acupuncture 60 min, paid via 10 x Acupuncture 60 "
            "(session 1 of 10). Checking in will not charge it again.") in page
    assert "will be paid via" not in page

    other = desk_client.get(reverse("staff:check_in_preview", args=[visit.pk]),
                            {"charge": "other", "service": acu90.pk}, HTTP_HX_REQUEST="true").content.decode()
    assert f"already charged on {invoice.number}" in other and "remove that line first" in other
    refused = desk_client.post(url, {"charge": "none"})
    assert refused.status_code == 422 and b"remove that line first" in refused.content

    response = desk_client.post(url, {"charge": "booked"}, follow=True)
    assert f"Acupuncture 60 min was already charged on {invoice.number}; it was not charged again." in \
        response.content.decode()
    visit.refresh_from_db()
    sold_pack.refresh_from_db()
    assert visit.status == AppointmentStatus.ATTENDED and sold_pack.sessions_used == 1
    assert list(InvoiceLine.objects.filter(appointment=visit).values_list("invoice_id", flat=True)) == [invoice.pk]


def test_checking_in_keeps_a_manual_charge_of_a_service_other_than_the_booked_one(desk_client, desk, patient, acu90,
                                                                                 visit):
    from tally.clinic.actions.billing import do_create_invoice

    invoice = do_create_invoice(acting_user=desk, patient=patient, lines=[(acu90, visit)])
    assert desk_client.post(reverse("staff:check_in", args=[visit.pk]), {"charge": "booked"}).status_code == 302
    assert list(InvoiceLine.objects.filter(appointment=visit).values_list("invoice_id", flat=True)) == [invoice.pk]


def test_an_integration_account_is_no_practitioner_to_book_with(desk_client, practitioner, owner):
    """An owner account made without a password (an integration's: tokens only, never signs in)
    was offered beside the practitioners when booking, rescheduling and filtering the chart.
    A practitioner with no password of their own stays: they are on the schedule all the same."""
    from tally.clinic.actions.staff_accounts import do_create_staff

    do_create_staff(acting_user=None, username="billing-sync", role="owner", password=None, first_name="Billing",
                    last_name="sync")
    do_create_staff(acting_user=None, username="locum", role="practitioner", password=None, first_name="Lee",
                    last_name="Locum")
    page = desk_client.get(reverse("staff:book")).content.decode()
    assert "Billing sync" not in page
    assert "Lee Locum" in page and practitioner.display_name in page and owner.display_name in page


def test_the_check_in_preview_says_a_first_session_moves_to_the_package_rule_6_picks(
        desk_client, desk, owner, patient, acu60, visit, sold_pack):
    """A renewal whose first session was used for today's visit, while the older package still
    had sessions: the check-in charges the visit via the older one (rule 6: neither expires, so
    the oldest) and gives the renewal's first session back, 1 used to 0. The preview named only
    the older package's session: the renewal's count changed with no word about it."""
    renewal = do_create_package(acting_user=owner, name="5 x Acupuncture 60", price=Decimal("400.00"), sessions=5,
                                service_ids=[acu60.pk])
    new, _ = do_sell_package(acting_user=desk, patient=patient, package=renewal, use_first_session=True,
                             first_session_appointment=visit, payment=(Decimal("400.00"), "card"))
    page = desk_client.get(reverse("staff:check_in", args=[visit.pk])).content.decode()
    assert f"will be paid via {sold_pack.name}: session 1 of 10 · 9 left." in page
    assert "The first session 5 x Acupuncture 60 used for this visit at its sale comes back to it (0 of 5 used)." \
        in page
    assert desk_client.post(reverse("staff:check_in", args=[visit.pk]), {"charge": "booked"}).status_code == 302
    new.refresh_from_db()
    sold_pack.refresh_from_db()
    assert (new.sessions_used, sold_pack.sessions_used) == (0, 1)


def test_the_check_in_preview_warns_of_a_session_used_today_for_no_visit(desk_client, desk, patient, acu60, visit,
                                                                        sold_pack):
    """The same service charged today on an invoice tied to no visit (added on an invoice's edit
    page) has used a session already: checking the visit in uses a second one for the same day
    (POSSIBLE_DOUBLE_USE), and the page said nothing of it."""
    from tally.clinic.actions.billing import do_create_invoice

    invoice = do_create_invoice(acting_user=desk, patient=patient, lines=[(acu60, None)])
    page = desk_client.get(reverse("staff:check_in", args=[visit.pk])).content.decode()
    assert "will be paid via 10 x Acupuncture 60: session 2 of 10 · 8 left." in page
    assert (f"Acupuncture 60 min is already charged the same day on {invoice.number}, for no visit, paid via "
            "10 x Acupuncture 60 (session 1): if that was this visit, remove that line first") in page
