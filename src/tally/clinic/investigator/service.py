"""What the front ends call: investigate a package or a patient, run the clinic audit,
apply a fix. Reads go through the loader and the pure explain(); fixes go through the
do_* actions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import overload

from django.conf import settings
from django.utils import timezone

from ..actions.fixes import (
    FixResult,
    do_adjust_fix,
    do_apply_to_line,
    do_check_in_and_charge,
    do_recreate_from_tombstone,
    do_use_first_session,
)
from ..errors import Invalid, NotFound
from ..models import ClinicAuditSnapshot, PatientPackage, Staff
from .explain import SEVERITY_RANK, Finding, Investigation, explain, worst_severity
from .loader import load_histories, load_history

FIX_ACTIONS = ("apply_to_line", "use_first_session", "recreate_from_tombstone", "check_in_and_charge", "adjust")
# The parameters each action reads (apply_fix); `override` and `reason` of apply_to_line may also
# be sent beside `params` (API.md "Fix actions").
FIX_PARAMS: dict[str, frozenset[str]] = {
    "apply_to_line": frozenset({"line_id", "service_id", "override", "reason"}),
    "use_first_session": frozenset({"line_id", "service_id"}),
    "recreate_from_tombstone": frozenset({"tombstone_id"}),
    "check_in_and_charge": frozenset({"appointment_id"}),
    "adjust": frozenset({"change", "reason", "sessions_used"}),
}


def investigate_package(package_id: int, *, expected_used: int | None = None) -> Investigation:
    patient_id = PatientPackage.objects.filter(pk=package_id).values_list("patient_id", flat=True).first()
    if patient_id is None:
        raise NotFound("No such patient package.")
    if expected_used is not None and expected_used < 0:
        raise Invalid("expected_used cannot be negative.", fields={"expected_used": "must be ≥ 0"})
    investigations, _ = explain(load_history(patient_id),
                                expected_used={package_id: expected_used} if expected_used is not None else None)
    return investigations[package_id]


def investigate_patient(patient_id: int, *, quote_staff_text: bool = True) -> tuple[list[Investigation], list[Finding]]:
    history = load_histories([patient_id]).get(patient_id)  # the loader knows who exists
    if history is None:
        raise NotFound("No such patient.")
    investigations, orphans = explain(history, quote_staff_text=quote_staff_text)
    return list(investigations.values()), orphans


@dataclass(frozen=True)
class AuditRow:
    patient_package_id: int
    patient_id: int
    patient_number: str
    package_name: str
    codes: list[str]
    worst_severity: str
    findings: int
    worst_findings: int = 0  # how many of `findings` are of `worst_severity`

    def order(self) -> tuple[int, int, int, int]:
        """"Worst first": the gravest severity; among equals, more findings of that severity,
        then more findings in all; then the package, so that a run's order never changes."""
        return (SEVERITY_RANK[self.worst_severity], -self.worst_findings, -self.findings, self.patient_package_id)


def severity_limit(min_severity: str) -> int:
    if min_severity not in SEVERITY_RANK:
        raise Invalid("min_severity is error, warning or info.", fields={"min_severity": "error|warning|info"})
    return SEVERITY_RANK[min_severity]


@dataclass(frozen=True)
class AuditScan:
    """One pass of the investigator over every package: how many were scanned, and for each
    package with any finding, its findings as (code, severity) pairs. Rows for any
    min_severity derive from it (`rows`), so one scan serves every filter and every page.
    `as_dict`/`from_dict` are its stored form (`ClinicAuditSnapshot.scan`)."""

    scanned: int
    packages: list[dict]  # {patient_package_id, patient_id, patient_number, package_name, findings: [[code, sev]]}

    def rows(self, min_severity: str = "info") -> list[AuditRow]:
        """Packages with findings at or above min_severity, worst first."""
        limit = severity_limit(min_severity)
        rows = []
        for package in self.packages:
            kept = [(code, severity) for code, severity in package["findings"] if SEVERITY_RANK[severity] <= limit]
            if kept:
                worst = worst_severity(severity for _, severity in kept) or "info"
                rows.append(AuditRow(
                    patient_package_id=package["patient_package_id"], patient_id=package["patient_id"],
                    patient_number=package["patient_number"], package_name=package["package_name"],
                    codes=sorted({code for code, _ in kept}), worst_severity=worst, findings=len(kept),
                    worst_findings=sum(severity == worst for _, severity in kept),
                ))
        rows.sort(key=AuditRow.order)
        return rows

    def as_dict(self) -> dict:
        return {"scanned": self.scanned, "packages": self.packages}

    @classmethod
    def from_dict(cls, stored: dict) -> AuditScan:
        return cls(scanned=stored["scanned"], packages=stored["packages"])


