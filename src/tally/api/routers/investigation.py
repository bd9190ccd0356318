"""The investigator, its fixes, the clinic audit and the audit log (SPEC.md "The investigator")."""


import base64
import binascii
import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from django.http import HttpRequest
from ninja import Query, Router, Schema
from pydantic import Field

from tally.clinic.actions.common import DESK, OWNER, require_role
from tally.clinic.errors import ClinicError, Invalid
from tally.clinic.investigator.export import finding_dict as finding_out
from tally.clinic.investigator.export import investigation_dict as investigation_out
from tally.clinic.investigator.service import (
    FIX_ACTIONS,
    FIX_PARAMS,
    AuditScan,
    apply_fix,
    audit_snapshot,
    investigate_package,
    investigate_patient,
    take_audit_snapshot,
)
from tally.clinic.models import AuditEvent, PackageLedgerEntry, Patient, PatientPackage

from .. import render
from ..idempotency import clinic_write
from ..lookups import clinic_tz, get_or_404, viewer
from ..pagination import paginate
from ..reads import Shown, audit_read
from ..schemas import (
    READ_ERRORS,
    WRITE_ERRORS,
    DateOut,
    DateTimeOut,
    LedgerEntryOut,
    MoneyOut,
    PageParams,
    PatientPackageOut,
    StrictInput,
    page_of,
)
from ..types import Flag, Id, Moment, resolve_moment

router = Router(tags=["investigator"])

Severity = Literal["error", "warning", "info"]


class FixOut(Schema):
    action: str
    params: dict[str, Any]


class FindingOut(Schema):
    code: str
    severity: Severity
    message: str
    date: DateOut
    until: DateOut | None = None
    patient_package_id: int | None = None
    appointment_id: int | None = None
    invoice_id: int | None = None
    line_id: int | None = None
    tombstone_id: int | None = None
    fix: FixOut | None


class SummaryOut(PatientPackageOut):
    paid: MoneyOut
    balance: MoneyOut
    expected_used: int | None
    difference: int | None


class InvestigationOut(Schema):
    summary: SummaryOut
    findings: list[FindingOut]
    timeline: list[dict[str, Any]] = Field(
        description="Every visit (tombstones included), invoice, line, payment and ledger entry, oldest first; "
        "visits carry `counted` and, when not counted, `reason`."
    )


class PatientInvestigationOut(Schema):
    patient_id: int
    patient_number: str
    packages: list[InvestigationOut]
    findings: list[FindingOut]


class FixIn(StrictInput):
    action: Literal[FIX_ACTIONS]  # type: ignore[valid-type]
    params: dict[str, Any] = Field(default_factory=dict, description=(
        "apply_to_line {line_id, service_id?}, use_first_session {line_id, service_id?}, "
        "recreate_from_tombstone {tombstone_id}, check_in_and_charge {appointment_id}, "
        "adjust {change, reason, sessions_used?} (owner; with sessions_used, the count looked at, "
        "the same adjustment sent again changes nothing and a count changed since is a 409)."))
    override: Flag | None = Field(None, description="Owner only, with `reason`: apply despite rule 6 or a rule "
                                                    "working as designed.")
    reason: Annotated[str, Field(max_length=2000)] | None = None


class FixResultOut(Schema):
    applied: bool
    message: str
    ledger_entry: LedgerEntryOut | None
    investigation: InvestigationOut | None
    findings: list[FindingOut] | None = None


class AuditRowOut(Schema):
    patient_package_id: int
    patient_id: int
    patient_number: str
    package_name: str
    codes: list[str]
    worst_severity: Severity
    findings: int
    worst_findings: int = Field(description="How many of `findings` are of `worst_severity`.")


class AuditPageOut(Schema):
    scanned: int
    as_of: DateTimeOut = Field(description="When this run of the audit was taken; every page of it is from then.")
    items: list[AuditRowOut]
    next: str | None


class AuditEventOut(Schema):
    id: int
    at: DateTimeOut
    actor_id: int | None
    role: str
    action: str
    object_type: str
    object_id: str
    patient_id: int | None
    before: Any = None
    after: Any = None
    ip: str | None


AuditEventPage = page_of(AuditEventOut, "AuditEventPage")


class ExpectedUsed(Schema):
    expected_used: int | None = Field(None, ge=0, le=100000, description="What staff expected the used count to be.")


class AuditParams(PageParams):
    min_severity: Severity = "info"


class AuditLogParams(PageParams):
    patient_id: Id | None = None
    from_: Moment | None = Field(None, alias="from")
    to: Moment | None = None


# ------------------------------------------------------------------ rendering


# ------------------------------------------------------------------ endpoints


@router.get("/patient-packages/{patient_package_id}/investigation",
            response={200: InvestigationOut, **READ_ERRORS})
