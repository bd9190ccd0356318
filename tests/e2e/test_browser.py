"""What the front desk sees, in a real browser: Playwright's sync API driving Debian's Chromium
against pytest-django's live server (SPEC.md, "What the front desk sees").

Each test signs in through the /login/ form and saves a screenshot into artifacts/screenshots/.
With TALLY_UPDATE_SCREENSHOTS=1 the chart and investigation tests also rewrite the README's
docs/screenshots/chart.png and docs/screenshots/investigation.png.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from django.utils import timezone

from tally.clinic import demo
from tally.clinic.actions.sales import do_sell_package
from tally.clinic.actions.visits import do_book, do_check_in
from tally.clinic.models import Appointment, InvoiceLine, PatientPackage, Staff, Tombstone

from .conftest import (
    REPO_ROOT,
    STAFF_PASSWORD,
    htmx_idle,
    screenshot,
    sign_in,
    update_doc_screenshot,
)

pytestmark = pytest.mark.django_db(transaction=True)


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def local_today_at(clinic, hour: int, days: int = 0) -> dt.datetime:
    day = timezone.localdate(timezone=clinic.tz) + dt.timedelta(days=days)
    return dt.datetime.combine(day, dt.time(hour), tzinfo=clinic.tz)


@pytest.fixture
def paid_pack(desk, patient, ten_pack):
    """A fully paid ten-pack (Acupuncture 60 min only) sold a week ago, first session not used."""
    sold, _ = do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False,
                              sold_at=timezone.now() - dt.timedelta(days=7), payment=(Decimal("800.00"), "card"))
    return sold


def load_small_demo() -> demo.DemoResult:
    """The demo clinic's fifteen scenario patients and a few regulars, then a desk login of our own."""
    result = demo.load_demo(regular_patients=2)
    Staff.objects.create_user("e2e-desk", password=STAFF_PASSWORD, role="front_desk", first_name="Eve",
                              last_name="Desk")
    return result


# --- 1. Selling a package, Use first session answered Yes ---------------------------------------------------


def test_selling_with_use_first_session_yes_shows_session_1_of_10_on_the_invoice(browser_page, desk, patient,
                                                                                   ten_pack):
    page = browser_page
    sign_in(page, desk.username)
    page.goto(f"/patients/{patient.pk}/")
    page.get_by_role("link", name="Sell a package").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Sell a package to Maria Lopez")

    page.get_by_label("Package").select_option(label=ten_pack.name)
    page.get_by_label(re.compile(r"Yes — use the first session")).check()
    page.get_by_label("Amount").fill("800.00")
    page.get_by_label("Method").select_option("card")
    page.get_by_role("button", name="Sell package").click()

    page.wait_for_url(re.compile(r"/invoices/\d+/$"))
    expect(page.get_by_role("status")).to_contain_text("The first session is used.")
    expect(page.locator(".invoice-lines")).to_contain_text("Session 1 of 10 · 9 left")
    screenshot(page, "sell-first-session-invoice")

    sold = PatientPackage.objects.get(patient=patient)
    assert (sold.sessions_used, sold.status) == (1, "active")


# --- 2. Check-in with the wrong service: the warning comes before anything is saved -------------------------


def test_check_in_with_a_service_the_package_does_not_cover_warns_first_then_charges_normally(
        browser_page, desk, patient, acu60, acu90, clinic, paid_pack):
    visit = do_book(acting_user=desk, patient=patient, service=acu60, starts_at=local_today_at(clinic, 10))
    page = browser_page
    sign_in(page, desk.username)
    page.get_by_role("link", name="Check in Maria Lopez").click()
    page.wait_for_url(f"**/appointments/{visit.pk}/check-in/")
    coverage = page.locator("#coverage")
    expect(coverage).to_contain_text("10 x Acupuncture 60")  # the booked service is covered

    # A screen reader announces a live region's changes, not a live region that replaces another.
    page.evaluate("window.__coverage = document.getElementById('coverage')")
    page.get_by_label("Charge another service").check()
    page.get_by_label("Other service:", exact=True).select_option(label="Acupuncture 90 min (90 min, 130.00)")
    # The htmx preview swaps the warning in as the choice changes, before any button is pressed.
    expect(coverage.get_by_role("alert")).to_contain_text("Not covered by a package.")
    assert page.evaluate("document.getElementById('coverage') === window.__coverage"), "the live region was replaced"
    expect(coverage).to_have_attribute("aria-live", "polite")
    page.get_by_role("button", name="Check in", exact=True).click()

    # Still nothing saved: the page asks again.
    expect(page.get_by_text("Nothing is saved yet.")).to_be_visible()
    expect(page.locator("#coverage").get_by_role("alert")).to_contain_text("Not covered by a package.")
    screenshot(page, "check-in-coverage-warning")
    visit.refresh_from_db()
    assert visit.status == "booked"
    assert not InvoiceLine.objects.filter(appointment=visit).exists()

    page.get_by_role("button", name="Check in anyway").click()
    page.wait_for_url("**/today/**")
    expect(page.get_by_role("status")).to_contain_text("Acupuncture 90 min charged on")
    visit.refresh_from_db()
    line = InvoiceLine.objects.get(appointment=visit, removed_at__isnull=True)
    assert visit.status == "attended"
    assert (line.service_id, line.covered_by_id, line.amount) == (acu90.pk, None, Decimal("130.00"))
    paid_pack.refresh_from_db()
    assert paid_pack.sessions_used == 0


