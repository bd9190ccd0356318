"""Request and response shapes (API.md "Shapes"). Responses carry money as two-place
decimal strings and datetimes as ISO 8601 strings with an offset."""

from __future__ import annotations

from typing import Annotated, Literal

from ninja import Schema
from pydantic import ConfigDict, Field, WithJsonSchema, create_model

from tally.clinic.errors import Invalid

from .types import STORABLE, Day, Flag, Id, Int32, LongText, Moment, Money, Name, ShortText

Username = Annotated[str, Field(min_length=1, max_length=150), STORABLE]
Password = Annotated[str, Field(min_length=1, max_length=1000), STORABLE]
Otp = Annotated[str, Field(max_length=20), STORABLE]
TimeZoneName = Annotated[str, Field(max_length=64), STORABLE]
CurrencyCode = Annotated[str, Field(max_length=3), STORABLE]
Email = Annotated[str, Field(max_length=254), STORABLE]
Phone = Annotated[str, Field(max_length=40), STORABLE]

MoneyOut = Annotated[str, WithJsonSchema({"type": "string", "pattern": r"^-?\d+\.\d{2}$", "examples": ["95.00"]})]
DateTimeOut = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
DateOut = Annotated[str, WithJsonSchema({"type": "string", "format": "date"})]


class StrictInput(Schema):
    """Unknown fields are refused, so a misspelt field never silently does nothing."""

    model_config = ConfigDict(extra="forbid")


# --- errors ---


class ErrorDetail(Schema):
    code: str
    message: str
    fields: dict[str, str]


class Error(Schema):
    error: ErrorDetail


def errors(*statuses: int) -> dict[int, type[Schema]]:
    return dict.fromkeys(statuses, Error)


# 503: the database is unavailable (tally.unavailable); any endpoint may answer it.
READ_ERRORS = errors(401, 403, 404, 422, 503)
WRITE_ERRORS = errors(401, 403, 404, 409, 422, 503)


# --- lists ---


class PageParams(Schema):
    limit: int = Field(50, ge=1, le=500, description="At most this many items (1 to 500).")
    cursor: Annotated[str, Field(max_length=1000)] | None = Field(
        None, description="The `next` of the previous page."
    )


def page_of(item: type[Schema], name: str) -> type[Schema]:
    """`{items: [item], next: cursor-or-null}`."""
    # A model made at import, per item type: the checker cannot see `item` as a type.
    return create_model(name, __base__=Schema, items=(list[item], ...), next=(str | None, ...))  # type: ignore[valid-type]


# --- staff, clinic, auth ---


class TokenIn(StrictInput):
    username: Username
    password: Password
    otp: Otp | None = None


class TokenOut(Schema):
    token: str
    role: str
    expires_at: Annotated[str, WithJsonSchema({
        "type": "string", "format": "date-time",
        "description": "When the token stops working, in UTC (TALLY_TOKEN_MAX_HOURS after signing in, 12 "
                       "hours by default); from then on it is `401 unauthenticated`: sign in again."})]


class SignOutOut(Schema):
    tokens_revoked: int = Field(description="The staff member's API tokens revoked, this one included.")
    sessions_ended: int = Field(description="Their web sessions ended, on every device.")


class StaffOut(Schema):
    id: int
    name: str
    role: Literal["owner", "front_desk", "practitioner"]


class MeOut(StaffOut):
    username: str


class ClinicOut(Schema):
    name: str
    time_zone: str
    currency: str
    no_show_uses_session: bool


class ClinicPatch(StrictInput):
    name: Name | None = None
    time_zone: TimeZoneName | None = None
    currency: CurrencyCode | None = None
    no_show_uses_session: Flag | None = None


# --- catalog ---


class ServiceIn(StrictInput):
    name: Name
    duration_minutes: Int32
    price: Money
    active: Flag = True


class ServicePatch(StrictInput):
    name: Name | None = None
    duration_minutes: Int32 | None = None
    price: Money | None = None
    active: Flag | None = None


class ServiceOut(Schema):
    id: int
    name: str
    duration_minutes: int
    price: MoneyOut
    active: bool


class PackageIn(StrictInput):
    name: Name
    price: Money
    sessions: Int32
    service_ids: Annotated[list[Id], Field(max_length=200)]
    valid_days: Int32 | None = None


class PackagePatch(StrictInput):
    name: Name | None = None
    price: Money | None = None
    sessions: Int32 | None = None
    service_ids: Annotated[list[Id], Field(max_length=200)] | None = None
    valid_days: Int32 | None = None
    active: Flag | None = None


class PackageOut(Schema):
    id: int
    name: str
    price: MoneyOut
    sessions: int
    service_ids: list[int]
    valid_days: int | None
    active: bool


# --- patients ---


class PatientIn(StrictInput):
    first_name: ShortText
    last_name: ShortText
    date_of_birth: Day | None = None
    email: Email = ""
    phone: Phone = ""


class PatientOut(Schema):
    id: int
    patient_number: str
    first_name: str
    last_name: str
    date_of_birth: DateOut | None
    email: str
    phone: str
    archived: bool


# --- billing ---


class PaymentOut(Schema):
    id: int
    invoice_id: int
    amount: MoneyOut
    method: str
    received_at: DateTimeOut
    reason: str