def scan_clinic(*, chunk_size: int = 300, progress: Callable[[int, int], None] | None = None) -> AuditScan:
    """Every package through the same investigator, a chunk of patients at a time."""
    patient_ids = list(PatientPackage.objects.order_by("patient_id").values_list("patient_id", flat=True).distinct())
    scanned = 0
    packages: list[dict] = []
    for start in range(0, len(patient_ids), chunk_size):
        chunk = patient_ids[start:start + chunk_size]
        for history in load_histories(chunk).values():
            investigations, _ = explain(history, timeline=False)
            for package_id, inv in investigations.items():
                scanned += 1
                if inv.findings:
                    packages.append({
                        "patient_package_id": package_id, "patient_id": history.patient_id,
                        "patient_number": history.patient_number, "package_name": inv.summary["name"],
                        "findings": [[f.code, f.severity] for f in inv.findings],
                    })
        if progress is not None:
            progress(min(start + chunk_size, len(patient_ids)), len(patient_ids))
    return AuditScan(scanned=scanned, packages=packages)


def clinic_audit(
    *,
    min_severity: str = "info",
    chunk_size: int = 300,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, list[AuditRow]]:
    """Every package through the same investigator; those with findings at or above
    min_severity, worst first. Returns (packages scanned, rows)."""
    severity_limit(min_severity)  # refused before the scan, not after it
    scan = scan_clinic(chunk_size=chunk_size, progress=progress)
    return scan.scanned, scan.rows(min_severity)


def take_audit_snapshot(*, by: Staff | None, keep: bool = True) -> ClinicAuditSnapshot:
    """Run the clinic audit once and keep it, so that its pages and filters are read from
    this one run (a fix landing between two pages can neither skip nor repeat a package, and
    a long audit is not run again for every page). Snapshots older than
    TALLY_AUDIT_SNAPSHOT_TTL_HOURS are deleted here. keep=False (a HEAD, which shows nothing
    and so must write nothing) answers the run unsaved: its pk is None, so no page follows it."""
    scan = scan_clinic()
    if not keep:
        return ClinicAuditSnapshot(created_at=timezone.now(), created_by=by, scan=scan.as_dict())
    ClinicAuditSnapshot.objects.filter(created_at__lt=_snapshot_cutoff()).delete()
    return ClinicAuditSnapshot.objects.create(created_at=timezone.now(), created_by=by, scan=scan.as_dict())


def audit_snapshot(snapshot_id: int) -> ClinicAuditSnapshot | None:
    """A snapshot still kept, or None (never taken, expired, or past any id: Django answers
    an out-of-range id with no rows rather than sending it to the database)."""
    return ClinicAuditSnapshot.objects.filter(pk=snapshot_id, created_at__gte=_snapshot_cutoff()).first()


def _snapshot_cutoff() -> dt.datetime:
    return timezone.now() - dt.timedelta(hours=settings.TALLY_AUDIT_SNAPSHOT_TTL_HOURS)


def apply_fix(
    *,
    acting_user: Staff,
    action: str,
    params: dict,
    context: PatientPackage | None = None,
    patient_id: int | None = None,
) -> FixResult:
    """Dispatch one fix action (API.md "Fix actions") with its params."""
    if action not in FIX_ACTIONS:
        raise Invalid(f"Unknown fix action {action!r}.", fields={"action": "one of " + ", ".join(FIX_ACTIONS)})
    patient_id = context.patient_id if context is not None else patient_id
    if action == "apply_to_line":
        return do_apply_to_line(
            acting_user=acting_user, line_id=_int(params, "line_id"), patient_id=patient_id, context=context,
            service_id=_int(params, "service_id", required=False), override=bool(params.get("override", False)),
            reason=str(params.get("reason") or ""),
        )
    if action == "use_first_session":
        if context is None:
            raise Invalid("use_first_session is a fix on a package.", fields={"action": "needs a package"})
        return do_use_first_session(acting_user=acting_user, context=context, line_id=_int(params, "line_id"),
                                    service_id=_int(params, "service_id", required=False))
    if action == "recreate_from_tombstone":
        return do_recreate_from_tombstone(acting_user=acting_user, tombstone_id=_int(params, "tombstone_id"),
                                          patient_id=patient_id)
    if action == "check_in_and_charge":
        return do_check_in_and_charge(acting_user=acting_user, appointment_id=_int(params, "appointment_id"),
                                      patient_id=patient_id)
    if context is None:
        raise Invalid("adjust is a fix on a package.", fields={"action": "needs a package"})
    return do_adjust_fix(acting_user=acting_user, context=context, change=_int(params, "change"),
                         reason=str(params.get("reason") or ""),
                         used_seen=_int(params, "sessions_used", required=False))


@overload
def _int(params: dict, name: str) -> int: ...
@overload
def _int(params: dict, name: str, *, required: bool) -> int | None: ...
def _int(params: dict, name: str, *, required: bool = True) -> int | None:
    value = params.get(name)
    if value is None:
        if required:
            raise Invalid(f"{name} is required.", fields={f"params.{name}": "required"})
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        digits = value.lstrip("-") if isinstance(value, str) else ""
        if digits.isascii() and digits.isdigit():  # isascii: '²' is a digit to isdigit(), no number to int()
            value = int(value)
        else:
            raise Invalid(f"{name} must be a whole number.", fields={f"params.{name}": "integer"})
    if abs(value) > 2**62:
        raise Invalid(f"{name} is out of range.", fields={f"params.{name}": "out of range"})
    return value
