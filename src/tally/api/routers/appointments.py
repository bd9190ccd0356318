"""Booking and the day schedule; check-in, undo, cancel, no-show, permanent deletion.

Practitioners see and act on their own appointments only (the actions and
`clinic.queries` hold that rule; this module only passes the caller along).
"""

import datetime as dt
from typing import Annotated, Any, Literal

from django.http import HttpRequest
from ninja import Query, Router, Status
from pydantic import Field

from tally.clinic.actions.visits import (
    do_book,
    do_cancel_appointment,
    do_check_in,
    do_delete_appointment,
    do_mark_no_show,
    do_undo_cancel,
    do_undo_check_in,
    do_undo_no_show,
)
from tally.clinic.models import Appointment, Invoice, Patient, Service, Staff
from tally.clinic.queries import schedule_for_day, visible_appointment

from .. import render
from ..idempotency import clinic_write
from ..lookups import clinic_tz, get_or_404, get_referenced, viewer
from ..pagination import paginate
from ..reads import Shown, audit_page, audit_read
from ..schemas import (
    READ_ERRORS,
    WRITE_ERRORS,
    AppointmentIn,
    AppointmentOut,
    AppointmentPage,
    CheckInIn,
    CheckInOut,
    DateRange,
    PageParams,
    ReasonIn,
)
from ..types import Day, Id, LongText, resolve_moment

router = Router(tags=["appointments"])

AppointmentStatus = Literal["booked", "attended", "cancelled", "no_show"]
RequiredReason = Annotated[LongText, Field(min_length=1)]


def _appointment(pk: int) -> Appointment:
    return get_or_404(Appointment.objects.all(), pk, "appointment")


@router.post("/appointments", response={201: AppointmentOut, **WRITE_ERRORS})
@clinic_write
def book(request: HttpRequest, payload: AppointmentIn) -> Status:
    """Booking alone uses no session (rule 2)."""
    tz = clinic_tz()
    appointment = do_book(
        acting_user=viewer(request),
        patient=get_referenced(Patient.objects.all(), payload.patient_id, "patient_id", "patient"),
        service=get_referenced(Service.objects.all(), payload.service_id, "service_id", "service"),
        starts_at=resolve_moment(payload.starts_at, tz),
        duration_minutes=payload.duration_minutes,
        practitioner=get_referenced(Staff.objects.all(), payload.practitioner_id, "practitioner_id", "staff member"),
    )
    return Status(201, render.appointment(appointment, tz))


@router.get("/appointments", response={200: AppointmentPage, **READ_ERRORS})
def day_schedule(request: HttpRequest, page: Query[PageParams], date: Day | None = None) -> dict[str, Any]:
    """One clinic-local day (today by default), by start time; a practitioner sees only theirs."""
    tz = clinic_tz()
    day = date or dt.datetime.now(tz).date()
    found = paginate(schedule_for_day(viewer(request), day, tz), page, keys=("starts_at", "id"),
                     render=lambda a: render.appointment(a, tz))
    # One event per appointment listed (so per patient shown), bounded by the page's limit.
    return audit_page(request, "appointment.view_schedule", found, "appointment", details={"date": day.isoformat()})


@router.get("/appointments/{appointment_id}", response={200: AppointmentOut, **READ_ERRORS})
def get_appointment(request: HttpRequest, appointment_id: Id) -> dict[str, Any]:
    appointment = visible_appointment(viewer(request), appointment_id)
    audit_read(request, "appointment.view", [Shown(appointment.patient_id, "appointment", appointment.pk)])
    return render.appointment(appointment, clinic_tz())


@router.get("/patients/{patient_id}/appointments", response={200: AppointmentPage, **READ_ERRORS})
def patient_appointments(
    request: HttpRequest,
    patient_id: Id,
    page: Query[PageParams],
    period: Query[DateRange],
    status: AppointmentStatus | None = None,
) -> dict[str, Any]:
    """The chart's appointments, oldest first; `to` as a bare date includes that day."""
    tz = clinic_tz()
    patient = get_or_404(Patient.objects.all(), patient_id, "patient")
    appointments = Appointment.objects.filter(patient=patient)
    if period.date_from is not None:
        appointments = appointments.filter(starts_at__gte=resolve_moment(period.date_from, tz))
    if period.date_to is not None:
        appointments = appointments.filter(starts_at__lte=resolve_moment(period.date_to, tz, bare_date_means_end=True))
    if status is not None:
        appointments = appointments.filter(status=status)
    found = paginate(appointments, page, keys=("starts_at", "id"), render=lambda a: render.appointment(a, tz))
    audit_read(request, "patient.view_appointments", [Shown(patient.pk, "patient", patient.pk)])
    return found


