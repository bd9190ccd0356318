from __future__ import annotations

from django.conf import settings
from django.db import models


class SignedInSession(models.Model):
    """One signed-in browser session of a staff member, so that signing out or deactivating
    them ends every session they have, without scanning (and decoding) the whole session table."""

    staff = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="signed_in_sessions")
    session_key = models.CharField(max_length=40, unique=True)
    signed_in_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "signed-in session"

    def __str__(self) -> str:
        return f"session of {self.staff_id} since {self.signed_in_at:%Y-%m-%d %H:%M}"
