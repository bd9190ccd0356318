"""Signing in (`POST /auth/token`, the one endpoint without a token) and out."""

import datetime as dt

from django.http import HttpRequest
from ninja import Router

from tally.clinic.actions.staff import do_issue_token
from tally.clinic.audit import request_ip
from tally.security.signals import sign_out_everywhere_now

from ..idempotency import clinic_write
from ..lookups import viewer
from ..schemas import WRITE_ERRORS, SignOutOut, TokenIn, TokenOut, errors

router = Router(tags=["auth"])


@router.post("/auth/token", auth=None, response={200: TokenOut, **errors(401, 422, 429)})
def issue_token(request: HttpRequest, payload: TokenIn) -> dict[str, str]:
    """A bearer token for a staff member's username and password, and `otp`, the current
    two-factor code, once they use two-factor sign-in (wrong ones: 401). Too many failures
    for one username from one address pause it: 429 with Retry-After. The token works until
    `expires_at` (TALLY_TOKEN_MAX_HOURS, 12 hours by default); after that every request with it
    is `401 unauthenticated` ("expired"), and the client signs in again.

    Not one transaction around the request, unlike the other writes: a refused sign-in must
    keep what it recorded (the failed attempt, the code's replay guard)."""
    with request_ip(request):
        token, raw = do_issue_token(request=request, username=payload.username, password=payload.password,
                                    otp=payload.otp)
    assert token.expires_at is not None  # a password token always has one (ApiToken.issue)
    return {"token": raw, "role": token.staff.role, "expires_at": token.expires_at.astimezone(dt.UTC).isoformat()}


@router.post("/auth/sign-out", response={200: SignOutOut, **WRITE_ERRORS})
@clinic_write
def sign_out(request: HttpRequest) -> dict[str, int]:
    """Sign out everywhere, as the staff site's sign-out does: every API token of the caller
    is revoked (this one too: a client forgets it) and every web session of theirs ends.
    Audited (`token.revoke`, cause `sign_out`). An integration that must outlive a person's
    sign-outs uses a staff account of its own (README)."""
    tokens, sessions = sign_out_everywhere_now(viewer(request))
    return {"tokens_revoked": tokens, "sessions_ended": sessions}
