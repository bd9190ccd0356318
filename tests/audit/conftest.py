"""A patient with a bit of everything (a paid package, a visit charged to it, a visit today, a
missed visit the investigator flags), and clients that come from one known address."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.test import Client
from django.utils import timezone

from tally.clinic.actions import billing, catalog
from tally.clinic.actions.sales import do_sell_package
from tally.clinic.actions.visits import do_book, do_check_in
from tally.clinic.audit import record
from tally.clinic.models import ApiToken, AuditEvent, Staff

IP = "203.0.113.7"


def today_at(clinic, hour: int, days: int = 0) -> dt.datetime:
    day = timezone.localdate(timezone=clinic.tz) + dt.timedelta(days=days)
    return dt.datetime.combine(day, dt.time(hour), tzinfo=clinic.tz)


@pytest.fixture
def history(desk, owner, patient, acu60, ten_pack, practitioner, clinic) -> SimpleNamespace:
    sold, _ = do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False,
                              sold_at=timezone.now() - dt.timedelta(days=3), payment=(Decimal("800.00"), "card"))
    missed = do_book(acting_user=desk, patient=patient, service=acu60, starts_at=today_at(clinic, 9, days=-1),
                     practitioner=practitioner)  # booked yesterday, never checked in: a NOT_CHECKED_IN finding
    charged = do_book(acting_user=desk, patient=patient, service=acu60, starts_at=today_at(clinic, 8),
                      practitioner=practitioner)
    charged, invoice, line = do_check_in(acting_user=desk, appointment=charged)
    visit = do_book(acting_user=desk, patient=patient, service=acu60, starts_at=today_at(clinic, 10),
                    practitioner=practitioner)
    return SimpleNamespace(patient=patient, package=sold, missed=missed, charged=charged, invoice=invoice,
                           line=line, visit=visit)


def staff_client(user: Staff) -> Client:
    client = Client(REMOTE_ADDR=IP)
    client.force_login(user)
    return client


def api_client(user: Staff | None) -> Client:
    if user is None:
        return Client(REMOTE_ADDR=IP)
    _, raw = ApiToken.issue(user)
    return Client(REMOTE_ADDR=IP, headers={"Authorization": f"Bearer {raw}"})


def last_event_id() -> int:
    return AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


def events_after(event_id: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(id__gt=event_id).order_by("id"))


@pytest.fixture
def mixed(history, desk, owner, practitioner, acu90):
    """A realistic morning: writes through actions, API and pages, reads of every kind."""
    api_client(desk).get(f"/api/v1/patients/{history.patient.pk}")
    api_client(desk).get("/api/v1/appointments")
    api_client(owner).get("/api/v1/audit-log")
    staff_client(practitioner).get(f"/patients/{history.patient.pk}/")
    staff_client(desk).get("/today/")
    staff_client(desk).post(f"/appointments/{history.visit.pk}/cancel/", {"reason": "sick"})
    invoice = billing.do_create_invoice(acting_user=desk, patient=history.patient, lines=[(acu90, None)])
    billing.do_record_payment(acting_user=desk, invoice=invoice, amount=Decimal("10.50"), method="cash")
    catalog.do_update_clinic(acting_user=owner, changes={"name": "Renamed Cliníc ✓"})
    record("odd.values", actor=owner, before={"n": 1.0, "big": 1e20, "when": dt.date(2026, 1, 2), "k": [1, "x"]},
           after={"ünï": "çødé", "nested": {"b": None, "a": True}})
    return history
