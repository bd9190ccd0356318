"""The front desk's everyday jobs in a real browser, where the browser itself can go wrong:
a double click, an htmx answer that is not a 200."""

from __future__ import annotations

import datetime as dt
import re
import time
from decimal import Decimal

import pytest
from django.db import OperationalError
from django.utils import timezone

from tally.clinic.actions.billing import do_record_payment
from tally.clinic.actions.sales import do_sell_package
from tally.clinic.actions.visits import do_book, do_check_in
from tally.clinic.models import PatientPackage, Payment
from tally.staff.views import investigation as investigation_views
from tally.staff.views import invoices as invoice_views
from tally.staff.views import sales as sales_views

from .conftest import STAFF_PASSWORD, htmx_idle, screenshot, sign_in
from .test_browser import expect, local_today_at

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def paid_pack(desk, patient, ten_pack):
    sold, _ = do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False,
                              sold_at=timezone.now() - dt.timedelta(days=7), payment=(Decimal("800.00"), "card"))
    return sold


def slowly(action):
    """The action, answering after half a second: a busy server, while the second click lands."""

    def slow(**kwargs):
        time.sleep(0.5)
        return action(**kwargs)

    return slow


def double_click(page, button) -> None:
    """As a person double-clicks: the second press 120 ms after the first, which has left already."""
    box = button.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.click(x, y)  # the mouse, not a locator: a locator waits for the navigation to end
    page.wait_for_timeout(120)
    page.mouse.click(x, y)


def test_a_double_click_sells_one_package_and_records_one_payment(browser_page, desk, patient, ten_pack,
                                                                  monkeypatch):
    monkeypatch.setattr(sales_views, "do_sell_package", slowly(sales_views.do_sell_package))
    monkeypatch.setattr(invoice_views, "do_record_payment", slowly(invoice_views.do_record_payment))
    page = browser_page
    sign_in(page, desk.username)
    posts: list[str] = []  # what the browser sent: the server may or may not see a cancelled one
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
    page.goto(f"/patients/{patient.pk}/sell/")
    page.get_by_label("Package").select_option(label=ten_pack.name)
    page.get_by_label(re.compile(r"No — nothing is used")).check()
    double_click(page, page.get_by_role("button", name="Sell package"))
    expect(page).to_have_url(re.compile(r"/invoices/\d+/$"))  # polls: a second submission aborts the first
    page.wait_for_load_state("networkidle")
    assert len([url for url in posts if url.endswith("/sell/")]) == 1
    assert PatientPackage.objects.filter(patient=patient).count() == 1

    sold = PatientPackage.objects.get(patient=patient)
    page.get_by_role("link", name="Record payment").click()
    page.get_by_label("Amount").fill("300.00")  # a deposit: a second one would be accepted too
    double_click(page, page.get_by_role("button", name="Record payment"))
    expect(page).to_have_url(re.compile(rf"/invoices/{sold.sale_invoice_id}/$"))
    page.wait_for_load_state("networkidle")
    assert len([url for url in posts if url.endswith("/payments/new/")]) == 1
    assert list(Payment.objects.filter(invoice_id=sold.sale_invoice_id).values_list("amount", flat=True)) == [
        Decimal("300.00")]
    expect(page.locator(".invoice-lines tfoot")).to_contain_text("500.00")


def test_a_fix_the_server_would_refuse_is_not_offered_and_the_finding_says_why(browser_page, desk, patient, acu60,
                                                                              clinic, ten_pack):
    """SPEC "Fixes": a fix never applies a package to a line whose invoice is already paid (409:
    refund that payment first). The desk must see that sentence, not a button that does nothing:
    the finding says it and offers no button; once the payment is refunded, the button is back."""
    visit = do_book(acting_user=desk, patient=patient, service=acu60, starts_at=local_today_at(clinic, 9, days=-1))
    _, invoice, _ = do_check_in(acting_user=desk, appointment=visit)
    do_record_payment(acting_user=desk, invoice=invoice, amount=invoice.balance, method="card")
    sold, _ = do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False,
                              sold_at=visit.starts_at + dt.timedelta(hours=2), payment=(Decimal("800.00"), "card"))
    assert timezone.localtime(sold.sold_at, clinic.tz).date() == timezone.localtime(visit.starts_at, clinic.tz).date()

    page = browser_page
    sign_in(page, desk.username)
    page.goto(f"/packages/{sold.pk}/investigation/")
    finding = page.locator('li.finding[data-code="FIRST_SESSION_NOT_USED"]')
    expect(finding).to_be_visible()
    expect(finding).to_contain_text("is already paid ($95.00): refund that payment first")
    expect(finding.get_by_role("button")).to_have_count(0)
    expect(page.locator("#package-count")).to_contain_text("0 of 10 used · 10 left")
    screenshot(page, "investigation-fix-refused")
    do_record_payment(acting_user=desk, invoice=invoice, amount="-95.00", method="card", reason="refund")
    page.reload()
    expect(finding.get_by_role("button")).to_have_count(1)