class InvoiceLineOut(Schema):
    id: int
    kind: Literal["service", "package_sale", "first_session", "package_refund"]
    service_id: int | None
    package_id: int | None
    patient_package_id: int | None
    appointment_id: int | None
    description: str
    list_price: MoneyOut
    amount: MoneyOut
    covered_by: int | None
    session_number: int | None
    sessions_left: int | None = Field(
        None, description="Sessions of the package left after this line's charge (\"Session 3 of 10 · 7 left\"). "
        "Not always sessions_total - session_number: a line may take the session a removed line gave back.")
    not_covered_reason: str | None


class InvoiceOut(Schema):
    id: int
    number: str
    patient_id: int
    issued_at: DateTimeOut
    status: Literal["unpaid", "partially_paid", "paid", "void"]
    total: MoneyOut
    paid: MoneyOut
    balance: MoneyOut
    lines: list[InvoiceLineOut]
    payments: list[PaymentOut]


class LineIn(StrictInput):
    service_id: Id
    appointment_id: Id | None = None


class InvoiceIn(StrictInput):
    patient_id: Id
    issued_at: Moment | None = None
    lines: Annotated[list[LineIn], Field(min_length=1, max_length=200)]


class PaymentIn(StrictInput):
    amount: Money
    method: ShortText
    received_at: Moment | None = None
    reason: LongText = ""


class VoidIn(StrictInput):
    reason: LongText


# --- packages sold ---


class PatientPackageOut(Schema):
    id: int
    patient_id: int
    package_id: int
    name: str
    price: MoneyOut
    sessions_total: int
    sessions_used: int
    sessions_remaining: int
    status: Literal["pending_payment", "active", "exhausted", "expired", "cancelled"]
    eligible_service_ids: list[int]
    sale_invoice_id: int
    use_first_session: bool
    sold_at: DateTimeOut
    activated_at: DateTimeOut | None
    expires_at: DateTimeOut | None
    cancelled_at: DateTimeOut | None


class AmountAndMethod(StrictInput):
    amount: Money
    method: ShortText


class SaleIn(StrictInput):
    package_id: Id
    use_first_session: Flag = Field(description="Required, with no default (SPEC.md rule 5).")
    sold_at: Moment | None = None
    first_session_appointment_id: Id | None = None
    payment: AmountAndMethod | None = None


class SaleOut(Schema):
    patient_package: PatientPackageOut
    invoice: InvoiceOut


class CancelPackageIn(StrictInput):
    reason: LongText
    refund: AmountAndMethod | None = Field(None, description="`amount` is negative, as for payments.")


class ExpiryPatch(StrictInput):
    expires_at: Moment = Field(description="A bare date means the end of that clinic-local day.")


class LedgerEntryOut(Schema):
    id: int
    seq: int
    kind: Literal["use", "reversal", "adjustment"]
    change: int
    sessions_used_after: int
    at: DateTimeOut
    invoice_line_id: int | None
    appointment_id: int | None
    reverses: int | None
    reason: str
    by: int | None
    by_name: str | None


# --- appointments ---


class AppointmentIn(StrictInput):
    patient_id: Id
    service_id: Id
    starts_at: Moment
    duration_minutes: Int32 | None = None
    practitioner_id: Id | None = None


class AppointmentOut(Schema):
    id: int
    patient_id: int
    service_id: int
    practitioner_id: int | None
    starts_at: DateTimeOut
    ends_at: DateTimeOut
    status: Literal["booked", "attended", "cancelled", "no_show"]
    no_charges: bool
    status_reason: str
    checked_in_at: DateTimeOut | None


class CheckInIn(StrictInput):
    service_id: Id | None = None
    no_charges: Flag = False
    invoice_id: Id | None = None


class CheckInOut(Schema):
    appointment: AppointmentOut
    invoice: InvoiceOut | None
    line: InvoiceLineOut | None


class ReasonIn(StrictInput):
    reason: LongText = ""


class DateRange(Schema):
    """`from` and `to` take datetimes or bare dates; a bare `to` includes that whole day."""

    date_from: Moment | None = Field(None, alias="from")
    date_to: Moment | None = Field(None, alias="to")


# --- pages ---

StaffPage = page_of(StaffOut, "StaffPage")
ServicePage = page_of(ServiceOut, "ServicePage")
PackagePage = page_of(PackageOut, "PackagePage")
PatientPage = page_of(PatientOut, "PatientPage")
PatientPackagePage = page_of(PatientPackageOut, "PatientPackagePage")
LedgerPage = page_of(LedgerEntryOut, "LedgerPage")
AppointmentPage = page_of(AppointmentOut, "AppointmentPage")
InvoicePage = page_of(InvoiceOut, "InvoicePage")


def changes(patch: Schema, *, nullable: tuple[str, ...] = ()) -> dict[str, object]:
    """The fields a PATCH sent. An explicit null is refused where a value is needed."""
    sent = patch.model_dump(exclude_unset=True)
    nulls = {name: "must not be null" for name, value in sent.items() if value is None and name not in nullable}
    if nulls:
        raise Invalid("Leave out a field to keep its value; null is not a value for it.", fields=nulls)
    return sent
