"""Today: the day's schedule per practitioner, and what can happen to a visit."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib import messages
from django.db.models import Prefetch
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone

from tally.clinic.actions.visits import (
    do_book,
    do_cancel_appointment,
    do_check_in,
    do_delete_appointment,
    do_mark_no_show,
    do_reschedule,
    do_undo_cancel,
    do_undo_check_in,
    do_undo_no_show,
)
from tally.clinic.audit import Shown
from tally.clinic.errors import ClinicError
from tally.clinic.models import Appointment, InvoiceLine, Patient
from tally.clinic.models.billing import LineKind
from tally.clinic.queries import schedule_for_day, visible_appointment
from tally.clinic.rules import YEARS

from ..coverage_text import preview_charged_visit, preview_check_in, preview_no_charges
from ..forms import BookForm, CheckInForm, ReasonForm, RescheduleForm, combine
from ..templatetags.staff_tags import session_left_after
from .auth import safe_next
from .common import (
    ANY_STAFF,
    DESK,
    OWNER,
    StaffRequest,
    can,
    refuse_or_raise,
    show_error,
    shows,
    staff_view,
)


def clinic_today(request: StaffRequest) -> dt.date:
    return timezone.localdate(timezone=request.clinic.tz)


def day_url(day: dt.date) -> str:
    return f"{reverse('staff:today')}?day={day.isoformat()}"


def parse_day(request: StaffRequest) -> dt.date:
    """?day=, or today when it is missing, not a date, or outside the years a clinic deals with."""
    try:
        day = dt.date.fromisoformat(request.GET.get("day", ""))
    except ValueError:
        return clinic_today(request)
    return day if day.year in YEARS else clinic_today(request)


@staff_view(*ANY_STAFF)
def today(request: StaffRequest) -> HttpResponse:
    day = parse_day(request)
    charges = InvoiceLine.objects.filter(
        kind=LineKind.SERVICE, removed_at__isnull=True, invoice__voided_at__isnull=True
    ).select_related("covered_by", "invoice").order_by("id")
    appointments = (
        schedule_for_day(request.user, day, request.clinic.tz)
        .select_related("patient", "service", "practitioner")
        .prefetch_related(Prefetch("lines", queryset=charges, to_attr="charges"))
        .order_by("starts_at", "id")
    )
    columns: dict[Any, dict[str, Any]] = {}
    # One event per visit shown (the day's schedule names each patient), in one INSERT.
    shows(request, "appointment.view_schedule", *(Shown(a.patient_id, "appointment", a.pk) for a in appointments),
          nothing=Shown(None, "appointment", ""), details={"day": day.isoformat()})
    for appointment in appointments:
        key = appointment.practitioner_id
        column = columns.setdefault(key, {"practitioner": appointment.practitioner, "appointments": []})
        column["appointments"].append(appointment)
    ordered = sorted(columns.values(), key=lambda c: (c["practitioner"] is None,
                                                      c["practitioner"].display_name if c["practitioner"] else ""))
    return render(request, "staff/today/index.html", {
        "day": day,
        "is_today": day == clinic_today(request),
        "prev_day": day - dt.timedelta(days=1),
        "next_day": day + dt.timedelta(days=1),
        "columns": ordered,
        "can_book": can(request.user, *DESK),
        "can_delete": can(request.user, *OWNER),
    })


def render_form(request: StaffRequest, form: Any, *, title: str, submit: str, back: str, status: int = 200,
                intro: str = "", danger: bool = False, appointment: Appointment | None = None) -> HttpResponse:
    return render(request, "staff/form_page.html", {
        "form": form, "title": title, "submit": submit, "back_url": back, "intro": intro,
        "danger": danger, "appointment": appointment,
    }, status=status)


@staff_view(*DESK)
def book(request: StaffRequest) -> HttpResponse:
    tz = request.clinic.tz
    if request.method == "POST":
        form = BookForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                appointment = do_book(
                    acting_user=request.user, patient=data["patient"], service=data["service"],
                    starts_at=combine(data["day"], data["time"], tz),
                    duration_minutes=data["duration_minutes"], practitioner=data["practitioner"],
                )
            except ClinicError as exc:
                if (page := refuse_or_raise(request, exc)) is not None:
                    return page
                show_error(form, exc)
            else:
                messages.success(request, f"Booked {appointment.patient.full_name} with {data['service'].name}.")
                return redirect(day_url(data["day"]))
        return render_form(request, form, title="Book a visit", submit="Book", back=reverse("staff:today"),
                           status=422)
    initial: dict[str, Any] = {"day": parse_day(request)}
    typed = request.GET.get("patient") or ""
    # isascii: '²' is a digit to isdigit() but no number to int().
    patient = Patient.objects.filter(pk=typed).first() if typed.isascii() and typed.isdigit() else None
    if patient is not None:
        initial["patient"] = patient.patient_number
        shows(request, "patient.view", Shown(patient.pk, "patient", patient.pk))
    return render_form(request, BookForm(initial=initial), title="Book a visit", submit="Book",
                       back=reverse("staff:today"))


def appointment_for(request: StaffRequest, appointment_id: int) -> Appointment:
    """404 for an unknown id, 403 for a practitioner's colleague's visit (raised as ClinicError)."""
    appointment = visible_appointment(request.user, appointment_id)
    appointment = Appointment.objects.select_related("patient", "service", "practitioner").get(pk=appointment.pk)
    shows(request, "appointment.view", Shown(appointment.patient_id, "appointment", appointment.pk))
    return appointment


def appointment_title(appointment: Appointment, verb: str) -> str:
    when = timezone.localtime(appointment.starts_at)
    return f"{verb}: {appointment.patient.full_name}, {when:%a %-d %b %Y %H:%M}, {appointment.service.name}"


@staff_view(*DESK)
def reschedule(request: StaffRequest, appointment_id: int) -> HttpResponse:
    appointment = appointment_for(request, appointment_id)
    tz = request.clinic.tz
    back = day_url(appointment.starts_at.astimezone(tz).date())
    title = appointment_title(appointment, "Reschedule")
    if request.method == "POST":
        form = RescheduleForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                do_reschedule(acting_user=request.user, appointment=appointment,
                              starts_at=combine(data["day"], data["time"], tz),
                              duration_minutes=data["duration_minutes"], practitioner=data["practitioner"])
            except ClinicError as exc:
                if (page := refuse_or_raise(request, exc)) is not None:
                    return page
                show_error(form, exc)
            else:
                messages.success(request, f"Moved {appointment.patient.full_name}'s visit.")
                return redirect(day_url(data["day"]))
        return render_form(request, form, title=title, submit="Move the visit", back=back, status=422,
                           appointment=appointment)
    local = timezone.localtime(appointment.starts_at)
    minutes = int((appointment.ends_at - appointment.starts_at).total_seconds() // 60)
    form = RescheduleForm(initial={"day": local.date(), "time": local.time().replace(second=0, microsecond=0),
                                   "duration_minutes": minutes, "practitioner": appointment.practitioner_id})
    return render_form(request, form, title=title, submit="Move the visit", back=back, appointment=appointment)


def simple_visit_action(request: StaffRequest, appointment: Appointment, *, action: Any, title: str, submit: str,
                        done: str, reason_required: bool = False, intro: str = "",
                        danger: bool = False) -> HttpResponse:
    """A confirm page with an optional (or required) reason, then one action."""
    back = day_url(appointment.starts_at.astimezone(request.clinic.tz).date())
    if request.method == "POST":
        form = ReasonForm(request.POST, reason_required=reason_required)
        if form.is_valid():
            try:
                action(form.cleaned_data["reason"])
            except ClinicError as exc:
                if (page := refuse_or_raise(request, exc)) is not None:
                    return page
                show_error(form, exc)
            else:
                messages.success(request, done)
                return redirect(safe_next(request, back))  # never off the site (an open redirect)
        return render_form(request, form, title=title, submit=submit, back=back, status=422, intro=intro,
                           danger=danger, appointment=appointment)
    return render_form(request, ReasonForm(reason_required=reason_required), title=title, submit=submit,
                       back=back, intro=intro, danger=danger, appointment=appointment)


@staff_view(*DESK)
def cancel(request: StaffRequest, appointment_id: int) -> HttpResponse:
    appointment = appointment_for(request, appointment_id)
    return simple_visit_action(
        request, appointment, title=appointment_title(appointment, "Cancel"), submit="Cancel the visit",
        done=f"Cancelled {appointment.patient.full_name}'s visit. Nothing was used.",
        intro="Cancelling keeps the visit on the chart as cancelled; it uses no session.",
        action=lambda reason: do_cancel_appointment(acting_user=request.user, appointment=appointment, reason=reason),
    )


@staff_view(*ANY_STAFF)
def no_show(request: StaffRequest, appointment_id: int) -> HttpResponse:
    appointment = appointment_for(request, appointment_id)
    policy = ("The clinic's no-show policy uses a package session for a no-show."
              if request.clinic.no_show_uses_session else "A no-show uses no session.")
    return simple_visit_action(
        request, appointment, title=appointment_title(appointment, "No-show"), submit="Mark as no-show",
        done=f"Marked {appointment.patient.full_name} as a no-show.", intro=policy,
        action=lambda reason: do_mark_no_show(acting_user=request.user, appointment=appointment, reason=reason),
    )


@staff_view(*ANY_STAFF)
def undo_check_in(request: StaffRequest, appointment_id: int) -> HttpResponse:
    appointment = appointment_for(request, appointment_id)
    return simple_visit_action(
        request, appointment, title=appointment_title(appointment, "Undo check-in"), submit="Undo check-in",
        done=f"{appointment.patient.full_name}'s visit is booked again; its charge was removed.",
        intro=("The visit goes back to booked. Its charge is removed from the invoice, and a session "
               "it used comes back to the package."),
        action=lambda reason: do_undo_check_in(acting_user=request.user, appointment=appointment),
    )


@staff_view(*DESK)
def undo_cancel(request: StaffRequest, appointment_id: int) -> HttpResponse:
    appointment = appointment_for(request, appointment_id)
    return simple_visit_action(
        request, appointment, title=appointment_title(appointment, "Undo cancel"), submit="Book it again",
        done=f"{appointment.patient.full_name}'s visit is booked again.",
        intro="The visit goes back to booked, at the same time. A cancellation used no session, so none comes back.",
        action=lambda reason: do_undo_cancel(acting_user=request.user, appointment=appointment),
    )


@staff_view(*ANY_STAFF)
def undo_no_show(request: StaffRequest, appointment_id: int) -> HttpResponse:
    appointment = appointment_for(request, appointment_id)
    return simple_visit_action(
        request, appointment, title=appointment_title(appointment, "Undo no-show"), submit="Undo no-show",
        done=f"{appointment.patient.full_name}'s visit is booked again; it can be checked in.",
        intro=("The visit goes back to booked, so it can be checked in (a patient who arrived late). A session "
               "the clinic's no-show policy used for it comes back to the package."),
        action=lambda reason: do_undo_no_show(acting_user=request.user, appointment=appointment),
    )


@staff_view(*OWNER)
def delete(request: StaffRequest, appointment_id: int) -> HttpResponse:
    appointment = appointment_for(request, appointment_id)
    return simple_visit_action(
        request, appointment, title=appointment_title(appointment, "Permanently delete"),
        submit="Delete permanently", reason_required=True, danger=True,
        done=f"Deleted the visit of {appointment.patient.full_name}. A record of it is kept for investigations.",
        intro=("This removes the visit from the schedule and the chart. A tombstone keeps its content for the "
               "investigator. A visit that used a package session cannot be deleted until its charge is "
               "removed or voided."),
        action=lambda reason: do_delete_appointment(acting_user=request.user, appointment=appointment, reason=reason),
    )


def check_in_context(request: StaffRequest, appointment: Appointment, form: CheckInForm) -> dict[str, Any]:
    preview = None
    if form.is_bound and form.is_valid():
        service = form.service_to_charge(appointment)
        preview = preview_charged_visit(appointment, form.cleaned_data["charge"], service, request.clinic)
        if preview is None and service is not None:
            preview = preview_check_in(appointment, service, request.clinic)
        elif preview is None:  # No Charges
            preview = preview_no_charges(appointment, request.clinic)
    return {"form": form, "appointment": appointment, "preview": preview,
            "back_url": day_url(appointment.starts_at.astimezone(request.clinic.tz).date())}


@staff_view(*ANY_STAFF)
def check_in(request: StaffRequest, appointment_id: int) -> HttpResponse:
    """Charge the booked service, another one, or No Charges. When a package the patient
    holds will not cover the charge, the page says so and why, and asks again before saving."""
    appointment = appointment_for(request, appointment_id)
    if request.method != "POST":
        # The booked service's coverage is shown before anyone presses a button.
        context = check_in_context(request, appointment, CheckInForm(data={"charge": "booked"}))
        context["form"] = CheckInForm()
        return render(request, "staff/today/check_in.html", context)
    form = CheckInForm(request.POST)
    context = check_in_context(request, appointment, form)
    if not form.is_valid():
        return render(request, "staff/today/check_in.html", context, status=422)
    preview = context["preview"]
    if preview is not None and preview.warns and form.cleaned_data["confirmed"] != form.choice_key():
        # Say so and why before anything is saved; submitting the same choice again confirms it.
        data = request.POST.copy()
        data["confirmed"] = form.choice_key()
        context["form"] = CheckInForm(data)
        context["form"].is_valid()
        context["needs_confirmation"] = True
        return render(request, "staff/today/check_in.html", context)
    charge = form.cleaned_data["charge"]
    try:
        # The booked service is the action's default: named explicitly, a visit already charged
        # with another service (a manual invoice) would be refused instead of keeping that charge.
        _, invoice, line = do_check_in(acting_user=request.user, appointment=appointment,
                                       service=form.cleaned_data["service"] if charge == "other" else None,
                                       no_charges=charge == "none")
    except ClinicError as exc:
        if (page := refuse_or_raise(request, exc)) is not None:
            return page
        show_error(form, exc)
        return render(request, "staff/today/check_in.html", context, status=422)
    if line is None:
        messages.success(request, f"Checked in {appointment.patient.full_name}: No Charges.")
    elif (preview is not None and preview.charged_on is not None and line.pk == preview.charged_on.pk
          and invoice is not None):
        messages.success(request, f"Checked in {appointment.patient.full_name}: {line.description} was already "
                                  f"charged on {invoice.number}; it was not charged again.")
    elif (package := line.covered_by) is not None:
        messages.success(request, f"Checked in {appointment.patient.full_name}: {line.description} paid via "
                                  f"{package.name}, session {line.session_number} of {package.sessions_total} · "
                                  f"{session_left_after(line, package.sessions_total)} left.")
    else:
        number = invoice.number if invoice is not None else "an invoice"
        messages.success(request, f"Checked in {appointment.patient.full_name}: {line.description} charged on "
                                  f"{number}.")
    return redirect(context["back_url"])


@staff_view(*ANY_STAFF)
def check_in_preview(request: StaffRequest, appointment_id: int) -> HttpResponse:
    """The coverage warning for the charge currently chosen (htmx, as the choice changes)."""
    appointment = appointment_for(request, appointment_id)
    form = CheckInForm(request.GET or {"charge": "booked"})
    return render(request, "staff/today/check_in.html#coverage", check_in_context(request, appointment, form))


__all__ = ["book", "cancel", "check_in", "check_in_preview", "delete", "no_show", "reschedule", "today",
           "undo_cancel", "undo_check_in", "undo_no_show"]
