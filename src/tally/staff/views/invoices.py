"""Invoices: lines ("Session 3 of 10 · 7 left" on lines paid via a package), editing,
payments, refunds, voids, and a printable page and PDF."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import messages
from django.db.models import Prefetch
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from tally.clinic.actions.billing import (
    do_add_line,
    do_create_invoice,
    do_record_payment,
    do_remove_line,
    do_void_invoice,
    live_package_sold_on,
)
from tally.clinic.audit import Shown
from tally.clinic.errors import ClinicError
from tally.clinic.models import Invoice, InvoiceLine, Patient
from tally.clinic.models.billing import ZERO

from ..forms import ChargeForm, PaymentForm, ReasonForm, RefundForm
from .auth import safe_next
from .common import (
    ANY_STAFF,
    DESK,
    StaffRequest,
    can,
    posted,
    refuse_or_raise,
    show_error,
    shows,
    staff_view,
)
from .sales import uncharged_visits_on

log = logging.getLogger(__name__)


def invoice_for_page(invoice_id: int, request: StaffRequest) -> Invoice:
    """The invoice with its lines and payments; every page that loads it shows it (audited)."""
    lines = InvoiceLine.objects.select_related("covered_by", "service", "appointment").order_by("id")
    invoice = get_object_or_404(
        Invoice.objects.select_related("patient").prefetch_related(Prefetch("lines", queryset=lines), "payments"),
        pk=invoice_id,
    )
    shows(request, "invoice.view", Shown(invoice.patient_id, "invoice", invoice.pk))
    return invoice


def invoice_context(request: StaffRequest, invoice: Invoice, *, edit: bool = False) -> dict[str, Any]:
    lines = list(invoice.lines.all())
    editable = can(request.user, *DESK) and invoice.voided_at is None
    return {
        "invoice": invoice,
        "patient": invoice.patient,
        "live_lines": [ln for ln in lines if ln.removed_at is None],
        "removed_lines": [ln for ln in lines if ln.removed_at is not None],
        "payments": list(invoice.payments.all()),
        "can_edit": editable,
        "edit": edit and editable,
        "add_line_form": add_line_form(request, invoice) if edit and editable else None,
        # Rule 1 after activation: a charge the package does not cover would leave its sale
        # unpaid and is refused, so the page says where it goes.
        "sold_package": live_package_sold_on(invoice) if edit and editable else None,
    }


def add_line_form(request: StaffRequest, invoice: Invoice, data: Any = None) -> ChargeForm:
    """Add service, offering the invoice day's visits not charged yet: a line for one of them
    is that visit's charge, which its check-in keeps (rule 2), not a second session."""
    tz = request.clinic.tz
    visits = uncharged_visits_on(invoice.patient, invoice.issued_at.astimezone(tz).date(), tz)
    return ChargeForm(data, visits=visits, visit_label="For a visit that day")


@staff_view(*ANY_STAFF)
def invoice_detail(request: StaffRequest, invoice_id: int) -> HttpResponse:
    invoice = invoice_for_page(invoice_id, request)
    return render(request, "staff/invoices/detail.html", invoice_context(request, invoice))


@staff_view(*DESK)
def invoice_edit(request: StaffRequest, invoice_id: int) -> HttpResponse:
    invoice = invoice_for_page(invoice_id, request)
    return render(request, "staff/invoices/detail.html", invoice_context(request, invoice, edit=True))


def invoice_url(invoice: Invoice, edit: bool = False) -> str:
    return reverse("staff:invoice_edit" if edit else "staff:invoice", args=[invoice.pk])


@staff_view(*DESK)
def add_line(request: StaffRequest, invoice_id: int) -> HttpResponse:
    invoice = invoice_for_page(invoice_id, request)
    if request.method != "POST":
        return redirect(invoice_url(invoice, edit=True))
    form = add_line_form(request, invoice, request.POST)
    if form.is_valid():
        try:
            line = do_add_line(acting_user=request.user, invoice=invoice, service=form.cleaned_data["service"],
                               appointment=form.cleaned_data["visit"])
        except ClinicError as exc:
            if (page := refuse_or_raise(request, exc)) is not None:
                return page
            show_error(form, exc)
        else:
            messages.success(request, f"Added {line.description}." + (
                f" Paid via {package.name}." if (package := line.covered_by) is not None else ""))
            return redirect(invoice_url(invoice, edit=True))
    context = invoice_context(request, invoice_for_page(invoice_id, request), edit=True) | {"add_line_form": form}
    return render(request, "staff/invoices/detail.html", context, status=422)


