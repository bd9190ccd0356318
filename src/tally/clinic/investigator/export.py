"""Investigations as JSON-ready data: for the API, the support export and `tally investigate --json`.

Money becomes a two-place string, datetimes ISO 8601 in the clinic's time zone.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from ..models import Patient, PatientPackage
from .explain import Finding, Investigation

CENT = Decimal("0.01")

# Short phrases for the reason codes a timeline visit can carry.
REASON_LABELS = {
    "FIRST_SESSION_NOT_USED": "first session not used at the sale",
    "NOT_CHECKED_IN": "never checked in",
    "NO_CHARGES": "checked in with No Charges",
    "NOT_INVOICED": "no service charged",
    "APPOINTMENT_DELETED": "deleted",
    "SERVICE_NOT_IN_PACKAGE": "service not in the package",
    "PACKAGE_NOT_PAID": "package not fully paid then",
    "CHARGED_BEFORE_PURCHASE": "dated before the sale",
    "COVERED_BY_OTHER_PACKAGE": "used another package",
    "PACKAGE_EXHAUSTED": "no session left",
    "PACKAGE_EXPIRED": "after expiry",
    "PACKAGE_CANCELLED": "package cancelled",
    "CANCELLED": "cancelled",
    "NO_SHOW": "no-show",
    "UPCOMING": "upcoming",
    "NO_PACKAGE": "no package held",
    "NOT_CONSIDERED": "charged before this package existed",
}


def reason_label(code: str | None) -> str:
    if code is None:
        return ""
    return REASON_LABELS.get(code, code.replace("_", " ").lower())


def jsonable(value: Any, tz: dt.tzinfo) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(tz).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value.quantize(CENT))
    if isinstance(value, dict):
        return {k: jsonable(v, tz) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, tz) for v in value]
    return value


def finding_dict(finding: Finding) -> dict[str, Any]:
    return finding.as_dict()


def investigation_dict(investigation: Investigation, tz: dt.tzinfo) -> dict[str, Any]:
    summary = jsonable(investigation.summary, tz)
    package = PatientPackage.objects.only("price", "use_first_session", "cancelled_at").get(pk=summary["id"])
    summary |= {"price": jsonable(package.price, tz), "use_first_session": package.use_first_session,
                "cancelled_at": jsonable(package.cancelled_at, tz)}
    return {
        "summary": summary,
        "findings": [finding_dict(f) for f in investigation.findings],
        "timeline": jsonable(investigation.timeline, tz),
    }


def patient_export(patient: Patient, packages: list[Investigation], orphans: list[Finding], tz: dt.tzinfo,
                   *, anonymous: bool) -> dict[str, Any]:
    """The support export: the whole investigation for one patient number, optionally without
    names and contact details (what support needs to reason about counts is kept)."""
    identity: dict[str, Any] = {"patient_number": patient.patient_number}
    if not anonymous:
        identity |= {"first_name": patient.first_name, "last_name": patient.last_name,
                     "date_of_birth": jsonable(patient.date_of_birth, tz), "email": patient.email,
                     "phone": patient.phone}
    return {
        "patient": identity,
        "anonymous": anonymous,
        "packages": [investigation_dict(inv, tz) for inv in packages],
        "findings": [finding_dict(f) for f in orphans],
    }