def test_a_custom_date_range_offers_from_and_to_and_the_banner_counts_what_they_hide(browser_page, desk, patient,
                                                                                     acu60, clinic):
    for days in (-200, -3, 0):
        do_book(acting_user=desk, patient=patient, service=acu60, starts_at=local_today_at(clinic, 9, days=days))
    page = browser_page
    sign_in(page, desk.username)
    page.goto(f"/patients/{patient.pk}/")
    expect(page.get_by_label("From")).to_have_count(0)  # All time: no date that would count for nothing
    page.get_by_label("Date range").select_option(label="Custom range")  # htmx swaps the dates in
    htmx_idle(page)
    since = timezone.localdate(timezone=clinic.tz) - dt.timedelta(days=30)
    page.get_by_label("From").fill(since.isoformat())
    banner = page.locator(".filter-banner")
    expect(banner).to_have_text("Showing 2 of 3 — clear filters")
    expect(page.locator("#chart-tab tbody tr")).to_have_count(2)
    htmx_idle(page)
    page.get_by_label("Date range").select_option(label="All time")
    expect(banner).to_have_count(0)
    expect(page.get_by_label("From")).to_have_count(0)
    expect(page.locator("#chart-tab tbody tr")).to_have_count(3)


def test_no_page_logs_an_error_to_the_console(browser_page, desk, patient, acu60, clinic, paid_pack):
    """Not even the browser's own request for a site icon (it was a 404 on every first page)."""
    _, invoice, _ = do_check_in(acting_user=desk, appointment=do_book(
        acting_user=desk, patient=patient, service=acu60, starts_at=local_today_at(clinic, 8)))
    page = browser_page
    errors: list[str] = []
    page.on("console", lambda message: errors.append(f"{page.url}: {message.text}")
            if message.type == "error" else None)
    # A request the browser itself cancels because the page navigates on (net::ERR_ABORTED, e.g.
    # the icon of the sign-in page while signing in) is not the page failing; every other
    # failure, and any answer of 400 or more, is.
    page.on("requestfailed", lambda request: errors.append(f"{request.url}: {request.failure}")
            if request.failure != "net::ERR_ABORTED" else None)
    page.on("response", lambda response: errors.append(f"{response.url}: {response.status}")
            if response.status >= 400 else None)
    sign_in(page, desk.username)
    for path in ("/today/", f"/patients/{patient.pk}/", f"/invoices/{invoice.pk}/", f"/invoices/{invoice.pk}/print/",
                 f"/packages/{paid_pack.pk}/investigation/", f"/patients/{patient.pk}/export/?anonymous=1"):
        page.goto(path)
        page.wait_for_load_state("networkidle")
    assert errors == []


