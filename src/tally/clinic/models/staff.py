from __future__ import annotations

import hashlib
import secrets

from django.contrib.auth.models import AbstractUser
from django.db import models


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    FRONT_DESK = "front_desk", "Front desk"
    PRACTITIONER = "practitioner", "Practitioner"


class Staff(AbstractUser):
    """A member of staff. The role decides what they may do (SPEC.md, "Who uses it")."""

    role = models.CharField(max_length=20, choices=Role.choices, default=Role.FRONT_DESK)

    class Meta:
        verbose_name = "staff member"
        verbose_name_plural = "staff"

    # Set by set_unusable_password() until the next save: like a new password, disabling the
    # password revokes the tokens it signed in for (tally.security.signals).
    password_disabled = False

    def set_unusable_password(self) -> None:
        super().set_unusable_password()
        self.password_disabled = True

    @property
    def display_name(self) -> str:
        return self.get_full_name() or self.username

    @property
    def is_owner(self) -> bool:
        return self.role == Role.OWNER

    @property
    def is_practitioner(self) -> bool:
        return self.role == Role.PRACTITIONER


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class TokenOrigin(models.TextChoices):
    """How a token was obtained. A password change revokes the tokens its old password signed in
    for, and keeps the ones the command line issued, which no password was ever asked for."""

    PASSWORD = "password", "signed in with a password (POST /auth/token)"
    COMMAND_LINE = "command_line", "issued on the command line (tally createtoken)"


class ApiToken(models.Model):
    """A bearer token. Only its SHA-256 is stored; the raw token is shown once."""

    staff = models.ForeignKey(Staff, on_delete=models.CASCADE, related_name="api_tokens")
    token_hash = models.CharField(max_length=64, unique=True)
    label = models.CharField(max_length=100, blank=True)
    # By default a password token: one that a password change revokes is the safe guess.
    origin = models.CharField(max_length=20, choices=TokenOrigin.choices, default=TokenOrigin.PASSWORD)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"token {self.pk} of {self.staff_id}"

    @classmethod
    def issue(cls, staff: Staff, label: str = "", origin: str = TokenOrigin.PASSWORD) -> tuple[ApiToken, str]:
        raw = "tly_" + secrets.token_urlsafe(32)  # 256 bits
        token = cls.objects.create(staff=staff, token_hash=hash_token(raw), label=label, origin=origin)
        return token, raw
