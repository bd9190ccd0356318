"""tally rekey-audit: sign the audit log's chain again with the current TALLY_SECRET_KEY.

After a key rotation, the events signed before it verify only through their key in
TALLY_SECRET_KEY_FALLBACKS (`tally verify-audit` counts them). This checks the whole chain
first (under the current key and every fallback) and refuses, naming the event and changing
nothing, if it is broken; then it signs every link again with the current key, in one
transaction under the chain's lock, with the audit log's UPDATE trigger lifted for that
transaction alone, and records an "audit.rekeyed" event naming the old head hash. It prints
the old head and the new one (a head noted outside the database is replaced by it). Afterwards
the fallback is no longer needed by the audit log (sessions and tokens signed with it may
still be). Writers wait for it (the chain's lock, and on PostgreSQL the table's lock): run it
in a quiet hour on a large log.
"""

from __future__ import annotations

from django.core.management.base import CommandError
from django.db import transaction

from tally.clinic.audit import (
    ChainBroken,
    command_line_details,
    rechain,
    record,
    signed_by_a_known_key,
)
from tally.clinic.management.base import ClinicCommand


class Command(ClinicCommand):
    help = "Re-sign the audit log's chain with the current secret key (after a rotation), once it verifies."

    def handle(self, *args, **options) -> None:
        try:
            with transaction.atomic():
                done = rechain(signed_by_a_known_key)
                if done.rewritten:
                    event = record("audit.rekeyed", actor=None, object_type="auditevent",
                           after=command_line_details("tally rekey-audit", events=done.events,
                                                      rewritten=done.rewritten, old_head=done.old_head))
        except ChainBroken as broken:
            raise CommandError(f"the audit chain is broken, so nothing was re-signed: {broken.problem}",
                               returncode=1) from None
        if not done.rewritten:
            self.stdout.write(f"{done.events} events, all signed with the current key already: nothing to re-sign")
            return
        self.stdout.write(f"{done.rewritten} of {done.events} events re-signed with the current key")
        self.stdout.write(f"old head {done.old_head}")
        self.stdout.write(f"head {event.hash}")
