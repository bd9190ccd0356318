"""The investigator's "one screen, one click" with the keyboard alone, on the demo clinic:
Tab to the control, Enter to use it, and after an htmx swap the keyboard carries on from
what changed rather than from the top of the page."""

from __future__ import annotations

import pytest

from tally.clinic.actions.sales import do_sell_package
from tally.clinic.models import PatientPackage

from .conftest import htmx_idle, sign_in
from .test_browser import expect, load_small_demo

pytestmark = pytest.mark.django_db(transaction=True)


def tab_to(page, predicate: str, limit: int = 80) -> None:
    """Press Tab until the focused element satisfies `predicate` (JavaScript over `el`)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(f"(() => {{ const el = document.activeElement; return !!el && ({predicate}); }})()"):
            return
    raise AssertionError(f"Tab never reached {predicate}")


def enter_and_load(page) -> None:
    with page.expect_navigation():
        page.keyboard.press("Enter")


def test_the_investigation_resolves_a_double_use_and_a_fix_with_the_keyboard_alone(browser_page):
    result = load_small_demo()
    page = browser_page
    page.on("dialog", lambda dialog: dialog.accept())  # the fix's confirm: Enter on its OK
    sign_in(page, "e2e-desk")

    # POSSIBLE_DOUBLE_USE carries no fix action: the page names the charge to remove, and its
    # remove page brings staff back to a clean investigation.
    double = PatientPackage.objects.get(patient=result.scenario_patients["POSSIBLE_DOUBLE_USE"])
    page.goto(f"/packages/{double.pk}/investigation/")
    expect(page.locator("#package-count")).to_contain_text("5 of 10 used")
    tab_to(page, "el.textContent.trim() === 'Remove the duplicate charge'")
    enter_and_load(page)
    expect(page.locator("h1")).to_contain_text("Remove a line")
    expect(page.locator("main")).to_contain_text("First session of")
    tab_to(page, "el.name === 'reason'")
    page.keyboard.type("the visit was checked in and covered too")
    tab_to(page, "el.type === 'submit' && !!el.closest('main')")
    enter_and_load(page)
    assert page.url.endswith(f"/packages/{double.pk}/investigation/")
    expect(page.locator("#package-count")).to_contain_text("4 of 10 used")
    expect(page.locator("#investigation")).to_contain_text("Nothing looks wrong")

    # A one-click fix: after the swap, focus is on its result, and Tab goes on inside it.
    no_charges = PatientPackage.objects.get(patient=result.scenario_patients["NO_CHARGES"])
    page.goto(f"/packages/{no_charges.pk}/investigation/")
    tab_to(page, "el.classList.contains('fix-button')")
    page.keyboard.press("Enter")
    expect(page.locator("#package-count")).to_contain_text("5 of 5 used · 0 left")
    htmx_idle(page)
    expect(page.locator("#investigation .messages")).to_be_focused()
    page.keyboard.press("Tab")
    assert page.evaluate("!!document.activeElement.closest('#investigation')")


def test_switching_chart_tabs_with_the_keyboard_keeps_focus_on_the_tab(browser_page, desk, patient, ten_pack):
    do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False)
    page = browser_page
    sign_in(page, desk.username)
    page.goto(f"/patients/{patient.pk}/")
    tab_to(page, "el.tagName === 'A' && el.textContent.trim() === 'Invoices'")
    page.keyboard.press("Enter")
    expect(page.locator("#chart-tab table caption")).to_have_text("Invoices")
    htmx_idle(page)
    invoices_tab = page.locator("#chart-tab nav.tabs a", has_text="Invoices")
    expect(invoices_tab).to_be_focused()  # not the page body: the next Tab is the next control
    page.keyboard.press("Shift+Tab")
    expect(page.locator("#chart-tab nav.tabs a", has_text="Appointments")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#chart-tab table caption")).to_have_text("Appointments")
    htmx_idle(page)
    expect(page.locator("#chart-tab nav.tabs a", has_text="Appointments")).to_be_focused()


def test_comparing_with_the_keyboard_keeps_focus_on_compare(browser_page, desk, patient, ten_pack):
    sold, _ = do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False)
    page = browser_page
    sign_in(page, desk.username)
    page.goto(f"/packages/{sold.pk}/investigation/")
    tab_to(page, "el.name === 'expected_used'")
    page.keyboard.type("2")
    tab_to(page, "el.textContent.trim() === 'Compare'")
    page.keyboard.press("Enter")
    expect(page.locator("#investigation .difference")).to_contain_text("Expected 2")
    htmx_idle(page)
    expect(page.get_by_role("button", name="Compare")).to_be_focused()
