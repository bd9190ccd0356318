"""Signing in: issuing API tokens (API.md `POST /auth/token`, `tally createtoken`)."""

from __future__ import annotations

from axes.helpers import get_client_ip_address
from axes.utils import reset as reset_failed_sign_ins
from django.contrib.auth import authenticate, user_login_failed
from django.http import HttpRequest
from django.utils import timezone

from ..audit import record
from ..errors import ClinicError
from ..models import ApiToken, Staff
from ..models.staff import TokenOrigin, password_token_lifetime
from .common import clinic_action
from .two_factor import confirmed_device, must_use_two_factor, verify_code


class SignInRefused(ClinicError):
    code = "unauthenticated"


class SignInThrottled(ClinicError):
    """Too many failed sign-ins for this user name from this address (django-axes)."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


def do_issue_token(*, request: HttpRequest, username: str, password: str, otp: str | None = None,
                   label: str = "api") -> tuple[ApiToken, str]:
    """Issue a bearer token to an active staff member whose password matches, and whose
    two-factor code matches when they use two-factor sign-in.

    The same answer for an unknown user, a wrong password and an inactive account, so
    the refusal tells an attacker nothing. Failures count towards the sign-in pause of this
    user name from this address; during it the answer is `rate_limited`. The checks run
    outside the transaction that issues the token, so that a refusal keeps what they
    recorded (failed attempts, the code's replay guard). Only the token's hash is stored.
    """
    username = Staff.normalize_username(username)  # as the web sign-in form reads it (NFKC)
    staff = authenticate(request, username=username, password=password)
    if getattr(request, "axes_locked_out", False):
        from tally.security.lockout import retry_after_seconds, throttled_message

        raise SignInThrottled(throttled_message(), retry_after=retry_after_seconds(request, username))
    if not isinstance(staff, Staff) or not staff.is_active:
        raise SignInRefused("Unknown username or wrong password.")
    device = confirmed_device(staff)
    if device is not None:
        if not otp:
            raise SignInRefused("This account uses two-factor sign-in: send the current code from the "
                                "authenticator app as `otp`.", fields={"otp": "required"})
        if not verify_code(device, otp):
            # A wrong code counts as a failed sign-in, so guessing codes is paused like passwords.
            user_login_failed.send(sender=__name__, credentials={"username": username}, request=request)
            raise SignInRefused("The two-factor code is wrong or has expired: send the newest one as `otp`.",
                                fields={"otp": "wrong or expired"})
    elif must_use_two_factor(staff):
        raise SignInRefused("Owners sign in with two-factor: set it up first on the staff site's "
                            "Two-factor sign-in page (scripts can use `tally createtoken`).")
    token, raw = _issue(staff=staff, label=label)
    reset_failed_sign_ins(ip=get_client_ip_address(request), username=username)
    return token, raw


@clinic_action
def _issue(*, staff: Staff, label: str) -> tuple[ApiToken, str]:
    # It expires TALLY_TOKEN_MAX_HOURS from now, like a web session.
    expires_at = timezone.now() + password_token_lifetime()
    token, raw = ApiToken.issue(staff, label=label, origin=TokenOrigin.PASSWORD, expires_at=expires_at)
    record("token.issue", actor=staff, obj=token,
           after={"label": label, "staff_id": staff.pk, "origin": token.origin,
                  "expires_at": expires_at.isoformat()})
    return token, raw


__all__ = ["SignInRefused", "SignInThrottled", "do_issue_token"]
