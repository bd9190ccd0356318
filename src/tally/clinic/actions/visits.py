"""Booking, check-in, cancel, no-show, their undoing, and permanent deletion (SPEC.md rules 2, 7, 8, 13)."""

from __future__ import annotations

import datetime as dt

from ..audit import record, snapshot
from ..compiled import insert, update_fields
from ..errors import Conflict, Forbidden, Invalid
from ..ledger import live_uses_for_visit, reverse_entry, use_session
from ..locking import lock_appointment, lock_invoice, lock_patient_packages
from ..models import (
    Appointment,
    ClinicSettings,
    Invoice,
    InvoiceLine,
    Patient,
    Service,
    Staff,
)
from ..models.billing import LineKind
from ..models.scheduling import AppointmentStatus, Tombstone, TombstoneKind
from ..models.staff import Role
from ..queries import practitioners
from .billing import (
    activate_paid_off_sales,
    activated_note,
    check_charge_keeps_sale_paid,
    check_line_target,
    invoice_as_created,
    live_charges,
    load_invoice,
    remove_line,
)
from .common import (
    ANY_STAFF,
    DESK,
    OWNER,
    clinic_action,
    local_date,
    now,
    optional_text,
    require_role,
    require_text,
)
from .coverage import (
    charge_service,
    decide_for,
    released_first_sessions_of,
    restore_first_sessions,
    visit_lines_on_file,
)


def check_practitioner_owns(user: Staff, appointment: Appointment, doing: str) -> None:
    if user.role == Role.PRACTITIONER and appointment.practitioner_id != user.pk:
        raise Forbidden(f"Practitioners may {doing} only their own appointments.")


def visit_end(starts_at: dt.datetime, minutes: int) -> dt.datetime:
    """`minutes` of real time after the start. Arithmetic on a datetime in a zone (a naive
    time read in the clinic's zone) is wall-clock time, so across a clock change a visit
    would last an hour more or less, or end when it starts."""
    return starts_at.astimezone(dt.UTC) + dt.timedelta(minutes=minutes)


def check_sees_patients(practitioner: Staff | None) -> None:
    """A visit is booked with someone the staff site offers for it (queries.practitioners)."""
    if practitioner is not None and not practitioners().filter(pk=practitioner.pk).exists():
        raise Invalid("That staff member does not see patients.", fields={"practitioner_id": "not a practitioner"})


@clinic_action
def do_book(
    *,
    acting_user: Staff,
    patient: Patient,
    service: Service,
    starts_at: dt.datetime,
    duration_minutes: int | None = None,
    practitioner: Staff | None = None,
) -> Appointment:
    """Book a visit. Booking alone deducts nothing (rule 2)."""
    require_role(acting_user, *DESK, doing="book appointments")
    if patient.archived_at is not None:
        raise Conflict(f"{patient.full_name} is archived.")
    if not service.active:
        raise Invalid(f"{service.name} is no longer offered.", fields={"service_id": "inactive service"})
    minutes = duration_minutes if duration_minutes is not None else service.duration_minutes
    if minutes <= 0 or minutes > 24 * 60:
        raise Invalid("A visit lasts between 1 minute and 24 hours.", fields={"duration_minutes": "1 to 1440"})
    check_sees_patients(practitioner)
    appointment = Appointment.objects.create(
        patient=patient,
        service=service,
        practitioner=practitioner,
        starts_at=starts_at,
        ends_at=visit_end(starts_at, minutes),
    )
    record("appointment.book", actor=acting_user, obj=appointment, patient_id=patient.pk, after=snapshot(appointment))
    return appointment