# --- 3. "Why is this count wrong?" on a demo patient, and a one-click fix swapped in place ------------------


def test_why_is_this_count_wrong_fix_changes_the_count_in_place(browser_page):
    result = load_small_demo()
    patient = result.scenario_patients["NO_CHARGES"]
    package = PatientPackage.objects.get(patient=patient)
    assert (package.sessions_used, package.sessions_total) == (4, 5)

    page = browser_page
    sign_in(page, "e2e-desk")
    page.goto(f"/patients/{patient.pk}/")
    page.get_by_role("link", name="Why is this count wrong?").click()
    page.wait_for_url(f"**/packages/{package.pk}/investigation/")
    count = page.locator("#package-count")
    expect(count).to_contain_text("4 of 5 used · 1 left")
    finding = page.locator('li.finding[data-code="NO_CHARGES"]')
    expect(finding).to_contain_text("No Charges")
    expect(page.locator(".timeline-picture svg circle.visit")).to_have_count(5)
    screenshot(page, "investigation-no-charges")
    update_doc_screenshot(page, "investigation")

    page.evaluate("window.__sameDocument = true")  # survives an htmx swap, not a reload
    page.once("dialog", lambda dialog: dialog.accept())
    finding.get_by_role("button", name="Record the check-in and charge").click()

    expect(count).to_contain_text("5 of 5 used · 0 left")
    expect(page.locator('li.finding[data-code="NO_CHARGES"]')).to_have_count(0)
    expect(page.locator("#investigation .messages")).to_contain_text("Charged")
    assert page.evaluate("window.__sameDocument") is True
    assert page.url.endswith(f"/packages/{package.pk}/investigation/")
    screenshot(page, "investigation-after-fix")
    package.refresh_from_db()
    assert package.sessions_used == 5


# --- 4. Chart filters hide rows, and the banner says so and clears them (also at 768 px) ---------------------


