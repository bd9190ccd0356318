"""Models to response dicts of JSON primitives (API.md "Shapes").

Money becomes a two-place string, datetimes ISO 8601 in the clinic's time zone with its
offset. Primitives only, so an idempotent replay returns exactly the first answer.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from tally.clinic.models import (
    Appointment,
    ClinicSettings,
    Invoice,
    InvoiceLine,
    Package,
    PackageLedgerEntry,
    Patient,
    PatientPackage,
    Payment,
    Service,
    Staff,
)

CENT = Decimal("0.01")
Json = dict[str, Any]


def money(amount: Decimal) -> str:
    return str(Decimal(amount).quantize(CENT))


def moment(value: dt.datetime | None, tz: dt.tzinfo) -> str | None:
    return value.astimezone(tz).isoformat() if value is not None else None


def staff(member: Staff) -> Json:
    return {"id": member.pk, "name": member.display_name, "role": member.role}


def me(member: Staff) -> Json:
    return staff(member) | {"username": member.username}


def clinic(settings: ClinicSettings) -> Json:
    return {"name": settings.name, "time_zone": settings.time_zone, "currency": settings.currency,
            "no_show_uses_session": settings.no_show_uses_session}


def service(item: Service) -> Json:
    return {"id": item.pk, "name": item.name, "duration_minutes": item.duration_minutes,
            "price": money(item.price), "active": item.active}


def package(item: Package) -> Json:
    return {"id": item.pk, "name": item.name, "price": money(item.price), "sessions": item.sessions,
            "service_ids": sorted(s.pk for s in item.services.all()), "valid_days": item.valid_days,
            "active": item.active}


def patient(item: Patient) -> Json:
    return {"id": item.pk, "patient_number": item.patient_number, "first_name": item.first_name,
            "last_name": item.last_name,
            "date_of_birth": item.date_of_birth.isoformat() if item.date_of_birth else None,
            "email": item.email, "phone": item.phone, "archived": item.archived_at is not None}


def patient_package(item: PatientPackage, tz: dt.tzinfo) -> Json:
    return {
        "id": item.pk,
        "patient_id": item.patient_id,
        "package_id": item.package_id,
        "name": item.name,
        "price": money(item.price),
        "sessions_total": item.sessions_total,
        "sessions_used": item.sessions_used,
        "sessions_remaining": item.sessions_remaining,
        "status": item.status,
        "eligible_service_ids": sorted(s.pk for s in item.eligible_services.all()),
        "sale_invoice_id": item.sale_invoice_id,
        "use_first_session": item.use_first_session,
        "sold_at": moment(item.sold_at, tz),
        "activated_at": moment(item.activated_at, tz),
        "expires_at": moment(item.expires_at, tz),
        "cancelled_at": moment(item.cancelled_at, tz),
    }


def ledger_entry(entry: PackageLedgerEntry, tz: dt.tzinfo) -> Json:
    return {
        "id": entry.pk,
        "seq": entry.seq,
        "kind": entry.kind,
        "change": entry.change,
        "sessions_used_after": entry.used_after,
        "at": moment(entry.at, tz),
        "invoice_line_id": entry.invoice_line_id,
        "appointment_id": entry.appointment_id,
        "reverses": entry.reverses_id,
        "reason": entry.reason,
        "by": entry.by_id,
        "by_name": entry.by.display_name if entry.by is not None else None,
    }


def appointment(item: Appointment, tz: dt.tzinfo) -> Json:
    return {
        "id": item.pk,
        "patient_id": item.patient_id,
        "service_id": item.service_id,
        "practitioner_id": item.practitioner_id,
        "starts_at": moment(item.starts_at, tz),
        "ends_at": moment(item.ends_at, tz),
        "status": item.status,
        "no_charges": item.no_charges,
        "status_reason": item.status_reason,
        "checked_in_at": moment(item.checked_in_at, tz),
    }


def invoice_line(line: InvoiceLine) -> Json:
    return {
        "id": line.pk,
        "kind": line.kind,
        "service_id": line.service_id,
        "package_id": line.package_id,
        "patient_package_id": line.patient_package_id,
        "appointment_id": line.appointment_id,
        "description": line.description,
        "list_price": money(line.list_price),
        "amount": money(line.amount),
        "covered_by": line.covered_by_id,
        "session_number": line.session_number,
        "sessions_left": line.sessions_left,
        "not_covered_reason": line.not_covered_reason,
    }


def payment(item: Payment, tz: dt.tzinfo) -> Json:
    return {"id": item.pk, "invoice_id": item.invoice_id, "amount": money(item.amount), "method": item.method,
            "received_at": moment(item.received_at, tz), "reason": item.reason}


def invoice(item: Invoice, tz: dt.tzinfo) -> Json:
    """Expects lines and payments prefetched (actions' `load_invoice`, or the list queries)."""
    return {
        "id": item.pk,
        "number": item.number,
        "patient_id": item.patient_id,
        "issued_at": moment(item.issued_at, tz),
        "status": item.status,
        "total": money(item.total),
        "paid": money(item.paid),
        "balance": money(item.balance),
        "lines": [invoice_line(line) for line in item.live_lines()],
        "payments": [payment(p, tz) for p in item.payments.all()],
    }
