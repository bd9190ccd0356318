"""Signed-in clients per role, and a small day at the clinic: visits today, a sold package, an invoice."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from tally.clinic.actions.sales import do_sell_package
from tally.clinic.actions.visits import do_book, do_check_in


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def owner_client(owner, clinic) -> Client:
    return signed_in(owner)


@pytest.fixture
def desk_client(desk, clinic) -> Client:
    return signed_in(desk)


@pytest.fixture
def practitioner_client(practitioner, clinic) -> Client:
    return signed_in(practitioner)


def today_at(clinic, hour: int, minute: int = 0, days: int = 0) -> dt.datetime:
    tz = clinic.tz
    day = timezone.localdate(timezone=tz) + dt.timedelta(days=days)
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=tz)


@pytest.fixture
def visit(desk, patient, acu60, practitioner, clinic):
    """A booked visit today with `practitioner`."""
    return do_book(acting_user=desk, patient=patient, service=acu60, starts_at=today_at(clinic, 10),
                   practitioner=practitioner)


@pytest.fixture
def sold_pack(desk, patient, ten_pack):
    """A fully paid ten-pack sold yesterday without using its first session."""
    sold, _ = do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False,
                              sold_at=timezone.now() - dt.timedelta(days=1),
                              payment=(Decimal("800.00"), "card"))
    return sold


@pytest.fixture
def charged_visit(desk, patient, acu60, practitioner, clinic, sold_pack):
    """A visit earlier today, checked in and paid via the ten-pack (session 1 of 10)."""
    appointment = do_book(acting_user=desk, patient=patient, service=acu60, starts_at=today_at(clinic, 8),
                          practitioner=practitioner)
    appointment, invoice, line = do_check_in(acting_user=desk, appointment=appointment)
    return appointment, invoice, line