@clinic_action
def do_reschedule(
    *,
    acting_user: Staff,
    appointment: Appointment,
    starts_at: dt.datetime,
    duration_minutes: int | None = None,
    practitioner: Staff | None = None,
) -> Appointment:
    """Move a booked visit (new start, length, practitioner). Only a booked visit moves:
    an attended one is history, so moving it would change what was charged."""
    require_role(acting_user, *DESK, doing="reschedule appointments")
    appointment = lock_appointment(appointment.pk)
    if appointment.status != AppointmentStatus.BOOKED:
        raise Conflict(f"Only a booked appointment can be rescheduled; this one is {appointment.status.replace('_', ' ')}.")
    minutes = duration_minutes if duration_minutes is not None else int(
        (appointment.ends_at - appointment.starts_at).total_seconds() // 60)
    if minutes <= 0 or minutes > 24 * 60:
        raise Invalid("A visit lasts between 1 minute and 24 hours.", fields={"duration_minutes": "1 to 1440"})
    check_sees_patients(practitioner)
    before = snapshot(appointment)
    appointment.starts_at = starts_at
    appointment.ends_at = visit_end(starts_at, minutes)
    appointment.practitioner = practitioner
    appointment.save(update_fields=["starts_at", "ends_at", "practitioner"])
    record("appointment.reschedule", actor=acting_user, obj=appointment, patient_id=appointment.patient_id,
           before=before, after=snapshot(appointment))
    return appointment


def charge_kept_at_check_in(appointment: Appointment, on_file: list[InvoiceLine], *, service: Service | None = None,
                            invoice: Invoice | None = None, no_charges: bool = False) -> InvoiceLine | None:
    """Rule 2: staff who charged a visit's service on a manual invoice have used its session
    already, so checking the visit in keeps that charge instead of charging it a second time.
    Returns the live charge the check-in keeps (the booked service's first, else the oldest),
    or None when the visit has none. A request for another charge (another service, another
    invoice, or No Charges, which would say "nothing charged" beside a charge and maybe a
    session used) is refused, naming where the visit is charged: remove that line first."""
    charges = [line for line in on_file if line.kind == LineKind.SERVICE]
    if not charges:
        return None
    where = " and ".join(dict.fromkeys(Invoice(pk=line.invoice_id).number for line in charges))
    if no_charges:
        raise Conflict(f"This visit is already charged on {where}: remove that line first to check it in "
                       "with No Charges.")
    kept = [line for line in charges if (service is None or line.service_id == service.pk)
            and (invoice is None or line.invoice_id == invoice.pk)]
    if not kept:
        charged = ", ".join(line.description for line in charges)
        raise Conflict(f"This visit is already charged on {where} ({charged}): remove that line first to charge "
                       "it otherwise, or check it in without a service or invoice to keep that charge.")
    booked = [line for line in kept if line.service_id == appointment.service_id]
    return (booked or kept)[0]


@clinic_action
def do_check_in(
    *,
    acting_user: Staff,
    appointment: Appointment,
    service: Service | None = None,
    no_charges: bool = False,
    invoice: Invoice | None = None,
) -> tuple[Appointment, Invoice | None, InvoiceLine | None]:
    """Check a visit in and charge it (rule 2) on a new invoice dated at its start, or on
    `invoice`; rules 1-6 decide coverage. No Charges charges nothing and uses nothing.
    A visit already charged on a manual invoice is checked in with that charge, not charged
    again (`charge_kept_at_check_in`)."""
    require_role(acting_user, *ANY_STAFF, doing="check in visits")
    appointment = lock_appointment(appointment.pk)
    check_practitioner_owns(acting_user, appointment, "check in")
    if appointment.status != AppointmentStatus.BOOKED:
        raise Conflict(f"This appointment is {appointment.status.replace('_', ' ')}, not booked; it cannot be checked in.")
    if no_charges and (service is not None or invoice is not None):
        raise Invalid("No Charges charges nothing: leave out service_id and invoice_id.", fields={"no_charges": "conflicts with a charge"})
    before = snapshot(appointment)
    appointment.status = AppointmentStatus.ATTENDED
    appointment.no_charges = bool(no_charges)
    appointment.checked_in_at = now()
    update_fields(appointment, ["status", "no_charges", "checked_in_at"])
    if invoice is not None:
        invoice = lock_invoice(invoice.pk)
        if invoice.patient_id != appointment.patient_id:
            raise Invalid("That invoice belongs to another patient.", fields={"invoice_id": "another patient's"})
        if invoice.voided_at is not None:
            raise Conflict(f"Invoice {invoice.number} is void.")
    # Read under the appointment's lock, which every charge of a visit takes first: no charge
    # for it can be added meanwhile.
    on_file = visit_lines_on_file(appointment.pk)
    kept = charge_kept_at_check_in(appointment, on_file, service=service, invoice=invoice, no_charges=no_charges)
    if kept is not None:
        return _checked_in_with_charge_on_file(appointment, kept, before, acting_user)
    line = None
    created = False
    if not no_charges:
        service = service or appointment.service
        check_line_target(appointment.patient, service, appointment)
        packages = lock_patient_packages(appointment.patient_id)
        if any(ln.kind == LineKind.FIRST_SESSION for ln in on_file):
            # A sale's first session for this visit is used, or given to the visit's charge, by
            # the payment that completes the sale (rule 5), or removed, under the package locks,
            # not the visit's: read again now that those are held, or a payment that committed
            # while this waited would leave the visit counted twice. Rare (a sale-day visit),
            # so the usual check-in reads its lines once.
            on_file = visit_lines_on_file(appointment.pk)
        created = invoice is None
        if invoice is None:
            invoice = Invoice(patient_id=appointment.patient_id, issued_at=appointment.starts_at,
                              created_by=acting_user)
            insert(invoice)
        line = charge_service(invoice, service, by=acting_user, appointment=appointment, locked_packages=packages,
                              on_file=on_file)
        if not created:
            check_charge_keeps_sale_paid(invoice, line, field="invoice_id")
    record("appointment.check_in", actor=acting_user, obj=appointment, patient_id=appointment.patient_id,
           before=before, after=snapshot(appointment) | {"line_id": line.pk if line else None})
    if invoice is None:
        return appointment, None, line
    if created:  # its one line is `line` and nothing is paid on it yet: no need to read it back
        return appointment, invoice_as_created(invoice, [line] if line else []), line
    return appointment, load_invoice(invoice.pk), line


def _checked_in_with_charge_on_file(appointment: Appointment, kept: InvoiceLine, before: dict,
                                    acting_user: Staff) -> tuple[Appointment, Invoice, InvoiceLine]:
    """The check-in of a visit charged already: nothing is charged or used, the answer is the
    charge on file. Its invoice is locked (the lock order's next step) and the line read
    again: a removal or void that landed meanwhile would leave the visit attended, uncharged."""
    lock_invoice(kept.invoice_id)
    kept.refresh_from_db(fields=["removed_at"])
    invoice = load_invoice(kept.invoice_id)
    if kept.removed_at is not None or invoice.voided_at is not None:
        raise Conflict("The visit's charge was removed while this was being saved; please try again.")
    record("appointment.check_in", actor=acting_user, obj=appointment, patient_id=appointment.patient_id,
           before=before, after=snapshot(appointment) | {"line_id": kept.pk, "already_charged_on": invoice.number})
    return appointment, invoice, kept


@clinic_action
def do_undo_check_in(*, acting_user: Staff, appointment: Appointment) -> Appointment:
    """Back to booked: the visit's charge is removed and a covered one reversed (rule 7);
    an invoice left with no lines and no payments is voided."""
    require_role(acting_user, *ANY_STAFF, doing="undo check-ins")
    appointment = lock_appointment(appointment.pk)
    check_practitioner_owns(acting_user, appointment, "undo the check-in of")
    if appointment.status != AppointmentStatus.ATTENDED:
        raise Conflict("This appointment is not checked in.")
    lines = list(live_charges(appointment).select_related("invoice").order_by("pk"))
    first_sessions = released_first_sessions_of(appointment)
    locked = {ln.invoice_id for ln in lines} | {ln.invoice_id for ln in first_sessions}
    for invoice_id in sorted(locked):
        lock_invoice(invoice_id)
    lock_patient_packages(appointment.patient_id)
    # Read again under the locks: the payment completing a sale ticked for this visit gives its
    # first session to the visit's charge (rule 5) under the invoice and package locks, not the
    # visit's; read before it committed, the undo gave back the charge's session and left the
    # sale without its first session. An invoice only the new read names is locked without
    # waiting, as it comes after the package locks (a busy one is a 409 "try again").
    lines = list(live_charges(appointment).select_related("invoice").order_by("pk"))
    first_sessions = released_first_sessions_of(appointment)
    for invoice_id in sorted(({ln.invoice_id for ln in lines} | {ln.invoice_id for ln in first_sessions}) - locked):
        lock_invoice(invoice_id, nowait=True)
    before = snapshot(appointment)
    given_back = {line.covered_by_id for line in lines if line.covered_by_id is not None}
    for line in lines:
        remove_line(line, by=acting_user, reason="check-in undone")
    restored = restore_first_sessions(first_sessions, by=acting_user, given_back=given_back)
    for invoice_id in sorted({ln.invoice_id for ln in lines}):
        invoice = load_invoice(invoice_id)
        if not invoice.live_lines() and not invoice.payments.all():
            invoice.voided_at = now()
            invoice.void_reason = "check-in undone; nothing left on the invoice"
            invoice.save(update_fields=["voided_at", "void_reason"])
    activated = activate_paid_off_sales({ln.invoice_id for ln in lines}, at=now(), by=acting_user)
    appointment.status = AppointmentStatus.BOOKED
    appointment.no_charges = False
    appointment.checked_in_at = None
    appointment.save(update_fields=["status", "no_charges", "checked_in_at"])
    record("appointment.undo_check_in", actor=acting_user, obj=appointment, patient_id=appointment.patient_id,
           before=before, after=snapshot(appointment) | {"first_session_lines": [ln.pk for ln in restored]}
           | activated_note(activated))
    return appointment


@clinic_action
def do_cancel_appointment(*, acting_user: Staff, appointment: Appointment, reason: str = "") -> Appointment:
    """Cancelling keeps the appointment (rule 8) and uses nothing."""
    require_role(acting_user, *DESK, doing="cancel appointments")
    appointment = lock_appointment(appointment.pk)
    if appointment.status != AppointmentStatus.BOOKED:
        raise Conflict(f"Only a booked appointment can be cancelled; this one is {appointment.status.replace('_', ' ')}.")
    before = snapshot(appointment)
    appointment.status = AppointmentStatus.CANCELLED
    appointment.status_reason = optional_text(reason, "reason")
    appointment.save(update_fields=["status", "status_reason"])
    record("appointment.cancel", actor=acting_user, obj=appointment, patient_id=appointment.patient_id,
           before=before, after=snapshot(appointment))
    return appointment


@clinic_action
def do_mark_no_show(*, acting_user: Staff, appointment: Appointment, reason: str = "") -> Appointment:
    """A no-show uses nothing, unless the clinic's no-show policy says it uses a session
    (rule 13); then rules 1-6 pick the package and the entry says why. A visit already counted
    uses nothing more: one visit, one session."""
    require_role(acting_user, *ANY_STAFF, doing="mark no-shows")
    appointment = lock_appointment(appointment.pk)
    check_practitioner_owns(acting_user, appointment, "mark no-shows for")
    if appointment.status != AppointmentStatus.BOOKED:
        raise Conflict(f"Only a booked appointment can be a no-show; this one is {appointment.status.replace('_', ' ')}.")
    before = snapshot(appointment)
    appointment.status = AppointmentStatus.NO_SHOW
    appointment.status_reason = optional_text(reason, "reason")
    appointment.save(update_fields=["status", "status_reason"])
    settings = ClinicSettings.load()
    entry = None
    if settings.no_show_uses_session:
        tz = settings.tz
        decision, packages = decide_for(appointment.patient_id, appointment.service_id,
                                        local_date(appointment.starts_at, tz), tz)
        # Read under the appointment's and the packages' locks, which every charge of the visit
        # and every first session takes: a visit counted already (charged on a manual invoice,
        # or named by a sale's first session) uses no second session for being missed.
        if decision.covered_by is not None and not live_uses_for_visit(appointment.pk).exists():
            entry = use_session(packages[decision.covered_by], by=acting_user, appointment_id=appointment.pk,
                                reason="no-show: the clinic's no-show policy uses a session")
    record("appointment.no_show", actor=acting_user, obj=appointment, patient_id=appointment.patient_id,
           before=before, after=snapshot(appointment) | {"ledger_entry_id": entry.pk if entry else None})
    return appointment


@clinic_action
def do_undo_cancel(*, acting_user: Staff, appointment: Appointment) -> Appointment:
    """A cancelled visit booked again (the patient called back): a cancellation used nothing,
    so there is nothing to give back. The same staff who may cancel may undo it."""
    require_role(acting_user, *DESK, doing="undo cancellations")
    appointment = lock_appointment(appointment.pk)
    if appointment.status != AppointmentStatus.CANCELLED:
        raise Conflict(f"This appointment is {appointment.status.replace('_', ' ')}, not cancelled.")
    before = snapshot(appointment)
    appointment.status = AppointmentStatus.BOOKED
    appointment.status_reason = ""
    appointment.save(update_fields=["status", "status_reason"])
    record("appointment.undo_cancel", actor=acting_user, obj=appointment, patient_id=appointment.patient_id,
           before=before, after=snapshot(appointment))
    return appointment


@clinic_action
def do_undo_no_show(*, acting_user: Staff, appointment: Appointment) -> Appointment:
    """A visit marked as a no-show by mistake (the patient arrived late) is booked again, so it
    can be checked in. A session the no-show policy used comes back (rule 7: undo gives back)."""
    require_role(acting_user, *ANY_STAFF, doing="undo no-shows")
    appointment = lock_appointment(appointment.pk)
    check_practitioner_owns(acting_user, appointment, "undo no-shows for")
    if appointment.status != AppointmentStatus.NO_SHOW:
        raise Conflict(f"This appointment is {appointment.status.replace('_', ' ')}, not a no-show.")
    lock_patient_packages(appointment.patient_id)
    before = snapshot(appointment)
    uses = list(live_uses_for_visit(appointment.pk).filter(invoice_line__isnull=True).order_by("pk"))
    reversals = [reverse_entry(use, by=acting_user, reason="no-show undone") for use in uses]
    restored: list[InvoiceLine] = []
    if reversals and not live_uses_for_visit(appointment.pk).exists():
        # Rule 5, as undoing a check-in does: a sale's first session that the no-show's session
        # made unneeded (the visit was counted already when the sale was paid) is the sale's again.
        restored = restore_first_sessions(released_first_sessions_of(appointment), by=acting_user,
                                          given_back={use.patient_package_id for use in uses})
    appointment.status = AppointmentStatus.BOOKED
    appointment.status_reason = ""
    appointment.save(update_fields=["status", "status_reason"])
    record("appointment.undo_no_show", actor=acting_user, obj=appointment, patient_id=appointment.patient_id,
           before=before, after=snapshot(appointment) | {"ledger_entry_ids": [e.pk for e in reversals]}
           | ({"first_session_lines": [ln.pk for ln in restored]} if restored else {}))
    return appointment


@clinic_action
def do_delete_appointment(*, acting_user: Staff, appointment: Appointment, reason: str) -> Tombstone:
    """Rule 8: owner only, reason required; leaves a tombstone and reverses nothing silently,
    so a visit with a covered charge is refused until the charge is removed or voided."""
    require_role(acting_user, *OWNER, doing="permanently delete appointments")
    reason = require_text(reason, "reason", "reason for deleting")
    appointment = lock_appointment(appointment.pk)
    lock_patient_packages(appointment.patient_id)
    live_uses = live_uses_for_visit(appointment.pk).exists()
    if live_uses:
        if appointment.status == AppointmentStatus.NO_SHOW:
            raise Conflict("This no-show used a package session under the clinic's no-show policy: "
                           "undo the no-show first (the session comes back), then delete it.")
        raise Conflict("This visit used a package session: remove or void its charge first, then delete it.")
    before = snapshot(appointment)
    appointment.deleted_at = now()
    appointment.save(update_fields=["deleted_at"])
    tombstone = Tombstone.objects.create(
        kind=TombstoneKind.APPOINTMENT,
        patient_id=appointment.patient_id,
        appointment=appointment,
        content=before | {"service_name": appointment.service.name},
        removed_at=appointment.deleted_at,
        removed_by=acting_user,
        reason=reason,
    )
    record("appointment.delete", actor=acting_user, obj=appointment, patient_id=appointment.patient_id,
           before=before, after={"tombstone_id": tombstone.pk, "reason": reason})
    return tombstone
