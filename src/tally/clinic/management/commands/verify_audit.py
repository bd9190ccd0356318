"""tally verify-audit: walk the audit log's hash chain and recompute every hash.

Exit 0 with "N events, chain intact" (and the head hash, to note somewhere else: only a
hash kept outside the database shows that events were cut off the end), or exit 1 naming
the first event that was changed, deleted or inserted.
"""

from __future__ import annotations

from django.core.management.base import CommandError

from tally.clinic.audit import verify_chain
from tally.clinic.management.base import ClinicCommand


class Command(ClinicCommand):
    help = "Verify the audit log's hash chain: exit 1 naming the first tampered or missing event."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--head", help="The head hash noted earlier: fail unless the chain still contains it.")

    def handle(self, *args, **options) -> None:
        report = verify_chain(stop_at=options["head"])
        if not report.intact:
            raise CommandError(f"audit chain broken after {report.events} good events: {report.problem}",
                               returncode=1)
        if options["head"] and not report.head_seen:
            raise CommandError(f"the head hash {options['head']} is not in the chain: events were removed "
                               "or the chain was rewritten", returncode=1)
        self.stdout.write(f"{report.events} events, chain intact")
        self.stdout.write(f"head {report.head}")
