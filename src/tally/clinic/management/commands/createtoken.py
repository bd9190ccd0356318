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

    def handle(self, *args, **options) -> None:
        try:
            _, raw = do_grant_token(acting_user=None, username=options["name"], label=options["label"])
        except ClinicError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(raw)
