"""tally investigate PATIENT_NUMBER [--json]: why each of a patient's package counts is what it is."""

from __future__ import annotations

import json

from django.core.management.base import CommandError

from tally.clinic.audit import Shown, command_line_details, record_reads
from tally.clinic.investigator.export import patient_export, reason_label, support_investigation
from tally.clinic.management.base import ClinicCommand, terminal_text
from tally.clinic.models import ClinicSettings, Patient
from tally.clinic.models.patients import parse_patient_number
from tally.clinic.money import format_money

MARKS = {"error": "!!", "warning": "! ", "info": "i "}


class Command(ClinicCommand):
    help = "The investigation for one patient: every package's count, its findings and fixes, all time."

    def add_arguments(self, parser) -> None:
        parser.add_argument("patient_number", help="e.g. P-000123")
        parser.add_argument("--json", action="store_true", help="the support export as JSON")
        parser.add_argument("--anonymous", action="store_true",
                            help="leave out names, contact details and every reason staff typed")

    def handle(self, *args, **options) -> None:
        pk = parse_patient_number(options["patient_number"])
        patient = Patient.objects.filter(pk=pk).first() if pk is not None else None
        if patient is None:
            raise CommandError(f"No patient {options['patient_number']!r}; patient numbers look like P-000123.")
        clinic = ClinicSettings.load()
        tz, currency = clinic.tz, clinic.currency
        packages, orphans = support_investigation(patient, anonymous=options["anonymous"])
        # A read of patient data like any other: no staff member signs in here, so the event
        # names the command and the operating-system user who ran it.
        record_reads(None, "patient.investigate", [Shown(patient.pk, "patient", patient.pk)],
                     details=command_line_details("tally investigate", json=options["json"],
                                                  anonymous=options["anonymous"]))
        if options["json"]:
            data = patient_export(patient, packages, orphans, tz, anonymous=options["anonymous"])
            self.stdout.write(json.dumps(data, indent=2))
            return
        name = "" if options["anonymous"] else f" {terminal_text(patient.full_name)}"
        self.stdout.write(self.style.MIGRATE_HEADING(f"{patient.patient_number}{name}"))
        if not packages:
            self.stdout.write("  No package sold to this patient.")
        for inv in packages:
            s = inv.summary
            self.stdout.write("")
            self.stdout.write(self.style.MIGRATE_LABEL(
                f"{terminal_text(s['name'])}: {s['sessions_used']} of {s['sessions_total']} used · {s['sessions_remaining']} left · "
                f"{s['status'].replace('_', ' ')}"))
            sold = s["sold_at"].astimezone(tz)
            self.stdout.write(f"  sold {sold:%d %b %Y} · paid {format_money(s['paid'], currency)} · "
                              f"balance {format_money(s['balance'], currency)}"
                              + (f" · expires {s['expires_at'].astimezone(tz):%d %b %Y}" if s["expires_at"] else ""))
            for finding in inv.findings:
                self.write_finding(finding)
            if not inv.findings:
                self.stdout.write(self.style.SUCCESS("  No findings: every visit is accounted for."))
            self.stdout.write("  Visits:")
            for event in inv.timeline:
                if event["kind"] != "visit":
                    continue
                when = event["at"].astimezone(tz)
                outcome = "counted" if event["counted"] else f"not counted: {reason_label(event['reason'])}"
                self.stdout.write(f"    {when:%d %b %Y %H:%M}  {terminal_text(event['service']):<28} {event['status']:<10} {outcome}")
        if orphans:
            self.stdout.write("")
            self.stdout.write(self.style.MIGRATE_LABEL("Visits that belong to no package"))
            for finding in orphans:
                self.write_finding(finding)

    def write_finding(self, finding) -> None:
        style = {"error": self.style.ERROR, "warning": self.style.WARNING}.get(finding.severity, str)
        self.stdout.write(style(f"  {MARKS[finding.severity]} {finding.code}: {terminal_text(finding.message)}"))
        if finding.fix:
            params = ", ".join(f"{k}={v}" for k, v in finding.fix["params"].items())
            self.stdout.write(f"     fix: {finding.fix['action']}({params})")
