"""Bearer tokens. Looked up on every request, never cached: a token revoked or a user
deactivated from the command line is refused on the next request, and one past its expiry
(ApiToken.expires_at) from that moment, with a message and a WWW-Authenticate that say it
expired, so the client knows to sign in again. One query, no write: the expiry was stored when the token was issued."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils import timezone
from ninja.errors import AuthenticationError
from ninja.security import HttpBearer

from tally.clinic.compiled import Compiled
from tally.clinic.models import ApiToken, Staff
from tally.clinic.models.staff import hash_token

MAX_TOKEN_LENGTH = 200


# Every API request runs it: compiled once per connection (tally.clinic.compiled).
_TOKEN = Compiled(
    lambda token_hash: ApiToken.objects.select_related("staff")
    .filter(token_hash=token_hash, revoked_at__isnull=True, staff__is_active=True).order_by("pk")[:1],
    str,
)


class TokenExpired(AuthenticationError):
    """A real, unrevoked token of an active staff member, past its expiry (api.token_expired)."""


def staff_for_token(raw: str) -> Staff | None:
    """The active staff member holding this unrevoked token, or None; TokenExpired for one
    that has expired."""
    if not raw or len(raw) > MAX_TOKEN_LENGTH:
        return None
    token = _TOKEN.first(hash_token(raw))
    if token is None:
        return None
    if token.expired(timezone.now()):
        raise TokenExpired()
    return token.staff


class BearerToken(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Staff | None:
        staff = staff_for_token(token.strip())
        if staff is not None:
            request.user = staff
        return staff