def package_investigation(request: HttpRequest, patient_package_id: Id,
                          query: Query[ExpectedUsed]) -> dict[str, Any]:
    """Why the count is what it is: summary, all-time timeline, findings with their fixes.
    With `expected_used`, the findings that can account for the difference come first.
    Front desk and owner (SPEC): a practitioner's chart is read-only and shows no tombstone, `403`."""
    require_role(viewer(request), *DESK, doing="investigate packages")
    result = investigation_out(investigate_package(patient_package_id, expected_used=query.expected_used),
                               clinic_tz())
    audit_read(request, "patient_package.investigate",
               [Shown(result["summary"]["patient_id"], "patientpackage", patient_package_id)])
    return result


@router.get("/patients/{patient_id}/investigation", response={200: PatientInvestigationOut, **READ_ERRORS})
def patient_investigation(request: HttpRequest, patient_id: Id) -> dict[str, Any]:
    """Every package of the patient, and the visit-level findings that belong to no package.
    Front desk and owner, as the staff site's investigation page."""
    require_role(viewer(request), *DESK, doing="investigate patients")
    tz = clinic_tz()
    patient = get_or_404(Patient.objects.all(), patient_id, "patient")
    packages, orphans = investigate_patient(patient.pk)
    audit_read(request, "patient.investigate", [Shown(patient.pk, "patient", patient.pk)])
    return {"patient_id": patient.pk, "patient_number": patient.patient_number,
            "packages": [investigation_out(inv, tz) for inv in packages],
            "findings": [finding_out(f) for f in orphans]}


def fix_params(payload: FixIn) -> dict[str, Any]:
    """The action's parameters, `override` and `reason` sent beside them included. A parameter
    the action does not take is refused, as an unknown field of any body is: a misspelt one
    (`service` for `service_id`) would otherwise be left out silently."""
    known = FIX_PARAMS[payload.action]
    unknown = sorted(name for name in payload.params if name not in known)
    if unknown:
        raise Invalid(f"{payload.action} takes {', '.join(sorted(known))}; not {', '.join(unknown)}.",
                      fields={f"params.{name}": f"not a parameter of {payload.action}" for name in unknown})
    params = dict(payload.params)
    if payload.override is not None:
        params["override"] = payload.override
    if payload.reason is not None:
        params["reason"] = payload.reason
    return params


BESIDE_PARAMS = ("override", "reason")


@contextmanager
def fields_as_sent(payload: FixIn) -> Iterator[None]:
    """The actions name a refused parameter by its own name (`change`, `line_id`); in the
    request it is `params.<name>`, unless it is `override` or `reason` sent beside `params`
    (or `reason` left out of an override sent there). A refusal names it where the request has
    it, whichever check refused it."""

    def as_sent(name: str) -> str:
        if "." in name or name == "action":
            return name
        if name not in payload.params and name in BESIDE_PARAMS and (
                getattr(payload, name) is not None or payload.override is not None):
            return name
        return f"params.{name}"

    try:
        yield
    except ClinicError as exc:
        exc.fields = {as_sent(name): note for name, note in exc.fields.items()}
        raise


def latest_entry(result_entry: PackageLedgerEntry | None, tz: dt.tzinfo) -> dict[str, Any] | None:
    if result_entry is None:
        return None
    entry = PackageLedgerEntry.objects.select_related("by").get(pk=result_entry.pk)
    return render.ledger_entry(entry, tz)


@router.post("/patient-packages/{patient_package_id}/fixes", response={200: FixResultOut, **WRITE_ERRORS})
@clinic_write
def package_fix(request: HttpRequest, patient_package_id: Id, payload: FixIn) -> dict[str, Any]:
    """Apply one fix in the context of this package; rule 6 still decides which package covers
    (an owner's `override` applies this one). Idempotent: a repeat changes nothing."""
    tz = clinic_tz()
    context = get_or_404(PatientPackage.objects.all(), patient_package_id, "patient package")
    with fields_as_sent(payload):
        result = apply_fix(acting_user=viewer(request), action=payload.action, params=fix_params(payload),
                           context=context)
    # Every key of FixResultOut, as the schema would fill it: an Idempotency-Key replay sends
    # back this dict as stored, not as the schema renders it.
    return {"applied": result.applied, "message": result.message, "ledger_entry": latest_entry(result.ledger_entry, tz),
            "investigation": investigation_out(investigate_package(context.pk), tz), "findings": None}


@router.post("/patients/{patient_id}/fixes", response={200: FixResultOut, **WRITE_ERRORS})
@clinic_write
def patient_fix(request: HttpRequest, patient_id: Id, payload: FixIn) -> dict[str, Any]:
    """A fix for a finding that belongs to no package; rule 6 decides."""
    tz = clinic_tz()
    patient = get_or_404(Patient.objects.all(), patient_id, "patient")
    with fields_as_sent(payload):
        result = apply_fix(acting_user=viewer(request), action=payload.action, params=fix_params(payload),
                           patient_id=patient.pk)
    _, orphans = investigate_patient(patient.pk)
    return {"applied": result.applied, "message": result.message, "ledger_entry": latest_entry(result.ledger_entry, tz),
            "investigation": None, "findings": [finding_out(f) for f in orphans]}


