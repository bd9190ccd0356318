"""Audit of reads (SPEC "Who uses it"): every GET that returns patient data writes, before it
answers, one AuditEvent per patient-data object it returns (one INSERT for the page), with the
caller, their role, the UTC time and the client's address. A list that returns nothing still
writes one event (patient null) saying what was asked. A HEAD, answered by running the GET
(api.head_as_get), sends no body: nobody saw the data, so it writes none."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.http import HttpRequest

from tally.clinic.audit import Shown, client_ip, record_reads

from .lookups import viewer


def audit_read(request: HttpRequest, action: str, shown: Iterable[Shown], *, nothing: Shown | None = None,
               details: dict[str, Any] | None = None) -> None:
    if getattr(request, "head_only", False):
        return
    record_reads(viewer(request), action, shown, ip=client_ip(request), nothing=nothing, details=details)


def audit_page(request: HttpRequest, action: str, page: dict[str, Any], object_type: str, *,
               patient_key: str = "patient_id", nothing: Shown | None = None,
               details: dict[str, Any] | None = None) -> dict[str, Any]:
    """Audit one page of a list (bounded by its `limit`) from the items it returns, and return it."""
    shown = [Shown(item["id"] if patient_key == "id" else item[patient_key], object_type, item["id"])
             for item in page["items"]]
    audit_read(request, action, shown, nothing=nothing or Shown(None, object_type, ""), details=details)
    return page
