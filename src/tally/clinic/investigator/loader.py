"""Read patients' whole histories, ignoring every list filter and date range.

A fixed number of queries per call, whatever the history's length or the number of
patients asked for: the clinic audit loads patients in chunks through the same code.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator

from django.db import connections
from django.db.models import QuerySet
from django.utils import timezone

from ..models import (
    Appointment,
    ClinicSettings,
    Invoice,
    InvoiceLine,
    PackageLedgerEntry,
    Patient,
    PatientPackage,
    Payment,
    Service,
    Tombstone,
)
from ..models.patients import format_patient_number
from .facts import (
    EntryFact,
    History,
    InvoiceFact,
    LineFact,
    PackageFact,
    PaymentFact,
    TombstoneFact,
    VisitFact,
)

CENT = decimal.Decimal("0.01")
_FROM_FLOAT = decimal.Context(prec=15).create_decimal_from_float


def aware(value: dt.datetime | str | None) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def money(value: decimal.Decimal | float | int | str | None) -> decimal.Decimal | None:
    if value is None or isinstance(value, decimal.Decimal):
        return value
    if isinstance(value, float):  # SQLite stores decimals as numbers: convert as Django does
        return _FROM_FLOAT(value).quantize(CENT)
    return decimal.Decimal(value).quantize(CENT)


def from_json(value: str | dict | list | None) -> dict | list | None:
    return json.loads(value) if isinstance(value, str | bytes) else value


def fetch(qs: QuerySet, **convert: Callable) -> Iterator[dict]:
    """The rows of a .values() queryset as dicts, converting only the columns named.

    Django's generic per-value converters cost many times the fetch itself (about 25x
    on SQLite): for a patient with a thousand visits, more than the whole explanation.
    """
    fields = list(qs._fields)
    sql, params = qs.query.sql_with_params()
    with connections[qs.db].cursor() as cursor:
        cursor.execute(sql, params)
        names = [col[0] for col in cursor.description]
        if sorted(names) != sorted(fields):
            names = fields
        converters = [(i, convert[name]) for i, name in enumerate(names) if name in convert]
        for row in cursor.fetchall():
            values = list(row)
            for i, to_python in converters:
                values[i] = to_python(values[i])
            yield dict(zip(names, values, strict=True))


def load_history(patient_id: int, *, now: dt.datetime | None = None) -> History:
    return load_histories([patient_id], now=now)[patient_id]


def load_histories(patient_ids: Iterable[int], *, now: dt.datetime | None = None) -> dict[int, History]:
    ids = sorted(set(patient_ids))
    clinic = ClinicSettings.load()
    now = now or timezone.now()
    services = {s["id"]: s for s in Service.objects.values("id", "name", "duration_minutes")}
    existing = set(Patient.objects.filter(pk__in=ids).values_list("pk", flat=True))

    visits: dict[int, list[VisitFact]] = defaultdict(list)
    for a in fetch(Appointment.all_objects.filter(patient_id__in=ids).order_by("starts_at", "id").values(
        "id", "patient_id", "service_id", "practitioner_id", "starts_at", "status", "no_charges", "deleted_at"
    ), starts_at=aware, deleted_at=aware, no_charges=bool):
        visits[a["patient_id"]].append(VisitFact(
            id=a["id"], service_id=a["service_id"], practitioner_id=a["practitioner_id"], starts_at=a["starts_at"],
            status=a["status"], no_charges=a["no_charges"], deleted=a["deleted_at"] is not None,
        ))

    lines: dict[int, list[LineFact]] = defaultdict(list)
    for ln in fetch(InvoiceLine.objects.filter(invoice__patient_id__in=ids).order_by("id").values(
        "id", "invoice_id", "kind", "service_id", "patient_package_id", "appointment_id", "description",
        "list_price", "amount", "covered_by_id", "session_number", "not_covered_reason", "coverage_decision",
        "created_at", "removed_at",
    ), list_price=money, amount=money, coverage_decision=from_json, created_at=aware, removed_at=aware):
        lines[ln["invoice_id"]].append(LineFact(
            id=ln["id"], invoice_id=ln["invoice_id"], kind=ln["kind"], service_id=ln["service_id"],
            patient_package_id=ln["patient_package_id"], appointment_id=ln["appointment_id"],
            description=ln["description"], list_price=ln["list_price"], amount=ln["amount"],
            covered_by=ln["covered_by_id"], session_number=ln["session_number"],
            not_covered_reason=ln["not_covered_reason"], decision=ln["coverage_decision"],
            created_at=ln["created_at"], removed_at=ln["removed_at"],
        ))
    payments: dict[int, list[PaymentFact]] = defaultdict(list)
    for p in fetch(Payment.objects.filter(invoice__patient_id__in=ids).order_by("received_at", "id").values(
        "id", "invoice_id", "amount", "method", "received_at", "reason"
    ), amount=money, received_at=aware):
        payments[p["invoice_id"]].append(PaymentFact(**p))
    invoices: dict[int, list[InvoiceFact]] = defaultdict(list)
    for inv in fetch(Invoice.objects.filter(patient_id__in=ids).order_by("issued_at", "id").values(
        "id", "patient_id", "issued_at", "voided_at"
    ), issued_at=aware, voided_at=aware):
        invoices[inv["patient_id"]].append(InvoiceFact(
            id=inv["id"], number=f"INV-{inv['id']:06d}", issued_at=inv["issued_at"], voided_at=inv["voided_at"],
            lines=tuple(lines.get(inv["id"], ())), payments=tuple(payments.get(inv["id"], ())),
        ))

    eligible: dict[int, set[int]] = defaultdict(set)
    through = PatientPackage.eligible_services.through
    for package_id, service_id in through.objects.filter(patientpackage__patient_id__in=ids).values_list(
        "patientpackage_id", "service_id"
    ):
        eligible[package_id].add(service_id)
    packages: dict[int, list[PackageFact]] = defaultdict(list)
    for pp in fetch(PatientPackage.objects.filter(patient_id__in=ids).order_by("sold_at", "id").values(
        "id", "patient_id", "package_id", "name", "price", "sessions_total", "sessions_used", "sale_invoice_id",
        "sold_at", "use_first_session", "first_session_appointment_id", "activated_at", "expires_at",
        "cancelled_at", "valid_days",
    ), price=money, sold_at=aware, use_first_session=bool, activated_at=aware, expires_at=aware,
            cancelled_at=aware):
        patient_id = pp.pop("patient_id")
        packages[patient_id].append(PackageFact(eligible_service_ids=frozenset(eligible.get(pp["id"], ())), **pp))

    entries: dict[int, list[EntryFact]] = defaultdict(list)
    for e in fetch(PackageLedgerEntry.objects.filter(patient_package__patient_id__in=ids).order_by(
        "patient_package_id", "seq"
    ).values(
        "id", "patient_package__patient_id", "patient_package_id", "seq", "kind", "change", "used_after", "at",
        "invoice_line_id", "appointment_id", "reverses_id", "reason",
    ), at=aware):
        patient_id = e.pop("patient_package__patient_id")
        entries[patient_id].append(EntryFact(**e))

    tombstones: dict[int, list[TombstoneFact]] = defaultdict(list)
    for t in fetch(Tombstone.objects.filter(patient_id__in=ids).order_by("removed_at", "id").values(
        "id", "patient_id", "kind", "appointment_id", "invoice_line_id", "content", "removed_at", "reason"
    ), content=from_json, removed_at=aware):
        patient_id = t.pop("patient_id")
        tombstones[patient_id].append(TombstoneFact(**t))

    names = {sid: s["name"] for sid, s in services.items()}
    durations = {sid: s["duration_minutes"] for sid, s in services.items()}
    return {
        pid: History(
            patient_id=pid,
            patient_number=format_patient_number(pid),
            tz=clinic.tz,
            now=now,
            services=names,
            service_durations=durations,
            visits=tuple(visits.get(pid, ())),
            invoices=tuple(invoices.get(pid, ())),
            packages=tuple(packages.get(pid, ())),
            entries=tuple(entries.get(pid, ())),
            tombstones=tuple(tombstones.get(pid, ())),
            currency=clinic.currency,
        )
        for pid in ids
        if pid in existing
    }
