"""Services and package templates. Anyone reads the catalog; only owners change it."""

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Status

from tally.clinic.actions.catalog import (
    do_create_package,
    do_create_service,
    do_update_package,
    do_update_service,
)
from tally.clinic.models import Package, Service

from .. import render
from ..idempotency import clinic_write
from ..lookups import get_or_404, viewer
from ..pagination import paginate
from ..schemas import (
    READ_ERRORS,
    WRITE_ERRORS,
    PackageIn,
    PackageOut,
    PackagePage,
    PackagePatch,
    PageParams,
    ServiceIn,
    ServiceOut,
    ServicePage,
    ServicePatch,
    changes,
)
from ..types import Id

router = Router(tags=["catalog"])


@router.get("/services", response={200: ServicePage, **READ_ERRORS})
def list_services(request: HttpRequest, page: Query[PageParams]) -> dict[str, Any]:
    return paginate(Service.objects.all(), page, keys=("name", "id"), render=render.service)


@router.post("/services", response={201: ServiceOut, **WRITE_ERRORS})
@clinic_write
def create_service(request: HttpRequest, payload: ServiceIn) -> Status:
    service = do_create_service(acting_user=viewer(request), **payload.model_dump())
    return Status(201, render.service(service))


@router.patch("/services/{service_id}", response={200: ServiceOut, **WRITE_ERRORS})
@clinic_write
def update_service(request: HttpRequest, service_id: Id, payload: ServicePatch) -> dict[str, Any]:
    service = get_or_404(Service.objects.all(), service_id, "service")
    service = do_update_service(acting_user=viewer(request), service=service,
                                changes=changes(payload))
    return render.service(service)


@router.get("/packages", response={200: PackagePage, **READ_ERRORS})
def list_packages(request: HttpRequest, page: Query[PageParams]) -> dict[str, Any]:
    packages = Package.objects.prefetch_related("services")
    return paginate(packages, page, keys=("name", "id"), render=render.package)


@router.post("/packages", response={201: PackageOut, **WRITE_ERRORS})
@clinic_write
def create_package(request: HttpRequest, payload: PackageIn) -> Status:
    package = do_create_package(acting_user=viewer(request), **payload.model_dump())
    return Status(201, render.package(package))


@router.patch("/packages/{package_id}", response={200: PackageOut, **WRITE_ERRORS})
@clinic_write
def update_package(request: HttpRequest, package_id: Id, payload: PackagePatch) -> dict[str, Any]:
    """Changes future sales only: packages already sold keep their snapshot."""
    package = get_or_404(Package.objects.all(), package_id, "package")
    package = do_update_package(acting_user=viewer(request), package=package,
                                changes=changes(payload, nullable=("valid_days",)))
    return render.package(package)
