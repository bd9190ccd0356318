"""Selling a package: Use first session must be answered, with a warning when today's visit
would be left uncounted; payment at the sale is optional."""

from __future__ import annotations

import datetime as dt

from django.contrib import messages
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone

from tally.clinic.actions.coverage import preview_coverage
from tally.clinic.actions.sales import do_cancel_package, do_sell_package, do_set_expiry
from tally.clinic.audit import Shown
from tally.clinic.errors import ClinicError
from tally.clinic.models import Appointment, InvoiceLine, Patient, PatientPackage
from tally.clinic.models.scheduling import AppointmentStatus

from ..forms import CancelPackageForm, ExpiryForm, SellPackageForm
from ..templatetags.staff_tags import format_money, package_count
from .common import (
    DESK,
    OWNER,
    StaffRequest,
    posted,
    refuse_or_raise,
    show_error,
    shows,
    staff_view,
)


def todays_visits(patient: Patient, tz: dt.tzinfo) -> QuerySet[Appointment]:
    return visits_on(patient, timezone.localdate(timezone=tz), tz)


def visits_on(patient: Patient, day: dt.date, tz: dt.tzinfo) -> QuerySet[Appointment]:
    """The patient's booked or attended visits of one day (clinic time), annotated `counted`
    (a package pays a live line of it) and `charged` (it has a live line at all)."""
    start = dt.datetime.combine(day, dt.time.min, tzinfo=tz)
    live = InvoiceLine.objects.filter(appointment=OuterRef("pk"), removed_at__isnull=True,
                                      invoice__voided_at__isnull=True)
    return (
        Appointment.objects.filter(patient=patient, starts_at__gte=start, starts_at__lt=start + dt.timedelta(days=1),
                                   status__in=[AppointmentStatus.BOOKED, AppointmentStatus.ATTENDED])
        .annotate(counted=Exists(live.filter(covered_by__isnull=False)), charged=Exists(live))
        .select_related("service")
        .order_by("starts_at")
    )


def uncharged_visits_on(patient: Patient, day: dt.date, tz: dt.tzinfo) -> QuerySet[Appointment]:
    """The day's visits with no live charge yet: those a manual charge may name (rule 2), so
    that their check-in keeps that charge instead of using a second session."""
    return visits_on(patient, day, tz).filter(charged=False)  # type: ignore[misc]  # visits_on annotates it


def left_uncounted(visits: QuerySet[Appointment], tz: dt.tzinfo) -> list[Appointment]:
    """Today's visits that no package counts and none will: a booked visit not charged yet that
    a package the patient holds covers is counted by its check-in (as its check-in page says),
    so the sale need not use its first session on it."""
    uncounted = []
    for visit in visits:
        if visit.counted:  # type: ignore[attr-defined]  # todays_visits annotates it
            continue
        if visit.status == AppointmentStatus.BOOKED and not visit.charged:  # type: ignore[attr-defined]
            decision, _ = preview_coverage(visit.patient_id, visit.service_id, visit.starts_at.astimezone(tz).date(),
                                           tz)
            if decision.covered_by is not None:
                continue
        uncounted.append(visit)
    return uncounted


@staff_view(*DESK)
def sell(request: StaffRequest, patient_id: int) -> HttpResponse:
    patient = get_object_or_404(Patient, pk=patient_id)
    shows(request, "patient.view", Shown(patient.pk, "patient", patient.pk))
    visits = todays_visits(patient, request.clinic.tz)
    uncounted = left_uncounted(visits, request.clinic.tz)
    if request.method == "POST":
        form = SellPackageForm(request.POST, todays_visits=visits)
        if form.is_valid():
            data = form.cleaned_data
            payment = (data["payment_amount"], data["payment_method"] or "card") if data["payment_amount"] else None
            try:
                sold, invoice = do_sell_package(
                    acting_user=request.user, patient=patient, package=data["package"],
                    use_first_session=data["use_first_session"],
                    first_session_appointment=data["first_session_appointment"] if data["use_first_session"] else None,
                    payment=payment,
                )
            except ClinicError as exc:
                if (page := refuse_or_raise(request, exc)) is not None:
                    return page
                show_error(form, exc)
            else:
                state = "active" if sold.activated_at else "waiting for payment"
                first = ""
                if sold.use_first_session:  # rule 5: a sale not fully paid uses it when it is
                    first = (" The first session is used." if sold.activated_at else
                             " The first session will be used by the payment that completes the sale.")
                messages.success(request, f"Sold {sold.name} to {patient.full_name} on {invoice.number} "
                                          f"({state}).{first}")
                return redirect("staff:invoice", invoice_id=invoice.pk)
        status = 422
    else:
        initial = {"first_session_appointment": uncounted[0].pk} if len(uncounted) == 1 else {}
        form = SellPackageForm(initial=initial, todays_visits=visits)
        status = 200
    return render(request, "staff/sales/sell.html", {
        "patient": patient, "form": form, "uncounted": uncounted,
    }, status=status)


