"""Signing in: `POST /auth/token`, the one endpoint without a token."""

from django.http import HttpRequest
from ninja import Router

from tally.clinic.actions.staff import do_issue_token

from ..idempotency import clinic_write
from ..schemas import TokenIn, TokenOut, errors

router = Router(tags=["auth"])


@router.post("/auth/token", auth=None, response={200: TokenOut, **errors(401, 422)})
@clinic_write
def issue_token(request: HttpRequest, payload: TokenIn) -> dict[str, str]:
    """A bearer token for a staff member's username and password (wrong ones: 401)."""
    token, raw = do_issue_token(username=payload.username, password=payload.password, otp=payload.otp)
    return {"token": raw, "role": token.staff.role}
