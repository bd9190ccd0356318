"""Web sessions: when they began and were last used, and which belong to whom."""

from __future__ import annotations

import time
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest

from .models import SignedInSession

SIGNED_IN_AT = "tally_signed_in_at"
LAST_SEEN = "tally_last_seen"
REGISTERED_KEY = "tally_registered_key"
# Last-seen is rewritten at most this often, not on every request (a session write each time).
TOUCH_EVERY_SECONDS = 60


def session_store() -> Any:
    return import_module(settings.SESSION_ENGINE).SessionStore


def stamp_sign_in(request: HttpRequest, now: float | None = None) -> None:
    now = time.time() if now is None else now
    request.session[SIGNED_IN_AT] = now
    request.session[LAST_SEEN] = now


def register(request: HttpRequest, staff_id: int) -> None:
    """Note this session as one of the staff member's (again after its key changed)."""
    session = request.session
    if session.session_key is None:
        session.save()
    key = session.session_key
    SignedInSession.objects.update_or_create(session_key=key, defaults={"staff_id": staff_id})
    session[REGISTERED_KEY] = key
    forget_ended(staff_id)


def forget_ended(staff_id: int) -> None:
    """Drop registry rows whose session expired or was deleted some other way."""
    store = session_store()
    gone = [key for key in SignedInSession.objects.filter(staff_id=staff_id).values_list("session_key", flat=True)
            if not store().exists(key)]
    if gone:
        SignedInSession.objects.filter(session_key__in=gone).delete()


def end_this_session(request: HttpRequest) -> None:
    """Sign out of this session only (a timeout): the staff member's other sessions go on."""
    key = request.session.session_key
    if key:
        SignedInSession.objects.filter(session_key=key).delete()
    request.session.flush()
    request.user = AnonymousUser()


def end_all_sessions(staff_id: int) -> int:
    """Delete every session of this staff member; the number ended."""
    store = session_store()
    keys = list(SignedInSession.objects.filter(staff_id=staff_id).values_list("session_key", flat=True))
    for key in keys:
        store().delete(key)
    SignedInSession.objects.filter(staff_id=staff_id).delete()
    return len(keys)


def expiry_reason(session: Any, now: float | None = None) -> str | None:
    """Why this signed-in session must end now, or None while it may go on."""
    now = time.time() if now is None else now
    signed_in_at = session.get(SIGNED_IN_AT)
    last_seen = session.get(LAST_SEEN)
    if not isinstance(signed_in_at, (int, float)) or not isinstance(last_seen, (int, float)):
        return "Please sign in again."
    max_hours = settings.TALLY_SESSION_MAX_HOURS
    if now - signed_in_at > max_hours * 3600:
        return f"You were signed out {max_hours} hours after signing in. Please sign in again."
    idle_minutes = settings.TALLY_SESSION_IDLE_MINUTES
    if now - last_seen > idle_minutes * 60:
        return f"You were signed out after {idle_minutes} minutes without activity. Please sign in again."
    return None


def touch(session: Any, now: float | None = None) -> None:
    now = time.time() if now is None else now
    if now - session.get(LAST_SEEN, 0) >= TOUCH_EVERY_SECONDS:
        session[LAST_SEEN] = now
