from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from tally.clinic.actions.sales import do_cancel_package
from tally.clinic.models import AuditEvent, InvoiceLine, PatientPackage, Payment


def sell_url(patient) -> str:
    return reverse("staff:sell", args=[patient.pk])


def test_use_first_session_must_be_answered(desk_client, patient, ten_pack):
    response = desk_client.post(sell_url(patient), {"package": ten_pack.pk})
    assert response.status_code == 422
    assert b"Say whether the first session is used today" in response.content
    assert not PatientPackage.objects.exists()


def test_the_choice_has_no_default(desk_client, patient, ten_pack):
    page = desk_client.get(sell_url(patient)).content.decode()
    assert 'name="use_first_session" value="yes" required id="id_use_first_session_0">' in page
    assert "checked" not in page.split('id="id_use_first_session"')[1].split("</fieldset>")[0]


def test_sell_with_first_session_and_full_payment(desk_client, patient, ten_pack, visit):
    response = desk_client.post(sell_url(patient), {
        "package": ten_pack.pk, "use_first_session": "yes", "first_session_appointment": visit.pk,
        "payment_amount": "800.00", "payment_method": "card"})
    assert response.status_code == 302
    sold = PatientPackage.objects.get()
    assert sold.activated_at is not None
    assert sold.sessions_used == 1
    assert sold.first_session_appointment_id == visit.pk
    invoice_page = desk_client.get(response["Location"]).content.decode()
    assert "Session 1 of 10 · 9 left" in invoice_page


def test_sell_without_first_session_and_without_payment(desk_client, patient, ten_pack):
    response = desk_client.post(sell_url(patient), {"package": ten_pack.pk, "use_first_session": "no"})
    assert response.status_code == 302
    sold = PatientPackage.objects.get()
    assert sold.activated_at is None and sold.sessions_used == 0
    assert not sold.use_first_session


def test_it_warns_about_a_visit_today_that_the_sale_would_leave_uncounted(desk_client, patient, ten_pack, visit):
    page = desk_client.get(sell_url(patient)).content.decode()
    assert "has a visit today that no package counts" in page
    assert "10:00 Acupuncture 60 min" in page


def test_no_warning_for_a_booked_visit_a_package_she_holds_will_count(desk_client, desk, patient, ten_pack,
                                                                       sold_pack, visit):
    """A renewal on the day of a visit: the sell page said "no package counts" the visit while its
    check-in page said the package she holds would pay it. Answering Yes as the warning asked
    used the new package's first session, which the check-in then moved to the old package."""
    page = desk_client.get(sell_url(patient)).content.decode()
    assert "will be paid via" in desk_client.get(reverse("staff:check_in", args=[visit.pk])).content.decode()
    assert "has a visit today that no package counts" not in page
    do_cancel_package(acting_user=desk, patient_package=sold_pack, reason="moved away")  # now nothing covers it
    assert "has a visit today that no package counts" in desk_client.get(sell_url(patient)).content.decode()


def test_no_warning_without_a_visit_today(desk_client, patient, ten_pack):
    assert b"has a visit today" not in desk_client.get(sell_url(patient)).content


def test_an_overpayment_is_shown_on_the_form(desk_client, patient, ten_pack):
    response = desk_client.post(sell_url(patient), {
        "package": ten_pack.pk, "use_first_session": "no", "payment_amount": "900.00", "payment_method": "cash"})
    assert response.status_code == 422
    assert b"more than the price" in response.content
    assert not PatientPackage.objects.exists()


def test_practitioners_cannot_sell(practitioner_client, patient, ten_pack):
    response = practitioner_client.post(sell_url(patient), {"package": ten_pack.pk, "use_first_session": "no"})
    assert response.status_code == 403
    assert not PatientPackage.objects.exists()


def test_a_partly_paid_sale_says_the_first_session_waits_for_the_payment(desk_client, patient, ten_pack, visit):
    """SPEC rule 5: if the sale is not yet fully paid, the ticked first session is used by the payment
    that activates the package. The message said 'The first session is used.' beside '0 of 10 used'."""
    response = desk_client.post(sell_url(patient), {
        "package": ten_pack.pk, "use_first_session": "yes", "first_session_appointment": visit.pk,
        "payment_amount": "300.00", "payment_method": "card"}, follow=True)
    sold = PatientPackage.objects.get()
    assert (sold.activated_at, sold.sessions_used) == (None, 0)
    page = response.content.decode()
    assert "The first session is used." not in page
    assert "The first session will be used by the payment that completes the sale." in page

    paid = desk_client.post(sell_url(patient), {
        "package": ten_pack.pk, "use_first_session": "yes", "payment_amount": "800.00",
        "payment_method": "card"}, follow=True)
    assert "The first session is used." in paid.content.decode()


def cancel_url(sold) -> str:
    return reverse("staff:cancel_package", args=[sold.pk])


