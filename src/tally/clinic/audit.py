"""The audit trail (SPEC "Who uses it"): one AuditEvent per change, written in the action's
transaction, and one per patient-data object a read showed, written before the answer leaves.

Every event is chained with a keyed hash: `hash = HMAC-SHA256(key, prev_hash + canonical JSON
of the row's content)`, the first event following GENESIS. The key is derived from the server's
secret (TALLY_SECRET_KEY) as Django's `salted_hmac` derives one, with the salt "tally.audit-chain",
so rewriting a stretch of the log and recomputing every later link consistently needs the
application's secret as well as write access to the database (docs/audit-log.md says what that
does and does not protect against). New events are signed with the current key; an event verifies
under it or any of SECRET_KEY_FALLBACKS (TALLY_SECRET_KEY_FALLBACKS), so rotating the key keeps the
old events verifiable. Migration 0009 re-chained the unkeyed events older installs held (their
`hash` was a plain sha256) after checking them; `tally rekey-audit` re-signs events a fallback
signed, so the fallback can be dropped. Appending takes one lock so the chain never forks: on
PostgreSQL a transaction-scoped advisory lock, taken before the last hash is read and held
until commit; on SQLite writers are serialised already (BEGIN IMMEDIATE). Under that lock
ids grow in chain order, so `id` order is the chain's order. `verify_chain` (and
`tally verify-audit`) recomputes it and names the first event that does not match.

The lock is one for the whole clinic, so it is taken as late as possible: inside
`chained_at_end()` (the front ends' and the actions' outermost transactions), `record` only
notes the event, and the block's last statements, just before its commit, chain and insert
every event the transaction kept: lock, last hash, one INSERT, commit. The events are still
written in the action's transaction, all or nothing with its other rows; they are noted
through `transaction.on_commit`, so a savepoint that rolls back drops its events with it.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import getpass
import hashlib
import hmac
import ipaddress
import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, overload

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, models, transaction
from django.forms.models import model_to_dict
from django.utils import timezone

from . import triggers
from .compiled import Compiled, insert
from .locking import lock_errors
from .models import AuditEvent, Staff

# Set by the front ends (API, staff pages, admin) for the duration of a request: `request_ip`.
current_ip: contextvars.ContextVar[str | None] = contextvars.ContextVar("tally_current_ip", default=None)


def client_ip(request: Any) -> str | None:
    """The request's address, if it is one: REMOTE_ADDR, or behind a reverse proxy
    (TALLY_BEHIND_PROXY) the last X-Forwarded-For entry, the one the proxy added (what the
    client sent before it is not trusted). The sign-in pause is keyed on it too (django-axes'
    AXES_CLIENT_IP_CALLABLE)."""
    candidates = [request.META.get("REMOTE_ADDR") or ""]
    if settings.TALLY_BEHIND_PROXY:
        candidates.insert(0, (request.META.get("HTTP_X_FORWARDED_FOR") or "").split(",")[-1].strip())
    for candidate in candidates:
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    return None


@contextmanager
def request_ip(request: Any) -> Iterator[None]:
    """Events recorded inside this block name the request's address (none for no request)."""
    token = current_ip.set(client_ip(request) if request is not None else None)
    try:
        yield
    finally:
        current_ip.reset(token)

GENESIS = "0" * 64
# pg_advisory_xact_lock key that serialises appends to the chain ("TALLYAUD" as 8 bytes, signed).
CHAIN_LOCK_KEY = int.from_bytes(b"TALLYAUD", "big", signed=True)
# What appending costs a request, at most: the lock (PostgreSQL), the last hash, one INSERT.
AUDIT_APPEND_QUERIES = 3
# The row's content that the hash covers: everything but id, prev_hash and hash.
HASHED_FIELDS = ("at", "actor_id", "role", "action", "object_type", "object_id", "patient_id", "before",
                 "after", "ip")


@overload
def snapshot(obj: models.Model, exclude: tuple[str, ...] = ()) -> dict[str, Any]: ...
@overload
def snapshot(obj: None, exclude: tuple[str, ...] = ()) -> None: ...
def snapshot(obj: models.Model | None, exclude: tuple[str, ...] = ()) -> dict[str, Any] | None:
    if obj is None:
        return None
    data = model_to_dict(obj, exclude=[*exclude, "password"])
    data["id"] = obj.pk
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder, default=str))