@staff_view(*DESK)
def remove_line(request: StaffRequest, invoice_id: int, line_id: int) -> HttpResponse:
    invoice = invoice_for_page(invoice_id, request)
    line = get_object_or_404(InvoiceLine, pk=line_id, invoice=invoice)
    form = ReasonForm(posted(request))
    if request.method == "POST" and form.is_valid():
        try:
            do_remove_line(acting_user=request.user, invoice=invoice, line_id=line.pk,
                           reason=form.cleaned_data["reason"])
        except ClinicError as exc:
            if (page := refuse_or_raise(request, exc)) is not None:
                return page
            show_error(form, exc)
        else:
            back = " Its session went back to the package." if line.covered_by_id else ""
            messages.success(request, f"Removed {line.description} from {invoice.number}.{back}")
            # Back where staff came from (the investigation of a double use), never off the site.
            return redirect(safe_next(request, invoice_url(invoice, edit=True)))
    intro = f"Remove “{line.description}” from {invoice.number}."
    if line.covered_by_id:
        intro += " It was paid via a package: the session goes back to the package."
    return render(request, "staff/form_page.html", {
        "form": form, "title": f"Remove a line from {invoice.number}", "intro": intro,
        "submit": "Remove the line", "back_url": safe_next(request, invoice_url(invoice, edit=True)), "danger": True,
    }, status=422 if form.is_bound and form.errors else 200)


def money_form_page(request: StaffRequest, invoice: Invoice, form: Any, *, title: str, submit: str,
                    intro: str = "", danger: bool = False, intro_link: dict[str, str] | None = None) -> HttpResponse:
    return render(request, "staff/form_page.html", {
        "form": form, "title": title, "intro": intro, "submit": submit, "back_url": invoice_url(invoice),
        "danger": danger, "invoice": invoice, "intro_link": intro_link,
    }, status=422 if form.is_bound else 200)


@staff_view(*DESK)
def record_payment(request: StaffRequest, invoice_id: int) -> HttpResponse:
    invoice = invoice_for_page(invoice_id, request)
    form = PaymentForm(posted(request), initial={"amount": max(invoice.balance, ZERO) or None})
    if request.method == "POST" and form.is_valid():
        try:
            payment = do_record_payment(acting_user=request.user, invoice=invoice, **form.cleaned_data)
        except ClinicError as exc:
            if (page := refuse_or_raise(request, exc)) is not None:
                return page
            show_error(form, exc)
        else:
            messages.success(request, f"Recorded a payment of {payment.amount} ({payment.method}) on {invoice.number}.")
            return redirect(invoice_url(invoice))
    return money_form_page(request, invoice, form, title=f"Record a payment on {invoice.number}",
                           submit="Record payment", intro="A payment smaller than the balance is a partial payment.")


@staff_view(*DESK)
def refund(request: StaffRequest, invoice_id: int) -> HttpResponse:
    invoice = invoice_for_page(invoice_id, request)
    form = RefundForm(posted(request))
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            do_record_payment(acting_user=request.user, invoice=invoice, amount=-data["amount"],
                              method=data["method"], reason=data["reason"])
        except ClinicError as exc:
            if (page := refuse_or_raise(request, exc)) is not None:
                return page
            show_error(form, exc)
        else:
            messages.success(request, f"Refunded {data['amount']} on {invoice.number}.")
            return redirect(invoice_url(invoice))
    intro, link = "A refund is recorded as a negative payment with its reason.", None
    if (package := live_package_sold_on(invoice)) is not None:
        # Rule 11: the refund of a package is its cancellation; a plain refund here is refused
        # when it would leave the sale unpaid (an overpayment can still be given back).
        intro += (f" This invoice sold {package.name}: to give its money back, cancel the package with a refund, "
                  "so that it cannot be used unpaid.")
        link = {"url": reverse("staff:cancel_package", args=[package.pk]), "label": f"Cancel {package.name}"}
    return money_form_page(request, invoice, form, title=f"Refund on {invoice.number}", submit="Record refund",
                           intro=intro, danger=True, intro_link=link)


