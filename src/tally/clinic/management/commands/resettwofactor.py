"""tally resettwofactor NAME: remove a staff member's two-factor device (a lost phone)."""

from __future__ import annotations

from django.core.management.base import CommandError

from tally.clinic.actions.two_factor import do_reset_two_factor, must_use_two_factor
from tally.clinic.errors import ClinicError
from tally.clinic.management.base import ClinicCommand
from tally.clinic.models import Staff


class Command(ClinicCommand):
    help = "Remove a staff member's two-factor sign-in device, so they can set up a new one."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="the staff member's user name")

    def handle(self, *args, **options) -> None:
        try:
            removed = do_reset_two_factor(acting_user=None, username=options["name"])
        except ClinicError as exc:
            raise CommandError(exc.message) from exc
        staff = Staff.objects.get(username=Staff.normalize_username(options["name"]))
        then = (" They must set up a new one right after signing in with their password."
                if must_use_two_factor(staff) else "")
        self.stdout.write(f"Removed {removed} two-factor device(s) of {staff.username}.{then}")
