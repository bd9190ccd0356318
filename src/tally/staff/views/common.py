"""What every staff page shares: sign-in and role checks, the clinic's time zone and
currency for the request, turning a ClinicError into a message on the form, pagination."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from django import forms
from django.contrib.auth.views import redirect_to_login
from django.core.paginator import Page, Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

# The role groups the actions check, re-exported so a page and its action never disagree.
from tally.clinic.actions.common import ANY_STAFF, DESK, OWNER  # noqa: F401
from tally.clinic.audit import Shown, record_reads, request_ip
from tally.clinic.errors import ClinicError
from tally.clinic.models import ClinicSettings, Staff

PAGE_SIZE = 50


class StaffRequest(HttpRequest):
    """A request that passed `staff_view`: a signed-in staff member and this request's clinic settings."""

    user: Staff
    clinic: ClinicSettings


def shows(request: HttpRequest, action: str, *shown: Shown, nothing: Shown | None = None,
          details: dict[str, Any] | None = None) -> None:
    """The patient data this page shows (SPEC "Who uses it": every view is audited). `staff_view`
    writes it to the audit log, one event per object in one INSERT, once the page is rendered
    and before it is sent (a form shown again with its errors counts); not for a redirect, a
    refusal or an error page, nor for a HEAD (no body is sent), which show nothing. The last
    call wins."""
    request.audit_shown = (action, list(shown), nothing, details)  # type: ignore[attr-defined]


def record_shown(request: HttpRequest, response: HttpResponse) -> None:
    noted = getattr(request, "audit_shown", None)
    status = response.status_code
    if noted is None or 300 <= status < 400 or status in (401, 403, 404) or status >= 500:
        return  # a redirect, a refusal or an error page shows nothing of the patient
    if request.method == "HEAD":
        return  # the page's headers only: the server sends no body
    action, shown, nothing, details = noted
    match = request.resolver_match
    page = {"page": match.url_name} if match is not None and match.url_name else {}
    record_reads(request.user, action, shown, nothing=nothing, details=page | (details or {}))  # type: ignore[arg-type]


def forbidden(request: HttpRequest, message: str = "Your role may not use this page.") -> HttpResponse:
    return render(request, "staff/403.html", {"message": message}, status=403)


def sign_in_first(request: HttpRequest) -> HttpResponse:
    """To the sign-in page, and back to this page after. For htmx, a whole-page visit (204 with
    HX-Redirect), back to the page the request came from: a 302 is followed inside the request,
    and htmx swapped the sign-in page into the chart or the investigation it was to update."""
    if not is_htmx(request):
        return redirect_to_login(request.get_full_path())
    current = urlsplit(request.headers.get("HX-Current-URL", ""))
    page = f"{current.path}?{current.query}" if current.query else current.path
    response = HttpResponse(status=204)
    response["HX-Redirect"] = redirect_to_login(page or request.get_full_path())["Location"]
    return response


def staff_view(*roles: str) -> Callable:
    """Signed-in staff with one of `roles` only (others get a 403 page). Loads the clinic
    settings for this request (never cached), renders dates in its time zone and records
    the caller's IP on the audit events the actions write; then writes the reads the page
    noted with `shows` to the audit log."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return sign_in_first(request)
            if getattr(request.user, "role", None) not in roles:
                return forbidden(request)
            clinic = ClinicSettings.load()
            request.clinic = clinic  # type: ignore[attr-defined]  # read by StaffRequest views
            timezone.activate(clinic.tz)
            try:
                with request_ip(request):
                    response = view(request, *args, **kwargs)
                    record_shown(request, response)
                    return response
            except ClinicError as exc:
                # An action refused outside any form (a stale link, a race): a page, not a 500.
                if exc.code == "not_found":
                    raise Http404(exc.message) from exc
                if exc.code == "forbidden":
                    return forbidden(request, exc.message)
                return render(request, "staff/refused.html", {"message": exc.message}, status=409)
            finally:
                timezone.deactivate()

        return wrapper

    return decorate


def show_error(form: forms.Form, exc: ClinicError) -> None:
    """Put an action's refusal on the form: on the field it names when the form has it,
    and always as a sentence at the top."""
    for name, note in exc.fields.items():
        field = name.removesuffix("_id").split(".")[-1]
        if field in form.fields and field not in form.errors:
            form.add_error(field, note)
    form.add_error(None, exc.message)


def refuse_or_raise(request: HttpRequest, exc: ClinicError) -> HttpResponse | None:
    """A 403/404 refusal becomes its page; anything else the caller shows on the form."""
    if exc.code == "forbidden":
        return forbidden(request, exc.message)
    if exc.code == "not_found":
        raise Http404(exc.message) from exc
    return None


def paginate(request: HttpRequest, queryset: Any, per_page: int = PAGE_SIZE, param: str = "page",
             count: int | None = None) -> Page:
    """One page of rows; pass `count` when it is already known, to save the COUNT query."""
    paginator = Paginator(queryset, per_page)
    if count is not None:
        paginator.count = count  # a cached_property: set, it is not queried again
    return paginator.get_page(request.GET.get(param))


def is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def can(user: Any, *roles: str) -> bool:
    return getattr(user, "role", None) in roles


def posted(request: HttpRequest) -> Any:
    """The form data of a POST (even an empty one, so it is validated), else None."""
    return request.POST if request.method == "POST" else None