def test_the_chart_offers_cancelling_a_package_that_voiding_its_sale_refers_to(desk_client, patient, sold_pack):
    """Voiding a paid package sale is refused with 'cancel the package (with a refund) instead'
    (rule 11), which the web pages had no way to do."""
    from tally.clinic.actions.billing import do_void_invoice
    from tally.clinic.errors import ClinicError

    with pytest.raises(ClinicError, match="cancel the package"):
        do_void_invoice(acting_user=sold_pack.sale_invoice.created_by, invoice=sold_pack.sale_invoice,
                        reason="changed her mind")
    chart = desk_client.get(reverse("staff:chart", args=[patient.pk])).content.decode()
    assert f'href="{cancel_url(sold_pack)}"' in chart


def test_cancelling_a_package_with_a_refund_closes_it_and_balances_the_sale(desk_client, patient, sold_pack,
                                                                          charged_visit):
    page = desk_client.get(cancel_url(sold_pack)).content.decode()
    assert "1 of 10 used · 9 left" in page
    refused = desk_client.post(cancel_url(sold_pack), {"reason": "", "refund_amount": "720.00",
                                                        "refund_method": "card"})
    assert refused.status_code == 422
    assert 'value="720.00"' in refused.content.decode()  # the amount typed is kept
    too_much = desk_client.post(cancel_url(sold_pack), {"reason": "moving away", "refund_amount": "9000.00",
                                                         "refund_method": "card"})
    assert too_much.status_code == 422 and b"more than the" in too_much.content

    response = desk_client.post(cancel_url(sold_pack), {"reason": "moving away", "refund_amount": "720.00",
                                                         "refund_method": "card"})
    assert response.status_code == 302 and response["Location"] == reverse("staff:chart", args=[patient.pk])
    sold_pack.refresh_from_db()
    assert sold_pack.status == "cancelled" and sold_pack.sessions_used == 1
    refund = Payment.objects.get(invoice=sold_pack.sale_invoice, amount__lt=0)
    assert refund.amount == Decimal("-720.00") and refund.method == "card"
    credit = InvoiceLine.objects.get(invoice=sold_pack.sale_invoice, kind="package_refund")
    assert credit.amount == Decimal("-720.00")
    chart = desk_client.get(reverse("staff:chart", args=[patient.pk])).content.decode()
    assert "badge-cancelled" in chart and f'href="{cancel_url(sold_pack)}"' not in chart


def test_cancelling_without_a_refund(desk_client, sold_pack):
    response = desk_client.post(cancel_url(sold_pack), {"reason": "sold by mistake"})
    assert response.status_code == 302
    sold_pack.refresh_from_db()
    assert sold_pack.status == "cancelled"
    assert not Payment.objects.filter(invoice=sold_pack.sale_invoice, amount__lt=0).exists()


def test_practitioners_cannot_cancel_packages(practitioner_client, sold_pack):
    assert practitioner_client.post(cancel_url(sold_pack), {"reason": "x"}).status_code == 403
    sold_pack.refresh_from_db()
    assert sold_pack.status == "active"


def expiry_url(package) -> str:
    return reverse("staff:package_expiry", args=[package.pk])


def test_an_owner_extends_a_packages_expiry_from_the_chart(owner_client, desk_client, patient, sold_pack, clinic):
    """Rule 12: an owner may extend the expiry. It ends at the end of the chosen day in the
    clinic's time zone; the chart offers it to owners only."""
    assert f'href="{expiry_url(sold_pack)}"' in owner_client.get(reverse("staff:chart", args=[patient.pk])).content.decode()
    assert f'href="{expiry_url(sold_pack)}"' not in desk_client.get(
        reverse("staff:chart", args=[patient.pk])).content.decode()
    page = owner_client.get(expiry_url(sold_pack)).content.decode()
    assert "It has no expiry." in page
    day = timezone.localdate(timezone=clinic.tz) + dt.timedelta(days=90)
    response = owner_client.post(expiry_url(sold_pack), {"expires_on": day.isoformat()})
    assert response.status_code == 302 and response["Location"] == reverse("staff:chart", args=[patient.pk])
    sold_pack.refresh_from_db()
    assert timezone.localtime(sold_pack.expires_at, clinic.tz).date() == day
    assert timezone.localtime(sold_pack.expires_at, clinic.tz).time() == dt.time(23, 59, 59, 999999)
    assert AuditEvent.objects.filter(action="package.set_expiry", object_id=str(sold_pack.pk)).exists()
    assert f"expires {day:%-d %b %Y}" in owner_client.get(reverse("staff:chart", args=[patient.pk])).content.decode()


def test_an_expiry_before_the_activation_is_refused_and_the_date_typed_is_kept(owner_client, sold_pack):
    response = owner_client.post(expiry_url(sold_pack), {"expires_on": "2020-01-01"})
    assert response.status_code == 422
    assert b"after the activation" in response.content and b'value="2020-01-01"' in response.content
    sold_pack.refresh_from_db()
    assert sold_pack.expires_at is None


def test_only_owners_change_an_expiry(desk_client, sold_pack):
    assert desk_client.post(expiry_url(sold_pack), {"expires_on": "2030-01-01"}).status_code == 403
    sold_pack.refresh_from_db()
    assert sold_pack.expires_at is None
