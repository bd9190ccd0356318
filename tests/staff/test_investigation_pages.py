"""The investigation page, its fix buttons, the support export and the clinic audit page."""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from decimal import Decimal
from urllib.parse import quote

from django.http import QueryDict
from django.template import Context, Template
from django.urls import reverse

from tally.clinic.actions.catalog import do_create_package
from tally.clinic.actions.sales import do_adjust, do_cancel_package, do_sell_package
from tally.clinic.actions.visits import do_book, do_check_in
from tally.clinic.investigator.service import investigate_package
from tally.clinic.models import ClinicAuditSnapshot, InvoiceLine

from .conftest import today_at


def no_charges_visit(desk, patient, acu60, clinic, days_ago=0):
    appointment = do_book(acting_user=desk, patient=patient, service=acu60,
                          starts_at=today_at(clinic, 9, days=-days_ago) + dt.timedelta(hours=1))
    do_check_in(acting_user=desk, appointment=appointment, no_charges=True)
    return appointment


def test_the_page_names_the_cause_draws_the_timeline_and_offers_the_fix(desk_client, desk, patient, acu60, clinic,
                                                                          sold_pack):
    no_charges_visit(desk, patient, acu60, clinic)
    page = desk_client.get(reverse("staff:investigation", args=[sold_pack.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert "0 of 10 used · 10 left" in html
    assert "was checked in with No Charges, so no session was used" in html
    assert "<svg" in html and 'class="visit not_counted"' in html
    assert "Record the check-in and charge" in html


def test_a_fix_button_applies_in_place_and_the_count_changes(desk_client, desk, patient, acu60, clinic, sold_pack):
    appointment = no_charges_visit(desk, patient, acu60, clinic)
    response = desk_client.post(reverse("staff:fix", args=[sold_pack.pk]), {
        "action": "check_in_and_charge", "params": json.dumps({"appointment_id": appointment.pk}),
    }, headers={"HX-Request": "true"})
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="investigation"' in html and "<html" not in html  # a fragment for htmx to swap in
    assert "1 of 10 used · 9 left" in html
    assert "NO_CHARGES" not in html
    assert "Charged. Paid via 10 x Acupuncture 60: session 1 of 10." in html
    sold_pack.refresh_from_db()
    assert sold_pack.sessions_used == 1


def test_a_fix_that_charges_in_full_says_what_is_to_pay_and_why(owner, desk_client, desk, patient, acu60, clinic,
                                                                sold_pack):
    """After a No Charges visit's fix the message said "Charged." alone, also when no package
    paid and the patient owes the price (ui5): it now says the amount, the invoice and why."""
    do_adjust(acting_user=owner, patient_package=sold_pack, change=-10, reason="paper card: all used")
    appointment = no_charges_visit(desk, patient, acu60, clinic)
    response = desk_client.post(reverse("staff:fix", args=[sold_pack.pk]), {
        "action": "check_in_and_charge", "params": json.dumps({"appointment_id": appointment.pk}),
    }, headers={"HX-Request": "true"})
    assert response.status_code == 200
    line = InvoiceLine.objects.get(appointment=appointment)
    assert (f"Charged. $95.00 to pay on {line.invoice.number}. No package can cover this line: the package has "
            "no session left.") in response.content.decode()


def test_a_refused_fix_says_why_without_a_500(desk_client, sold_pack):
    response = desk_client.post(reverse("staff:fix", args=[sold_pack.pk]), {
        "action": "check_in_and_charge", "params": json.dumps({"appointment_id": 999999}),
    }, headers={"HX-Request": "true"})
    assert response.status_code == 422 or response.status_code == 409 or response.status_code == 404
    bad = desk_client.post(reverse("staff:fix", args=[sold_pack.pk]), {"action": "teleport", "params": "{"},
                           headers={"HX-Request": "true"})
    assert bad.status_code == 422
    assert "That fix is not one Tally offers." in bad.content.decode()


def test_expected_used_shows_the_difference(desk_client, desk, patient, acu60, clinic, sold_pack):
    no_charges_visit(desk, patient, acu60, clinic)
    html = desk_client.get(reverse("staff:investigation", args=[sold_pack.pk]), {"expected_used": 1}).content.decode()
    assert "Expected 1: 1 more than Tally counts" in html
    bad = desk_client.get(reverse("staff:investigation", args=[sold_pack.pk]), {"expected_used": "lots"})
    assert bad.status_code == 422
    # The error is tied to its field, as Django's forms do: a screen reader says it on the field.
    page = bad.content.decode()
    assert 'id="expected-problem"' in page
    field = re.search(r'<input [^>]*id="expected_used"[^>]*>', page).group(0)
    assert 'aria-invalid="true"' in field and 'aria-describedby="expected-problem"' in field
    assert 'value="lots"' in field, "what was typed stays in the field to be corrected, not emptied"


def test_only_the_owner_sees_the_override_and_adjustment(owner_client, desk_client, sold_pack):
    url = reverse("staff:investigation", args=[sold_pack.pk])
    assert "Owner: manual adjustment" in owner_client.get(url).content.decode()
    assert "Owner: manual adjustment" not in desk_client.get(url).content.decode()
    response = desk_client.post(reverse("staff:fix", args=[sold_pack.pk]),
                                {"action": "adjust", "params": "{}", "change": "1", "reason": "x"})
    assert response.status_code == 403


def test_the_owners_adjustment_sent_twice_is_made_once(owner_client, sold_pack):
    page = owner_client.get(reverse("staff:investigation", args=[sold_pack.pk])).content.decode()
    assert '<input type="hidden" name="sessions_used" value="0">' in page
    form = {"action": "adjust", "params": "{}", "change": "-1", "reason": "paper card", "sessions_used": "0"}
    assert owner_client.post(reverse("staff:fix", args=[sold_pack.pk]), form).status_code == 302
    again = owner_client.post(reverse("staff:fix", args=[sold_pack.pk]), form, follow=True).content.decode()
    assert "Nothing to do: This adjustment is already recorded: 1 of 10 used." in again
    assert sold_pack.ledger_entries.filter(kind="adjustment").count() == 1
    # Another adjustment from a page showing the old count: refused, the page says why.
    stale = owner_client.post(reverse("staff:fix", args=[sold_pack.pk]), form | {"change": "1"},
                              headers={"HX-Request": "true"})
    assert stale.status_code == 409
    assert "The count changed since you looked: 1 of 10 used now, 0 then." in stale.content.decode()
    sold_pack.refresh_from_db()
    assert sold_pack.sessions_used == 1


def test_the_support_export_can_leave_out_names_and_contact_details(desk_client, desk, patient, acu60, clinic,
                                                                     sold_pack):
    no_charges_visit(desk, patient, acu60, clinic)
    full = desk_client.get(reverse("staff:export_json", args=[patient.pk])).json()
    assert full["patient"]["last_name"] == "Lopez"
    assert full["packages"][0]["findings"][0]["code"] == "NO_CHARGES"
    anonymous = desk_client.get(reverse("staff:export_json", args=[patient.pk]), {"anonymous": "1"})
    data = anonymous.json()
    assert data["patient"] == {"patient_number": patient.patient_number}
    assert "Lopez" not in anonymous.content.decode() and "maria@example.com" not in anonymous.content.decode()
    printable = desk_client.get(reverse("staff:export_print", args=[patient.pk]), {"anonymous": "1"}).content.decode()
    assert patient.patient_number in printable and "Lopez" not in printable
    assert "NO_CHARGES" in printable


def test_the_clinic_audit_lists_packages_with_findings_and_filters_by_code(desk_client, desk, patient, acu60, clinic,
                                                                            sold_pack):
    no_charges_visit(desk, patient, acu60, clinic)
    html = desk_client.get(reverse("staff:audit")).content.decode()
    assert patient.patient_number in html and "NO_CHARGES" in html
    assert reverse("staff:investigation", args=[sold_pack.pk]) in html
    filtered = desk_client.get(reverse("staff:audit"), {"code": "PACKAGE_EXPIRED"}).content.decode()
    assert patient.patient_number not in filtered


def test_a_patient_level_finding_is_fixed_from_the_patient_page(desk_client, desk, patient, acu60, clinic):
    appointment = no_charges_visit(desk, patient, acu60, clinic)
    page = desk_client.get(reverse("staff:patient_investigation", args=[patient.pk])).content.decode()
    assert "NO_CHARGES" in page
    desk_client.post(reverse("staff:patient_fix", args=[patient.pk]), {
        "action": "check_in_and_charge", "params": json.dumps({"appointment_id": appointment.pk})})
    assert "NO_CHARGES" not in desk_client.get(reverse("staff:patient_investigation", args=[patient.pk])).content.decode()


def test_the_clinic_audit_page_keeps_one_run_across_filters_until_run_again(desk_client, desk, patient, acu60, clinic,
                                                                             sold_pack):
    appointment = no_charges_visit(desk, patient, acu60, clinic)
    first = desk_client.get(reverse("staff:audit"))
    html = first.content.decode()
    snapshot = ClinicAuditSnapshot.objects.get()
    assert "<code>NO_CHARGES</code>" in html and "As of" in html
    assert f'name="snapshot" value="{snapshot.pk}"' in html  # the filter form keeps the run
    # Fixed meanwhile: the same run still lists it (what staff were paging through), with
    # the time it was taken; running it again shows the package clean.
    desk_client.post(reverse("staff:fix", args=[sold_pack.pk]), {
        "action": "check_in_and_charge", "params": json.dumps({"appointment_id": appointment.pk})})
    same = desk_client.get(reverse("staff:audit"), {"snapshot": snapshot.pk, "severity": "info"}).content.decode()
    assert "<code>NO_CHARGES</code>" in same and ClinicAuditSnapshot.objects.count() == 1
    again = desk_client.get(reverse("staff:audit"), {"severity": "warning"}).content.decode()
    assert "<code>NO_CHARGES</code>" not in again and ClinicAuditSnapshot.objects.count() == 2
    # A run that is not kept (never taken, expired, or nonsense) is simply taken again.
    for stale in ("999999", "abc", "", "99999999999999999999", "-1"):
        assert desk_client.get(reverse("staff:audit"), {"snapshot": stale}).status_code == 200


def test_the_clinic_audit_pages_link_to_the_same_run(rf):
    request = rf.get("/audit/", {"severity": "info", "code": "NO_CHARGES", "page": "1"})
    link = Template("{% load staff_tags %}{% query page=2 %}").render(
        Context({"request": request, "query_pins": {"snapshot": 7}}))
    assert QueryDict(html.unescape(link).removeprefix("?")).dict() == {"severity": "info", "code": "NO_CHARGES", "page": "2",
                                                        "snapshot": "7"}


def test_a_snapshot_id_of_other_digits_runs_the_audit_again_not_a_500(desk_client, clinic):
    """'²' is a digit to str.isdigit() but not a number to int() (a 500)."""
    for typed in ("²", "١٢"):
        response = desk_client.get(reverse("staff:audit"), {"snapshot": typed})
        assert response.status_code == 200, typed


def test_a_double_use_offers_removing_the_duplicate_charge_and_comes_back(desk_client, desk, patient, ten_pack,
                                                                         acu60, clinic):
    """POSSIBLE_DOUBLE_USE has no fix action: the page links the charge to remove (its remove
    page, which brings staff back here) instead of leaving them to hunt for it on the chart."""
    sold, sale_invoice = do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=True,
                                         payment=(Decimal("800.00"), "card"))
    do_check_in(acting_user=desk, appointment=do_book(acting_user=desk, patient=patient, service=acu60,
                                                      starts_at=today_at(clinic, 8)))
    first = sale_invoice.lines.get(kind="first_session")
    page_url = reverse("staff:investigation", args=[sold.pk])
    remove_url = f"{reverse('staff:remove_line', args=[sale_invoice.pk, first.pk])}?next={quote(page_url)}"
    page = desk_client.get(page_url).content.decode()
    assert "POSSIBLE_DOUBLE_USE" in page
    assert f'href="{html.escape(remove_url)}"' in page
    assert reverse("staff:invoice", args=[sale_invoice.pk]) in page  # "Open the invoice"
    response = desk_client.post(remove_url, {"reason": "the visit was charged too"})
    assert response.status_code == 302 and response["Location"] == page_url
    after = desk_client.get(page_url).content.decode()
    assert "Nothing looks wrong" in after and "1 of 10 used · 9 left" in after


def test_removing_a_line_never_goes_back_off_the_site(desk_client, charged_visit):
    _, invoice, line = charged_visit
    url = reverse("staff:remove_line", args=[invoice.pk, line.pk])
    response = desk_client.post(f"{url}?next=https://evil.example/", {"reason": "wrong"})
    assert response["Location"] == reverse("staff:invoice_edit", args=[invoice.pk])


def overrides_offered(page: str) -> dict[str, bool]:
    """Each finding's code: whether the page offers the owner's "Apply by override" on it."""
    items = page.split('<li class="finding')[1:]
    return {item.split('data-code="')[1].split('"')[0]: "Apply by override" in item.split("</li>")[0]
            for item in items}


def test_the_owner_is_offered_an_override_only_where_one_can_apply(owner_client, desk, patient, acu60, clinic,
                                                                  sold_pack):
    """The action refuses an override onto a package that is exhausted, cancelled or unpaid, or
    for a service it does not cover: the page offered the button anyway, and it always failed."""
    early = do_book(acting_user=desk, patient=patient, service=acu60, starts_at=today_at(clinic, 9, days=-3))
    do_check_in(acting_user=desk, appointment=early)  # invoiced before the sale: CHARGED_BEFORE_PURCHASE
    url = reverse("staff:investigation", args=[sold_pack.pk])
    assert overrides_offered(owner_client.get(url).content.decode()) == {"CHARGED_BEFORE_PURCHASE": True}

    do_cancel_package(acting_user=desk, patient_package=sold_pack, reason="moving away")
    do_check_in(acting_user=desk, appointment=do_book(acting_user=desk, patient=patient, service=acu60,
                                                      starts_at=today_at(clinic, 8)))
    offered = overrides_offered(owner_client.get(url).content.decode())
    assert offered == {"CHARGED_BEFORE_PURCHASE": False, "PACKAGE_CANCELLED": False}


def test_no_override_is_offered_onto_a_package_with_no_session_left(owner_client, owner, desk, patient, acu60,
                                                                    clinic):
    """Expiry is a reason an override may set aside, but not an empty package: an expired one
    with none left refuses (409), so the page offers no button on its PACKAGE_EXPIRED visit."""
    pass_ = do_create_package(acting_user=owner, name="2 x Acupuncture, 5 days", price=Decimal("150.00"),
                              sessions=2, service_ids=[acu60.pk], valid_days=5)
    pp, _ = do_sell_package(acting_user=desk, patient=patient, package=pass_, use_first_session=True,
                            sold_at=today_at(clinic, 8, days=-10), payment=(Decimal("150.00"), "card"))
    do_check_in(acting_user=desk, appointment=do_book(acting_user=desk, patient=patient, service=acu60,
                                                      starts_at=today_at(clinic, 9, days=-9)))
    late = do_book(acting_user=desk, patient=patient, service=acu60, starts_at=today_at(clinic, 9, days=-1))
    do_check_in(acting_user=desk, appointment=late)  # after expiry: PACKAGE_EXPIRED
    pp.refresh_from_db()
    assert (pp.status, pp.sessions_remaining) == ("expired", 0)
    url = reverse("staff:investigation", args=[pp.pk])
    assert overrides_offered(owner_client.get(url).content.decode()) == {"PACKAGE_EXPIRED": False}


def test_each_investigate_link_names_its_package_for_a_screen_reader(desk_client, desk, patient, acu60, clinic,
                                                                     sold_pack):
    """A screen reader's list of links read 'Investigate, Investigate, ...' on the audit and
    'Why is this count wrong?' once per package on the chart, with nothing to tell them apart."""
    no_charges_visit(desk, patient, acu60, clinic)
    audit = desk_client.get(reverse("staff:audit")).content.decode()
    name = f"Investigate<span class=\"sr-only\"> {patient.patient_number} {sold_pack.name}</span></a>"
    assert name in audit
    chart = desk_client.get(reverse("staff:chart", args=[patient.pk])).content.decode()
    assert f"Why is this count wrong?<span class=\"sr-only\"> ({sold_pack.name}, sold " in chart


def test_two_visits_on_one_day_are_questioned_but_not_offered_for_removal(desk_client, desk, patient, acu60, clinic,
                                                                        sold_pack):
    """A morning and an afternoon visit, each charged once, are a day's double use only
    possibly ('check whether'): the page opens the invoice, but a primary button to remove one
    of two rightful charges would invite the mistake."""
    for hour in (8, 14):
        do_check_in(acting_user=desk, appointment=do_book(acting_user=desk, patient=patient, service=acu60,
                                                          starts_at=today_at(clinic, hour)))
    page = desk_client.get(reverse("staff:investigation", args=[sold_pack.pk])).content.decode()
    assert "POSSIBLE_DOUBLE_USE" in page and "check whether one visit was charged twice" in page
    assert "Open the invoice" in page
    assert "Remove the duplicate charge" not in page


def test_the_page_shows_every_tombstone_with_when_and_why(desk_client, desk, owner, patient, acu60, clinic,
                                                           sold_pack):
    """SPEC: tombstones are always shown to the investigator; a removed charge too, not only a
    deleted visit."""
    from tally.clinic.actions.billing import do_remove_line
    from tally.clinic.actions.visits import do_delete_appointment

    seen = do_book(acting_user=desk, patient=patient, service=acu60, starts_at=today_at(clinic, 9, days=-1))
    _, invoice, line = do_check_in(acting_user=desk, appointment=seen)
    do_remove_line(acting_user=desk, invoice=invoice, line_id=line.pk, reason="charged to the wrong visit")
    gone = do_book(acting_user=desk, patient=patient, service=acu60, starts_at=today_at(clinic, 9, days=-2))
    do_delete_appointment(acting_user=owner, appointment=gone, reason="booked twice")
    page = html.unescape(desk_client.get(reverse("staff:investigation", args=[sold_pack.pk])).content.decode())
    section = page[page.index('id="tombstones-heading"'):]
    assert f"Acupuncture 60 min on {invoice.number}" in section and "charged to the wrong visit" in section
    assert "Acupuncture 60 min visit" in section and "booked twice" in section
    # SPEC: a tombstone keeps who removed it, and the investigator shows it.
    assert f"by {desk.display_name}" in section and f"by {owner.display_name}" in section
    timeline = investigate_package(sold_pack.pk).timeline
    assert sorted(e["by"] for e in timeline if e["kind"] == "tombstone") == sorted(
        [desk.display_name, owner.display_name])
