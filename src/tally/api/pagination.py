"""Keyset pagination: `{items, next}` with an opaque cursor.

The cursor is the sort key of the last item sent, base64-encoded JSON. The next page
continues strictly after it, so rows added or removed meanwhile never shift a page.
Keys are ascending and end with `id`, which makes the order total.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Callable, Sequence
from functools import reduce
from typing import Any, TypeVar

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Field, Model, Q, QuerySet

from tally.clinic.errors import Invalid

from .schemas import PageParams

M = TypeVar("M", bound=Model)
MAX_INT = 2**63 - 1


def _bad_cursor() -> Invalid:
    return Invalid("That cursor is not one this list gave out.", fields={"cursor": "invalid cursor"})


def encode_cursor(row: Model, keys: Sequence[str]) -> str:
    values = []
    for key in keys:
        value = getattr(row, key)
        values.append(value.isoformat() if isinstance(value, dt.datetime) else value)
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, model: type[Model], keys: Sequence[str]) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise _bad_cursor() from None
    if not isinstance(values, list) or len(values) != len(keys):
        raise _bad_cursor()
    decoded = []
    for key, value in zip(keys, values, strict=True):
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise _bad_cursor()
        if isinstance(value, int) and abs(value) > MAX_INT:
            raise _bad_cursor()
        if isinstance(value, str) and ("\x00" in value or len(value) > 300):
            raise _bad_cursor()
        field = model._meta.get_field(key)
        if not isinstance(field, Field):  # the keys are a list's own columns, never a relation's reverse
            raise _bad_cursor()
        try:
            converted = field.to_python(value)
        except (DjangoValidationError, ValueError, TypeError):
            raise _bad_cursor() from None
        if converted is None or (isinstance(converted, dt.datetime) and converted.tzinfo is None):
            raise _bad_cursor()
        decoded.append(converted)
    return decoded


def after(keys: Sequence[str], values: Sequence[Any]) -> Q:
    """Rows strictly after `values` in the order of `keys`."""
    alternatives = []
    for i, key in enumerate(keys):
        equal = {k: v for k, v in zip(keys[:i], values[:i], strict=True)}
        alternatives.append(Q(**equal, **{f"{key}__gt": values[i]}))
    return reduce(lambda a, b: a | b, alternatives)


def paginate(
    rows: QuerySet[M],
    page: PageParams,
    *,
    keys: Sequence[str],
    render: Callable[[M], dict[str, Any]],
) -> dict[str, Any]:
    """One page of `rows` in `keys` order, rendered, with the cursor of the next page."""
    rows = rows.order_by(*keys)
    if page.cursor:
        rows = rows.filter(after(keys, decode_cursor(page.cursor, rows.model, keys)))
    fetched = list(rows[: page.limit + 1])
    shown = fetched[: page.limit]
    next_cursor = encode_cursor(shown[-1], keys) if len(fetched) > page.limit else None
    return {"items": [render(row) for row in shown], "next": next_cursor}
