from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from tally.clinic.actions.catalog import do_create_patient
from tally.clinic.actions.visits import do_book
from tally.clinic.models import Appointment, AuditEvent, Invoice, InvoiceLine, Payment
from tally.clinic.models.billing import LineKind

from .conftest import today_at


def chart_url(patient, **params) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return reverse("staff:chart", args=[patient.pk]) + (f"?{query}" if query else "")


def test_chart_shows_the_patient_number_and_the_package_panel(desk_client, patient, charged_visit, sold_pack):
    page = desk_client.get(chart_url(patient)).content.decode()
    assert patient.patient_number in page
    assert "1 of 10 used · 9 left · " in page and "badge-active" in page
    assert "Why is this count wrong?" in page
    assert reverse("staff:investigation", kwargs={"package_id": sold_pack.pk}) in page


def test_panel_shows_expiry_in_clinic_time(desk_client, patient, sold_pack, clinic):
    sold_pack.__class__.objects.filter(pk=sold_pack.pk).update(
        expires_at=dt.datetime(2027, 3, 4, 23, 59, 59, tzinfo=clinic.tz))
    page = desk_client.get(chart_url(patient)).content.decode()
    assert "expires 4 Mar 2027" in page


def test_viewing_a_chart_is_audited(practitioner_client, patient, practitioner):
    assert practitioner_client.get(chart_url(patient)).status_code == 200
    event = AuditEvent.objects.get(action="patient.view_chart")
    assert event.actor_id == practitioner.pk and event.patient_id == patient.pk


def test_practitioners_see_a_read_only_chart(practitioner_client, patient, sold_pack):
    page = practitioner_client.get(chart_url(patient)).content.decode()
    assert "Sell a package" not in page and "Book a visit" not in page
    assert "0 of 10 used · 10 left" in page  # the panel, read-only
    assert "Why is this count wrong?" not in page


@pytest.fixture
def three_visits(desk, patient, acu60, acu90, practitioner, clinic):
    booked = do_book(acting_user=desk, patient=patient, service=acu60, starts_at=today_at(clinic, 9),
                     practitioner=practitioner)
    old = do_book(acting_user=desk, patient=patient, service=acu60, starts_at=today_at(clinic, 9, days=-200))
    other = do_book(acting_user=desk, patient=patient, service=acu90, starts_at=today_at(clinic, 9, days=-3))
    return booked, old, other


def test_filters_say_plainly_when_they_hide_rows(desk_client, patient, three_visits, acu90):
    unfiltered = desk_client.get(chart_url(patient)).content.decode()
    assert "Showing" not in unfiltered

    by_service = desk_client.get(chart_url(patient, tab="appointments", service=acu90.pk)).content.decode()
    assert "Showing 1 of 3 — " in by_service and "clear filters" in by_service
    assert f'href="{chart_url(patient, tab="appointments")}"' in by_service

    by_range = desk_client.get(chart_url(patient, tab="appointments", range="30d")).content.decode()
    assert "Showing 2 of 3 — " in by_range

    all_time = desk_client.get(chart_url(patient, tab="appointments", range="all")).content.decode()
    assert "Showing" not in all_time


def test_a_filter_that_hides_nothing_shows_no_banner(desk_client, patient, three_visits):
    page = desk_client.get(chart_url(patient, tab="appointments", range="year")).content.decode()
    # the 200-day-old visit may or may not fall in this year; the banner appears only if it hides one
    hidden = "Showing 2 of 3" in page
    assert hidden or "Showing" not in page


def test_invoice_tab_filters_by_status(desk_client, patient, charged_visit, sold_pack):
    page = desk_client.get(chart_url(patient, tab="invoices")).content.decode()
    assert "Showing" not in page and "INV-" in page
    unpaid = desk_client.get(chart_url(patient, tab="invoices", status="unpaid")).content.decode()
    assert "Showing 0 of 2 — " in unpaid
    paid = desk_client.get(chart_url(patient, tab="invoices", status="paid")).content.decode()
    assert "Showing" not in paid  # both are paid (the sale, and the visit paid via the package)