def test_chart_filters_hide_rows_and_the_banner_clears_them(browser_page):
    result = load_small_demo()
    patient = result.scenario_patients["COVERED_BY_OTHER_PACKAGE"]  # two packages, a dozen visits
    total = Appointment.objects.filter(patient=patient).count()
    page = browser_page
    sign_in(page, "e2e-desk")
    page.goto(f"/patients/{patient.pk}/")
    expect(page.locator(".package-panel")).to_have_count(PatientPackage.objects.filter(patient=patient).count())
    expect(page.locator(".package-panel").first).to_contain_text(re.compile(r"\d+ of \d+ used · \d+ left"))
    rows = page.locator("#chart-tab tbody tr")
    banner = page.locator(".filter-banner")
    expect(rows).to_have_count(total)
    expect(banner).to_have_count(0)
    screenshot(page, "chart")
    update_doc_screenshot(page, "chart")

    page.evaluate("window.__sameDocument = true")
    page.evaluate("window.__status = document.getElementById('chart-tab-status')")
    page.get_by_label("Date range").select_option(label="Last 90 days")  # htmx swaps the tab on change
    expect(banner).to_be_visible()
    shown = int(re.search(r"Showing (\d+) of (\d+)", banner.inner_text()).group(1))
    assert 0 < shown < total
    expect(banner).to_have_text(f"Showing {shown} of {total} — clear filters")
    # A screen reader hears it: the status region outside the swapped tab says it, and stays the
    # same element (a live region swapped in with the tab is often not announced).
    expect(page.locator("#chart-tab-status")).to_have_text(f"Showing {shown} of {total} appointments")
    assert page.evaluate("document.getElementById('chart-tab-status') === window.__status")
    expect(rows).to_have_count(shown)
    assert page.evaluate("window.__sameDocument") is True
    assert "range=90d" in page.url  # the filtered view is a link staff can share

    page.get_by_label("Service").select_option(label="Massage 60 min")  # a service she never had
    expect(banner).to_have_text(f"Showing 0 of {total} — clear filters")
    expect(rows).to_have_text(["No appointment matches these filters."])
    screenshot(page, "chart-filtered")

    banner.get_by_role("link", name="clear filters").click()
    expect(banner).to_have_count(0)
    expect(rows).to_have_count(total)
    expect(page.get_by_label("Date range")).to_have_value("all")

    # The Invoices tab says the same when its filters hide rows.
    page.get_by_role("link", name="Invoices").click()
    expect(page.get_by_role("link", name="Invoices")).to_have_attribute("aria-current", "page")
    htmx_idle(page)  # the tab swapped in and its filters wired, before using them
    with page.expect_response(lambda r: "status=void" in r.url):  # the filter's htmx request
        page.get_by_label("Status").select_option(label="Void")
    expect(banner).to_contain_text(re.compile(r"Showing \d+ of \d+ — clear filters"))

    # A tablet: nothing wider than the screen, the panels and the filters still usable.
    page.set_viewport_size({"width": 768, "height": 900})
    page.goto(f"/patients/{patient.pk}/?tab=appointments&range=90d")
    expect(banner).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 768
    for control in ("Status", "Service", "Practitioner", "Date range"):
        expect(page.get_by_label(control)).to_be_in_viewport()
    screenshot(page, "chart-768")


# --- 5. The owner deletes a visit (reason required); the investigator shows its tombstone --------------------


def test_owner_deletes_a_visit_and_the_investigation_shows_its_tombstone(browser_page, owner, desk, patient, acu60,
                                                                        clinic, paid_pack):
    visit = do_book(acting_user=desk, patient=patient, service=acu60, starts_at=local_today_at(clinic, 9, days=-2))
    page = browser_page
    sign_in(page, owner.username)
    page.goto(f"/today/?day={visit.starts_at.astimezone(clinic.tz):%Y-%m-%d}")
    page.get_by_role("link", name="Delete Maria Lopez's visit").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Permanently delete")

    page.get_by_role("button", name="Delete permanently").click()  # no reason yet
    expect(page.locator(".has-error, .errorlist").first).to_be_visible()
    assert Appointment.objects.filter(pk=visit.pk).exists()

    page.get_by_label("Reason").fill("booked twice by mistake")
    page.get_by_role("button", name="Delete permanently").click()
    expect(page.get_by_role("status")).to_contain_text("A record of it is kept for investigations")
    expect(page.locator(".schedule")).not_to_contain_text("Maria Lopez")  # gone from the schedule
    expect(page.get_by_text("No visits on this day.")).to_be_visible()
    tombstone = Tombstone.objects.get(appointment_id=visit.pk)
    assert tombstone.reason == "booked twice by mistake"

    page.goto(f"/patients/{patient.pk}/")
    page.get_by_role("link", name="Why is this count wrong?").click()
    finding = page.locator('li.finding[data-code="APPOINTMENT_DELETED"]')
    expect(finding).to_be_visible()
    expect(finding).to_contain_text("booked twice by mistake")
    deleted = page.locator(".timeline-picture svg circle.visit.deleted")
    expect(deleted).to_have_count(1)
    expect(deleted).to_have_attribute("data-appointment-id", str(visit.pk))
    expect(finding.get_by_role("button", name="Restore this visit and charge it")).to_be_visible()
    screenshot(page, "investigation-tombstone")


# --- 6. The printed invoice names the session, as the patient sees it -----------------------------------------


