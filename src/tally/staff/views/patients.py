"""Patients: search, registration and the chart (package panel, Appointments and Invoices tabs)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib import messages
from django.db.models import Exists, OuterRef, Prefetch, QuerySet
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone

from tally.clinic.actions.catalog import do_create_patient
from tally.clinic.audit import Shown
from tally.clinic.errors import ClinicError
from tally.clinic.models import Appointment, Invoice, InvoiceLine, Patient, PatientPackage
from tally.clinic.models.billing import LineKind
from tally.clinic.queries import invoices_in_status, search_patients

from ..forms import APPOINTMENT_STATUS_CHOICES, INVOICE_STATUS_CHOICES, ChartFilterForm, PatientForm
from .common import (
    ANY_STAFF,
    DESK,
    OWNER,
    StaffRequest,
    can,
    is_htmx,
    paginate,
    posted,
    refuse_or_raise,
    show_error,
    shows,
    staff_view,
)


@staff_view(*ANY_STAFF)
def patient_list(request: StaffRequest) -> HttpResponse:
    text = request.GET.get("q", "").strip()
    patients = search_patients(text).order_by("last_name", "first_name", "id")
    page = paginate(request, patients)
    shows(request, "patient.list", *(Shown(p.pk, "patient", p.pk) for p in page),
          nothing=Shown(None, "patient", ""), details={"q": text} if text else None)
    return render(request, "staff/patients/list.html", {
        "q": text, "page": page, "can_register": can(request.user, *DESK),
    })


@staff_view(*DESK)
def patient_new(request: StaffRequest) -> HttpResponse:
    form = PatientForm(posted(request))
    if request.method == "POST" and form.is_valid():
        try:
            patient = do_create_patient(acting_user=request.user, **form.cleaned_data)
        except ClinicError as exc:
            if (page := refuse_or_raise(request, exc)) is not None:
                return page
            show_error(form, exc)
        else:
            messages.success(request, f"Registered {patient.full_name} as {patient.patient_number}.")
            return redirect("staff:chart", patient_id=patient.pk)
    return render(request, "staff/form_page.html", {
        "form": form, "title": "Register a patient", "submit": "Register", "back_url": reverse("staff:patients"),
    }, status=422 if form.is_bound else 200)


def local_bounds(start: dt.date | None, end: dt.date | None, tz: dt.tzinfo) -> tuple[dt.datetime | None, ...]:
    """Inclusive clinic-local dates as [from, until) instants."""
    lower = dt.datetime.combine(start, dt.time.min, tzinfo=tz) if start else None
    upper = dt.datetime.combine(end + dt.timedelta(days=1), dt.time.min, tzinfo=tz) if end else None
    return lower, upper


def filter_appointments(rows: QuerySet, form: ChartFilterForm, tz: dt.tzinfo, today: dt.date) -> QuerySet:
    data = form.cleaned_data
    if data.get("status"):
        rows = rows.filter(status=data["status"])
    if data.get("service"):
        rows = rows.filter(service=data["service"])
    if data.get("practitioner"):
        rows = rows.filter(practitioner=data["practitioner"])
    lower, upper = local_bounds(*form.date_bounds(today), tz)
    if lower:
        rows = rows.filter(starts_at__gte=lower)
    if upper:
        rows = rows.filter(starts_at__lt=upper)
    return rows


def filter_invoices(rows: QuerySet, form: ChartFilterForm, tz: dt.tzinfo, today: dt.date) -> QuerySet:
    data = form.cleaned_data
    if data.get("status"):
        rows = invoices_in_status(rows, data["status"])
    live = InvoiceLine.objects.filter(invoice=OuterRef("pk"), removed_at__isnull=True)
    if data.get("service"):
        rows = rows.filter(Exists(live.filter(service=data["service"])))
    if data.get("practitioner"):
        rows = rows.filter(Exists(live.filter(appointment__practitioner=data["practitioner"])))
    lower, upper = local_bounds(*form.date_bounds(today), tz)
    if lower:
        rows = rows.filter(issued_at__gte=lower)
    if upper:
        rows = rows.filter(issued_at__lt=upper)
    return rows


def live_charges() -> QuerySet:
    return InvoiceLine.objects.filter(
        kind=LineKind.SERVICE, removed_at__isnull=True, invoice__voided_at__isnull=True
    ).select_related("covered_by", "invoice").order_by("id")


def chart_tab(request: StaffRequest, patient: Patient, tab: str) -> dict[str, Any]:
    """One tab's rows, filtered and paginated, and how many the filters hide."""
    tz = request.clinic.tz
    today = timezone.localdate(timezone=tz)
    base: QuerySet[Any]
    rows: QuerySet[Any]
    if tab == "invoices":
        form = ChartFilterForm(request.GET, status_choices=INVOICE_STATUS_CHOICES)
        base = Invoice.objects.filter(patient=patient)
        rows = filter_invoices(base, form, tz, today) if form.is_valid() else base
        rows = rows.order_by("-issued_at", "-id").prefetch_related(
            Prefetch("lines", queryset=InvoiceLine.objects.select_related("covered_by").order_by("id")),
            "payments",
        )
    else:
        form = ChartFilterForm(request.GET, status_choices=APPOINTMENT_STATUS_CHOICES)
        base = Appointment.objects.filter(patient=patient)
        rows = filter_appointments(base, form, tz, today) if form.is_valid() else base
        rows = rows.order_by("-starts_at", "-id").select_related("service", "practitioner").prefetch_related(
            Prefetch("lines", queryset=live_charges(), to_attr="charges"))
    total = base.count()
    shown = rows.count() if form.is_filtering else total
    return {
        "tab": tab, "filters": form, "page": paginate(request, rows, count=shown), "total": total, "shown": shown,
        "hidden": total - shown, "clear_url": f"{reverse('staff:chart', args=[patient.pk])}?tab={tab}",
    }


@staff_view(*ANY_STAFF)
def chart(request: StaffRequest, patient_id: int) -> HttpResponse:
    patient = get_object_or_404(Patient, pk=patient_id)
    tab = "invoices" if request.GET.get("tab") == "invoices" else "appointments"
    context: dict[str, Any] = {"patient": patient, **chart_tab(request, patient, tab)}
    shows(request, "patient.view_chart", Shown(patient.pk, "patient", patient.pk), details={"tab": tab})
    if is_htmx(request) and request.headers.get("HX-Target") == "chart-tab":
        # swapped: the response also fills the page's status region (hx-swap-oob).
        return render(request, "staff/patients/chart.html#tab", context | {"swapped": True})
    packages = (
        PatientPackage.objects.filter(patient=patient)
        .select_related("sale_invoice")
        .prefetch_related("sale_invoice__lines", "sale_invoice__payments")
        .order_by("-sold_at", "-id")
    )
    context |= {
        "packages": packages,
        "can_edit": can(request.user, *DESK),
        "can_investigate": can(request.user, *DESK),
        "can_set_expiry": can(request.user, *OWNER),
    }
    return render(request, "staff/patients/chart.html", context)
