"""The rules of package tracking (SPEC.md rules 1-6, 11, 12) as pure functions.

Facts in, a Decision out. No database, no clock: the caller passes everything,
so the same decision can be recorded with a line, replayed by the investigator
and tested with Hypothesis.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

# Reason codes, shared with `InvoiceLine.not_covered_reason` and the investigator.
PACKAGE_NOT_PAID = "PACKAGE_NOT_PAID"
CHARGED_BEFORE_PURCHASE = "CHARGED_BEFORE_PURCHASE"
PACKAGE_EXPIRED = "PACKAGE_EXPIRED"
PACKAGE_EXHAUSTED = "PACKAGE_EXHAUSTED"
PACKAGE_CANCELLED = "PACKAGE_CANCELLED"
SERVICE_NOT_IN_PACKAGE = "SERVICE_NOT_IN_PACKAGE"

REASON_CODES = (
    PACKAGE_NOT_PAID,
    CHARGED_BEFORE_PURCHASE,
    PACKAGE_EXPIRED,
    PACKAGE_EXHAUSTED,
    PACKAGE_CANCELLED,
    SERVICE_NOT_IN_PACKAGE,
)

_FAR_FUTURE = dt.date.max
# The years a clinic date may fall in (every front end refuses others): wide enough for any
# visit or birth date, narrow enough that a day either side, in any time zone, is still a date.
YEARS = range(1900, 2201)


@dataclass(frozen=True)
class PackageFacts:
    """What the rules need to know of one of the patient's packages at charge time."""

    id: int
    eligible_service_ids: frozenset[int]
    sold_on: dt.date  # sale date in the clinic's time zone
    sold_at: dt.datetime
    activated: bool
    cancelled: bool
    sessions_remaining: int
    last_valid_day: dt.date | None  # clinic-local date of expiry, None = never


@dataclass(frozen=True)
class Decision:
    """What rules 1-6 decided for one service line.

    covered_by: the package that covers it, or None.
    reason: `not_covered_reason` when not covered (may be None: no package held).
    considered: (package id, reason or None when it could cover) for every package held.
    """

    covered_by: int | None
    reason: str | None
    considered: tuple[tuple[int, str | None], ...] = field(default_factory=tuple)

    def as_record(self) -> dict:
        return {
            "covered_by": self.covered_by,
            "reason": self.reason,
            "considered": [{"patient_package_id": pid, "reason": r} for pid, r in self.considered],
        }


def why_not(package: PackageFacts, service_id: int | None, invoice_date: dt.date) -> str | None:
    """The reason this package cannot cover the service on that date, or None if it can."""
    if service_id not in package.eligible_service_ids:
        return SERVICE_NOT_IN_PACKAGE
    if package.cancelled:
        return PACKAGE_CANCELLED
    if not package.activated:
        return PACKAGE_NOT_PAID
    if invoice_date < package.sold_on:
        return CHARGED_BEFORE_PURCHASE
    if package.last_valid_day is not None and invoice_date > package.last_valid_day:
        return PACKAGE_EXPIRED
    if package.sessions_remaining <= 0:
        return PACKAGE_EXHAUSTED
    return None


def decide_coverage(
    service_id: int | None, invoice_date: dt.date, packages: Iterable[PackageFacts]
) -> Decision:
    """Rule 6: of the packages that can cover, the one that expires first, then the oldest."""
    held = list(packages)
    considered = tuple((p.id, why_not(p, service_id, invoice_date)) for p in held)
    usable = [p for p, (_, reason) in zip(held, considered, strict=True) if reason is None]
    if usable:
        best = min(usable, key=lambda p: (p.last_valid_day or _FAR_FUTURE, p.sold_at, p.id))
        return Decision(covered_by=best.id, reason=None, considered=considered)
    return Decision(covered_by=None, reason=not_covered_reason(service_id, held, considered), considered=considered)


def not_covered_reason(
    service_id: int | None, held: list[PackageFacts], considered: tuple[tuple[int, str | None], ...]
) -> str | None:
    if not held:
        return None
    eligible = [p for p in held if service_id in p.eligible_service_ids]
    if not eligible:
        return SERVICE_NOT_IN_PACKAGE
    latest = max(eligible, key=lambda p: (p.sold_at, p.id))
    return dict(considered)[latest.id]


def paid_past_the_line(paid: Decimal, total: Decimal, line_amount: Decimal) -> bool:
    """Whether payments on an invoice already pay for this line (more was paid than the rest
    of the invoice comes to), so that a fix may not make the line free: refund that payment
    first (SPEC "Fixes"). One test for the fix that refuses and the finding that says so."""
    return paid > 0 and paid > total - line_amount


def last_valid_day(activated_on: dt.date | None, valid_days: int | None) -> dt.date | None:
    """Rule 12: valid N days = the activation day and the N-1 days after it."""
    if activated_on is None or valid_days is None:
        return None
    return activated_on + dt.timedelta(days=valid_days - 1)


def end_of_day(day: dt.date, tz: dt.tzinfo) -> dt.datetime:
    """The last instant of a clinic-local day, as an aware datetime. fold=1: where the clock
    goes back at midnight, the day's last hour happens twice and ends with the second one."""
    return dt.datetime.combine(day, dt.time.max, tzinfo=tz).replace(fold=1)


def clinic_date(moment: dt.datetime, tz: dt.tzinfo) -> dt.date:
    return moment.astimezone(tz).date()
