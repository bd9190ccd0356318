"""The investigator's answers cost a fixed number of queries, whatever the history holds: the
loader reads a patient in a fixed number (tests/investigator/test_loader.py), and nothing
around it may ask again per package, per visit or per tombstone."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tally.clinic.actions import billing, catalog, sales, visits

NY = dt.timezone(dt.timedelta(hours=-5))


def grow(desk, owner, patient, acu60, packages: int) -> None:
    """Per round: a package sold and paid, a visit it covers, a charge removed (a tombstone and a
    reversal), a deleted booking (a tombstone), a No Charges visit and a refund-less payment."""
    for i in range(packages):
        at = dt.datetime(2025, 1, 1, 9, tzinfo=NY) + dt.timedelta(days=10 * i)
        template = catalog.do_create_package(acting_user=owner, name=f"Pack {i}", price=Decimal("100.00"),
                                             sessions=5, service_ids=[acu60.pk])
        sales.do_sell_package(acting_user=desk, patient=patient, package=template, use_first_session=False,
                              sold_at=at, payment=(Decimal("100.00"), "card"))
        seen = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=at + dt.timedelta(hours=2))
        visits.do_check_in(acting_user=desk, appointment=seen)
        undone = visits.do_book(acting_user=desk, patient=patient, service=acu60,
                                starts_at=at + dt.timedelta(days=1, hours=2))
        _, invoice, line = visits.do_check_in(acting_user=desk, appointment=undone)
        billing.do_remove_line(acting_user=desk, invoice=invoice, line_id=line.pk, reason="wrong visit")
        gone = visits.do_book(acting_user=desk, patient=patient, service=acu60,
                              starts_at=at + dt.timedelta(days=2, hours=2))
        visits.do_delete_appointment(acting_user=owner, appointment=gone, reason="duplicate")
        free = visits.do_book(acting_user=desk, patient=patient, service=acu60,
                              starts_at=at + dt.timedelta(days=3, hours=2))
        visits.do_check_in(acting_user=desk, appointment=free, no_charges=True)


def queries(fetch) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = fetch()
    assert response.status_code == 200, response.content
    return len(ctx.captured_queries)


@pytest.fixture
def two_patients(desk, owner, acu60, clinic):
    small = catalog.do_create_patient(acting_user=desk, first_name="Small", last_name="History")
    large = catalog.do_create_patient(acting_user=desk, first_name="Large", last_name="History")
    grow(desk, owner, small, acu60, 1)
    grow(desk, owner, large, acu60, 8)
    return small, large


def test_a_patients_investigation_costs_the_same_queries_for_one_package_or_eight(desk_api, two_patients):
    small, large = two_patients
    one = queries(lambda: desk_api.get(f"/patients/{small.pk}/investigation"))
    eight = queries(lambda: desk_api.get(f"/patients/{large.pk}/investigation"))
    assert eight == one


def test_the_support_export_costs_the_same_queries_for_one_package_or_eight(desk, two_patients, client):
    small, large = two_patients
    client.force_login(desk)
    for name in ("staff:export_json", "staff:export_print"):
        one = queries(lambda name=name: client.get(reverse(name, args=[small.pk]), {"anonymous": "1"}))
        eight = queries(lambda name=name: client.get(reverse(name, args=[large.pk]), {"anonymous": "1"}))
        assert eight == one, name


def test_a_packages_investigation_costs_the_same_queries_in_a_short_or_a_long_history(desk_api, desk, two_patients,
                                                                                       client):
    small, large = two_patients
    packages = [p.packages.order_by("pk").first().pk for p in (small, large)]
    client.force_login(desk)
    for fetch in (lambda pk: desk_api.get(f"/patient-packages/{pk}/investigation", expected_used=3),
                  lambda pk: client.get(reverse("staff:investigation", args=[pk]))):
        short, long = (queries(lambda pk=pk, fetch=fetch: fetch(pk)) for pk in packages)
        assert long == short


def test_the_investigation_page_costs_the_same_queries_for_one_double_use_or_five(desk, owner, client, acu60,
                                                                                   clinic, monkeypatch):
    """Each double use gets a "remove the duplicate" button only when the charge to remove is
    sure; deciding it must not ask the database once per finding."""
    client.force_login(desk)
    # A visit counted twice is history an earlier release left: the actions refuse a second
    # charge naming a counted visit now (one visit, one session).
    monkeypatch.setattr("tally.clinic.actions.coverage.refuse_a_second_session", lambda appointment_id: None)
    forty = catalog.do_create_package(acting_user=owner, name="Forty", price=Decimal("100.00"), sessions=40,
                                      service_ids=[acu60.pk])
    counts = []
    for patient_name, doubles in (("One", 1), ("Five", 5)):
        patient = catalog.do_create_patient(acting_user=desk, first_name=patient_name, last_name="Double")
        pack, _ = sales.do_sell_package(acting_user=desk, patient=patient, package=forty, use_first_session=False,
                                        sold_at=dt.datetime(2026, 3, 1, 9, tzinfo=NY),
                                        payment=(Decimal("100.00"), "card"))
        for day in range(2, 2 + doubles):  # one visit counted twice, and two visits on one day
            seen = visits.do_book(acting_user=desk, patient=patient, service=acu60,
                                  starts_at=dt.datetime(2026, 3, day, 10, tzinfo=NY))
            _, invoice, _ = visits.do_check_in(acting_user=desk, appointment=seen)
            billing.do_add_line(acting_user=desk, invoice=invoice, service=acu60, appointment=seen)
            for hour in (8, 17):
                again = visits.do_book(acting_user=desk, patient=patient, service=acu60,
                                       starts_at=dt.datetime(2026, 3, day + 10, hour, tzinfo=NY))
                visits.do_check_in(acting_user=desk, appointment=again)
        counts.append(queries(lambda pack=pack: client.get(reverse("staff:investigation", args=[pack.pk]))))
    assert counts[1] == counts[0]
