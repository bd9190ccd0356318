#!/usr/bin/env python
"""Measure the investigator on the clinic bench/generate.py built (TALLY_DATABASE_URL):

(a) one investigation of the long patient: median wall time and query count;
(b) the clinic audit: wall time, and its ratio to a plain scan of the same rows;
(c) recall and precision against the generator's ground truth.

    python bench/investigator.py --truth truth.json [--runs 20] [--no-audit]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter

import django
from django.conf import settings

if not settings.configured:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tally.settings")
    if not os.environ.get("TALLY_DEBUG"):
        os.environ.setdefault("TALLY_SECRET_KEY", "bench-only-not-a-secret")
    django.setup()

from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from tally.clinic.investigator.service import AuditRow, clinic_audit, investigate_patient  # noqa: E402
from tally.clinic.models import (  # noqa: E402
    Appointment,
    Invoice,
    InvoiceLine,
    PackageLedgerEntry,
    PatientPackage,
    Payment,
    Service,
    Tombstone,
)


def time_one_patient(patient_id: int, runs: int) -> dict:
    investigate_patient(patient_id)  # warm up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        investigate_patient(patient_id)
        times.append(time.perf_counter() - started)
    with CaptureQueriesContext(connection) as ctx:
        investigate_patient(patient_id)
    return {"patient_id": patient_id, "visits": Appointment.all_objects.filter(patient_id=patient_id).count(),
            "median_ms": round(statistics.median(times) * 1000, 1), "queries": len(ctx.captured_queries)}


def plain_scan(chunk_size: int = 300) -> int:
    """Read the rows the audit reads, in the same chunks and querysets, into Python: no explaining."""
    patient_ids = list(PatientPackage.objects.order_by("patient_id").values_list("patient_id", flat=True).distinct())
    through = PatientPackage.eligible_services.through
    rows = len(list(Service.objects.values("id", "name", "duration_minutes")))
    for start in range(0, len(patient_ids), chunk_size):
        ids = patient_ids[start:start + chunk_size]
        querysets = [
            Appointment.all_objects.filter(patient_id__in=ids).order_by("starts_at", "id").values(
                "id", "patient_id", "service_id", "practitioner_id", "starts_at", "status", "no_charges", "deleted_at"),
            InvoiceLine.objects.filter(invoice__patient_id__in=ids).order_by("id").values(
                "id", "invoice_id", "kind", "service_id", "patient_package_id", "appointment_id", "description",
                "list_price", "amount", "covered_by_id", "session_number", "not_covered_reason", "coverage_decision",
                "created_at", "removed_at"),
            Payment.objects.filter(invoice__patient_id__in=ids).order_by("received_at", "id").values(
                "id", "invoice_id", "amount", "method", "received_at", "reason"),
            Invoice.objects.filter(patient_id__in=ids).order_by("issued_at", "id").values(
                "id", "patient_id", "issued_at", "voided_at"),
            through.objects.filter(patientpackage__patient_id__in=ids).values_list("patientpackage_id", "service_id"),
            PatientPackage.objects.filter(patient_id__in=ids).order_by("sold_at", "id").values(
                "id", "patient_id", "package_id", "name", "price", "sessions_total", "sessions_used",
                "sale_invoice_id", "sold_at", "use_first_session", "first_session_appointment_id", "activated_at",
                "expires_at", "cancelled_at", "valid_days"),
            PackageLedgerEntry.objects.filter(patient_package__patient_id__in=ids).order_by(
                "patient_package_id", "seq").values(
                "id", "patient_package__patient_id", "patient_package_id", "seq", "kind", "change", "used_after",
                "at", "invoice_line_id", "appointment_id", "reverses_id", "reason"),
            Tombstone.objects.filter(patient_id__in=ids).order_by("removed_at", "id").values(
                "id", "patient_id", "kind", "appointment_id", "invoice_line_id", "content", "removed_at", "reason"),
        ]
        for qs in querysets:
            for _ in qs:
                rows += 1
    return rows


def time_audit() -> tuple[dict, list[AuditRow]]:
    started = time.perf_counter()
    scanned, rows = clinic_audit(min_severity="info")
    audit = time.perf_counter() - started
    started = time.perf_counter()
    read = plain_scan()
    scan = time.perf_counter() - started
    return {"packages": scanned, "audit_s": round(audit, 2), "plain_scan_s": round(scan, 2),
            "rows_read": read, "ratio": round(audit / scan, 2)}, rows


def score(truth: dict, rows: list[AuditRow]) -> dict:
    """Recall: every injected code found on its package. Precision: no warning or error on a
    clean package, and no code reported that was not injected."""
    injected = {int(pk): set(codes) for pk, codes in truth["packages"].items()}
    found = {row.patient_package_id: row for row in rows}
    expected = sum(len(codes) for codes in injected.values())
    hits, missed, extra, noisy_clean = 0, [], [], []
    per_code: Counter = Counter()
    for pk, codes in injected.items():
        row = found.get(pk)
        reported = set(row.codes) if row else set()
        hits += len(codes & reported)
        missed += [(pk, code) for code in sorted(codes - reported)]
        extra += [(pk, code) for code in sorted(reported - codes)]
        if not codes and row and row.worst_severity in ("warning", "error"):
            noisy_clean.append(pk)
        per_code.update(codes)
    reported_total = sum(len(r.codes) for r in rows if r.patient_package_id in injected)
    return {
        "packages": len(injected), "spoiled": sum(1 for c in injected.values() if c), "injected_codes": expected,
        "per_code": dict(sorted(per_code.items())),
        "recall": round(hits / expected, 4) if expected else 1.0,
        "precision": round(hits / reported_total, 4) if reported_total else 1.0,
        "missed": missed, "extra": extra, "warnings_on_clean": noisy_clean,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--truth", default="truth.json")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-audit", action="store_true", help="only (a)")
    args = parser.parse_args(argv)
    with open(args.truth) as f:
        truth = json.load(f)
    print(f"database: {connection.vendor}")
    if truth.get("long_patient_id"):
        print("(a) one patient:", json.dumps(time_one_patient(truth["long_patient_id"], args.runs)))
    if args.no_audit:
        return
    figures, rows = time_audit()
    print("(b) clinic audit:", json.dumps(figures))
    result = score(truth, rows)
    missed, extra = result.pop("missed"), result.pop("extra")
    print("(c) against the truth:", json.dumps(result))
    for label, items in (("missed", missed), ("over-reported", extra)):
        if items:
            print(f"    {label} ({len(items)}):", ", ".join(f"{pk}:{code}" for pk, code in items[:40]),
                  file=sys.stderr)


if __name__ == "__main__":
    main()
