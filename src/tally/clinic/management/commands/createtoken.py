"""tally createtoken NAME: print a new API token, alone, for scripts: TOKEN=$(tally createtoken ana)"""

from __future__ import annotations

from django.core.management.base import CommandError

from tally.clinic.actions.staff_accounts import do_grant_token
from tally.clinic.errors import ClinicError
from tally.clinic.management.base import ClinicCommand


class Command(ClinicCommand):
    help = "Issue an API token for a staff member and print only the token on standard output."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="the staff member's user name")
        parser.add_argument("--label", default="command line", help="what the token is for")
        parser.add_argument("--expires-hours", type=int, default=None, metavar="N",
                            help="the token stops working N hours from now (default: never; revoke it "
                                 "to end it)")

    def handle(self, *args, **options) -> None:
        try:
            token, raw = do_grant_token(acting_user=None, username=options["name"], label=options["label"],
                                        expires_hours=options["expires_hours"])
        except ClinicError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(raw)
        if token.expires_at is not None:  # standard output stays the token alone
            self.stderr.write(f"The token expires at {token.expires_at.isoformat()}.")