@router.post("/appointments/{appointment_id}/check-in", response={200: CheckInOut, **WRITE_ERRORS})
@clinic_write
def check_in(request: HttpRequest, appointment_id: Id, payload: CheckInIn | None = None) -> Status:
    """Charge the booked service (or `service_id`) on a new invoice dated at the start, or on
    `invoice_id`; `no_charges` charges nothing. Rules 1-6 decide coverage. A charge that would
    leave the sale of an active, exhausted or expired package on `invoice_id` not fully paid is a
    `409` (leave out `invoice_id` to charge it on a new invoice)."""
    tz = clinic_tz()
    payload = payload or CheckInIn()
    appointment, invoice, line = do_check_in(
        acting_user=viewer(request),
        # The action locks and reads the appointment (404 if there is none): no read before it.
        appointment=Appointment(pk=appointment_id),
        service=get_referenced(Service.objects.all(), payload.service_id, "service_id", "service"),
        no_charges=payload.no_charges,
        invoice=get_referenced(Invoice.objects.all(), payload.invoice_id, "invoice_id", "invoice"),
    )
    return Status(200, {
        "appointment": render.appointment(appointment, tz),
        "invoice": render.invoice(invoice, tz) if invoice is not None else None,
        "line": render.invoice_line(line) if line is not None else None,
    })


@router.post("/appointments/{appointment_id}/undo-check-in", response={200: AppointmentOut, **WRITE_ERRORS})
@clinic_write
def undo_check_in(request: HttpRequest, appointment_id: Id) -> Status:
    """Back to booked; its charge is removed and a covered one reversed (rule 7)."""
    appointment = do_undo_check_in(acting_user=viewer(request), appointment=_appointment(appointment_id))
    return Status(200, render.appointment(appointment, clinic_tz()))


@router.post("/appointments/{appointment_id}/cancel", response={200: AppointmentOut, **WRITE_ERRORS})
@clinic_write
def cancel(request: HttpRequest, appointment_id: Id, payload: ReasonIn | None = None) -> Status:
    reason = payload.reason if payload else ""
    appointment = do_cancel_appointment(acting_user=viewer(request), appointment=_appointment(appointment_id),
                                        reason=reason)
    return Status(200, render.appointment(appointment, clinic_tz()))


@router.post("/appointments/{appointment_id}/no-show", response={200: AppointmentOut, **WRITE_ERRORS})
@clinic_write
def no_show(request: HttpRequest, appointment_id: Id, payload: ReasonIn | None = None) -> Status:
    """Uses a session only when the clinic's no-show policy says so (rule 13)."""
    reason = payload.reason if payload else ""
    appointment = do_mark_no_show(acting_user=viewer(request), appointment=_appointment(appointment_id),
                                  reason=reason)
    return Status(200, render.appointment(appointment, clinic_tz()))


@router.post("/appointments/{appointment_id}/undo-cancel", response={200: AppointmentOut, **WRITE_ERRORS})
@clinic_write
def undo_cancel(request: HttpRequest, appointment_id: Id) -> Status:
    """Back to booked (an addition to API.md): a cancellation used nothing, so nothing comes back."""
    appointment = do_undo_cancel(acting_user=viewer(request), appointment=_appointment(appointment_id))
    return Status(200, render.appointment(appointment, clinic_tz()))


@router.post("/appointments/{appointment_id}/undo-no-show", response={200: AppointmentOut, **WRITE_ERRORS})
@clinic_write
def undo_no_show(request: HttpRequest, appointment_id: Id) -> Status:
    """Back to booked (an addition to API.md), so a late patient can be checked in; a session the
    no-show policy used comes back (rule 7)."""
    appointment = do_undo_no_show(acting_user=viewer(request), appointment=_appointment(appointment_id))
    return Status(200, render.appointment(appointment, clinic_tz()))


@router.delete("/appointments/{appointment_id}", response={204: None, **WRITE_ERRORS})
@clinic_write
def delete(request: HttpRequest, appointment_id: Id, reason: RequiredReason) -> Status:
    """Owner only, reason required; leaves a tombstone; refused while a charge is covered (rule 8)."""
    do_delete_appointment(acting_user=viewer(request), appointment=_appointment(appointment_id), reason=reason)
    return Status(204, None)
