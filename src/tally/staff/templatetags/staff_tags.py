"""Money in the clinic's currency, sessions in the clinic's words, query strings for filters."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import template
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from tally.clinic.investigator import export
from tally.clinic.money import format_money

__all__ = ["format_money", "register"]  # format_money: imported from here by views

register = template.Library()

@register.simple_tag(takes_context=True)
def money(context: template.Context, amount: Decimal | int | None) -> str:
    clinic = context.get("clinic") or getattr(context.get("request"), "clinic", None)
    return format_money(amount, clinic.currency if clinic is not None else "USD")


@register.filter
def session_label(line: Any) -> str:
    """ "Session 3 of 10 · 7 left" for a line paid via a package, as it stood when charged."""
    package = getattr(line, "covered_by", None)
    if package is None or line.session_number is None:
        return ""
    left = session_left_after(line, package.sessions_total)
    return f"Session {line.session_number} of {package.sessions_total} · {left} left"


def session_left_after(line: Any, sessions_total: int) -> int:
    """The sessions left after the line's charge. A line charged before they were kept has
    the number of the count it reached (total - number); a later one may have taken a session
    a removed line gave back, a lower number than the count."""
    return line.sessions_left if line.sessions_left is not None else sessions_total - line.session_number


@register.filter
def package_count(package: Any) -> str:
    """ "3 of 10 used · 7 left" """
    return f"{package.sessions_used} of {package.sessions_total} used · {package.sessions_remaining} left"


@register.filter
def humanize_code(value: str | None) -> str:
    return (value or "").replace("_", " ")


@register.filter
def reason_label(code: str | None) -> str:
    """Why a visit was not counted, in words (the investigator's reason codes)."""
    return export.reason_label(code)


@register.simple_tag(takes_context=True)
def query(context: template.Context, **changes: Any) -> str:
    """The current query string with some parameters changed (None removes one). A view's
    `query_pins` are added first: what every link of the page must keep (e.g. which run)."""
    params = context["request"].GET.copy()
    for key, value in (context.get("query_pins") or {}).items():
        params[key] = value
    for key, value in changes.items():
        if value is None or value == "":
            params.pop(key, None)
        else:
            params[key] = value
    encoded = params.urlencode()
    return f"?{encoded}" if encoded else "?"


@register.simple_tag
def status_badge(status: str) -> str:
    return format_html('<span class="badge badge-{}">{}</span>', status, status.replace("_", " "))


SECTIONS = {
    "today": {"today", "book", "reschedule", "check_in", "check_in_preview", "undo_check_in", "cancel", "no_show",
              "undo_cancel", "undo_no_show", "delete"},
    "patients": {"patients", "patient_new", "chart", "sell", "invoice_new", "invoice", "invoice_edit", "add_line",
                 "remove_line", "payment", "refund", "void", "investigation"},
    "audit": {"audit"},
    "catalog": {"catalog", "service_new", "service_edit", "package_new", "package_edit"},
    "staff": {"staff_list"},
}


@register.simple_tag(takes_context=True)
def nav_current(context: template.Context, section: str) -> str:
    """aria-current="page" on the navigation item of the page's area."""
    match = getattr(context.get("request"), "resolver_match", None)
    if match is not None and match.url_name in SECTIONS.get(section, ()):
        return mark_safe('aria-current="page"')
    return ""