@staff_view(*DESK)
def void(request: StaffRequest, invoice_id: int) -> HttpResponse:
    invoice = invoice_for_page(invoice_id, request)
    form = ReasonForm(posted(request), reason_required=True)
    if request.method == "POST" and form.is_valid():
        try:
            do_void_invoice(acting_user=request.user, invoice=invoice, reason=form.cleaned_data["reason"])
        except ClinicError as exc:
            if (page := refuse_or_raise(request, exc)) is not None:
                return page
            show_error(form, exc)
        else:
            messages.success(request, f"Voided {invoice.number}. Sessions its lines used went back to the packages.")
            return redirect(invoice_url(invoice))
    return money_form_page(
        request, invoice, form, title=f"Void {invoice.number}", submit="Void the invoice", danger=True,
        intro=("Voiding keeps the invoice, marked void, and gives back every session its lines used. "
               "An invoice with payments must be refunded first; a package sale with payments or used sessions "
               "is cancelled instead."),
    )


@staff_view(*DESK)
def invoice_new(request: StaffRequest, patient_id: int) -> HttpResponse:
    """A manual invoice for one service (more can be added on the invoice)."""
    patient = get_object_or_404(Patient, pk=patient_id)
    shows(request, "patient.view", Shown(patient.pk, "patient", patient.pk))
    visits = uncharged_visits_on(patient, timezone.localdate(timezone=request.clinic.tz), request.clinic.tz)
    initial = {"visit": visits[0].pk} if len(visits) == 1 else {}
    form = ChargeForm(posted(request), initial=initial, visits=visits)
    if request.method == "POST" and form.is_valid():
        try:
            invoice = do_create_invoice(acting_user=request.user, patient=patient,
                                        lines=[(form.cleaned_data["service"], form.cleaned_data["visit"])])
        except ClinicError as exc:
            if (page := refuse_or_raise(request, exc)) is not None:
                return page
            show_error(form, exc)
        else:
            messages.success(request, f"Created {invoice.number}.")
            return redirect(invoice_url(invoice))
    return render(request, "staff/form_page.html", {
        "form": form, "title": f"New invoice for {patient.full_name} ({patient.patient_number})",
        "submit": "Create invoice", "back_url": reverse("staff:chart", args=[patient.pk]),
        "intro": ("The service is charged today; a package the patient holds covers it when the rules allow. "
                  "For a visit of today, choose it: its check-in then keeps this charge."),
    }, status=422 if form.is_bound else 200)


def printable_context(request: StaffRequest, invoice: Invoice) -> dict[str, Any]:
    return invoice_context(request, invoice) | {"clinic": request.clinic, "printing": True}


@staff_view(*ANY_STAFF)
def invoice_print(request: StaffRequest, invoice_id: int) -> HttpResponse:
    invoice = invoice_for_page(invoice_id, request)
    return render(request, "staff/invoices/print.html", printable_context(request, invoice))


def html_to_pdf(html: str, base_url: str) -> bytes:
    """The PDF of Tally's own HTML. WeasyPrint's default fetcher opens any http(s), ftp or
    file URL the HTML names: the server would fetch from the clinic's network, draw a local
    file into a patient's invoice, or call itself (a worker waiting on a worker). Only inline
    data: URLs are read; the page's styles are inline."""
    import weasyprint  # imported here: it loads pango at import time
    from weasyprint.urls import URLFetcher

    return weasyprint.HTML(string=html, base_url=base_url,
                           url_fetcher=URLFetcher(allowed_protocols={"data"}, allow_redirects=False)).write_pdf()


@staff_view(*ANY_STAFF)
def invoice_pdf(request: StaffRequest, invoice_id: int) -> HttpResponse:
    invoice = invoice_for_page(invoice_id, request)
    html = render_to_string("staff/invoices/print.html", printable_context(request, invoice) | {"pdf": True},
                            request=request)
    try:
        pdf = html_to_pdf(html, request.build_absolute_uri("/"))
    except (ImportError, OSError) as exc:  # WeasyPrint missing, or pango not installed
        log.warning("PDF unavailable: %s", exc)
        return render(request, "staff/refused.html", {
            "title": "PDF unavailable",
            "message": ("PDFs cannot be made on this server (WeasyPrint or its system libraries are missing). "
                        "Use the printable page and your browser's Print → Save as PDF instead."),
            "link": reverse("staff:invoice_print", args=[invoice.pk]), "link_text": "Open the printable invoice",
        }, status=503)
    response = HttpResponse(pdf, content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="{invoice.number}.pdf"'
    return response
