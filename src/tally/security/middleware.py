"""Middlewares of the staff site (the API uses bearer tokens and is not affected by the first two).

SessionLifetimeMiddleware signs a session out after TALLY_SESSION_IDLE_MINUTES without a
request or TALLY_SESSION_MAX_HOURS after signing in, whichever comes first.

TwoFactorGateMiddleware lets a password-only session go nowhere but the code step (when the
staff member has two-factor sign-in) or its set-up page (an owner who must have it).

NeverStoreMiddleware keeps every answer of the app, the API's included, out of any cache.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import SESSION_KEY
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.cache import add_never_cache_headers

from tally.clinic.actions.two_factor import has_two_factor, must_use_two_factor

from . import sessions


class SessionLifetimeMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        session = request.session
        if SESSION_KEY in session:
            reason = sessions.expiry_reason(session)
            if reason is not None:
                sessions.end_this_session(request)
                messages.info(request, reason)
            else:
                sessions.touch(session)
                if session.get(sessions.REGISTERED_KEY) != session.session_key and request.user.is_authenticated:
                    sessions.register(request, request.user.pk)  # the key changed (a password change)
        return self.get_response(request)


def second_step_for(user: Any) -> str | None:
    """Where a staff member signed in with only a password must go next, or None."""
    if has_two_factor(user):
        return reverse("staff:login_code")
    if must_use_two_factor(user):
        return reverse("staff:two_factor")
    return None


def exempt(path: str) -> bool:
    return path.startswith(("/api/", settings.STATIC_URL))


class TwoFactorGateMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        step = self.missing_step(request)
        if step is not None:
            return self.send_to(request, step)
        return self.get_response(request)

    @staticmethod
    def missing_step(request: HttpRequest) -> str | None:
        """The URL of the step this session must take first, or None."""
        if exempt(request.path):
            return None
        user = request.user
        if not user.is_authenticated or user.is_verified():  # type: ignore[attr-defined]  # django-otp adds it
            return None
        step = second_step_for(user)
        # Half signed in: base.html shows no menu, whose every page would bring this step back.
        request.two_factor_pending = step is not None  # type: ignore[attr-defined]
        if step is None or request.path in {step, reverse("staff:logout"), reverse("admin:logout")}:
            return None
        return step

    @staticmethod
    def send_to(request: HttpRequest, step: str) -> HttpResponse:
        if request.method == "GET":
            step = f"{step}?{urlencode({'next': request.get_full_path()})}"
        if request.headers.get("HX-Request") == "true":
            response = HttpResponse(status=204)
            response["HX-Redirect"] = step  # a whole-page visit, not a fragment swapped in
            return response
        return HttpResponseRedirect(step)


class NeverStoreMiddleware:
    """`Cache-Control: no-store` (Django's never_cache headers) on every answer that does not
    say otherwise: charts, invoices, exports and API answers show patient data, and on a
    shared front-desk computer Back after signing out must not bring them back from the
    browser's cache. Static files are served before this (WhiteNoise) and stay cacheable."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if not response.has_header("Cache-Control"):
            add_never_cache_headers(response)
        return response
