"""Small helpers for the domain action tests: clinic-local times and one-line actions.

The `clinic` fixture puts the clinic in America/New_York, so every helper speaks
New York wall-clock time unless told otherwise.
"""

from __future__ import annotations

import datetime as dt
from contextlib import contextmanager
from decimal import Decimal
from zoneinfo import ZoneInfo

from tally.clinic.actions import billing, catalog, sales, visits
from tally.clinic.models import (
    AuditEvent,
    Package,
    PackageLedgerEntry,
    PatientPackage,
    Service,
    Staff,
)

NY = ZoneInfo("America/New_York")
UTC = dt.UTC


def ny(year: int, month: int, day: int, hour: int = 10, minute: int = 0) -> dt.datetime:
    """A moment on the clinic's wall clock."""
    return dt.datetime(year, month, day, hour, minute, tzinfo=NY)


def utc(year: int, month: int, day: int, hour: int = 10, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


def make_package(owner: Staff, services: list[Service], *, sessions: int = 10, price: str = "800.00",
                 valid_days: int | None = None, name: str | None = None) -> Package:
    return catalog.do_create_package(
        acting_user=owner, name=name or f"{sessions} sessions", price=Decimal(price), sessions=sessions,
        service_ids=[s.pk for s in services], valid_days=valid_days,
    )


def sell(user: Staff, patient, package: Package, *, paid: bool | str = True, first: bool = False,
         sold_at: dt.datetime | None = None, appointment=None):
    """Sell `package`; `paid=True` pays it in full at the sale, a string pays that much, False nothing."""
    if paid is True:
        payment = (package.price, "card")
    elif paid:
        payment = (Decimal(paid), "card")
    else:
        payment = None
    return sales.do_sell_package(
        acting_user=user, patient=patient, package=package, use_first_session=first,
        sold_at=sold_at or ny(2026, 6, 10, 9), first_session_appointment=appointment, payment=payment,
    )


def visit(user: Staff, patient, service: Service, starts_at: dt.datetime, **check_in):
    """Book and check in a visit; returns (appointment, invoice, line)."""
    appointment = visits.do_book(acting_user=user, patient=patient, service=service, starts_at=starts_at)
    return visits.do_check_in(acting_user=user, appointment=appointment, **check_in)


def pay(user: Staff, invoice, amount: str, received_at: dt.datetime | None = None):
    return billing.do_record_payment(acting_user=user, invoice=invoice, amount=Decimal(amount), method="card",
                                     received_at=received_at)


def fresh(package: PatientPackage) -> PatientPackage:
    return PatientPackage.objects.get(pk=package.pk)


def sell_live(owner: Staff, desk: Staff, patient, service: Service, state: str):
    """A package sold and paid on 10 June, then `state`: "active", "exhausted" (its one session
    used the next day) or "expired" (valid 5 days: by 20 June). Returns (package, sale invoice)."""
    package = make_package(owner, [service], sessions=1 if state == "exhausted" else 10, price="100.00",
                           valid_days=5 if state == "expired" else None)
    pp, invoice = sell(desk, patient, package, sold_at=ny(2026, 6, 10, 9))
    if state == "exhausted":
        visit(desk, patient, service, ny(2026, 6, 11))
    assert fresh(pp).status_at(ny(2026, 6, 20) if state == "expired" else None) == state
    return pp, invoice


def ledger_of(package: PatientPackage) -> list[PackageLedgerEntry]:
    return list(PackageLedgerEntry.objects.filter(patient_package=package).order_by("seq"))


@contextmanager
def writes_one_audit_event(action: str):
    """Asserts the block records exactly one AuditEvent, named `action`."""
    last = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    yield
    new = list(AuditEvent.objects.filter(id__gt=last).values_list("action", flat=True))
    assert new == [action], f"expected one {action!r} audit event, got {new}"


@contextmanager
def writes_nothing():
    """Asserts the block changes no ledger entry and records no audit event."""
    counts = (AuditEvent.objects.count(), PackageLedgerEntry.objects.count())
    yield
    assert (AuditEvent.objects.count(), PackageLedgerEntry.objects.count()) == counts
