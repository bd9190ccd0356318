"""Signing in and out (session auth), the two-factor code step, and the home page.

Signing in is the password (Django's LoginView, throttled by django-axes), then, for staff
with two-factor sign-in, a code: until then tally.security's gate lets the session reach only
the code step (or, for an owner without it yet, its set-up page) and signing out.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from axes.handlers.proxy import AxesProxyHandler
from django.contrib import messages
from django.contrib.auth import user_login_failed
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import csrf
from django.views.decorators.cache import never_cache
from django_otp import login as otp_login

from tally.clinic.actions.two_factor import confirmed_device, verify_code
from tally.clinic.models import ClinicSettings
from tally.security import sessions
from tally.security.lockout import clear_failures, lockout_response
from tally.security.middleware import second_step_for

from ..forms import SignInForm, TwoFactorCodeForm


class SignInView(auth_views.LoginView):
    template_name = "staff/auth/login.html"
    authentication_form = SignInForm
    redirect_authenticated_user = True

    def get_default_redirect_url(self) -> str:
        return reverse("staff:today")

    def get_success_url(self) -> str:
        """Straight on to the code step (or the owner's two-factor set-up) when there is one."""
        url = super().get_success_url()
        # Just signed in, request.user is the bare Staff (no is_verified yet): not verified.
        is_verified = getattr(self.request.user, "is_verified", None)
        if is_verified is not None and is_verified():
            return url
        step = second_step_for(self.request.user)
        return f"{step}?{urlencode({'next': url})}" if step else url

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["clinic"] = ClinicSettings.load()
        return context


class SignOutView(auth_views.LogoutView):
    """POST only (Django's LogoutView): a link cannot sign anyone out."""

    next_page = reverse_lazy("staff:login")  # type: ignore[assignment]  # a lazy str is what Django expects


def safe_next(request: HttpRequest, fallback: str | None = None) -> str:
    """The `next` parameter when it points into this site, else `fallback` (Today by default)."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return fallback or reverse("staff:today")


def verified_now(request: HttpRequest, device: Any) -> None:
    """This session passed the second step: a new session key for the raised privilege."""
    request.session.cycle_key()
    otp_login(request, device)
    sessions.register(request, device.user_id)
    clear_failures(request, device.user.get_username())


@never_cache
def login_code(request: HttpRequest) -> HttpResponse:
    """The second step of signing in: a code from the authenticator app."""
    user = request.user
    if not user.is_authenticated:
        return redirect("staff:login")
    next_url = safe_next(request)
    device = confirmed_device(user)
    if user.is_verified() or device is None:  # type: ignore[attr-defined]  # django-otp adds is_verified
        return redirect(next_url)
    form = TwoFactorCodeForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        credentials = {"username": user.get_username()}
        if not AxesProxyHandler.is_allowed(request, credentials):
            sessions.end_this_session(request)  # after the pause: the password again
            return lockout_response(request, None, credentials)
        if verify_code(device, form.cleaned_data["code"]):
            verified_now(request, device)
            return redirect(next_url)
        # A wrong code counts as a failed sign-in: guessing codes is paused like guessing passwords.
        user_login_failed.send(sender=__name__, credentials=credentials, request=request)
        if getattr(request, "axes_locked_out", False):
            sessions.end_this_session(request)
            return lockout_response(request, None, credentials)
        form.add_error("code", "That code does not match. Try the newest code from the app.")
    return render(request, "staff/auth/login_code.html",
                  {"form": form, "next": next_url, "clinic": ClinicSettings.load()})


def home(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect("staff:login")
    return redirect("staff:today")


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """A form sent with a CSRF token that is no longer the session's (signing in again in
    another tab rotates it). htmx swaps no 403, so its button did nothing at all: for htmx, the
    page is loaded again (204 with HX-Refresh), which brings the current token, and says that
    nothing was saved. Anything else gets Django's refusal page, as before."""
    if request.headers.get("HX-Request") == "true":
        if getattr(request, "user", None) is not None and request.user.is_authenticated:
            messages.warning(request, "Nothing was saved: this page was opened before you signed in again. "
                                      "It has been reloaded; try again.")
        response = HttpResponse(status=204)
        response["HX-Refresh"] = "true"
        return response
    return csrf.csrf_failure(request, reason)
