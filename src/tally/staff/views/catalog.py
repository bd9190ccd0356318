"""The catalog (owner): services and package templates, saying what an edit will and will
not affect; and the staff list."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.db.models import Count
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from tally.clinic.actions.catalog import (
    do_create_package,
    do_create_service,
    do_update_package,
    do_update_service,
)
from tally.clinic.errors import ClinicError
from tally.clinic.models import InvoiceLine, Package, PatientPackage, Service, Staff

from ..forms import PackageTemplateForm, ServiceForm
from .common import OWNER, StaffRequest, posted, refuse_or_raise, show_error, staff_view


@staff_view(*OWNER)
def catalog(request: StaffRequest) -> HttpResponse:
    services = Service.objects.order_by("-active", "name")
    packages = Package.objects.prefetch_related("services").annotate(sold_count=Count("sold")).order_by("-active", "name")
    return render(request, "staff/catalog/index.html", {"services": services, "packages": packages})


def service_impact(service: Service) -> dict[str, Any]:
    return {
        "will": ["Visits booked and charged from now on use the new name, length and price.",
                 "Packages that include this service keep covering it under its new name."],
        "will_not": [
            f"Lines already on invoices keep their description and price "
            f"({InvoiceLine.objects.filter(service=service).count()} lines).",
            f"Packages already sold keep covering it: identity is the service, not its name "
            f"({PatientPackage.objects.filter(eligible_services=service).count()} sold packages include it).",
            "No package count changes.",
        ],
    }


def package_impact(package: Package) -> dict[str, Any]:
    return {
        "will": ["Packages sold from now on get the new name, price, sessions, services and validity."],
        "will_not": [
            f"The {package.sold.count()} packages already sold keep what they were sold with "
            "(name, price, sessions, eligible services, validity).",
            "No package count changes; no invoice changes.",
        ],
    }


def catalog_form_page(request: StaffRequest, form: Any, *, title: str, submit: str,
                      impact: dict[str, Any] | None) -> HttpResponse:
    return render(request, "staff/catalog/edit.html", {
        "form": form, "title": title, "submit": submit, "impact": impact, "back_url": reverse("staff:catalog"),
    }, status=422 if form.is_bound else 200)


def save(request: StaffRequest, form: Any, action: Any, done: str) -> HttpResponse | None:
    try:
        action(form.cleaned_data)
    except ClinicError as exc:
        if (page := refuse_or_raise(request, exc)) is not None:
            return page
        show_error(form, exc)
        return None
    messages.success(request, done)
    return redirect("staff:catalog")


@staff_view(*OWNER)
def service_new(request: StaffRequest) -> HttpResponse:
    form = ServiceForm(posted(request), initial={"active": True, "duration_minutes": 60})
    if request.method == "POST" and form.is_valid():
        done = save(request, form, lambda d: do_create_service(acting_user=request.user, **d),
                    f"Added the service {form.cleaned_data['name']}.")
        if done:
            return done
    return catalog_form_page(request, form, title="New service", submit="Add service", impact=None)


@staff_view(*OWNER)
def service_edit(request: StaffRequest, service_id: int) -> HttpResponse:
    service = get_object_or_404(Service, pk=service_id)
    initial = {"name": service.name, "duration_minutes": service.duration_minutes, "price": service.price,
               "active": service.active}
    form = ServiceForm(posted(request), initial=initial)
    if request.method == "POST" and form.is_valid():
        done = save(request, form, lambda d: do_update_service(acting_user=request.user, service=service, changes=d),
                    f"Saved {form.cleaned_data['name']}.")
        if done:
            return done
    return catalog_form_page(request, form, title=f"Edit service: {service.name}", submit="Save",
                             impact=service_impact(service))


def package_values(data: dict[str, Any]) -> dict[str, Any]:
    values = dict(data)
    values["service_ids"] = [s.pk for s in values.pop("services")]
    return values


@staff_view(*OWNER)
def package_new(request: StaffRequest) -> HttpResponse:
    form = PackageTemplateForm(posted(request), initial={"active": True})
    if request.method == "POST" and form.is_valid():
        def create(data: dict[str, Any]) -> Package:
            return do_create_package(acting_user=request.user, **package_values(data))

        done = save(request, form, create, f"Added the package {form.cleaned_data['name']}.")
        if done:
            return done
    return catalog_form_page(request, form, title="New package", submit="Add package", impact=None)


@staff_view(*OWNER)
def package_edit(request: StaffRequest, template_id: int) -> HttpResponse:
    package = get_object_or_404(Package, pk=template_id)
    initial = {"name": package.name, "price": package.price, "sessions": package.sessions,
               "services": list(package.services.all()), "valid_days": package.valid_days, "active": package.active}
    form = PackageTemplateForm(posted(request), initial=initial)
    if request.method == "POST" and form.is_valid():
        done = save(request, form, lambda d: do_update_package(acting_user=request.user, package=package,
                                                               changes=package_values(d)),
                    f"Saved {form.cleaned_data['name']}.")
        if done:
            return done
    return catalog_form_page(request, form, title=f"Edit package: {package.name}", submit="Save",
                             impact=package_impact(package))


@staff_view(*OWNER)
def staff_list(request: StaffRequest) -> HttpResponse:
    people = Staff.objects.order_by("-is_active", "role", "first_name", "username")
    return render(request, "staff/catalog/staff.html", {"people": people})