def test_the_printable_invoice_saves_as_a_pdf_with_the_session_label(browser_page, desk, patient, acu60, clinic,
                                                                     paid_pack):
    visit = do_book(acting_user=desk, patient=patient, service=acu60, starts_at=local_today_at(clinic, 8))
    _, invoice, line = do_check_in(acting_user=desk, appointment=visit)
    assert line.covered_by_id == paid_pack.pk
    page = browser_page
    sign_in(page, desk.username)
    page.goto(f"/invoices/{invoice.pk}/")
    expect(page.locator(".invoice-lines")).to_contain_text("Session 1 of 10 · 9 left")
    page.get_by_role("link", name="Print").click()
    page.wait_for_url(f"**/invoices/{invoice.pk}/print/")
    expect(page.locator("body")).to_contain_text("Session 1 of 10 · 9 left")
    expect(page.locator("body")).to_contain_text(invoice.number)
    screenshot(page, "invoice-print")

    pdf_path = REPO_ROOT / "artifacts" / "invoice-print.pdf"
    pdf = page.pdf(path=str(pdf_path), format="A4", print_background=True)
    assert pdf.startswith(b"%PDF-") and pdf_path.read_bytes() == pdf
    assert len(pdf) > 2000
    # What printing leaves out: the screen-only "Back / Print" bar.
    page.emulate_media(media="print")
    expect(page.locator(".screen-only")).to_be_hidden()


# --- Keyboard and labels on the sell page -------------------------------------------------------------------


def test_sell_page_keyboard_reaches_use_first_session_and_every_control_is_labelled(browser_page, desk, patient,
                                                                                    acu60, clinic, ten_pack):
    do_book(acting_user=desk, patient=patient, service=acu60, starts_at=local_today_at(clinic, 11))
    page = browser_page
    sign_in(page, desk.username)
    page.goto(f"/patients/{patient.pk}/sell/")
    expect(page.get_by_role("alert")).to_contain_text("has a visit today that no package counts")

    # Every control is found by its label (what a screen reader announces).
    labelled = {
        "Package": "SELECT",
        "Yes — use the first session today": "INPUT",
        "No — nothing is used at the sale": "INPUT",
        "Today's visit it counts": "SELECT",
        "Amount": "INPUT",
        "Method": "SELECT",
    }
    for label, tag in labelled.items():
        control = page.get_by_label(label)
        expect(control).to_have_count(1)
        assert control.evaluate("el => el.tagName") == tag
    controls = page.locator("main form.form-card").locator("input:not([type=hidden]), select, textarea")
    assert controls.count() == len(labelled)
    for index in range(controls.count()):
        expect(controls.nth(index)).to_have_accessible_name(re.compile(r"\w"))
    expect(page.get_by_role("group", name=re.compile("Use first session"))).to_be_visible()

    # Tab from the package choice reaches the Use first session radios, and arrows pick one.
    page.get_by_label("Package").focus()
    focused_name = "document.activeElement.name"
    for _ in range(5):
        page.keyboard.press("Tab")
        if page.evaluate(focused_name) == "use_first_session":
            break
    assert page.evaluate(focused_name) == "use_first_session"
    page.keyboard.press("Space")
    page.keyboard.press("ArrowDown")
    expect(page.get_by_label("No — nothing is used at the sale")).to_be_checked()
    page.keyboard.press("ArrowUp")
    expect(page.get_by_label("Yes — use the first session today")).to_be_checked()
    screenshot(page, "sell-keyboard")

    # Submitting without answering says what is missing, next to the question.
    page.get_by_label("Package").select_option(label=ten_pack.name)
    page.evaluate("document.querySelectorAll('input[name=use_first_session]').forEach(r => r.checked = false)")
    page.get_by_role("button", name="Sell package").click()
    expect(page.locator(".first-session")).to_contain_text("choose Yes or No")
    assert not PatientPackage.objects.filter(patient=patient).exists()


# --- Every staff page at 1280, 768 and 390 px: nothing wider than the screen, every control labelled, ---------
# --- no accessibility violation (axe-core: WCAG 2.1 A and AA, and its best practices) -------------------------

AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]


