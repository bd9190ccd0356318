"""tally verify-audit: walk the audit log's chain and recompute every keyed hash.

Exit 0 with "N events, chain intact" (and the head hash, to note somewhere else: only a
hash kept outside the database shows that events were cut off the end), or exit 1 naming
the first event that was changed, deleted, inserted or moved, or whose link was recomputed
without the server's secret key. When TALLY_SECRET_KEY_FALLBACKS is set, it says how many
events each fallback key signed: a key that signed none can be dropped, and `tally
rekey-audit` re-signs the others with the current key.
"""

from __future__ import annotations

from django.core.management.base import CommandError

from tally.clinic.audit import verify_chain
from tally.clinic.management.base import ClinicCommand


class Command(ClinicCommand):
    help = "Verify the audit log's keyed hash chain: exit 1 naming the first tampered or missing event."

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
        for number, use in enumerate(report.fallbacks, start=1):
            if use.events:
                self.stdout.write(f"{use.events} events (ids {use.first_id} to {use.last_id}) were signed with "
                                  f"TALLY_SECRET_KEY_FALLBACKS key {number}: keep it until `tally rekey-audit` "
                                  "re-signs them with the current key")
            else:
                self.stdout.write(f"TALLY_SECRET_KEY_FALLBACKS key {number} signed no event: the audit log does "
                                  "not need it")
