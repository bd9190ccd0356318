"""Invoices: manual invoices, lines, payments and refunds, voids."""

from typing import Any, Literal

from django.db.models import Prefetch
from django.http import HttpRequest
from ninja import Query, Router, Status

from tally.clinic.actions.billing import (
    do_add_line,
    do_create_invoice,
    do_record_payment,
    do_remove_line,
    do_void_invoice,
)
from tally.clinic.models import Appointment, Invoice, InvoiceLine, Patient, Service
from tally.clinic.queries import invoices_in_status

from .. import render
from ..idempotency import clinic_write
from ..lookups import clinic_tz, get_or_404, get_referenced, viewer
from ..pagination import paginate
from ..reads import Shown, audit_read
from ..schemas import (
    READ_ERRORS,
    WRITE_ERRORS,
    DateRange,
    InvoiceIn,
    InvoiceLineOut,
    InvoiceOut,
    InvoicePage,
    LineIn,
    PageParams,
    PaymentIn,
    PaymentOut,
    VoidIn,
)
from ..types import Id, LongText, resolve_moment

router = Router(tags=["invoices"])

InvoiceStatus = Literal["unpaid", "partially_paid", "paid", "void"]


def invoices() -> Any:
    """With lines and payments in two queries, whatever the number of invoices."""
    return Invoice.objects.prefetch_related(
        Prefetch("lines", queryset=InvoiceLine.objects.order_by("id")), "payments"
    )


def _line_target(line: LineIn, field: str) -> tuple[Service, Appointment | None]:
    service = get_referenced(Service.objects.all(), line.service_id, f"{field}service_id", "service")
    appointment = get_referenced(Appointment.objects.all(), line.appointment_id, f"{field}appointment_id",
                                 "appointment")
    assert service is not None
    return service, appointment


@router.post("/invoices", response={201: InvoiceOut, **WRITE_ERRORS})
@clinic_write
def create_invoice(request: HttpRequest, payload: InvoiceIn) -> Status:
    """A manual invoice; each service line runs rules 1-6 (rule 2)."""
    tz = clinic_tz()
    invoice = do_create_invoice(
        acting_user=viewer(request),
        patient=get_referenced(Patient.objects.all(), payload.patient_id, "patient_id", "patient"),
        lines=[_line_target(line, f"lines.{i}.") for i, line in enumerate(payload.lines)],
        issued_at=resolve_moment(payload.issued_at, tz) if payload.issued_at else None,
    )
    return Status(201, render.invoice(invoice, tz))


@router.get("/invoices/{invoice_id}", response={200: InvoiceOut, **READ_ERRORS})
def get_invoice(request: HttpRequest, invoice_id: Id) -> dict[str, Any]:
    invoice = get_or_404(invoices(), invoice_id, "invoice")
    audit_read(request, "invoice.view", [Shown(invoice.patient_id, "invoice", invoice.pk)])
    return render.invoice(invoice, clinic_tz())


@router.get("/patients/{patient_id}/invoices", response={200: InvoicePage, **READ_ERRORS})
def patient_invoices(
    request: HttpRequest,
    patient_id: Id,
    page: Query[PageParams],
    period: Query[DateRange],
    status: InvoiceStatus | None = None,
) -> dict[str, Any]:
    """The chart's invoices, oldest first; `to` as a bare date includes that day."""
    tz = clinic_tz()
    patient = get_or_404(Patient.objects.all(), patient_id, "patient")
    rows = invoices().filter(patient=patient)
    if period.date_from is not None:
        rows = rows.filter(issued_at__gte=resolve_moment(period.date_from, tz))
    if period.date_to is not None:
        rows = rows.filter(issued_at__lte=resolve_moment(period.date_to, tz, bare_date_means_end=True))
    if status is not None:
        rows = invoices_in_status(rows, status)
    found = paginate(rows, page, keys=("issued_at", "id"), render=lambda inv: render.invoice(inv, tz))
    audit_read(request, "patient.view_invoices", [Shown(patient.pk, "patient", patient.pk)])
    return found


@router.post("/invoices/{invoice_id}/lines", response={201: InvoiceLineOut, **WRITE_ERRORS})
@clinic_write
def add_line(request: HttpRequest, invoice_id: Id, payload: LineIn) -> Status:
    """Charge a service; rules 1-6 decide whether a package covers it. On the sale invoice of an
    active, exhausted or expired package, a charge that would leave the sale not fully paid is a
    `409` (charge it on a new invoice)."""
    invoice = get_or_404(Invoice.objects.all(), invoice_id, "invoice")
    service, appointment = _line_target(payload, "")
    line = do_add_line(acting_user=viewer(request), invoice=invoice, service=service, appointment=appointment)
    return Status(201, render.invoice_line(line))


@router.delete("/invoices/{invoice_id}/lines/{line_id}", response={204: None, **WRITE_ERRORS})
@clinic_write
def remove_line(request: HttpRequest, invoice_id: Id, line_id: Id, reason: LongText = "") -> Status:
    """A covered line gives its session back (rule 7); the line leaves a tombstone."""
    invoice = get_or_404(Invoice.objects.all(), invoice_id, "invoice")
    do_remove_line(acting_user=viewer(request), invoice=invoice, line_id=line_id, reason=reason)
    return Status(204, None)


@router.post("/invoices/{invoice_id}/payments", response={201: PaymentOut, **WRITE_ERRORS})
@clinic_write
def record_payment(request: HttpRequest, invoice_id: Id, payload: PaymentIn) -> Status:
    """A negative amount is a refund and needs a reason; more than the balance is refused."""
    tz = clinic_tz()
    invoice = get_or_404(Invoice.objects.all(), invoice_id, "invoice")
    payment = do_record_payment(
        acting_user=viewer(request),
        invoice=invoice,
        amount=payload.amount,
        method=payload.method,
        received_at=resolve_moment(payload.received_at, tz) if payload.received_at else None,
        reason=payload.reason,
    )
    return Status(201, render.payment(payment, tz))


@router.post("/invoices/{invoice_id}/void", response={200: InvoiceOut, **WRITE_ERRORS})
@clinic_write
def void_invoice(request: HttpRequest, invoice_id: Id, payload: VoidIn) -> Status:
    """Gives back every session its lines used (rule 7); a paid package sale is cancelled instead."""
    invoice = get_or_404(Invoice.objects.all(), invoice_id, "invoice")
    invoice = do_void_invoice(acting_user=viewer(request), invoice=invoice, reason=payload.reason)
    return Status(200, render.invoice(invoice, clinic_tz()))
