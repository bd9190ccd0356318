"""The signed-in staff member's own account: two-factor sign-in (TOTP) on and off."""

from __future__ import annotations

from urllib.parse import urlencode

import segno
from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache

from tally.clinic.actions.two_factor import (
    base32_secret,
    confirmed_device,
    do_confirm_two_factor,
    do_remove_two_factor,
    do_start_two_factor,
    must_use_two_factor,
    pending_device,
)
from tally.clinic.errors import ClinicError

from ..forms import TwoFactorCodeForm
from .auth import safe_next, verified_now
from .common import ANY_STAFF, StaffRequest, posted, refuse_or_raise, show_error, staff_view


def grouped(secret: str) -> str:
    return " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))


def qr_code_svg(uri: str) -> str:
    """The otpauth:// URI as an inline SVG (markup, no script or style: fine under the CSP)."""
    svg = segno.make(uri, error="m").svg_inline(scale=4, border=2, light="#fff", title="QR code to scan")
    return format_html('<div class="qr-code" role="img" aria-label="QR code to scan">{}</div>', mark_safe(svg))


@never_cache
@staff_view(*ANY_STAFF)
def two_factor(request: StaffRequest) -> HttpResponse:
    user = request.user
    form = TwoFactorCodeForm(posted(request))
    device = confirmed_device(user)
    if device is not None:
        if request.method == "POST" and form.is_valid():
            try:
                do_remove_two_factor(acting_user=user, code=form.cleaned_data["code"])
            except ClinicError as exc:
                page = refuse_or_raise(request, exc)
                if page is not None:
                    return page
                show_error(form, exc)
            else:
                messages.success(request, "Two-factor sign-in is off.")
                return redirect("staff:two_factor")
        return render(request, "staff/auth/two_factor.html", {
            "on": True, "device": device, "form": form, "can_turn_off": not must_use_two_factor(user),
        })
    if request.method == "POST" and "start" in request.POST:
        # "Start set-up": the device (its secret) is made by this POST, never by opening the page.
        try:
            do_start_two_factor(acting_user=user)
        except ClinicError as exc:  # turned on meanwhile (another tab)
            messages.info(request, exc.message)
        return redirect(back_here(request))
    pending = pending_device(user)
    if request.method == "POST" and form.is_valid():
        try:
            device = do_confirm_two_factor(acting_user=user, code=form.cleaned_data["code"])
        except ClinicError as exc:
            if pending is None:  # no set-up started (or it was reset): the start button again
                messages.error(request, exc.message)
                return redirect(back_here(request))
            show_error(form, exc)
        else:
            verified_now(request, device)
            messages.success(request, "Two-factor sign-in is on. Signing in will ask for a code from now on.")
            return redirect(safe_next(request))
    context = {"on": False, "form": form, "required": must_use_two_factor(user), "next": safe_next(request),
               "started": pending is not None}
    if pending is not None:
        context |= {"uri": pending.config_url, "secret": grouped(base32_secret(pending)),
                    "qr_code": qr_code_svg(pending.config_url)}
    return render(request, "staff/auth/two_factor.html", context)


def back_here(request: StaffRequest) -> str:
    """This page again, with the `next` it was given (where signing in was going)."""
    target = request.POST.get("next") or request.GET.get("next")
    here = reverse("staff:two_factor")
    return f"{here}?{urlencode({'next': safe_next(request)})}" if target else here
