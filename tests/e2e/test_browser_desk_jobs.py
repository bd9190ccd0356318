"""The front desk's everyday jobs in a real browser, where the browser itself can go wrong:
a double click, an htmx answer that is not a 200."""

from __future__ import annotations

import re
import time
from decimal import Decimal

import pytest

from tally.clinic.models import PatientPackage, Payment
from tally.staff.views import invoices as invoice_views
from tally.staff.views import sales as sales_views

from .conftest import sign_in
from .test_browser import expect

pytestmark = pytest.mark.django_db(transaction=True)


def htmx_idle(page) -> None:
    page.wait_for_function("() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling')")


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
