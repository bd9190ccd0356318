"""The clinic audit's "worst first" (SPEC.md), one order for the web page, the API and the CLI:
the gravest severity first; among equals, more findings of that severity first, then more
findings in all; then the package's id, so that the order of a run never changes."""

from __future__ import annotations

from tally.clinic.investigator.service import AuditScan


def package(pk: int, *findings: tuple[str, str]) -> dict:
    return {"patient_package_id": pk, "patient_id": pk, "patient_number": f"P-{pk:06d}", "package_name": "Pack",
            "findings": [list(f) for f in findings]}


WARN = ("NO_CHARGES", "warning")
INFO = ("PACKAGE_EXHAUSTED", "info")
ERROR = ("LEDGER_MISMATCH", "error")


def order(scan: AuditScan, min_severity: str = "info") -> list[int]:
    return [row.patient_package_id for row in scan.rows(min_severity)]


def test_more_findings_of_the_worst_severity_come_before_many_lesser_ones():
    scan = AuditScan(scanned=4, packages=[
        package(1, WARN, INFO, INFO, INFO, INFO),  # one missed step, four rules working as designed
        package(2, WARN, WARN),                    # two missed steps
        package(3, ERROR),
        package(4, INFO, INFO, INFO, INFO, INFO, INFO),
    ])
    assert order(scan) == [3, 2, 1, 4]
    assert order(scan, "warning") == [3, 2, 1]


def test_equals_are_ordered_by_their_other_findings_then_by_package():
    scan = AuditScan(scanned=4, packages=[
        package(9, WARN),
        package(7, WARN, INFO),
        package(8, WARN),
        package(5, WARN, INFO),
    ])
    assert order(scan) == [5, 7, 8, 9]
    assert order(scan, "warning") == [5, 7, 8, 9]  # one warning each: the package decides
