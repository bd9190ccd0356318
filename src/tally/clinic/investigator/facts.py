"""Plain data the investigator works on: one patient's whole history, read once.

The facts are named tuples: immutable like frozen dataclasses, but built several times
faster (a frozen dataclass sets each field through object.__setattr__), which matters
when a long history makes thousands of them per investigation (bench/README.md)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple


class VisitFact(NamedTuple):
    id: int
    service_id: int
    practitioner_id: int | None
    starts_at: dt.datetime
    status: str
    no_charges: bool
    deleted: bool


class LineFact(NamedTuple):
    id: int
    invoice_id: int
    kind: str
    service_id: int | None
    patient_package_id: int | None
    appointment_id: int | None
    description: str
    list_price: Decimal
    amount: Decimal
    covered_by: int | None
    session_number: int | None
    not_covered_reason: str | None
    # The coverage decision's "considered" list (rules.Decision.as_record), as the database
    # gives it: JSON text (None for a line without a decision), decoded only when asked for.
    considered_json: str | None
    created_at: dt.datetime
    removed_at: dt.datetime | None

    @property
    def considered(self) -> list[dict]:
        return json.loads(self.considered_json) if self.considered_json else []


class PaymentFact(NamedTuple):
    id: int
    invoice_id: int
    amount: Decimal
    method: str
    received_at: dt.datetime
    reason: str


class InvoiceFact(NamedTuple):
    id: int
    number: str
    issued_at: dt.datetime
    voided_at: dt.datetime | None
    lines: tuple[LineFact, ...]
    payments: tuple[PaymentFact, ...]
    # Computed once by the loader: the timeline and the findings ask for them many times.
    total: Decimal  # of the lines not removed
    paid: Decimal

    def paid_by(self, moment: dt.datetime) -> Decimal:
        return sum((p.amount for p in self.payments if p.received_at <= moment), Decimal("0.00"))


class EntryFact(NamedTuple):
    id: int
    patient_package_id: int
    seq: int
    kind: str
    change: int
    used_after: int
    at: dt.datetime
    invoice_line_id: int | None
    appointment_id: int | None
    reverses_id: int | None
    reason: str


class PackageFact(NamedTuple):
    id: int
    package_id: int
    name: str
    price: Decimal
    sessions_total: int
    sessions_used: int  # the cached count, checked against the ledger
    eligible_service_ids: frozenset[int]
    sale_invoice_id: int
    sold_at: dt.datetime
    use_first_session: bool
    first_session_appointment_id: int | None
    activated_at: dt.datetime | None
    expires_at: dt.datetime | None
    cancelled_at: dt.datetime | None
    valid_days: int | None


class TombstoneFact(NamedTuple):
    id: int
    kind: str
    appointment_id: int | None
    invoice_line_id: int | None
    content: dict
    removed_at: dt.datetime
    reason: str
    removed_by: str = ""  # the staff member's name (SPEC: a tombstone keeps who removed it)


@dataclass(frozen=True)
class History:
    patient_id: int
    patient_number: str
    tz: dt.tzinfo
    now: dt.datetime
    services: dict[int, str]
    service_durations: dict[int, int]
    visits: tuple[VisitFact, ...]
    invoices: tuple[InvoiceFact, ...]
    packages: tuple[PackageFact, ...]
    entries: tuple[EntryFact, ...]
    tombstones: tuple[TombstoneFact, ...]
    currency: str = "USD"
    extra: dict = field(default_factory=dict)