def test_htmx_tab_request_renders_only_the_tab(desk_client, patient, three_visits):
    response = desk_client.get(chart_url(patient, tab="invoices"), HTTP_HX_REQUEST="true",
                               HTTP_HX_TARGET="chart-tab")
    page = response.content.decode()
    assert page.lstrip().startswith('<div id="chart-tab">')
    assert "<html" not in page


def add_history(patient, service, count: int) -> None:
    """Rows straight into the tables (no ledger: none of these lines is covered)."""
    start = timezone.now() - dt.timedelta(days=count + 1)
    invoices = Invoice.objects.bulk_create(
        Invoice(patient=patient, issued_at=start + dt.timedelta(days=i)) for i in range(count))
    InvoiceLine.objects.bulk_create(
        InvoiceLine(invoice=inv, kind=LineKind.SERVICE, service=service, description=service.name,
                    list_price=service.price, amount=service.price) for inv in invoices)
    Payment.objects.bulk_create(
        Payment(invoice=inv, amount=Decimal("10.00"), method="cash", received_at=inv.issued_at) for inv in invoices)
    Appointment.objects.bulk_create(
        Appointment(patient=patient, service=service, starts_at=start + dt.timedelta(days=i),
                    ends_at=start + dt.timedelta(days=i, hours=1), status="attended") for i in range(count))


def count_queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


@pytest.mark.parametrize("tab", ["appointments", "invoices"])
def test_a_chart_with_2000_invoices_costs_the_same_queries_as_with_5(desk_client, desk, acu60, sold_pack, tab,
                                                                     clinic):
    small = do_create_patient(acting_user=desk, first_name="Small", last_name="History")
    large = do_create_patient(acting_user=desk, first_name="Large", last_name="History")
    add_history(small, acu60, 5)
    add_history(large, acu60, 2000)
    url_small = chart_url(small, tab=tab, service=acu60.pk)
    url_large = chart_url(large, tab=tab, service=acu60.pk)
    count_queries(desk_client, url_small)  # warm the session
    assert count_queries(desk_client, url_large) == count_queries(desk_client, url_small)
    page = desk_client.get(chart_url(large, tab=tab)).content.decode()
    assert "Page 1 of 40" in page
    assert page.count("<tr>") == 1 + 50  # header row + one page
    filtered = desk_client.get(chart_url(large, tab=tab, range="30d")).content.decode()
    assert re.search(r"Showing (2[0-9]|30) of 2000 — ", filtered)


def test_from_and_to_are_offered_only_with_a_custom_range_so_no_date_is_silently_ignored(
        desk_client, patient, three_visits, clinic):
    """A From date typed while the range said All time filtered nothing, showed every row and no
    banner, with the date still in its box: the front desk reads it as 'these are the visits since'."""
    since = (timezone.localdate(timezone=clinic.tz) - dt.timedelta(days=30)).isoformat()
    page = desk_client.get(chart_url(patient, tab="appointments", range="all", start=since)).content.decode()
    assert 'name="start"' not in page and 'name="end"' not in page
    assert "Showing" not in page

    custom = desk_client.get(chart_url(patient, tab="appointments", range="custom", start=since)).content.decode()
    assert re.search(rf'name="start"[^>]*value="{since}"|value="{since}"[^>]*name="start"', custom)
    assert 'name="end"' in custom
    assert "Showing 2 of 3 — " in custom


def test_the_patient_list_finds_a_name_typed_the_way_it_shows_it(desk_client, patient):
    """The list shows 'Lopez, Maria'; typing that found no patient (the comma stuck to the word)."""
    listed = desk_client.get(reverse("staff:patients")).content.decode()
    assert "Lopez, Maria" in listed
    for typed in ("Lopez, Maria", "lopez,maria", "Maria Lopez"):
        page = desk_client.get(reverse("staff:patients"), {"q": typed}).content.decode()
        assert patient.patient_number in page, typed


def test_a_patient_search_with_a_nul_character_finds_no_one_instead_of_failing(desk_client, patient):
    # PostgreSQL refuses NUL in a text parameter (a 500 before); no stored name can hold one.
    response = desk_client.get("/patients/", {"q": "Lo\x00pez"})
    assert response.status_code == 200
    assert f"/patients/{patient.pk}/" not in response.content.decode()  # no row links to her chart
    assert f"/patients/{patient.pk}/" in desk_client.get("/patients/", {"q": "Lopez"}).content.decode()
