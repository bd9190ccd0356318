"""tally tokens NAME: a staff member's API tokens, to find the one to revoke. Never a token
itself: only its hash is kept."""

from __future__ import annotations

from django.core.management.base import CommandError
from django.utils import timezone

from tally.clinic.management.base import ClinicCommand
from tally.clinic.models import ApiToken, Staff
from tally.clinic.models.staff import TokenOrigin

ORIGINS: dict[str, str] = {TokenOrigin.PASSWORD: "sign-in", TokenOrigin.COMMAND_LINE: "command"}


def state(token: ApiToken, now) -> str:
    if token.revoked_at is not None:
        return "revoked"
    return "expired" if token.expired(now) else "live"


class Command(ClinicCommand):
    help = ("List a staff member's API tokens: id, how it was issued, when, its expiry and whether it "
            "still works (`tally revoketoken ID` ends one).")

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="the staff member's user name")

    def handle(self, *args, **options) -> None:
        staff = Staff.objects.filter(username=Staff.normalize_username(options["name"])).first()
        if staff is None:
            raise CommandError(f"No staff member named {options['name']!r}.")
        now = timezone.now()
        rows = [("id", "origin", "created", "expires", "state", "label")]
        for token in ApiToken.objects.filter(staff=staff).order_by("pk"):
            rows.append((
                str(token.pk), ORIGINS.get(token.origin, token.origin),
                f"{token.created_at:%Y-%m-%d %H:%M}Z",
                f"{token.expires_at:%Y-%m-%d %H:%M}Z" if token.expires_at else "never",
                state(token, now), token.label,
            ))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
