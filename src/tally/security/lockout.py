"""The answer to a paused sign-in (django-axes' AXES_LOCKOUT_CALLABLE): for the API the one
error shape, `429 rate_limited`; for the staff site a page; both with Retry-After."""

from __future__ import annotations

import math

from axes.helpers import get_client_ip_address, get_client_username, get_cool_off
from axes.models import AccessAttempt
from axes.utils import reset as reset_attempts
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

API_PREFIX = "/api/"


def cool_off_minutes() -> int:
    cool_off = get_cool_off()
    return math.ceil(cool_off.total_seconds() / 60) if cool_off else 0


def throttled_message() -> str:
    return (f"Too many failed sign-ins for this user from this address. "
            f"Try again in {cool_off_minutes()} minutes.")


def retry_after_seconds(request: HttpRequest, username: str | None) -> int:
    """Seconds until the pause ends: it runs from the failure that started it."""
    cool_off = get_cool_off(request)
    if not cool_off:
        return 0
    latest = (AccessAttempt.objects.filter(username=username, ip_address=get_client_ip_address(request))
              .order_by("-attempt_time").values_list("attempt_time", flat=True).first())
    if latest is None:
        return math.ceil(cool_off.total_seconds())
    remaining = (latest + cool_off - timezone.now()).total_seconds()
    return max(1, math.ceil(remaining))


def lockout_response(request: HttpRequest, original_response: HttpResponse | None = None,
                     credentials: dict | None = None) -> HttpResponse:
    retry_after = retry_after_seconds(request, get_client_username(request, credentials))
    if request.path.startswith(API_PREFIX):
        if original_response is not None and original_response.status_code == 429:
            return original_response  # already the error shape, from SignInThrottled
        from tally.api.api import error_response

        response: HttpResponse = error_response(429, "rate_limited", throttled_message())
    else:
        response = render(request, "staff/auth/locked_out.html",
                          {"minutes": max(1, math.ceil(retry_after / 60)), "title": "Sign-in paused"},
                          status=429)
    response["Retry-After"] = str(retry_after)
    return response


def clear_failures(request: HttpRequest, username: str) -> None:
    """A whole sign-in (the password and, when due, the two-factor code) clears the failures
    of this user name from this address. Not the password alone (AXES_RESET_ON_SUCCESS is
    off): then whoever knows it could clear the wrong codes and guess on, four at a time."""
    reset_attempts(ip=get_client_ip_address(request), username=username)


# AccessAttempt.username is a column of 255 characters (django-axes).
_RECORDED_NAME_LENGTH = 255


def signin_username(request: HttpRequest, credentials: dict | None = None) -> str | None:
    """The user name django-axes records and keys the pause on (AXES_USERNAME_CALLABLE): the
    one given, clipped to the column that records it. Every sign-in path goes through here
    (the staff form, the admin's, POST /auth/token): a longer name, which can be no one's,
    made a 500 on PostgreSQL when its failure was recorded."""
    if credentials:
        name = credentials.get("username")
    else:
        name = getattr(request, "data", request.POST).get("username")
    return name[:_RECORDED_NAME_LENGTH] if isinstance(name, str) else name
