"""tally audit [--json|--csv] [--min-severity warning]: every package through the investigator."""

from __future__ import annotations

import json
import sys

from django.utils import timezone

from tally.clinic.audit import Shown, command_line_details, record_reads
from tally.clinic.investigator.service import clinic_audit
from tally.clinic.management.base import ClinicCommand, terminal_text
from tally.clinic.models import ClinicSettings
from tally.clinic.spreadsheet import SafeWriter


class Command(ClinicCommand):
    help = "The clinic audit: packages with findings, worst first."

    def add_arguments(self, parser) -> None:
        output = parser.add_mutually_exclusive_group()
        output.add_argument("--json", action="store_true")
        output.add_argument("--csv", action="store_true")
        parser.add_argument("--min-severity", choices=["error", "warning", "info"], default="warning")

    def handle(self, *args, **options) -> None:
        progress = self.progress_bar if sys.stderr.isatty() else None
        scanned, rows = clinic_audit(min_severity=options["min_severity"], progress=progress)
        if progress:
            sys.stderr.write("\n")
        # Every package listed names its patient: one audit event per package, as the API does.
        record_reads(None, "patient_package.clinic_audit", [Shown(r.patient_id, "patientpackage", r.patient_package_id) for r in rows],
                     nothing=Shown(None, "patientpackage", ""),
                     details=command_line_details("tally audit", min_severity=options["min_severity"]))
        if options["json"]:
            # GET /audit/packages's shape: this run's whole list, so no page follows (`next`).
            as_of = timezone.now().astimezone(ClinicSettings.load().tz).isoformat()
            self.stdout.write(json.dumps({"scanned": scanned, "as_of": as_of, "items": [r.__dict__ for r in rows],
                                          "next": None}, indent=2))
            return
        if options["csv"]:
            # Opened in a spreadsheet: a package named =HYPERLINK(...) must stay text.
            writer = SafeWriter(self.stdout)
            writer.writerow(["patient_package_id", "patient_number", "package", "worst_severity", "findings", "codes"])
            for r in rows:
                writer.writerow([r.patient_package_id, r.patient_number, r.package_name, r.worst_severity, r.findings,
                                 " ".join(r.codes)])
            return
        self.stdout.write(f"{scanned} packages scanned; {len(rows)} with findings at or above "
                          f"{options['min_severity']}.")
        for r in rows:
            style = {"error": self.style.ERROR, "warning": self.style.WARNING}.get(r.worst_severity, str)
            self.stdout.write(style(f"{r.worst_severity:<8} {r.patient_number}  #{r.patient_package_id:<6} "
                                    f"{terminal_text(r.package_name)[:30]:<30} {', '.join(r.codes)}"))

    @staticmethod
    def progress_bar(done: int, total: int) -> None:
        width = 40
        filled = width * done // max(total, 1)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} patients")
        sys.stderr.flush()
