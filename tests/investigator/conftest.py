from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from tally.clinic.actions import billing, catalog, sales, visits
from tally.clinic.investigator.explain import explain
from tally.clinic.investigator.loader import load_history

NY = dt.timezone(dt.timedelta(hours=-5))


class Clinic:
    """A terse way to write a patient's history for a scenario, in clinic-local days of 2026."""

    def __init__(self, desk, owner, patient, acu60, acu90, ten_pack):
        self.desk, self.owner, self.patient = desk, owner, patient
        self.acu60, self.acu90, self.ten_pack = acu60, acu90, ten_pack

    @staticmethod
    def at(month: int, day: int, hour: int = 10) -> dt.datetime:
        return dt.datetime(2026, month, day, hour, tzinfo=NY)

    def sell(self, month, day, *, first=False, paid="800.00", package=None, hour=9):
        package = package or self.ten_pack
        payment = (Decimal(paid), "card") if paid and Decimal(paid) > 0 else None
        pp, invoice = sales.do_sell_package(acting_user=self.desk, patient=self.patient, package=package,
                                            use_first_session=first, sold_at=self.at(month, day, hour),
                                            payment=payment)
        return pp, invoice

    def book(self, month, day, service=None, hour=10):
        return visits.do_book(acting_user=self.desk, patient=self.patient, service=service or self.acu60,
                              starts_at=self.at(month, day, hour))

    def visit(self, month, day, service=None, charge=None, no_charges=False, hour=10):
        appointment = self.book(month, day, service, hour)
        _, invoice, line = visits.do_check_in(acting_user=self.desk, appointment=appointment, service=charge,
                                              no_charges=no_charges)
        return appointment, invoice, line

    def pay(self, invoice, amount, month, day):
        return billing.do_record_payment(acting_user=self.desk, invoice=invoice, amount=amount, method="card",
                                         received_at=self.at(month, day, 12))

    def package(self, name, sessions, valid_days=None, price="100.00", services=None):
        return catalog.do_create_package(acting_user=self.owner, name=name, price=Decimal(price), sessions=sessions,
                                         service_ids=[s.pk for s in (services or [self.acu60])],
                                         valid_days=valid_days)

    def investigate(self, pp=None, expected_used=None):
        investigations, orphans = explain(load_history(self.patient.pk),
                                          expected_used={pp.pk: expected_used} if pp and expected_used else None)
        return (investigations[pp.pk] if pp else investigations), orphans


@pytest.fixture
def history(desk, owner, patient, acu60, acu90, ten_pack) -> Clinic:
    return Clinic(desk, owner, patient, acu60, acu90, ten_pack)
