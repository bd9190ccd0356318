"""The support export "with an option that leaves out names and contact details" (SPEC.md): with
it on, nothing that identifies the patient is anywhere in the output, including the texts staff
typed (reasons for a deletion, a removed line, a refund, a cancellation, an adjustment) and any
name the clinic gave a package. Searched for with values no other text contains."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.urls import reverse

from tally.clinic.actions import billing, catalog, sales, visits
from tally.clinic.investigator.service import apply_fix
from tally.clinic.models import Staff

NY = dt.timezone(dt.timedelta(hours=-5))
# Everything that identifies Quilla Zqxwv, as it may appear in a text someone typed.
# (No bare digits: a timestamp's microseconds could hold any four of them.)
IDENTIFYING = ["zqxwv", "quilla", "555-0199", "1971-09-13", "13 sep 1971", "13/09/1971", "xq-mail.example"]


@pytest.fixture
def quilla(desk, clinic):
    return catalog.do_create_patient(acting_user=desk, first_name="Quilla", last_name="Zqxwv",
                                     date_of_birth=dt.date(1971, 9, 13), email="quilla.zqxwv@xq-mail.example",
                                     phone="+1 212-555-0199")


@pytest.fixture
def typed_history(desk, owner, quilla, acu60, ten_pack):
    """A history in which staff typed the patient's name and number into every free text."""
    at = lambda month, day, hour=10: dt.datetime(2026, month, day, hour, tzinfo=NY)  # noqa: E731
    pack, sale = sales.do_sell_package(acting_user=desk, patient=quilla, package=ten_pack, use_first_session=False,
                                       sold_at=at(3, 1, 9), payment=(Decimal("800.00"), "card"))
    seen = visits.do_book(acting_user=desk, patient=quilla, service=acu60, starts_at=at(3, 4))
    _, invoice, line = visits.do_check_in(acting_user=desk, appointment=seen)
    billing.do_remove_line(acting_user=desk, invoice=invoice, line_id=line.pk,
                           reason="Quilla Zqxwv says she was not treated")
    gone = visits.do_book(acting_user=desk, patient=quilla, service=acu60, starts_at=at(3, 11))
    # Deleted by an owner who shares her surname: the investigator names who removed a tombstone.
    relative = Staff.objects.create_user("rz", password="correct horse battery staple", role="owner",
                                         first_name="Rosa", last_name="Zqxwv")
    visits.do_delete_appointment(acting_user=relative, appointment=gone,
                                 reason="Zqxwv called from 212-555-0199 to say it was a duplicate")
    sales.do_adjust(acting_user=owner, patient_package=pack, change=-1,
                    reason="paper card of Ms Zqxwv (born 13 Sep 1971)")
    # A package the clinic made for her alone, cancelled with a refund whose reason names her.
    own = catalog.do_create_package(acting_user=owner, name="Zqxwv family pack", price=Decimal("100.00"),
                                    sessions=2, service_ids=[acu60.pk])
    family, _ = sales.do_sell_package(acting_user=desk, patient=quilla, package=own, use_first_session=False,
                                      sold_at=at(3, 20, 9), payment=(Decimal("100.00"), "card"))
    sales.do_cancel_package(acting_user=desk, patient_package=family, reason="Quilla moved; email xq-mail.example",
                            refund=(Decimal("-100.00"), "card"))
    # An owner's override, whose reason is kept on the ledger.
    other = visits.do_book(acting_user=desk, patient=quilla, service=acu60, starts_at=at(2, 20))
    _, _, early = visits.do_check_in(acting_user=desk, appointment=other)
    apply_fix(acting_user=owner, action="apply_to_line", context=pack,
              params={"line_id": early.pk, "override": True, "reason": "paid in cash on 13/09/1971, her birthday"})
    return pack, sale


def leaks(text: str) -> list[str]:
    return [value for value in IDENTIFYING if value in text.lower()]


def test_the_history_does_quote_what_staff_typed_when_names_are_kept(desk_client, quilla, typed_history):
    full = desk_client.get(reverse("staff:export_json", args=[quilla.pk])).content.decode()
    assert "Zqxwv called from 212-555-0199" in full  # the scenario puts them where an export would show them
    assert "paper card of Ms Zqxwv" in full


def test_the_anonymous_json_export_leaves_out_every_identifying_text(desk_client, quilla, typed_history):
    response = desk_client.get(reverse("staff:export_json", args=[quilla.pk]), {"anonymous": "1"})
    text = response.content.decode()
    assert leaks(text) == []
    data = json.loads(text)
    assert data["patient"] == {"patient_number": quilla.patient_number}
    # What support needs to reason about the count is still there.
    codes = {f["code"] for p in data["packages"] for f in p["findings"]} | {f["code"] for f in data["findings"]}
    assert "APPOINTMENT_DELETED" in codes
    kinds = {e["kind"] for p in data["packages"] for e in p["timeline"]}
    assert {"visit", "invoice", "line", "payment", "ledger", "tombstone"} <= kinds


def test_the_anonymous_printable_export_leaves_out_every_identifying_text(desk_client, quilla, typed_history):
    page = desk_client.get(reverse("staff:export_print", args=[quilla.pk]), {"anonymous": "1"})
    text = page.content.decode()
    assert page.status_code == 200
    assert quilla.patient_number in text
    assert leaks(text) == []


def test_tally_investigate_anonymous_leaves_out_every_identifying_text(quilla, typed_history):
    for extra in ([], ["--json"]):
        out = io.StringIO()
        call_command("investigate", quilla.patient_number, "--anonymous", *extra, stdout=out)
        assert leaks(out.getvalue()) == [], extra


def test_the_anonymous_export_says_where_a_text_was_left_out(desk_client, quilla, typed_history):
    data = desk_client.get(reverse("staff:export_json", args=[quilla.pk]), {"anonymous": "1"}).json()
    deleted = [f for p in data["packages"] for f in p["findings"] if f["code"] == "APPOINTMENT_DELETED"]
    assert deleted and all(re.search(r"\d+ Mar 2026", f["message"]) for f in deleted)
    tombstones = [e for e in data["packages"][0]["timeline"] if e["kind"] == "tombstone"]
    assert tombstones and all(e["reason"] == "[left out]" for e in tombstones)


def test_the_printable_export_says_why_a_visit_was_not_counted_in_words(desk_client, quilla, typed_history):
    text = desk_client.get(reverse("staff:export_print", args=[quilla.pk])).content.decode()
    assert "not counted (no service charged)" in text
    assert "NOT_INVOICED)" not in text and "APPOINTMENT_DELETED)" not in text


def test_leaving_out_a_name_that_is_also_a_word_of_the_export_keeps_its_codes(desk, desk_client, acu60, ten_pack):
    odd = catalog.do_create_patient(acting_user=desk, first_name="Active", last_name="Visit")
    sales.do_sell_package(acting_user=desk, patient=odd, package=ten_pack, use_first_session=False,
                          sold_at=dt.datetime(2026, 3, 1, 9, tzinfo=NY), payment=(Decimal("800.00"), "card"))
    appointment = visits.do_book(acting_user=desk, patient=odd, service=acu60,
                                 starts_at=dt.datetime(2026, 3, 4, 10, tzinfo=NY))
    visits.do_check_in(acting_user=desk, appointment=appointment)
    data = desk_client.get(reverse("staff:export_json", args=[odd.pk]), {"anonymous": "1"}).json()
    (package,) = data["packages"]
    assert package["summary"]["status"] == "active"
    assert [e["kind"] for e in package["timeline"]].count("visit") == 1
