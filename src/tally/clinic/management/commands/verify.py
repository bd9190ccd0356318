"""tally verify: check the database's structural invariants (tally.clinic.consistency).

Prints one line per problem and exits 1 if there is any; prints a one-line summary and
exits 0 if the database is consistent. Read-only: safe while the server runs.
"""

from __future__ import annotations

import sys

from tally.clinic.consistency import verify_database
from tally.clinic.management.base import ClinicCommand
from tally.clinic.models import Invoice, PackageLedgerEntry, PatientPackage


class Command(ClinicCommand):
    help = "Check the ledger and invoices for torn or half-written changes; exit 1 on any problem."

    def handle(self, *args, **options) -> None:
        problems = verify_database()
        for problem in problems:
            self.stdout.write(str(problem))
        if problems:
            self.stderr.write(f"{len(problems)} problem(s) found.")
            sys.exit(1)
        self.stdout.write(
            f"OK: {PatientPackage.objects.count()} packages, {PackageLedgerEntry.objects.count()} ledger entries, "
            f"{Invoice.objects.count()} invoices verified."
        )
