from __future__ import annotations

import datetime as dt
import functools
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import ParamSpec, TypeVar

from django.db import connection, models, transaction
from django.db.transaction import TransactionManagementError
from django.utils import timezone

from ..audit import chained_at_end
from ..errors import Forbidden, Invalid
from ..locking import set_lock_timeout
from ..models import ClinicSettings, Staff
from ..models.staff import Role

P = ParamSpec("P")
R = TypeVar("R")

CENT = Decimal("0.01")


_ENDS_ON_ERROR = "tally_transaction_ends_on_error"


@contextmanager
def transaction_ends_on_error() -> Iterator[None]:
    """For a front end's transaction that any error raised in it ends, rolling all of it back
    (the API's one transaction per write request: its error handlers run outside it). An
    action called directly in it then takes no savepoint of its own: the savepoint could only
    be rolled back to by a caller that catches the error and goes on, and there is none."""
    previous = getattr(connection, _ENDS_ON_ERROR, False)
    setattr(connection, _ENDS_ON_ERROR, True)
    try:
        yield
        # An action failed in here and its error was caught: without its savepoint, the
        # transaction can only roll back, and the caller would answer as if it had worked.
        if connection.needs_rollback:
            raise TransactionManagementError(
                "An action failed inside a transaction that must end on any error, and the error was caught.")
    finally:
        setattr(connection, _ENDS_ON_ERROR, previous)


def clinic_action(func: Callable[P, R]) -> Callable[P, R]:
    """Run an action in one transaction (a savepoint when a front end already opened one,
    so that an idempotency record commits or rolls back with the action; none when that
    transaction ends on any error, see `transaction_ends_on_error`)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        outermost = not connection.in_atomic_block
        flag = getattr(connection, _ENDS_ON_ERROR, False)
        ends_on_error = not outermost and flag
        # Actions this one calls are nested in it as before, with their savepoints.
        setattr(connection, _ENDS_ON_ERROR, False)
        try:
            # The audit events are chained at the end of the outermost block (audit.py).
            with transaction.atomic(savepoint=not ends_on_error), chained_at_end():
                if outermost:
                    set_lock_timeout()
                return func(*args, **kwargs)
        finally:
            setattr(connection, _ENDS_ON_ERROR, flag)

    return wrapper


def require_role(user: Staff | None, *roles: str, doing: str) -> Staff:
    if user is None or not user.is_active:
        raise Forbidden(f"You must be signed in to {doing}.")
    if user.role not in roles:
        allowed = " or ".join(Role(r).label.lower() for r in roles)
        raise Forbidden(f"Only {allowed} staff may {doing}.")
    return user


DESK = (Role.OWNER, Role.FRONT_DESK)
OWNER = (Role.OWNER,)
ANY_STAFF = (Role.OWNER, Role.FRONT_DESK, Role.PRACTITIONER)


def money(value: Decimal | str | int, field: str = "amount") -> Decimal:
    try:
        amount = Decimal(str(value))
    except Exception:
        raise Invalid(f"{field} must be a decimal amount.", fields={field: "not a number"}) from None
    if not amount.is_finite() or amount != amount.quantize(CENT):
        raise Invalid(f"{field} must have at most two decimal places.", fields={field: "at most 2 decimal places"})
    if abs(amount) >= Decimal("100000000"):
        raise Invalid(f"{field} is too large.", fields={field: "too large"})
    return amount.quantize(CENT)


def clinic_tz() -> dt.tzinfo:
    return ClinicSettings.load().tz


def local_date(moment: dt.datetime, tz: dt.tzinfo | None = None) -> dt.date:
    return moment.astimezone(tz or clinic_tz()).date()


def now() -> dt.datetime:
    return timezone.now()


def max_length_of(model: type[models.Model], name: str) -> int:
    """A CharField's max_length, the bound `optional_text` and `require_text` check."""
    length = getattr(model._meta.get_field(name), "max_length", None)
    if not isinstance(length, int):
        raise TypeError(f"{model.__name__}.{name} has no max_length")
    return length


def optional_text(value: str | None, field: str, max_length: int = 2000) -> str:
    """Free text as the databases can store it: trimmed, no NUL, valid Unicode, bounded, and
    composed (NFC), so "José" typed with a combining accent matches "José" typed as one letter.
    The bound is checked after composing, which can lengthen a text (U+0958 becomes two code
    points): give a CharField's max_length, not the request's limit."""
    text = str(value or "").strip()
    if "\x00" in text:
        raise Invalid(f"{field} must not contain NUL characters.", fields={field: "no NUL characters"})
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid(f"{field} must be valid Unicode text.", fields={field: "invalid Unicode"}) from None
    text = unicodedata.normalize("NFC", text)
    if len(text) > max_length:
        raise Invalid(f"{field} is too long.", fields={field: f"at most {max_length} characters"})
    return text


def require_text(value: str | None, field: str, what: str, max_length: int = 2000) -> str:
    text = optional_text(value, field, max_length)
    if not text:
        raise Invalid(f"A {what} is required.", fields={field: "required"})
    return text
