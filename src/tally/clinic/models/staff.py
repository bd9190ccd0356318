from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils import timezone


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
    # From this moment on the token is refused (401, "expired"). Set when it is issued, so a
    # changed TALLY_TOKEN_MAX_HOURS neither ends nor extends tokens already out. None: it never
    # expires, which only `tally createtoken` gives (a script's token; revoke it to end it).
    expires_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"token {self.pk} of {self.staff_id}"

    @classmethod
    def issue(cls, staff: Staff, label: str = "", origin: str = TokenOrigin.PASSWORD,
              expires_at: dt.datetime | None = None) -> tuple[ApiToken, str]:
        """A new token and its raw value (shown once). A password token without `expires_at`
        gets the configured lifetime (TALLY_TOKEN_MAX_HOURS): none ever lives forever."""
        if expires_at is None and origin == TokenOrigin.PASSWORD:
            expires_at = timezone.now() + password_token_lifetime()
        raw = "tly_" + secrets.token_urlsafe(32)  # 256 bits
        token = cls.objects.create(staff=staff, token_hash=hash_token(raw), label=label, origin=origin,
                                   expires_at=expires_at)
        return token, raw

    def expired(self, now: dt.datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


def password_token_lifetime() -> dt.timedelta:
    return dt.timedelta(hours=settings.TALLY_TOKEN_MAX_HOURS)
