"""Charging a service line: rules 1-6 decide, the ledger records, the line remembers why.

Internal to the actions: callers hold the transaction; this takes the package locks.
"""

from __future__ import annotations

import datetime as dt

from .. import rules
from ..ledger import live_use_for_line, reverse_entry, use_session
from ..locking import lock_patient_packages, with_eligible_ids
from ..models import Appointment, Invoice, InvoiceLine, PatientPackage, Service, Staff
from ..models.billing import ZERO, LineKind
from .common import clinic_tz, local_date, now


def package_facts(package: PatientPackage, tz: dt.tzinfo) -> rules.PackageFacts:
    return rules.PackageFacts(
        id=package.pk,
        eligible_service_ids=package.eligible_ids,
        sold_on=local_date(package.sold_at, tz),
        sold_at=package.sold_at,
        activated=package.activated_at is not None,
        cancelled=package.cancelled_at is not None,
        sessions_remaining=package.sessions_remaining,
        last_valid_day=local_date(package.expires_at, tz) if package.expires_at else None,
    )


def decide_for(patient_id: int, service_id: int, invoice_date: dt.date,
               tz: dt.tzinfo) -> tuple[rules.Decision, dict[int, PatientPackage]]:
    packages = lock_patient_packages(patient_id)
    decision = rules.decide_coverage(service_id, invoice_date, [package_facts(p, tz) for p in packages])
    return decision, {p.pk: p for p in packages}


def preview_coverage(patient_id: int, service_id: int, invoice_date: dt.date,
                     tz: dt.tzinfo) -> tuple[rules.Decision, dict[int, PatientPackage]]:
    """What rules 1-6 would decide for a charge now, without locking or writing: the
    warning staff see before a check-in is saved. The action decides again under its locks."""
    packages = with_eligible_ids(list(PatientPackage.objects.filter(patient_id=patient_id).order_by("pk")))
    decision = rules.decide_coverage(service_id, invoice_date, [package_facts(p, tz) for p in packages])
    return decision, {p.pk: p for p in packages}


def cover_line(line: InvoiceLine, package: PatientPackage, *, by: Staff | None, reason: str = "") -> None:
    entry = use_session(package, by=by, invoice_line=line, reason=reason)
    line.covered_by = package
    line.session_number = entry.used_after
    line.amount = ZERO
    line.not_covered_reason = None


def charge_service(
    invoice: Invoice,
    service: Service,
    *,
    by: Staff | None,
    appointment: Appointment | None = None,
) -> InvoiceLine:
    """Add a service line to an invoice and let rules 1-6 decide whether a package covers it."""
    tz = clinic_tz()
    if appointment is not None:
        release_first_session_of(appointment, by=by)
    invoice_date = local_date(invoice.issued_at, tz)
    decision, packages = decide_for(invoice.patient_id, service.pk, invoice_date, tz)
    line = InvoiceLine.objects.create(
        invoice=invoice,
        kind=LineKind.SERVICE,
        service=service,
        appointment=appointment,
        description=service.name,
        list_price=service.price,
        amount=service.price,
        not_covered_reason=decision.reason,
        coverage_decision=decision.as_record() | {"invoice_date": invoice_date.isoformat(), "at": now().isoformat()},
        created_by=by,
    )
    if decision.covered_by is not None:
        cover_line(line, packages[decision.covered_by], by=by)
        line.save(update_fields=["covered_by", "session_number", "amount", "not_covered_reason"])
    return line


def release_first_session_of(appointment: Appointment, *, by: Staff | None) -> None:
    """A visit whose first session was already used at the sale is charged on its own line;
    the sale's first-session line gives its session back so the visit counts once."""
    lines = InvoiceLine.objects.filter(
        appointment=appointment, kind=LineKind.FIRST_SESSION, removed_at__isnull=True,
        invoice__voided_at__isnull=True,
    )
    for line in lines:
        uncover_line(line, by=by, reason="first session moved to the visit's own line")
        line.removed_at = now()
        line.removal_reason = "first session moved to the visit's own line"
        line.save(update_fields=["removed_at", "removal_reason"])


def uncover_line(line: InvoiceLine, *, by: Staff | None, reason: str) -> None:
    """Rule 7: undoing a covered charge writes a reversal and the session comes back."""
    entry = live_use_for_line(line)
    if entry is not None:
        reverse_entry(entry, by=by, reason=reason)