def test_signing_out_leaves_no_patient_data_in_the_browser_and_back_shows_whole_pages(browser_page, desk, patient,
                                                                                     paid_pack):
    """htmx kept a copy of every page it pushed into history (the chart, with the patient's name,
    birth date and contact details) in the tab's sessionStorage, where it stayed after signing out."""
    page = browser_page
    sign_in(page, desk.username)
    page.goto(f"/packages/{paid_pack.pk}/investigation/")
    page.get_by_label("Sessions the patient or staff expected to be used").fill("2")
    page.get_by_role("button", name="Compare").click()  # htmx, pushed into history
    expect(page.locator(".difference")).to_contain_text("Expected 2")
    htmx_idle(page)
    page.go_back()  # restored from the server: the whole page, not the swapped-in panel alone
    expect(page.locator(".difference")).to_have_count(0)
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    expect(page.get_by_role("link", name="Support export (JSON)")).to_be_visible()

    page.goto(f"/patients/{patient.pk}/")
    page.get_by_label("Date range").select_option(label="Last 90 days")  # htmx, pushed into history
    expect(page.locator(".filter-banner, #chart-tab tbody")).not_to_have_count(0)
    htmx_idle(page)
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/login/**")
    stored = page.evaluate("() => Object.values(sessionStorage).join(' ') + Object.values(localStorage).join(' ')")
    assert "Lopez" not in stored and "maria@example.com" not in stored


def test_a_swap_after_the_session_ended_goes_to_sign_in_as_a_whole_page(browser_page, desk, patient, paid_pack):
    """The browser followed the redirect to sign in inside htmx's request, and htmx swapped the
    sign-in page into the chart's tab: a sign-in form under the patient's name and packages."""
    page = browser_page
    sign_in(page, desk.username)
    page.goto(f"/patients/{patient.pk}/")
    page.context.clear_cookies()  # the session ended (signed out in another tab, or it expired)
    page.get_by_role("link", name="Invoices").click()
    page.wait_for_url(f"**/login/?next=/patients/{patient.pk}/")
    expect(page.locator("h1")).to_have_text("Sign in")
    expect(page.locator("main")).not_to_contain_text(patient.last_name)
    page.get_by_label("Username").fill(desk.username)
    page.get_by_label("Password").fill(STAFF_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**/patients/{patient.pk}/")  # back to the chart it was on


def test_a_fix_on_a_page_opened_before_signing_in_again_reloads_and_says_nothing_was_saved(
        browser_page, desk, patient, acu60, clinic, paid_pack):
    """Signing in again in another tab rotates the CSRF token: the fix button of a page opened
    before then was refused (403), and htmx showed nothing at all."""
    appointment = do_book(acting_user=desk, patient=patient, service=acu60, starts_at=local_today_at(clinic, 9))
    do_check_in(acting_user=desk, appointment=appointment, no_charges=True)
    page = browser_page
    page.on("dialog", lambda dialog: dialog.accept())
    sign_in(page, desk.username)
    page.goto(f"/packages/{paid_pack.pk}/investigation/")
    other = page.context.new_page()
    other.goto("/today/")
    other.get_by_role("button", name="Sign out").click()
    other.wait_for_url("**/login/**")
    sign_in(other, desk.username)
    other.close()
    page.get_by_role("button", name="Record the check-in and charge").click()
    expect(page.locator(".messages")).to_contain_text("Nothing was saved")
    expect(page.locator("#package-count")).to_contain_text("0 of 10 used")
    page.get_by_role("button", name="Record the check-in and charge").click()  # the reloaded page works
    expect(page.locator("#package-count")).to_contain_text("1 of 10 used")


def test_a_fix_the_database_cannot_save_says_so_instead_of_doing_nothing(browser_page, desk, patient, acu60, clinic,
                                                                          paid_pack, monkeypatch):
    """A 503 (the database busy or down) to an htmx request was neither swapped nor shown: after
    confirming the fix, the button seemed to do nothing, and nothing said whether it was saved."""
    appointment = do_book(acting_user=desk, patient=patient, service=acu60, starts_at=local_today_at(clinic, 9))
    do_check_in(acting_user=desk, appointment=appointment, no_charges=True)

    def database_locked(**kwargs):
        raise OperationalError("database is locked")

    page = browser_page
    page.on("dialog", lambda dialog: dialog.accept())
    sign_in(page, desk.username)
    page.goto(f"/packages/{paid_pack.pk}/investigation/")
    monkeypatch.setattr(investigation_views, "apply_fix", database_locked)
    with page.expect_response(lambda r: "/fixes/" in r.url) as answer:
        page.get_by_role("button", name="Record the check-in and charge").click()
    assert answer.value.status == 503
    failure = page.get_by_role("alert").filter(has_text="nothing was changed")
    expect(failure).to_be_visible()
    expect(failure).to_contain_text("try again")
    expect(page.locator("#package-count")).to_contain_text("0 of 10 used")
    screenshot(page, "investigation-fix-unavailable")

    monkeypatch.undo()  # the database is back: the same button works, and the notice goes
    page.get_by_role("button", name="Record the check-in and charge").click()
    expect(page.locator("#package-count")).to_contain_text("1 of 10 used")
    expect(failure).to_have_count(0)
