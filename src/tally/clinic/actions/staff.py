"""Signing in: issuing API tokens (API.md `POST /auth/token`, `tally createtoken`)."""

from __future__ import annotations

from django.contrib.auth import authenticate

from ..audit import record
from ..errors import ClinicError
from ..models import ApiToken, Staff
from .common import clinic_action


class SignInRefused(ClinicError):
    code = "unauthenticated"


@clinic_action
def do_issue_token(*, username: str, password: str, otp: str | None = None,
                   label: str = "api") -> tuple[ApiToken, str]:
    """Issue a bearer token to an active staff member whose password matches.

    The same answer for an unknown user, a wrong password and an inactive account, so
    the refusal tells an attacker nothing. Only the token's hash is stored.
    """
    staff = authenticate(None, username=username, password=password)
    if not isinstance(staff, Staff) or not staff.is_active:
        raise SignInRefused("Unknown username or wrong password.")
    token, raw = ApiToken.issue(staff, label=label)
    record("token.issue", actor=staff, obj=token, after={"label": label, "staff_id": staff.pk})
    return token, raw


__all__ = ["SignInRefused", "do_issue_token"]