def accessibility_violations(page) -> list[str]:
    """axe-core's violations on the page as it is now, one line each (the axe-playwright-python
    package bundles axe.min.js: nothing is downloaded)."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page, options={"runOnly": {"type": "tag", "values": AXE_TAGS},
                                       "resultTypes": ["violations"]})
    return [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:4]}"
            for v in results.response["violations"]]


def resize(page, width: int) -> None:
    """The same page at another width; the frame after the resize has run its listeners."""
    page.set_viewport_size({"width": width, "height": 1000})
    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")


# What the walk measures at each width, in one call: how far the page is wider than the screen,
# controls without a label, each scroll box (a table, or the timeline picture, wider than a phone
# scrolls inside its box, which says so ("Scroll sideways for more") and takes the keyboard's focus,
# so that arrows scroll it), and words that must stay on one line but do not.
LAYOUT = """() => {
    const lines = el => { const range = document.createRange(); range.selectNodeContents(el);
                          return new Set([...range.getClientRects()].map(r => Math.round(r.top))).size; };
    const boxes = [...document.querySelectorAll('main table.table, main .timeline-picture')].map(el => {
        const box = el.matches('.scroll-x') ? el : el.closest('.scroll-x');
        if (!box) return {missing: el.outerHTML.slice(0, 60)};
        const hint = getComputedStyle(box, '::before');
        return {overflows: box.scrollWidth - box.clientWidth > 1, more: box.dataset.more || null,
                hint: hint.display === 'none' || hint.content === 'none' ? null : hint.content,
                focusable: box.tabIndex === 0, name: box.getAttribute('aria-label')};
    });
    return {
        overflow: document.documentElement.scrollWidth - window.innerWidth,
        unlabelled: [...document.querySelectorAll('main input:not([type=hidden]), main select, main textarea')]
            .filter(el => el.offsetParent !== null)
            .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                          && !el.getAttribute('aria-labelledby') && !el.closest('label'))
            .map(el => el.name || el.id || el.outerHTML.slice(0, 60)),
        boxes,
        // An invoice or patient number is read out to a patient: never split at its hyphen.
        split_numbers: [...document.querySelectorAll('main a, main span, main td, main p')]
            .filter(el => el.children.length === 0 && /^(INV|P)-\\d+$/.test(el.textContent.trim()))
            .filter(el => lines(el) > 1).map(el => el.textContent.trim()),
        // The top bar's links and Sign out button keep their words together ("Sign / out" on a phone).
        broken_topbar: [...document.querySelectorAll('.topbar a, .topbar button')]
            .filter(el => lines(el) > 1).map(el => el.textContent.trim()),
    };
}"""


FOCUS_RING_CONTRASTS = """() => {
    const luminance = color => {
        const [r, g, b] = color.match(/[\\d.]+/g).slice(0, 3).map(v => {
            v = v / 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const contrast = (a, b) => { const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
                                 return (hi + 0.05) / (lo + 0.05); };
    const ring = getComputedStyle(document.activeElement).outlineColor;
    const backgrounds = {page: getComputedStyle(document.body).backgroundColor, card: 'rgb(255, 255, 255)',
                         topbar: getComputedStyle(document.querySelector('.topbar')).backgroundColor};
    return Object.fromEntries(Object.entries(backgrounds).map(([name, bg]) => [name, contrast(ring, bg)]));
}"""


def test_every_staff_page_fits_a_phone_labels_every_control_and_passes_axe(browser_page, owner, desk, patient, acu60,
                                                                          clinic, paid_pack):
    appointment = do_book(acting_user=desk, patient=patient, service=acu60, starts_at=local_today_at(clinic, 11))
    _, invoice, line = do_check_in(acting_user=desk, appointment=appointment)
    # A past visit never checked in: the clinic audit lists the package (NOT_CHECKED_IN), so its
    # table has a row, whose link's hidden text once made the whole page scroll sideways on a phone.
    do_book(acting_user=desk, patient=patient, service=acu60, starts_at=local_today_at(clinic, 9, days=-3))
    later = do_book(acting_user=desk, patient=patient, service=acu60, starts_at=local_today_at(clinic, 15))
    page = browser_page
    page.goto("/login/")
    assert accessibility_violations(page) == [], "/login/"
    sign_in(page, owner.username)
    p, sale = patient.pk, paid_pack.sale_invoice_id
    pages = [
        "/today/", "/patients/", f"/patients/{p}/", f"/patients/{p}/?tab=invoices",
        f"/patients/{p}/sell/", f"/invoices/{invoice.pk}/", f"/invoices/{invoice.pk}/edit/",
        f"/packages/{paid_pack.pk}/investigation/", f"/patients/{p}/investigation/", "/audit/",
        "/catalog/", "/staff/", f"/invoices/{invoice.pk}/print/", f"/patients/{p}/export/",
        f"/appointments/{later.pk}/check-in/", "/account/two-factor/",
        # Forms on staff/form_page.html and catalog/edit.html, one of each kind of field.
        "/appointments/new/", f"/appointments/{later.pk}/delete/", "/patients/new/",
        f"/packages/{paid_pack.pk}/expiry/", "/catalog/packages/new/",
    ]
    # The same templates again with other fields: walked at every width, not through axe again.
    same_templates = [
        f"/appointments/{appointment.pk}/undo-check-in/", f"/packages/{paid_pack.pk}/cancel/",
        f"/appointments/{later.pk}/reschedule/", f"/appointments/{later.pk}/cancel/",
        f"/appointments/{later.pk}/no-show/", f"/patients/{p}/invoices/new/",
        f"/invoices/{invoice.pk}/lines/{line.pk}/remove/", f"/invoices/{sale}/refund/", f"/invoices/{invoice.pk}/void/",
        "/catalog/services/new/", f"/catalog/services/{acu60.pk}/", f"/catalog/packages/{paid_pack.package_id}/",
    ]
    def check_at(url: str, width: int) -> None:
        layout = page.evaluate(LAYOUT)
        assert layout["overflow"] <= 1, f"{url} is {layout['overflow']} px wider than a {width} px screen"
        assert layout["unlabelled"] == [], f"{url} has unlabelled controls at {width} px"
        for box in layout["boxes"]:
            assert "missing" not in box, f"{url}: a table outside a .scroll-x box: {box}"
            if box["overflows"]:
                assert box["more"] and box["hint"] and "Scroll sideways" in box["hint"], (url, width, box)
                assert box["focusable"] and box["name"], (url, width, box)
            else:
                assert (box["more"], box["hint"], box["focusable"]) == (None, None, False), (url, width, box)
        assert layout["split_numbers"] == [], f"{url} splits {layout['split_numbers']} over two lines at {width} px"
        assert layout["broken_topbar"] == [], f"{url}: the top bar breaks {layout['broken_topbar']} at {width} px"
        if url == "/audit/":
            expect(page.get_by_role("link", name=re.compile("^Investigate"))).to_have_count(1)
            # A patient number stays on one line ("P-/000015" wrapped at its hyphen on a phone).
            lines = page.evaluate("""() => { const range = document.createRange();
                range.selectNodeContents(document.querySelector('td.patient-number'));
                return new Set([...range.getClientRects()].map(r => Math.round(r.top))).size; }""")
            assert lines == 1, f"the audit's patient number wraps onto {lines} lines at {width} px"
        if url.endswith("/investigation/") and "packages" in url:
            # The timeline's words (legend, months, "N left") stay readable: shrunk to a 390 px
            # screen with the picture, they were 4 px high.
            smallest = page.evaluate("""() => Math.min(...[...document.querySelectorAll(
                '.timeline-picture svg text')].map(t => t.getBoundingClientRect().height))""")
            assert smallest >= 9, f"the timeline's text is {smallest:.1f} px high at {width} px"

    # Each page is loaded once and looked at as a desktop, a tablet and a phone would. axe runs
    # once, on the phone: nothing is hidden or shown by width, and only there do boxes scroll.
    for url in pages + same_templates:
        resize(page, 1280)
        response = page.goto(url)
        assert response is not None and response.status == 200, (url, response and response.status)
        if url == "/today/":
            # The keyboard's focus ring stands out (3:1, WCAG 1.4.11) on the page, on a card and
            # on the top bar: the amber it was had 2.1:1 on white.
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.className") == "skip-link"
            ratios = page.evaluate(FOCUS_RING_CONTRASTS)
            assert min(ratios.values()) >= 3, f"the focus ring's contrast: {ratios}"
        for width in (1280, 768, 390):
            if width != 1280:
                resize(page, width)
            check_at(url, width)
        if url in pages:
            assert accessibility_violations(page) == [], url
        if url == f"/patients/{p}/":
            screenshot(page, "walk-chart-390")
            # Scrolled to its end, the box says the rest is now to the left.
            box = page.locator("#chart-tab .scroll-x")
            box.evaluate("box => { box.scrollLeft = box.scrollWidth; }")
            expect(box).to_have_attribute("data-more", "left")
            assert "\u2190" in box.evaluate("box => getComputedStyle(box, '::before').content")

    # What htmx swaps in, and a form sent back with its errors, pass too.
    page.goto(f"/appointments/{later.pk}/check-in/")
    page.get_by_label("No Charges").check()
    expect(page.locator("#coverage .alert")).to_be_visible()
    assert accessibility_violations(page) == [], "check-in preview"
    page.goto(f"/appointments/{later.pk}/delete/")
    page.get_by_role("button", name="Delete permanently").click()
    expect(page.locator(".errorlist").first).to_be_visible()
    assert accessibility_violations(page) == [], "delete without a reason"
