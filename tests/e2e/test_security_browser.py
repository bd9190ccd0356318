"""Security in a real browser (tests/security has the rest): the staff pages run under the Content-Security-Policy
without a single violation, and the owner's two-factor sign-in works end to end."""

from __future__ import annotations

import pytest

from tests.security.conftest import charged_visit, code_for, owner_device, sold_pack  # noqa: F401

from .conftest import STAFF_PASSWORD, sign_in
from .test_browser import expect

pytestmark = pytest.mark.django_db(transaction=True)


def csp_violations(page) -> list[str]:
    found: list[str] = []
    page.on("console", lambda message: found.append(message.text)
            if "Content Security Policy" in message.text else None)
    return found


def test_staff_pages_break_no_rule_of_the_policy(browser_page, desk, clinic, charged_visit, patient):  # noqa: F811
    page = browser_page
    violations = csp_violations(page)
    sign_in(page, desk.username)
    _, invoice, _ = charged_visit
    for path in ("/today/", "/patients/", f"/patients/{patient.pk}/", f"/invoices/{invoice.pk}/",
                 f"/invoices/{invoice.pk}/print/", f"/patients/{patient.pk}/investigation/",
                 f"/patients/{patient.pk}/export/", "/audit/", "/account/two-factor/", "/api/v1/docs"):
        page.goto(path)
        page.wait_for_load_state("networkidle")
    assert violations == []

    # The control: an inline script is refused, and the refusal is seen.
    page.evaluate("() => { const s = document.createElement('script'); s.textContent = 'window.x = 1';"
                  " document.head.appendChild(s); }")
    page.wait_for_timeout(200)
    assert violations and page.evaluate("() => window.x") is None


def test_an_owner_signs_in_with_a_code_in_the_browser(browser_page, owner, owner_device, clinic):  # noqa: F811
    page = browser_page
    violations = csp_violations(page)
    page.goto("/login/")
    page.get_by_label("Username").fill(owner.username)
    page.get_by_label("Password").fill(STAFF_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/login/code/**")
    # Half signed in: no menu of pages that would each only bring the code page back.
    expect(page.get_by_role("navigation", name="Main")).to_have_count(0)
    expect(page.get_by_role("button", name="Cancel and sign out")).to_be_visible()
    page.get_by_label("Code from your authenticator app").fill(code_for(owner_device))
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url("**/today/**")
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    assert violations == []