# ------------------------------------------------------------------ the hash chain


def _plain(value: Any) -> Any:
    """Dates, decimals and UUIDs as the strings a JSON column stores, and any NUL character
    as U+FFFD: PostgreSQL's jsonb cannot hold one, and a filter typed with one is still a
    read to record (it made a 500 on PostgreSQL)."""
    return None if value is None else _without_nul(json.loads(json.dumps(value, cls=DjangoJSONEncoder)))


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value


def _json_value(value: Any) -> Any:
    """What a JSON column gives back on either database: plain JSON, an integral float as an
    int (PostgreSQL's jsonb prints 1e20 as 100000000000000000000)."""
    return None if value is None else _integral_floats(_plain(value))


def _integral_floats(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral_floats(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral_floats(v) for k, v in value.items()}
    return value


def _ip(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return ipaddress.ip_address(value).compressed
    except ValueError:
        return str(value)


def canonical(event: AuditEvent) -> str:
    """The hashed content of an event, the same whether built in memory or read back."""
    at = event.at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    content = {
        "at": at,
        "actor_id": event.actor_id,
        "role": event.role or "",
        "action": event.action,
        "object_type": event.object_type or "",
        "object_id": str(event.object_id or ""),
        "patient_id": event.patient_id,
        "before": _json_value(event.before),
        "after": _json_value(event.after),
        "ip": _ip(event.ip),
    }
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# The salt of the chain's key: Django's salted_hmac(CHAIN_KEY_SALT, message, secret, algorithm="sha256").
CHAIN_KEY_SALT = "tally.audit-chain"


def _keyed(secret: str) -> hmac.HMAC:
    """An HMAC-SHA256 object keyed for the chain and fed nothing yet, which every link
    `.copy()`s: the key is derived once (as `salted_hmac` derives it), not per event."""
    key = hashlib.sha256((CHAIN_KEY_SALT + secret).encode()).digest()
    return hmac.new(key, digestmod=hashlib.sha256)


# (secret, its keyed object) and (secret, fallbacks, their keyed objects, current first), built
# once per process and again only when the settings change (a test's override, never a server).
_signer: tuple[str, hmac.HMAC] | None = None
_verifiers: tuple[str, tuple[str, ...], tuple[hmac.HMAC, ...]] | None = None


def _chain_signer() -> hmac.HMAC:
    """The keyed object new events are signed with: the current SECRET_KEY's."""
    global _signer
    secret = settings.SECRET_KEY
    cached = _signer
    if cached is None or cached[0] != secret:
        cached = _signer = (secret, _keyed(secret))
    return cached[1]


def _chain_verifiers() -> tuple[hmac.HMAC, ...]:
    """The keys an event may have been signed with: the current one, then each fallback."""
    global _verifiers
    secret, fallbacks = settings.SECRET_KEY, tuple(settings.SECRET_KEY_FALLBACKS)
    cached = _verifiers
    if cached is None or cached[0] != secret or cached[1] != fallbacks:
        cached = _verifiers = (secret, fallbacks, (_chain_signer(), *(_keyed(k) for k in fallbacks)))
    return cached[2]


def _link(prev_hash: str, event: AuditEvent) -> bytes:
    return (prev_hash + canonical(event)).encode()


def _sign(keyed: hmac.HMAC, message: bytes) -> str:
    mac = keyed.copy()
    mac.update(message)
    return mac.hexdigest()


def event_hash(prev_hash: str, event: AuditEvent) -> str:
    """The link of `event` after `prev_hash`, signed with the current key."""
    return _sign(_chain_signer(), _link(prev_hash, event))


def unkeyed_event_hash(prev_hash: str, event: AuditEvent) -> str:
    """The chain's form before migration 0009: a plain sha256 anyone can recompute. Used only
    by the migrations that built (0003) and re-keyed (0009) such chains, and to name a tail
    rewritten with it; `verify_chain` never accepts it."""
    return hashlib.sha256(_link(prev_hash, event)).hexdigest()


# The chain's head, read by every write: compiled once per connection (compiled.py).
_LAST_HASH = Compiled(lambda: AuditEvent.objects.order_by("-id").values_list("hash")[:1])


def _lock_chain() -> None:
    if connection.vendor == "postgresql":
        with lock_errors(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK_KEY])


class _Unchained:
    """Events a transaction recorded, waiting for its end to be chained (`chained_at_end`).
    Kept as an on_commit callback only so that Django forgets them when their savepoint or
    transaction rolls back; by the time it is called (after the commit) they are written."""

    def __init__(self, events: list[AuditEvent]):
        self.events = events

    def __call__(self) -> None:
        pass


_CHAINING_AT_END = "tally_audit_chaining_at_end"


@contextmanager
def chained_at_end() -> Iterator[None]:
    """Within this block, which must run inside the transaction's outermost atomic block and
    end just before it commits, events are chained and inserted at the end of the block rather
    than when recorded, so the chain's lock is held from there to the commit only. Nested
    uses join the outermost one. If the block raises, nothing is appended (and the
    transaction rolls back)."""
    if getattr(connection, _CHAINING_AT_END, False):
        yield
        return
    if not connection.in_atomic_block:
        raise RuntimeError("chained_at_end() must run inside a transaction")
    setattr(connection, _CHAINING_AT_END, True)
    try:
        yield
        kept = [callback for _, callback, *_ in connection.run_on_commit if isinstance(callback, _Unchained)]
        events = [event for batch in kept for event in batch.events]
        for batch in kept:
            batch.events = []
        _chain_and_insert(events)
    finally:
        setattr(connection, _CHAINING_AT_END, False)


def append(events: list[AuditEvent]) -> list[AuditEvent]:
    """Chain and insert `events` (one INSERT), in the caller's transaction or in one of their
    own; inside `chained_at_end()`, at the end of that block (the events get their id and hash
    then)."""
    if not events:
        return events
    if getattr(connection, _CHAINING_AT_END, False) and connection.in_atomic_block:
        transaction.on_commit(_Unchained(events))
        return events
    return _chain_and_insert(events)


def _chain_and_insert(events: list[AuditEvent]) -> list[AuditEvent]:
    if not events:
        return events
    # savepoint=False: inside an action this is its transaction (no extra queries); alone (a
    # read, outside any transaction) it opens one, so the lock is held until the row is committed.
    with transaction.atomic(savepoint=False):
        _lock_chain()
        head = _LAST_HASH.first()
        prev = head[0] if head else GENESIS
        # Stamped now, under the chain's lock, which is held until the commit: an event's
        # time, its id and its commit come in the same order, so a client that polls
        # /audit-log from the last time it saw never misses one committed late. (Stamped
        # when recorded, an event could commit after a later-stamped one had been read.) This
        # takes the app servers to share one clock: one host, or hosts kept in step by NTP.
        chained_at = timezone.now().astimezone(dt.UTC)
        for event in events:
            event.at = chained_at
            event.ip = _ip(event.ip)
            event.before, event.after = _plain(event.before), _plain(event.after)
            event.prev_hash = prev
            event.hash = prev = event_hash(prev, event)
        if len(events) == 1:
            insert(events[0])
        else:
            AuditEvent.objects.bulk_create(events)
    return events


# ------------------------------------------------------------------ writing events


def record(
    action: str,
    *,
    actor: Staff | None,
    obj: models.Model | None = None,
    object_type: str | None = None,
    patient_id: int | None = None,
    before: dict | None = None,
    after: dict | None = None,
) -> AuditEvent:
    """One change, written in the action's transaction."""
    event = AuditEvent(
        at=timezone.now(),
        actor=actor,
        role=getattr(actor, "role", "") or "",
        action=action,
        object_type=object_type or (obj._meta.model_name or "" if obj is not None else ""),
        object_id=str(obj.pk) if obj is not None else "",
        patient_id=patient_id,
        before=before,
        after=after,
        ip=current_ip.get(),
    )
    return append([event])[0]


@dataclass(frozen=True)
class Shown:
    """One object a read showed: its patient (None when it names none), type and id."""

    patient_id: int | None
    object_type: str
    object_id: str | int = ""


def record_reads(actor: Staff | None, action: str, shown: Iterable[Shown], *, ip: str | None = None,
                 details: dict[str, Any] | None = None, nothing: Shown | None = None) -> list[AuditEvent]:
    """One read request: an event per object shown (one INSERT for all), or, when it showed
    none, one event for `nothing` (say, a search with no results), so every read leaves a row.
    `details` (a search text, a filter) goes in `after`. Reads run outside any transaction:
    `append` opens one for the insert."""
    at = timezone.now()
    ip = ip if ip is not None else current_ip.get()
    rows = list(dict.fromkeys(shown)) or ([nothing] if nothing is not None else [])
    events = [
        AuditEvent(at=at, actor=actor, role=getattr(actor, "role", "") or "", action=action,
                   object_type=row.object_type, object_id=str(row.object_id), patient_id=row.patient_id,
                   after=details or None, ip=ip)
        for row in rows
    ]
    return append(events)


def command_line_details(command: str, **options: Any) -> dict[str, Any]:
    """What an event of a command-line read says about who ran it: no staff member signs in
    to `tally`, so the operating-system user and the command stand in for one."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = str(os.getuid())
    return {"via": "command line", "command": command, "os_user": user, **options}


def record_read(actor: Staff, action: str, patient_id: int | None, object_type: str, object_id: str | int = "",
                *, ip: str | None = None, details: dict[str, Any] | None = None) -> AuditEvent:
    """One read of one object of one patient's data."""
    return record_reads(actor, action, [Shown(patient_id, object_type, object_id)], ip=ip, details=details)[0]


# ------------------------------------------------------------------ verifying


@dataclass
class FallbackUse:
    """How many events one of SECRET_KEY_FALLBACKS signed, and the first and last of them."""

    events: int = 0
    first_id: int | None = None
    last_id: int | None = None


@dataclass
class ChainReport:
    events: int
    head: str
    broken_at: int | None = None
    problem: str = ""
    head_seen: bool = False
    # One per SECRET_KEY_FALLBACKS entry, in its order, for the events before any break.
    fallbacks: list[FallbackUse] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return self.broken_at is None


def _walk(batch: int = 2000, model: type[AuditEvent] = AuditEvent) -> Iterator[AuditEvent]:
    """The events in id order, `batch` at a time; `model` is a migration's historical one."""
    last = 0
    while True:
        rows = list(model._default_manager.filter(id__gt=last).order_by("id")[:batch])
        if not rows:
            return
        yield from rows
        last = rows[-1].pk


def _broken_link(event: AuditEvent, prev: str, count: int) -> str | None:
    if event.prev_hash == prev:
        return None
    what = "the first event does not start the chain" if count == 0 else \
        "it does not follow the event before it (an event was deleted or inserted, or events were reordered)"
    return f"event {event.pk}: {what}"


def unkeyed_link_problem(event: AuditEvent, prev: str, count: int, message: bytes) -> str:
    """Why an event of an unkeyed chain (before migration 0009) does not check."""
    return _broken_link(event, prev, count) or \
        f"event {event.pk}: its content does not match its hash (the row was changed)"


def _bad_link(event: AuditEvent, prev: str, count: int, message: bytes) -> str:
    if broken := _broken_link(event, prev, count):
        return broken
    if hashlib.sha256(message).hexdigest() == event.hash:
        return (f"event {event.pk}: its hash is the unkeyed sha256 of its content, not the keyed HMAC: the "
                "chain was rewritten from here without the server's secret key")
    return (f"event {event.pk}: its content does not match its hash under TALLY_SECRET_KEY or any of "
            "TALLY_SECRET_KEY_FALLBACKS (the row was changed, or it was signed with a key this server "
            "does not have)")


def verify_chain(stop_at: str | None = None) -> ChainReport:
    """Walk the chain in id order and recompute every link; stop at the first event that
    does not follow its predecessor (a deleted, inserted or reordered row) or whose content no
    longer matches its hash under the current key or a fallback (an edited row, or links
    recomputed by someone without the key). `head_seen`: whether the hash `stop_at` is on the
    chain. `fallbacks`: how many events each fallback key signed (they need it to verify)."""
    keys = _chain_verifiers()
    fallbacks = [FallbackUse() for _ in keys[1:]]
    prev = GENESIS
    count = 0
    seen = stop_at is None
    for event in _walk():
        message = _link(prev, event)
        signed_with = None
        if event.prev_hash == prev:
            signed_with = next((i for i, keyed in enumerate(keys) if _sign(keyed, message) == event.hash), None)
        if signed_with is None:
            return ChainReport(count, prev, event.pk, _bad_link(event, prev, count, message), fallbacks=fallbacks)
        if signed_with:
            use = fallbacks[signed_with - 1]
            use.events += 1
            use.first_id = use.first_id or event.pk
            use.last_id = event.pk
        prev = event.hash
        count += 1
        seen = seen or event.hash == stop_at
    return ChainReport(count, prev, head_seen=seen, fallbacks=fallbacks)


# ------------------------------------------------------------------ re-signing


class ChainBroken(Exception):
    def __init__(self, event_id: int, problem: str):
        super().__init__(problem)
        self.event_id, self.problem = event_id, problem


@dataclass
class Rechained:
    events: int  # on the chain
    rewritten: int  # whose link changed
    old_head: str
    head: str
    accepted: list[str] = field(default_factory=list)  # the breaks let through, as `accept_broken` asked


def rechain(accepts: Callable[[bytes, str], bool], *, model: type[AuditEvent] = AuditEvent,
            explain: Callable[[AuditEvent, str, int, bytes], str] | None = None,
            accept_broken: Iterable[int] = (), sign: Callable[[bytes], str] | None = None,
            batch: int = 2000) -> Rechained:
    """Check the chain as it stands, each link with `accepts(prev_hash + canonical, hash)`, and
    sign every link again with the current key, all in one transaction: the chain's lock is
    held and the audit log's UPDATE trigger lifted for it alone (triggers.audit_log_updatable).
    The first event that does not check raises ChainBroken naming it, and nothing changes;
    unless its id is in `accept_broken`: then it is re-signed as it is (the result names it).
    Rows whose link is already the current key's are not written. `model`: a migration's
    historical AuditEvent; `explain`: what a bad link's problem says (as verify_chain by
    default); `sign`: another formula (only for undoing migration 0009). The caller
    records the re-signing (an "audit.rekeyed" event)."""
    accept = set(accept_broken)
    accepted: list[str] = []
    old_prev = new_prev = GENESIS
    count = rewritten = 0
    pending: list[tuple[str, str, int]] = []

    def flush() -> None:
        with connection.cursor() as cursor:
            cursor.executemany(f"UPDATE {triggers.AUDIT_TABLE} SET prev_hash = %s, hash = %s WHERE id = %s",
                               pending)
        pending.clear()

    with transaction.atomic(), triggers.audit_log_updatable(connection):
        _lock_chain()
        signer = _chain_signer()
        sign = sign or (lambda message: _sign(signer, message))
        explain = explain or _bad_link
        for event in _walk(batch, model):
            content = canonical(event)
            message = (old_prev + content).encode()
            if event.prev_hash != old_prev or not accepts(message, event.hash):
                problem = explain(event, old_prev, count, message)
                if event.pk not in accept:
                    raise ChainBroken(event.pk, problem)
                accepted.append(problem)
            old_prev = event.hash
            new_hash = sign((new_prev + content).encode())
            if (new_prev, new_hash) != (event.prev_hash, event.hash):
                pending.append((new_prev, new_hash, event.pk))
                rewritten += 1
                if len(pending) >= batch:
                    flush()
            new_prev = new_hash
            count += 1
        if pending:
            flush()
    return Rechained(count, rewritten, old_prev, new_prev, accepted)


def signed_by_a_known_key(message: bytes, digest: str) -> bool:
    """`rechain`'s check for a keyed chain: the current key or any fallback signed it."""
    return any(_sign(keyed, message) == digest for keyed in _chain_verifiers())