@staff_view(*DESK)
def cancel_package(request: StaffRequest, package_id: int) -> HttpResponse:
    """Rule 11: cancel a package, with an optional refund on its sale invoice (what a paid sale
    that cannot be voided needs instead)."""
    package = get_object_or_404(PatientPackage.objects.select_related("patient", "sale_invoice"), pk=package_id)
    patient = package.patient
    shows(request, "patient_package.view", Shown(patient.pk, "patientpackage", package.pk))
    form = CancelPackageForm(posted(request))
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        refund = (-data["refund_amount"], data["refund_method"] or "card") if data["refund_amount"] else None
        try:
            do_cancel_package(acting_user=request.user, patient_package=package, reason=data["reason"],
                              refund=refund)
        except ClinicError as exc:
            if (page := refuse_or_raise(request, exc)) is not None:
                return page
            show_error(form, exc)
        else:
            refunded = f" Refunded {data['refund_amount']} on {package.sale_invoice.number}." if refund else ""
            messages.success(request, f"Cancelled {package.name} for {patient.full_name}.{refunded}")
            return redirect("staff:chart", patient_id=patient.pk)
    paid = format_money(package.sale_invoice.paid, request.clinic.currency)
    return render(request, "staff/form_page.html", {
        "form": form, "title": f"Cancel {package.name} for {patient.full_name} ({patient.patient_number})",
        "intro": (f"{package_count(package)}. Cancelling closes the package: sessions used stay used and no "
                  f"session left can be used again. {paid} paid on {package.sale_invoice.number}; a refund is "
                  "recorded there as a credit line and a negative payment."),
        "submit": "Cancel the package", "danger": True, "back_url": reverse("staff:chart", args=[patient.pk]),
    }, status=422 if form.is_bound else 200)


@staff_view(*OWNER)
def package_expiry(request: StaffRequest, package_id: int) -> HttpResponse:
    """Rule 12: an owner extends (or corrects) when an active package expires; visits already
    charged keep the decision they got, later ones follow the new date."""
    package = get_object_or_404(PatientPackage.objects.select_related("patient"), pk=package_id)
    patient = package.patient
    shows(request, "patient_package.view", Shown(patient.pk, "patientpackage", package.pk))
    tz = request.clinic.tz
    current = timezone.localdate(package.expires_at, tz) if package.expires_at else None
    form = ExpiryForm(posted(request), initial={"expires_on": current})
    if request.method == "POST" and form.is_valid():
        day = form.cleaned_data["expires_on"]
        try:
            do_set_expiry(acting_user=request.user, patient_package=package,
                          expires_at=dt.datetime.combine(day, dt.time(12), tzinfo=tz))
        except ClinicError as exc:
            if (page := refuse_or_raise(request, exc)) is not None:
                return page
            show_error(form, exc)
        else:
            messages.success(request, f"{package.name} for {patient.full_name} can now be used until the end of "
                                      f"{day:%-d %b %Y}.")
            return redirect("staff:chart", patient_id=patient.pk)
    now_says = f"It expires at the end of {current:%-d %b %Y}." if current else "It has no expiry."
    return render(request, "staff/form_page.html", {
        "form": form, "title": f"Expiry of {package.name} for {patient.full_name} ({patient.patient_number})",
        "intro": (f"{package_count(package)}. {now_says} A new date covers visits from now on; visits already "
                  "charged keep what was decided for them (rule 12)."),
        "submit": "Save the expiry", "back_url": reverse("staff:chart", args=[patient.pk]),
    }, status=422 if form.is_bound else 200)
