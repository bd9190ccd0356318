#!/usr/bin/env python
"""Measure the investigator on the clinic bench/generate.py built (TALLY_DATABASE_URL):

(a) one investigation of the long patient: median wall time and query count;
(b) the clinic audit: wall time, and its ratio to a plain scan of the same rows;
(c) recall and precision against the generator's ground truth.

    python bench/investigator.py --truth truth.json [--runs 20] [--no-audit]
"""

from __future__ import annotations

import argparse
import gc
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

from tally.clinic.investigator.loader import QUERIES  # noqa: E402
from tally.clinic.investigator.service import AuditRow, clinic_audit, investigate_patient  # noqa: E402
from tally.clinic.models import Appointment, PatientPackage, Service  # noqa: E402

gc.freeze()  # as each `tally serve` worker does once the app is loaded (tally/server.py)


def time_one_patient(patient_id: int, runs: int) -> dict:
    """Wall time (median and best) and this process's CPU time (median): on a busy machine
    the wall time measures the queue for a core as much as the work."""
    investigate_patient(patient_id)  # warm up
    wall, cpu = [], []
    for _ in range(runs):
        started, started_cpu = time.perf_counter(), time.process_time()
        investigate_patient(patient_id)
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    with CaptureQueriesContext(connection) as ctx:
        investigate_patient(patient_id)
    return {"patient_id": patient_id, "visits": Appointment.all_objects.filter(patient_id=patient_id).count(),
            "median_ms": round(statistics.median(wall) * 1000, 1), "min_ms": round(min(wall) * 1000, 1),
            "cpu_median_ms": round(statistics.median(cpu) * 1000, 1), "queries": len(ctx.captured_queries),
            "load_average": os.getloadavg()[0]}


def plain_scan(chunk_size: int = 300) -> int:
    """Read the rows the audit reads, with the loader's own queries and the same chunks, into
    Python the ordinary way (Django's iteration and converters): no facts, no explaining."""
    patient_ids = list(PatientPackage.objects.order_by("patient_id").values_list("patient_id", flat=True).distinct())
    rows = len(list(Service.objects.values("id", "name", "duration_minutes")))
    for start in range(0, len(patient_ids), chunk_size):
        ids = patient_ids[start:start + chunk_size]
        for query in QUERIES.values():
            for _ in query(ids):
                rows += 1
    return rows


def time_audit() -> tuple[dict, list[AuditRow]]:
    load = os.getloadavg()[0]
    started = time.perf_counter()
    scanned, rows = clinic_audit(min_severity="info")
    audit = time.perf_counter() - started
    started = time.perf_counter()
    read = plain_scan()
    scan = time.perf_counter() - started
    return {"packages": scanned, "audit_s": round(audit, 2), "plain_scan_s": round(scan, 2),
            "rows_read": read, "ratio": round(audit / scan, 2),
            "load_average": [load, os.getloadavg()[0]]}, rows


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
