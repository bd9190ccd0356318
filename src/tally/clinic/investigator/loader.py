"""Read patients' whole histories, ignoring every list filter and date range.

A fixed number of queries per call, whatever the history's length or the number of
patients asked for: the clinic audit loads patients in chunks through the same code.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable

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


def load_history(patient_id: int, *, now: dt.datetime | None = None) -> History:
    return load_histories([patient_id], now=now)[patient_id]


def load_histories(patient_ids: Iterable[int], *, now: dt.datetime | None = None) -> dict[int, History]:
    ids = sorted(set(patient_ids))
    clinic = ClinicSettings.load()
    now = now or timezone.now()
    services = {s["id"]: s for s in Service.objects.values("id", "name", "duration_minutes")}
    existing = set(Patient.objects.filter(pk__in=ids).values_list("pk", flat=True))

    visits: dict[int, list[VisitFact]] = defaultdict(list)
    for a in Appointment.all_objects.filter(patient_id__in=ids).order_by("starts_at", "id").values(
        "id", "patient_id", "service_id", "practitioner_id", "starts_at", "status", "no_charges", "deleted_at"
    ):
        visits[a["patient_id"]].append(VisitFact(
            id=a["id"], service_id=a["service_id"], practitioner_id=a["practitioner_id"], starts_at=a["starts_at"],
            status=a["status"], no_charges=a["no_charges"], deleted=a["deleted_at"] is not None,
        ))

    lines: dict[int, list[LineFact]] = defaultdict(list)
    for ln in InvoiceLine.objects.filter(invoice__patient_id__in=ids).order_by("id").values(
        "id", "invoice_id", "kind", "service_id", "patient_package_id", "appointment_id", "description",
        "list_price", "amount", "covered_by_id", "session_number", "not_covered_reason", "coverage_decision",
        "created_at", "removed_at",
    ):
        lines[ln["invoice_id"]].append(LineFact(
            id=ln["id"], invoice_id=ln["invoice_id"], kind=ln["kind"], service_id=ln["service_id"],
            patient_package_id=ln["patient_package_id"], appointment_id=ln["appointment_id"],
            description=ln["description"], list_price=ln["list_price"], amount=ln["amount"],
            covered_by=ln["covered_by_id"], session_number=ln["session_number"],
            not_covered_reason=ln["not_covered_reason"], decision=ln["coverage_decision"],
            created_at=ln["created_at"], removed_at=ln["removed_at"],
        ))
    payments: dict[int, list[PaymentFact]] = defaultdict(list)
    for p in Payment.objects.filter(invoice__patient_id__in=ids).order_by("received_at", "id").values(
        "id", "invoice_id", "amount", "method", "received_at", "reason"
    ):
        payments[p["invoice_id"]].append(PaymentFact(**p))
    invoices: dict[int, list[InvoiceFact]] = defaultdict(list)
    for inv in Invoice.objects.filter(patient_id__in=ids).order_by("issued_at", "id").values(
        "id", "patient_id", "issued_at", "voided_at"
    ):
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
    for pp in PatientPackage.objects.filter(patient_id__in=ids).order_by("sold_at", "id").values(
        "id", "patient_id", "package_id", "name", "price", "sessions_total", "sessions_used", "sale_invoice_id",
        "sold_at", "use_first_session", "first_session_appointment_id", "activated_at", "expires_at",
        "cancelled_at", "valid_days",
    ):
        patient_id = pp.pop("patient_id")
        packages[patient_id].append(PackageFact(eligible_service_ids=frozenset(eligible.get(pp["id"], ())), **pp))

    entries: dict[int, list[EntryFact]] = defaultdict(list)
    for e in PackageLedgerEntry.objects.filter(patient_package__patient_id__in=ids).order_by(
        "patient_package_id", "seq"
    ).values(
        "id", "patient_package__patient_id", "patient_package_id", "seq", "kind", "change", "used_after", "at",
        "invoice_line_id", "appointment_id", "reverses_id", "reason",
    ):
        patient_id = e.pop("patient_package__patient_id")
        entries[patient_id].append(EntryFact(**e))

    tombstones: dict[int, list[TombstoneFact]] = defaultdict(list)
    for t in Tombstone.objects.filter(patient_id__in=ids).order_by("removed_at", "id").values(
        "id", "patient_id", "kind", "appointment_id", "invoice_line_id", "content", "removed_at", "reason"
    ):
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
