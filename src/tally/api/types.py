"""Input field types: what the API accepts, refused with a 422 before any action runs.

Money is a decimal string or number with at most two places (never NaN or infinite).
Moments are ISO 8601 datetimes or bare dates; `resolve_moment` places them in the
clinic's time zone. Text refuses what the databases cannot store (NUL, lone surrogates).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainValidator,
    StrictBool,
    WithJsonSchema,
)

from tally.clinic.rules import YEARS, end_of_day

CENT = Decimal("0.01")
MONEY_LIMIT = Decimal("100000000")
MAX_ID = 2**63 - 1
INT32 = 2**31 - 1
MONEY_PATTERN = r"^-?\d{1,8}(\.\d{1,2})?$"
_BARE_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATE_START = re.compile(r"^\d{4}-\d{2}-\d{2}")


def parse_money(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise ValueError("must be a decimal amount such as \"95.00\"")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("must be a finite amount")
        value = repr(value)
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError("must be a decimal amount such as \"95.00\"") from None
    if not amount.is_finite():
        raise ValueError("must be a finite amount")
    if abs(amount) >= MONEY_LIMIT:
        raise ValueError("too large")
    if amount != amount.quantize(CENT):
        raise ValueError("at most 2 decimal places")
    return abs(amount).quantize(CENT) if amount.is_zero() else amount.quantize(CENT)  # "-0" is 0.00


def parse_moment(value: Any) -> dt.date | dt.datetime:
    """A bare date stays a date (its meaning depends on the field); anything else a datetime."""
    if isinstance(value, dt.datetime):
        parsed: dt.date | dt.datetime = value
    elif not isinstance(value, str):
        raise ValueError("must be an ISO 8601 datetime or date")
    else:
        text = value.strip()
        try:
            parsed = dt.date.fromisoformat(text) if _BARE_DATE.match(text) else dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError("must be an ISO 8601 datetime or date") from None
    if parsed.year not in YEARS:
        raise ValueError("year must be between 1900 and 2200")
    return parsed


def check_year(value: dt.date) -> dt.date:
    if value.year not in YEARS:
        raise ValueError("year must be between 1900 and 2200")
    return value


def storable_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


def resolve_moment(value: dt.date | dt.datetime, tz: dt.tzinfo, *, bare_date_means_end: bool = False) -> dt.datetime:
    """A bare date is midnight (or, for expiries, the end) of that clinic-local day; a naive
    datetime is read in the clinic's time zone; an aware one is kept as sent."""
    if not isinstance(value, dt.datetime):
        if bare_date_means_end:
            return end_of_day(value, tz)
        return dt.datetime.combine(value, dt.time.min, tzinfo=tz)
    if value.tzinfo is None:
        return value.replace(tzinfo=tz)
    return value


Money = Annotated[
    Decimal,
    PlainValidator(parse_money),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": MONEY_PATTERN}, {"type": "number"}],
                    "description": "Decimal amount with at most two places, e.g. \"95.00\"."}),
]
Moment = Annotated[
    dt.date | dt.datetime,
    PlainValidator(parse_moment),
    WithJsonSchema({"type": "string", "description": "ISO 8601 datetime with offset, or a bare date "
                    "(midnight in the clinic's time zone)."}),
]
def not_a_boolean(value: Any) -> Any:
    """JSON's true and false are no numbers (pydantic reads them as 1 and 0: `"package_id":
    true` sold package 1)."""
    if isinstance(value, bool):
        raise ValueError("must be a whole number, not true or false")
    return value


def written_as_a_date(value: Any) -> Any:
    """A date is written as one (2026-03-04). pydantic would read a number, or a string of
    digits, as seconds since 1970: `"date_of_birth": 0` was 1 January 1970."""
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str) or not _DATE_START.match(value.strip()):
        raise ValueError("must be a date such as 2026-03-04")
    return value


Day = Annotated[dt.date, BeforeValidator(written_as_a_date), AfterValidator(check_year)]
Id = Annotated[int, BeforeValidator(not_a_boolean), Field(ge=1, le=MAX_ID)]
Int32 = Annotated[int, BeforeValidator(not_a_boolean), Field(ge=-INT32, le=INT32)]
# A yes-or-no answer in a body is true or false, not "no", "off", 0 or 1 (which pydantic would
# read as one), so that `"use_first_session": "no"` is refused, not guessed.
Flag = StrictBool


# A string the databases can store (no NUL, valid Unicode), written beside its length bound:
# `Annotated[str, Field(max_length=N), STORABLE]`. Spelled out, not built by a function, so
# that a type checker sees a type.
STORABLE = AfterValidator(storable_text)

Name = Annotated[str, Field(max_length=200), STORABLE]
ShortText = Annotated[str, Field(max_length=100), STORABLE]
LongText = Annotated[str, Field(max_length=2000), STORABLE]
