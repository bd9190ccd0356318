"""Bearer tokens. Looked up on every request, never cached: a token revoked or a user
deactivated from the command line is refused on the next request."""

from __future__ import annotations

from django.http import HttpRequest
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


def staff_for_token(raw: str) -> Staff | None:
    """The active staff member holding this unrevoked token, or None."""
    if not raw or len(raw) > MAX_TOKEN_LENGTH:
        return None
    token = _TOKEN.first(hash_token(raw))
    return token.staff if token is not None else None


class BearerToken(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Staff | None:
        staff = staff_for_token(token.strip())
        if staff is not None:
            request.user = staff
        return staff