def _audit_cursor(cursor: str, min_severity: str) -> tuple[int, int]:
    """(snapshot id, offset) from a cursor this list gave out for the same min_severity."""
    refused = Invalid("That cursor is not one this list gave out.", fields={"cursor": "invalid cursor"})
    try:
        kind, snapshot, severity, offset = base64.urlsafe_b64decode(
            cursor + "=" * (-len(cursor) % 4)).decode().split(":")
        snapshot_id, start = int(snapshot), int(offset)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise refused from None
    if kind != "s" or start < 0:
        raise refused
    if severity != min_severity:
        raise Invalid("That cursor belongs to the same audit with another min_severity; keep the first "
                      "page's min_severity, or start again without a cursor.",
                      fields={"cursor": f"given out for min_severity={severity}"})
    return snapshot_id, start


def _next_audit_cursor(snapshot_id: int, min_severity: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"s:{snapshot_id}:{min_severity}:{offset}".encode()).decode().rstrip("=")


@router.get("/audit/packages", response={200: AuditPageOut, **READ_ERRORS})
def audit_packages(request: HttpRequest, query: Query[AuditParams]) -> dict[str, Any]:
    """The clinic audit: every package through the investigator, those with findings at or
    above `min_severity`, worst first (the gravest severity; among equals, more findings of it,
    then more findings in all, then the lower package id). The first page runs the audit and
    keeps the run (`as_of`); `next` pages through that same run, so a fix applied meanwhile neither skips
    nor repeats a package. A cursor is good for 24 hours; then start again without one."""
    require_role(viewer(request), *DESK, doing="run the clinic audit")
    if query.cursor:
        snapshot_id, start = _audit_cursor(query.cursor, query.min_severity)
        snapshot = audit_snapshot(snapshot_id)
        if snapshot is None:
            raise Invalid("That audit has expired; start again without a cursor.", fields={"cursor": "expired"})
    else:
        snapshot, start = take_audit_snapshot(by=viewer(request), keep=not getattr(request, "head_only", False)), 0
    scan = AuditScan.from_dict(snapshot.scan)
    rows = scan.rows(query.min_severity)
    page = rows[start:start + query.limit]
    more = start + query.limit < len(rows)
    # Each package listed names its patient: one event per row shown, bounded by `limit`.
    audit_read(request, "patient_package.clinic_audit",
               [Shown(row.patient_id, "patientpackage", row.patient_package_id) for row in page],
               nothing=Shown(None, "patientpackage", ""), details={"min_severity": query.min_severity})
    return {"scanned": scan.scanned, "as_of": render.moment(snapshot.created_at, clinic_tz()),
            "items": [row.__dict__ for row in page],
            "next": _next_audit_cursor(snapshot.pk, query.min_severity, start + query.limit)
            if more and snapshot.pk is not None else None}


@router.get("/audit-log", response={200: AuditEventPage, **READ_ERRORS})
def audit_log(request: HttpRequest, query: Query[AuditLogParams]) -> dict[str, Any]:
    """Owner only: who did what, when, with before/after, oldest first."""
    require_role(viewer(request), *OWNER, doing="read the audit log")
    tz = clinic_tz()
    events = AuditEvent.objects.all()
    if query.patient_id is not None:
        get_or_404(Patient.objects.all(), query.patient_id, "patient")
        events = events.filter(patient_id=query.patient_id)
    if query.from_ is not None:
        events = events.filter(at__gte=resolve_moment(query.from_, tz))
    if query.to is not None:
        events = events.filter(at__lte=resolve_moment(query.to, tz, bare_date_means_end=True))
    found = paginate(events, query, keys=("id",), render=lambda e: {
        "id": e.pk, "at": render.moment(e.at, tz), "actor_id": e.actor_id, "role": e.role, "action": e.action,
        "object_type": e.object_type, "object_id": e.object_id, "patient_id": e.patient_id,
        "before": e.before, "after": e.after, "ip": e.ip,
    })
    # The log quotes patients' data (before/after): one event per patient on the page.
    patients = dict.fromkeys(item["patient_id"] for item in found["items"] if item["patient_id"] is not None)
    audit_read(request, "audit_log.view", [Shown(pk, "auditevent", "") for pk in patients],
               nothing=Shown(query.patient_id, "auditevent", ""),
               details={k: v for k, v in {"patient_id": query.patient_id, "from": query.from_, "to": query.to}.items()
                        if v is not None} or None)
    return found
