"""tally revoketoken ID: end one API token now (its id from `tally tokens NAME`)."""

from __future__ import annotations

from django.core.management.base import CommandError

from tally.clinic.actions.staff_accounts import do_revoke_token
from tally.clinic.errors import ClinicError
from tally.clinic.management.base import ClinicCommand


class Command(ClinicCommand):
    help = ("Revoke one API token by its id (see `tally tokens NAME`): a script's token that leaked, "
            "without deactivating the staff member or signing them out.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("token_id", type=int, help="the token's id, from `tally tokens NAME`")

    def handle(self, *args, **options) -> None:
        try:
            token, was_live = do_revoke_token(acting_user=None, token_id=options["token_id"])
        except ClinicError as exc:
            raise CommandError(exc.message) from exc
        if was_live:
            self.stdout.write(f"Revoked token {token.pk} of {token.staff.username}: it is refused from now on.")
        else:
            self.stdout.write(f"Token {token.pk} of {token.staff.username} was already revoked; nothing changed.")
