"""Investigations as JSON-ready data: for the API, the support export and `tally investigate --json`.

Money becomes a two-place string, datetimes ISO 8601 in the clinic's time zone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from ..models import Patient
from .explain import LEFT_OUT, Finding, Investigation
from .service import investigate_patient

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
    "NOT_CHECKED_IN_YET": "today, not checked in yet",
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
    return {
        "summary": jsonable(investigation.summary, tz),
        "findings": [finding_dict(f) for f in investigation.findings],
        "timeline": jsonable(investigation.timeline, tz),
    }


def support_investigation(patient: Patient, *, anonymous: bool) -> tuple[list[Investigation], list[Finding]]:
    """The investigation the support export shows (JSON, printable page, `tally investigate`).
    Anonymous, it quotes no reason staff typed (a deletion's, a removed line's, a refund's, an
    adjustment's: any may name the patient or a phone number), and any text that still names
    the patient or their contact details (a package the clinic named after them) has those
    words left out."""
    packages, orphans = investigate_patient(patient.pk, quote_staff_text=not anonymous)
    if not anonymous:
        return packages, orphans
    scrub = identity_scrubber(patient)
    packages = [Investigation(summary=scrub_texts(inv.summary, scrub),
                              findings=[dataclasses.replace(f, message=scrub(f.message)) for f in inv.findings],
                              timeline=[scrub_texts(event, scrub) for event in inv.timeline]) for inv in packages]
    return packages, [dataclasses.replace(f, message=scrub(f.message)) for f in orphans]


# The keys of a summary or a timeline event whose values are text people wrote (a package's or
# a service's name, a line's description, a payment's method, the staff member who removed a
# tombstone, who may share the patient's name); the others are codes, ids, amounts
# and dates, left as they are even for a patient named like one ("Active", "Visit").
TEXT_KEYS = frozenset({"name", "service", "description", "method", "by"})


def scrub_texts(record: dict[str, Any], scrub: Callable[[str], str]) -> dict[str, Any]:
    return {key: scrub(value) if key in TEXT_KEYS and isinstance(value, str) else value
            for key, value in record.items()}


def identity_scrubber(patient: Patient) -> Callable[[str], str]:
    """A function that replaces, in a text, what identifies this patient: each of their names,
    their email (or its part before the @), their phone number however it is punctuated, their
    date of birth as dates are written."""
    # Longest first: the whole email before the name it may start with.
    texts = {w for name in (patient.first_name, patient.last_name) for w in re.split(r"[\s,]+", name) if len(w) > 1}
    if patient.email:
        texts |= {patient.email, patient.email.split("@")[0]}
    if patient.date_of_birth:
        texts |= dates_written(patient.date_of_birth)
    patterns = [re.escape(text) for text in sorted(texts, key=len, reverse=True)]
    digits = re.sub(r"\D", "", patient.phone)
    if len(digits) >= 5:  # its last seven digits, with any separators between them
        patterns.insert(0, r"[\s().-]{0,3}".join(digits[-7:]))
    if not patterns:
        return lambda text: text
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(patterns) + r")(?!\w)", re.IGNORECASE)
    return lambda text: pattern.sub(LEFT_OUT, text)


def dates_written(day: dt.date) -> set[str]:
    month, short = day.strftime("%B"), day.strftime("%b")
    return {day.isoformat(), f"{day.day} {month} {day.year}", f"{day.day} {short} {day.year}",
            f"{month} {day.day}, {day.year}", f"{short} {day.day}, {day.year}", f"{month} {day.day} {day.year}",
            f"{day.month}/{day.day}/{day.year}", f"{day:%m/%d/%Y}", f"{day.day}/{day.month}/{day.year}",
            f"{day:%d/%m/%Y}", f"{day:%d.%m.%Y}", f"{day.day}.{day.month}.{day.year}"}


def patient_export(patient: Patient, packages: list[Investigation], orphans: list[Finding], tz: dt.tzinfo,
                   *, anonymous: bool) -> dict[str, Any]:
    """The support export: the whole investigation for one patient number, optionally without
    names and contact details (what support needs to reason about counts is kept). The
    investigation comes from support_investigation() with the same `anonymous`. It holds every
    key of the API's investigation of the patient (GET /patients/{id}/investigation), in the
    same shape, and adds `patient` and `anonymous`."""
    identity: dict[str, Any] = {"patient_number": patient.patient_number}
    if not anonymous:
        identity |= {"first_name": patient.first_name, "last_name": patient.last_name,
                     "date_of_birth": jsonable(patient.date_of_birth, tz), "email": patient.email,
                     "phone": patient.phone}
    return {
        "patient_id": patient.pk,
        "patient_number": patient.patient_number,
        "patient": identity,
        "anonymous": anonymous,
        "packages": [investigation_dict(inv, tz) for inv in packages],
        "findings": [finding_dict(f) for f in orphans],
    }
