from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.urls import reverse

from tally.clinic.models import Invoice, InvoiceLine, Payment


def test_invoice_shows_which_session_each_covered_line_was(desk_client, charged_visit):
    _, invoice, _ = charged_visit
    page = desk_client.get(reverse("staff:invoice", args=[invoice.pk])).content.decode()
    assert "Session 1 of 10 · 9 left" in page


def test_printable_invoice_says_session_1_of_10(desk_client, charged_visit, clinic, patient):
    _, invoice, _ = charged_visit
    response = desk_client.get(reverse("staff:invoice_print", args=[invoice.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    assert "Session 1 of 10 · 9 left" in page
    assert "Test Clinic" in page and patient.patient_number in page
    assert "@media print" in page


def test_pdf_is_a_pdf(desk_client, charged_visit):
    _, invoice, _ = charged_visit
    response = desk_client.get(reverse("staff:invoice_pdf", args=[invoice.pk]))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF")


def test_pdf_without_weasyprint_is_a_clear_page_not_a_500(desk_client, charged_visit, monkeypatch):
    from tally.staff.views import invoices

    def broken(html, base_url):
        raise OSError("cannot load library 'libpango-1.0-0'")

    monkeypatch.setattr(invoices, "html_to_pdf", broken)
    _, invoice, _ = charged_visit
    response = desk_client.get(reverse("staff:invoice_pdf", args=[invoice.pk]))
    assert response.status_code == 503
    assert b"PDFs cannot be made on this server" in response.content


def test_edit_removes_a_covered_line_and_the_session_comes_back(desk_client, charged_visit, sold_pack):
    _, invoice, line = charged_visit
    edit_page = desk_client.get(reverse("staff:invoice_edit", args=[invoice.pk])).content.decode()
    assert f'aria-label="Remove {line.description}"' in edit_page
    response = desk_client.post(reverse("staff:remove_line", args=[invoice.pk, line.pk]), {"reason": "wrong day"})
    assert response.status_code == 302
    line.refresh_from_db()
    sold_pack.refresh_from_db()
    assert line.removed_at is not None and sold_pack.sessions_used == 0


def test_edit_adds_a_service(desk_client, charged_visit, acu90):
    _, invoice, _ = charged_visit
    response = desk_client.post(reverse("staff:add_line", args=[invoice.pk]), {"service": acu90.pk})
    assert response.status_code == 302
    assert InvoiceLine.objects.filter(invoice=invoice, service=acu90, removed_at__isnull=True).exists()


def test_the_edit_page_of_an_active_packages_sale_says_uncovered_charges_go_on_a_new_invoice(
        desk_client, patient, sold_pack, acu60, acu90):
    """Rule 1 after activation: a service the package does not cover would leave its sale
    unpaid, so the page says where it goes (one the package covers still may go here)."""
    sale = sold_pack.sale_invoice
    page = desk_client.get(reverse("staff:invoice_edit", args=[sale.pk])).content.decode()
    assert "a service the package does not cover goes on a new invoice" in page
    assert reverse("staff:invoice_new", args=[patient.pk]) in page
    refused = desk_client.post(reverse("staff:add_line", args=[sale.pk]), {"service": acu90.pk})
    assert refused.status_code == 422 and b"Charge it on a new invoice" in refused.content
    assert not InvoiceLine.objects.filter(invoice=sale, service=acu90).exists()
    covered = desk_client.post(reverse("staff:add_line", args=[sale.pk]), {"service": acu60.pk})
    assert covered.status_code == 302
    assert InvoiceLine.objects.get(invoice=sale, service=acu60).covered_by_id == sold_pack.pk


def test_the_edit_page_of_an_ordinary_invoice_has_no_sale_note(desk_client, charged_visit):
    _, invoice, _ = charged_visit
    page = desk_client.get(reverse("staff:invoice_edit", args=[invoice.pk])).content.decode()
    assert "goes on a new invoice" not in page


def test_removing_a_package_sale_line_is_refused_on_the_page(desk_client, sold_pack):
    sale_line = InvoiceLine.objects.get(invoice=sold_pack.sale_invoice, kind="package_sale")
    response = desk_client.post(reverse("staff:remove_line", args=[sold_pack.sale_invoice_id, sale_line.pk]), {})
    assert response.status_code == 422
    assert b"cannot be removed line by line" in response.content


def manual_invoice(desk_client, patient, service) -> Invoice:
    response = desk_client.post(reverse("staff:invoice_new", args=[patient.pk]), {"service": service.pk})
    assert response.status_code == 302
    return Invoice.objects.latest("pk")


def test_partial_payment_then_the_rest(desk_client, patient, acu90):
    invoice = manual_invoice(desk_client, patient, acu90)
    url = reverse("staff:payment", args=[invoice.pk])
    assert desk_client.post(url, {"amount": "30.00", "method": "cash"}).status_code == 302
    page = desk_client.get(reverse("staff:invoice", args=[invoice.pk])).content.decode()
    assert "partially paid" in page and "$100.00" in page
    too_much = desk_client.post(url, {"amount": "200.00", "method": "cash"})
    assert too_much.status_code == 422 and b"more than the balance" in too_much.content
    assert desk_client.post(url, {"amount": "100.00", "method": "card"}).status_code == 302
    assert Invoice.objects.get(pk=invoice.pk).status == "paid"


def test_refund_needs_a_reason_and_is_a_negative_payment(desk_client, patient, acu90):
    invoice = manual_invoice(desk_client, patient, acu90)
    desk_client.post(reverse("staff:payment", args=[invoice.pk]), {"amount": "130.00", "method": "card"})
    url = reverse("staff:refund", args=[invoice.pk])
    assert desk_client.post(url, {"amount": "30.00", "method": "card"}).status_code == 422
    assert desk_client.post(url, {"amount": "30.00", "method": "card", "reason": "goodwill"}).status_code == 302
    refund = Payment.objects.get(invoice=invoice, amount__lt=0)
    assert refund.amount == Decimal("-30.00") and refund.reason == "goodwill"


def test_the_refund_page_of_an_active_packages_sale_says_to_cancel_the_package(desk_client, sold_pack):
    invoice = sold_pack.sale_invoice
    url = reverse("staff:refund", args=[invoice.pk])
    page = desk_client.get(url).content.decode()
    assert "cancel the package with a refund" in page
    assert reverse("staff:cancel_package", args=[sold_pack.pk]) in page
    refused = desk_client.post(url, {"amount": "100.00", "method": "card", "reason": "goodwill"})
    assert refused.status_code == 422 and b"cancel it with a refund" in refused.content
    assert not Payment.objects.filter(invoice=invoice, amount__lt=0).exists()


def test_void_needs_a_reason_and_refuses_a_paid_invoice(desk_client, patient, acu90):
    invoice = manual_invoice(desk_client, patient, acu90)
    url = reverse("staff:void", args=[invoice.pk])
    assert desk_client.post(url, {"reason": ""}).status_code == 422
    assert desk_client.post(url, {"reason": "duplicate"}).status_code == 302
    assert Invoice.objects.get(pk=invoice.pk).status == "void"

    paid = manual_invoice(desk_client, patient, acu90)
    desk_client.post(reverse("staff:payment", args=[paid.pk]), {"amount": "130.00", "method": "card"})
    refused = desk_client.post(reverse("staff:void", args=[paid.pk]), {"reason": "duplicate"})
    assert refused.status_code == 422 and b"refund it before voiding" in refused.content


def test_practitioners_see_invoices_read_only(practitioner_client, charged_visit):
    _, invoice, line = charged_visit
    page = practitioner_client.get(reverse("staff:invoice", args=[invoice.pk])).content.decode()
    assert "Session 1 of 10 · 9 left" in page
    assert "Record payment" not in page and ">Edit<" not in page
    assert practitioner_client.post(reverse("staff:remove_line", args=[invoice.pk, line.pk])).status_code == 403


def test_a_line_that_took_a_removed_lines_session_shows_it_and_the_sessions_left(desk_client, desk, patient,
                                                                                sold_pack, acu60):
    from tally.clinic.actions.billing import do_add_line, do_create_invoice, do_remove_line

    invoice = do_create_invoice(acting_user=desk, patient=patient, lines=[(acu60, None)] * 3)
    do_remove_line(acting_user=desk, invoice=invoice, line_id=invoice.live_lines()[1].pk)
    do_add_line(acting_user=desk, invoice=invoice, service=acu60)
    page = desk_client.get(reverse("staff:invoice", args=[invoice.pk])).content.decode()
    assert page.count("Session 2 of 10") == 1 and "Session 2 of 10 · 7 left" in page
    assert "Session 3 of 10 · 7 left" in page and "Session 1 of 10 · 9 left" in page


def test_a_new_invoice_on_the_day_of_a_visit_charges_that_visit_so_its_check_in_does_not_again(
        desk_client, patient, visit, sold_pack, acu60):
    """The chart's New invoice charged the service tied to no visit: checking the visit in later
    charged it a second time, two sessions for one visit (POSSIBLE_DOUBLE_USE). Rule 2's manual
    invoice "for a visit" needs the visit: today's uncharged one is offered, and chosen."""
    url = reverse("staff:invoice_new", args=[patient.pk])
    page = desk_client.get(url).content.decode()
    assert f'<option value="{visit.pk}" selected>10:00 Acupuncture 60 min (Booked)</option>' in page
    assert desk_client.post(url, {"service": acu60.pk, "visit": visit.pk}).status_code == 302
    line = InvoiceLine.objects.get(invoice=Invoice.objects.latest("pk"))
    assert (line.appointment_id, line.covered_by_id) == (visit.pk, sold_pack.pk)

    assert desk_client.post(reverse("staff:check_in", args=[visit.pk]), {"charge": "booked"}).status_code == 302
    sold_pack.refresh_from_db()
    assert sold_pack.sessions_used == 1
    assert InvoiceLine.objects.filter(appointment=visit, removed_at__isnull=True).count() == 1
    # Charged now, it is offered no more.
    assert "10:00 Acupuncture 60 min (" not in desk_client.get(url).content.decode()


def test_adding_a_service_on_an_invoice_of_the_visits_day_can_charge_that_visit(
        desk, desk_client, patient, visit, sold_pack, acu60, acu90):
    """The invoice page's Add service charged a line tied to no visit, as the chart's New invoice
    did: the visit's check-in then used a second session. It offers the uncharged visits of the
    invoice's day, as New invoice does, and the check-in keeps the charge so tied (rule 2)."""
    from tally.clinic.actions.billing import do_create_invoice

    invoice = do_create_invoice(acting_user=desk, patient=patient, lines=[(acu90, None)])
    page = desk_client.get(reverse("staff:invoice_edit", args=[invoice.pk])).content.decode()
    assert f'<option value="{visit.pk}">10:00 Acupuncture 60 min (Booked)</option>' in page
    response = desk_client.post(reverse("staff:add_line", args=[invoice.pk]), {"service": acu60.pk, "visit": visit.pk})
    assert response.status_code == 302
    line = InvoiceLine.objects.get(invoice=invoice, service=acu60)
    assert (line.appointment_id, line.covered_by_id) == (visit.pk, sold_pack.pk)

    assert desk_client.post(reverse("staff:check_in", args=[visit.pk]), {"charge": "booked"}).status_code == 302
    sold_pack.refresh_from_db()
    assert sold_pack.sessions_used == 1
    assert InvoiceLine.objects.filter(appointment=visit, removed_at__isnull=True).count() == 1
    page = desk_client.get(reverse("staff:invoice_edit", args=[invoice.pk])).content.decode()
    assert "10:00 Acupuncture 60 min (" not in page


def test_an_invoice_of_another_day_offers_no_visit_of_today(desk, desk_client, patient, visit, acu90):
    from tally.clinic.actions.billing import do_create_invoice

    invoice = do_create_invoice(acting_user=desk, patient=patient, lines=[(acu90, None)])
    Invoice.objects.filter(pk=invoice.pk).update(issued_at=invoice.issued_at - dt.timedelta(days=3))
    page = desk_client.get(reverse("staff:invoice_edit", args=[invoice.pk])).content.decode()
    assert "10:00 Acupuncture 60 min (" not in page
