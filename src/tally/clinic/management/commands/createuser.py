"""tally createuser NAME --role owner|front_desk|practitioner --password PW | --tokens-only"""

from __future__ import annotations

import getpass
import sys

from django.core.management.base import CommandError

from tally.clinic.actions.staff_accounts import do_create_staff
from tally.clinic.errors import ClinicError
from tally.clinic.management.base import ClinicCommand
from tally.clinic.models.staff import Role


class Command(ClinicCommand):
    help = "Add a staff member. Without --password, the password is asked for (or read from standard input)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="user name to sign in with")
        # Checked in handle() so that a bad role is one clear line, like every other refusal.
        parser.add_argument("--role", required=True, help="owner, front_desk or practitioner")
        parser.add_argument("--password", help="at least 12 characters, not a common one")
        parser.add_argument("--tokens-only", action="store_true",
                            help="no password: an integration's account, used only with `tally createtoken` "
                                 "(nobody's sign-out revokes its tokens)")
        parser.add_argument("--first-name", default="")
        parser.add_argument("--last-name", default="")

    def handle(self, *args, **options) -> None:
        role = options["role"].strip().lower().replace("-", "_")
        if role not in Role.values:
            raise CommandError(f"unknown role {options['role']!r}: use owner, front_desk or practitioner")
        password = options["password"]
        if options["tokens_only"]:
            if password is not None:
                raise CommandError("--tokens-only takes no --password")
        elif password is None:
            password = read_password()
        try:
            user = do_create_staff(acting_user=None, username=options["name"], role=role, password=password,
                                   first_name=options["first_name"], last_name=options["last_name"])
        except ClinicError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"Added {user.username} ({Role(user.role).label.lower()}).")


def read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    try:
        first = getpass.getpass("Password: ")
        again = getpass.getpass("Password (again): ")
    except EOFError:  # Ctrl+D at the prompt
        raise CommandError("no password given; nobody was added") from None
    if again != first:
        raise CommandError("the passwords do not match")
    return first
