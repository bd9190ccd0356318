"""Placeholders for the investigation page and the clinic audit (built by the lead).
The URL names and patterns are final; the bodies will be replaced."""

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import get_object_or_404, render

from tally.clinic.models import PatientPackage

from .common import DESK, StaffRequest, staff_view


@staff_view(*DESK)
def investigation(request: StaffRequest, package_id: int) -> HttpResponse:
    package = get_object_or_404(PatientPackage.objects.select_related("patient"), pk=package_id)
    return render(request, "staff/under_construction.html", {
        "title": f"Why is this count wrong? {package.name}", "patient": package.patient,
    })


@staff_view(*DESK)
def audit(request: StaffRequest) -> HttpResponse:
    return render(request, "staff/under_construction.html", {"title": "Clinic audit"})
