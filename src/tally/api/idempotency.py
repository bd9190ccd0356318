"""Writes: one durable transaction per request, and Idempotency-Key replay (API.md).

The same key (per staff member) with the same method, path and body replays the first
answer and changes nothing; with anything else it is `409 idempotency_conflict`. A 4xx
answer is not kept. The record is written in the same transaction as the action, so an
answer is remembered exactly when its change committed. A request resent while the first
still runs waits for it (an advisory lock per key on PostgreSQL, IMMEDIATE transactions on
SQLite) and then replays its answer; should both still run, the second fails on the unique
key, rolls back and replays the first.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import random
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from ninja import Status

from tally.clinic.actions.common import transaction_ends_on_error
from tally.clinic.audit import chained_at_end, request_ip
from tally.clinic.compiled import Compiled, insert
from tally.clinic.errors import ClinicError, Invalid
from tally.clinic.locking import lock_idempotency_key, set_lock_timeout
from tally.clinic.models import ClinicSettings, IdempotencyRecord, Staff

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 200
PURGE_CHANCE = 0.02


def clinic_write(view: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a write endpoint: the client's address for the audit trail, one durable
    transaction around the action, the clinic settings read once, and replay for a
    repeated Idempotency-Key on POST."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        with request_ip(request), ClinicSettings.read_once():
            key = request.headers.get(HEADER)
            if request.method == "POST" and key is not None and isinstance(getattr(request, "auth", None), Staff):
                return run_once(request, clean_key(key), lambda: view(request, *args, **kwargs))
            with transaction.atomic(durable=True), chained_at_end(), transaction_ends_on_error():
                set_lock_timeout()
                return view(request, *args, **kwargs)

    return wrapper


def clean_key(key: str) -> str:
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise Invalid(f"An {HEADER} is 1 to {MAX_KEY_LENGTH} printable characters.",
                      fields={HEADER: f"1 to {MAX_KEY_LENGTH} printable characters"})
    return key


def body_fingerprint(request: HttpRequest) -> str:
    """The same JSON with other spacing or key order is the same body."""
    try:
        canonical = json.dumps(json.loads(request.body or b"null"), sort_keys=True, separators=(",", ":"))
        data = canonical.encode()
    except ValueError:
        data = request.body
    return hashlib.sha256(data).hexdigest()


def run_once(request: HttpRequest, key: str, run: Callable[[], Any]) -> Any:
    staff: Staff = request.auth  # type: ignore[attr-defined]
    fingerprint = body_fingerprint(request)
    try:
        # The audit events are chained last, after the idempotency record (audit.py).
        # Any error leaves this block, rolling all of it back: the action needs no savepoint.
        with transaction.atomic(durable=True), chained_at_end(), transaction_ends_on_error():
            set_lock_timeout()  # the actions inside are not the outermost block: they do not set it
            lock_idempotency_key(staff.pk, key)  # a resent request waits here for the first
            stored = find_record(staff, key)
            if stored is not None:
                return replay(stored, request, fingerprint)
            result = run()
            status, body = status_and_body(result)
            if status < 400:
                insert(IdempotencyRecord(
                    staff=staff, key=key, method=request.method or "", path=request.path[:500],
                    body_hash=fingerprint, status_code=status, response_body=body,
                ))
    except IntegrityError:
        stored = find_record(staff, key)
        if stored is None:
            raise
        return replay(stored, request, fingerprint)
    if random.random() < PURGE_CHANCE:
        purge_expired()
    return result


# Looked up by every POST that carries a key: compiled once per connection (compiled.py).
_RECORD = Compiled(
    lambda staff_id, key: IdempotencyRecord.objects.filter(staff_id=staff_id, key=key).order_by("pk")[:1], int, str)


def find_record(staff: Staff, key: str) -> IdempotencyRecord | None:
    stored = _RECORD.first(staff.pk, key)
    if stored is not None and stored.created_at < expiry_cutoff():
        stored.delete()
        return None
    return stored


def replay(stored: IdempotencyRecord, request: HttpRequest, fingerprint: str) -> HttpResponse:
    if (stored.method, stored.path, stored.body_hash) != (request.method, request.path[:500], fingerprint):
        raise ClinicError(
            f"This {HEADER} was already used for another request; use a new key for a new request.",
            code="idempotency_conflict",
            fields={HEADER: "already used with another request"},
        )
    response = HttpResponse(stored.response_body, status=stored.status_code, content_type="application/json")
    response["Idempotent-Replayed"] = "true"
    return response


def status_and_body(result: Any) -> tuple[int, str]:
    """The status and JSON body a view's result becomes (views return JSON primitives)."""
    if isinstance(result, HttpResponse):
        return result.status_code, result.content.decode()
    if isinstance(result, Status):
        return result.status_code, json.dumps(result.value, cls=DjangoJSONEncoder)
    return 200, json.dumps(result, cls=DjangoJSONEncoder)


def expiry_cutoff() -> dt.datetime:
    return timezone.now() - dt.timedelta(hours=settings.TALLY_IDEMPOTENCY_TTL_HOURS)


def purge_expired() -> int:
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=expiry_cutoff()).delete()
    return deleted
