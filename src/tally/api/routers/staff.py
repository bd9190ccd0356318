"""The caller, the staff list and the clinic settings."""

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router

from tally.clinic.actions.catalog import do_update_clinic
from tally.clinic.models import ClinicSettings
from tally.clinic.queries import bookable_staff

from .. import render
from ..idempotency import clinic_write
from ..lookups import viewer
from ..pagination import paginate
from ..schemas import (
    READ_ERRORS,
    WRITE_ERRORS,
    ClinicOut,
    ClinicPatch,
    MeOut,
    PageParams,
    StaffPage,
    changes,
)

router = Router(tags=["staff and clinic"])


@router.get("/me", response={200: MeOut, **READ_ERRORS})
def me(request: HttpRequest) -> dict[str, Any]:
    return render.me(viewer(request))


@router.get("/staff", response={200: StaffPage, **READ_ERRORS})
def list_staff(request: HttpRequest, page: Query[PageParams]) -> dict[str, Any]:
    """Active staff, for choosing a practitioner when booking."""
    return paginate(bookable_staff(), page, keys=("id",), render=render.staff)


@router.get("/clinic", response={200: ClinicOut, **READ_ERRORS})
def get_clinic(request: HttpRequest) -> dict[str, Any]:
    return render.clinic(ClinicSettings.load())


@router.patch("/clinic", response={200: ClinicOut, **WRITE_ERRORS})
@clinic_write
def update_clinic(request: HttpRequest, payload: ClinicPatch) -> dict[str, Any]:
    """Owner only: name, time zone, currency, no-show policy."""
    settings = do_update_clinic(acting_user=viewer(request), changes=changes(payload))
    return render.clinic(settings)
