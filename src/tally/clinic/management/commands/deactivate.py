"""tally deactivate NAME: stop a staff member from signing in, at once, everywhere."""

from __future__ import annotations

from django.core.management.base import CommandError

from tally.clinic.actions.staff_accounts import do_deactivate_staff
from tally.clinic.errors import ClinicError
from tally.clinic.management.base import ClinicCommand


class Command(ClinicCommand):
    help = "Deactivate a staff member: their web sessions end and their API tokens are revoked now."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="the staff member's user name")

    def handle(self, *args, **options) -> None:
        try:
            staff = do_deactivate_staff(acting_user=None, username=options["name"])
        except ClinicError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"Deactivated {staff.username}: signed out everywhere, API tokens revoked.")
