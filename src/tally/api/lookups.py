"""Finding the objects a request names: 404 for the path's, 422 for the body's."""

from __future__ import annotations

import datetime as dt
from typing import TypeVar, overload

from django.db.models import Model, QuerySet
from django.http import HttpRequest

from tally.clinic.errors import Invalid, NotFound
from tally.clinic.models import ClinicSettings, Staff

M = TypeVar("M", bound=Model)


def get_or_404(rows: QuerySet[M], pk: int, what: str) -> M:
    """The object a URL names, or 404 not_found."""
    found = rows.filter(pk=pk).first()
    if found is None:
        raise NotFound(f"No such {what}.")
    return found


@overload
def get_referenced(rows: QuerySet[M], pk: int, field: str, what: str) -> M: ...
@overload
def get_referenced(rows: QuerySet[M], pk: int | None, field: str, what: str) -> M | None: ...
def get_referenced(rows: QuerySet[M], pk: int | None, field: str, what: str) -> M | None:
    """The object a request body names (None when it names none), or 422 on that field."""
    if pk is None:
        return None
    found = rows.filter(pk=pk).first()
    if found is None:
        raise Invalid(f"No such {what}.", fields={field: f"no such {what}"})
    return found


def viewer(request: HttpRequest) -> Staff:
    return request.auth  # type: ignore[attr-defined]


def clinic_tz() -> dt.tzinfo:
    """Read per request: the clinic's time zone can change while the server runs."""
    return ClinicSettings.load().tz
