"""The investigator's pages: "Why is this count wrong?" for one package (summary, timeline
picture, findings with one-click fixes), a patient's support export, and the clinic audit."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.timezone import localtime

from tally.clinic import rules
from tally.clinic.actions.fixes import NOT_BY_OVERRIDE
from tally.clinic.audit import Shown
from tally.clinic.errors import ClinicError
from tally.clinic.investigator.explain import (
    FINDING_CODES,
    POSSIBLE_DOUBLE_USE,
    SEVERITY_RANK,
    Finding,
)
from tally.clinic.investigator.export import patient_export, reason_label, support_investigation
from tally.clinic.investigator.service import (
    FIX_ACTIONS,
    AuditScan,
    apply_fix,
    audit_snapshot,
    investigate_package,
    investigate_patient,
    take_audit_snapshot,
)
from tally.clinic.models import Patient, PatientPackage
from tally.clinic.models.staff import Role

from ..timeline_svg import render_timeline
from .common import DESK, StaffRequest, forbidden, is_htmx, shows, staff_view

FIX_LABELS = {
    "apply_to_line": "Apply the package to this visit",
    "use_first_session": "Use the first session on this visit",
    "recreate_from_tombstone": "Restore this visit and charge it",
    "check_in_and_charge": "Record the check-in and charge",
    "adjust": "Adjust the count",
}


def parse_expected(raw: str | None) -> tuple[int | None, str | None]:
    if raw in (None, ""):
        return None, None
    try:
        value = int(raw)
    except ValueError:
        return None, "Expected used must be a whole number."
    if value < 0 or value > 100000:
        return None, "Expected used must be between 0 and 100000."
    return value, None


# A package in one of these states refuses every override (fixes.NOT_BY_OVERRIDE), whatever the line.
CLOSED_TO_OVERRIDE = {"pending_payment": rules.PACKAGE_NOT_PAID, "cancelled": rules.PACKAGE_CANCELLED,
                      "exhausted": rules.PACKAGE_EXHAUSTED}


def overridable(finding: Finding, summary: dict) -> bool:
    """Whether an owner's "apply anyway" can work for this finding: a rule working as designed
    (info, no fix) on a line, for a reason an override may set aside, on a package open to it
    with a session left (an expired one may have none)."""
    return (finding.fix is None and finding.line_id is not None and finding.severity == "info"
            and finding.code not in NOT_BY_OVERRIDE and summary["status"] not in CLOSED_TO_OVERRIDE
            and summary["sessions_remaining"] > 0)


def is_sure_duplicate(finding: Finding, visit_of_line: dict[int, int | None]) -> bool:
    """A double use whose charge to remove is certain: one visit counted twice, or a charge no
    visit owns (a first session at a sale that named no visit). Two visits' charges on one day
    are only possibly one visit charged twice ("check whether"): no button to remove one.
    `visit_of_line`: each line's visit, from the investigation's timeline (no query per finding)."""
    if finding.code != POSSIBLE_DOUBLE_USE or finding.line_id is None or finding.invoice_id is None:
        return False
    return finding.appointment_id is not None or (
        finding.line_id in visit_of_line and visit_of_line[finding.line_id] is None)


def tombstone_rows(timeline: list[dict]) -> list[dict]:
    """Every tombstone of the history (SPEC: always shown to the investigator), each saying
    what was removed, when and why: a deleted visit, or a charge removed from an invoice."""
    lines = {e["line_id"]: e for e in timeline if e["kind"] == "line"}
    numbers = {e["invoice_id"]: e["number"] for e in timeline if e["kind"] == "invoice"}
    visits = {e["appointment_id"]: e for e in timeline if e["kind"] == "visit"}
    rows = []
    for event in timeline:
        if event["kind"] != "tombstone":
            continue
        if event["of"] == "appointment":
            visit = visits.get(event["appointment_id"])
            what = (f"{visit['service']} visit of {date_format(localtime(visit['at']), 'j M Y, H:i')}"
                    if visit else "A visit")
            rows.append({"at": event["at"], "by": event["by"], "label": "Visit deleted", "what": what,
                         "reason": event["reason"]})
        else:
            line = lines.get(event["invoice_line_id"])
            what = f"{line['description']} on {numbers.get(line['invoice_id'], 'an invoice')}" if line else "A charge"
            rows.append({"at": event["at"], "by": event["by"], "label": "Charge removed", "what": what,
                         "reason": event["reason"]})
    return rows


def investigation_context(request: StaffRequest, package: PatientPackage, expected_used: int | None) -> dict:
    tz = request.clinic.tz
    inv = investigate_package(package.pk, expected_used=expected_used)
    shows(request, "patient_package.investigate", Shown(package.patient_id, "patientpackage", package.pk))
    visits = []
    for event in inv.timeline:
        if event["kind"] == "visit":
            visits.append(event | {"reason_text": reason_label(event["reason"])})
    visit_of_line = {e["line_id"]: e["appointment_id"] for e in inv.timeline if e["kind"] == "line"}
    findings = [{"finding": f, "fix_json": json.dumps(f.fix["params"]) if f.fix else "",
                 "fix_label": FIX_LABELS.get(f.fix["action"], "Fix") if f.fix else "",
                 "override": request.user.role == Role.OWNER and overridable(f, inv.summary),
                 "remove_duplicate": is_sure_duplicate(f, visit_of_line)}
                for f in inv.findings]
    return {
        "package": package, "patient": package.patient, "summary": inv.summary, "findings": findings,
        "visits": visits, "tombstones": tombstone_rows(inv.timeline), "expected_used": expected_used,
        "timeline_svg": render_timeline(inv, tz, now=timezone.now()),
        "can_override": request.user.role == Role.OWNER,
    }


@staff_view(*DESK)
def investigation(request: StaffRequest, package_id: int) -> HttpResponse:
    package = get_object_or_404(PatientPackage.objects.select_related("patient", "sale_invoice"), pk=package_id)
    expected_used, problem = parse_expected(request.GET.get("expected_used"))
    context = investigation_context(request, package, expected_used) | {"expected_problem": problem}
    if problem:  # what was typed stays in the field, to be corrected
        context["expected_typed"] = request.GET.get("expected_used", "")
    # The panel alone for the compare form's swap; the whole page for anything else, such as
    # htmx restoring history with Back (an htmx request that targets no element).
    swap = is_htmx(request) and request.headers.get("HX-Target") == "investigation"
    template = "staff/investigation/detail.html#body" if swap else "staff/investigation/detail.html"
    return render(request, template, context, status=422 if problem else 200)


def _fix_request(request: StaffRequest) -> tuple[str, dict[str, Any]]:
    action = request.POST.get("action", "")
    try:
        params = json.loads(request.POST.get("params") or "{}")
    except ValueError:
        params = None
    if action not in FIX_ACTIONS or not isinstance(params, dict):
        raise ClinicError("That fix is not one Tally offers.", code="validation_error")
    if request.POST.get("override"):
        params["override"] = True
        params["reason"] = request.POST.get("reason", "")
    if action == "adjust":
        params["change"] = request.POST.get("change") or params.get("change")
        params["reason"] = request.POST.get("reason", params.get("reason", ""))
        params["sessions_used"] = request.POST.get("sessions_used") or params.get("sessions_used")
    return action, params


@staff_view(*DESK)
def fix(request: StaffRequest, package_id: int) -> HttpResponse:
    """Apply one fix (confirmed in the browser), then show the investigation again in place."""
    package = get_object_or_404(PatientPackage.objects.select_related("patient", "sale_invoice"), pk=package_id)
    if request.method != "POST":
        return redirect("staff:investigation", package_id=package.pk)
    expected_used, _ = parse_expected(request.POST.get("expected_used"))
    status = 200
    try:
        action, params = _fix_request(request)
        result = apply_fix(acting_user=request.user, action=action, params=params, context=package)
    except ClinicError as exc:
        if exc.code == "forbidden":
            return forbidden(request, exc.message)
        messages.error(request, exc.message)
        status = 409 if exc.code == "conflict" else 422
    else:
        messages.success(request, result.message if result.applied else f"Nothing to do: {result.message}")
    if not is_htmx(request):
        url = redirect("staff:investigation", package_id=package.pk).url
        return redirect(f"{url}?expected_used={expected_used}" if expected_used is not None else url)
    package.refresh_from_db()
    context = investigation_context(request, package, expected_used) | {"flash": True}
    return render(request, "staff/investigation/detail.html#body", context, status=status)


@staff_view(*DESK)
def patient_fix(request: StaffRequest, patient_id: int) -> HttpResponse:
    """A fix for a visit that belongs to no package (from the patient's support page)."""
    patient = get_object_or_404(Patient, pk=patient_id)
    if request.method == "POST":
        try:
            action, params = _fix_request(request)
            result = apply_fix(acting_user=request.user, action=action, params=params, patient_id=patient.pk)
        except ClinicError as exc:
            if exc.code == "forbidden":
                return forbidden(request, exc.message)
            messages.error(request, exc.message)
        else:
            messages.success(request, result.message)
    return redirect("staff:patient_investigation", patient_id=patient.pk)


@staff_view(*DESK)
def patient_investigation(request: StaffRequest, patient_id: int) -> HttpResponse:
    """Every package of one patient and the visits that belong to none; the support export."""
    patient = get_object_or_404(Patient, pk=patient_id)
    packages, orphans = investigate_patient(patient.pk)
    shows(request, "patient.investigate", Shown(patient.pk, "patient", patient.pk))
    orphan_rows = [{"finding": f, "fix_json": json.dumps(f.fix["params"]) if f.fix else "",
                    "fix_label": FIX_LABELS.get(f.fix["action"], "Fix") if f.fix else ""} for f in orphans]
    return render(request, "staff/investigation/patient.html", {
        "patient": patient, "packages": packages, "orphans": orphan_rows,
    })


@staff_view(*DESK)
def export_json(request: StaffRequest, patient_id: int) -> HttpResponse:
    patient = get_object_or_404(Patient, pk=patient_id)
    anonymous = request.GET.get("anonymous") == "1"
    packages, orphans = support_investigation(patient, anonymous=anonymous)
    shows(request, "patient.export", Shown(patient.pk, "patient", patient.pk),
          details={"format": "json", "anonymous": anonymous})
    data = patient_export(patient, packages, orphans, request.clinic.tz, anonymous=anonymous)
    response = JsonResponse(data, json_dumps_params={"indent": 2})
    response["Content-Disposition"] = f'attachment; filename="{patient.patient_number}-investigation.json"'
    return response


@staff_view(*DESK)
def export_print(request: StaffRequest, patient_id: int) -> HttpResponse:
    patient = get_object_or_404(Patient, pk=patient_id)
    anonymous = request.GET.get("anonymous") == "1"
    packages, orphans = support_investigation(patient, anonymous=anonymous)
    shows(request, "patient.export", Shown(patient.pk, "patient", patient.pk),
          details={"format": "print", "anonymous": anonymous})
    return render(request, "staff/investigation/export_print.html", {
        "patient": patient, "anonymous": anonymous, "packages": packages, "orphans": orphans,
    })


@staff_view(*DESK)
def audit(request: StaffRequest) -> HttpResponse:
    """Packages with findings, worst first; filter by code and severity. One run of the audit
    serves every page and filter (`snapshot` in the query string) until staff run it again."""
    severity = request.GET.get("severity") or "warning"
    if severity not in SEVERITY_RANK:
        severity = "warning"
    code = request.GET.get("code") or ""
    snapshot_id = request.GET.get("snapshot", "")
    # isascii: '²' is a digit to isdigit() but no number to int().
    snapshot = audit_snapshot(int(snapshot_id)) if snapshot_id.isascii() and snapshot_id.isdigit() else None
    if snapshot is None:
        snapshot = take_audit_snapshot(by=request.user, keep=request.method != "HEAD")
    scan = AuditScan.from_dict(snapshot.scan)
    rows = scan.rows(severity)
    if code:
        rows = [r for r in rows if code in r.codes]
    page = Paginator(rows, 50).get_page(request.GET.get("page"))
    shows(request, "patient_package.clinic_audit",
          *(Shown(r.patient_id, "patientpackage", r.patient_package_id) for r in page),
          nothing=Shown(None, "patientpackage", ""), details={"severity": severity, "code": code})
    return render(request, "staff/investigation/audit.html", {
        "scanned": scan.scanned, "page": page, "total": len(rows), "severity": severity, "code": code,
        "codes": FINDING_CODES, "severities": ["error", "warning", "info"], "snapshot": snapshot,
        "query_pins": {"snapshot": snapshot.pk},
    })
