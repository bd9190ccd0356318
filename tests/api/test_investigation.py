"""The investigator through the API: every finding code from a history built with the API,
every fix posted as the finding gives it, and the finding gone afterwards."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tally.clinic.models import ClinicAuditSnapshot, PackageLedgerEntry

from .conftest import assert_error


class Desk:
    """Builds one patient's history through the API, on clinic-local days of March 2026."""

    def __init__(self, api, owner_api, patient, acu60, acu90, ten_pack):
        self.api, self.owner_api = api, owner_api
        self.patient, self.acu60, self.acu90, self.ten_pack = patient.pk, acu60.pk, acu90.pk, ten_pack.pk

    def ok(self, response, status=200):
        assert response.status_code == status, response.content
        return response.json()

    def sell(self, day, *, first=False, paid="800.00", package=None, hour="09:00"):
        body = {"package_id": package or self.ten_pack, "use_first_session": first,
                "sold_at": f"2026-03-{day:02d}T{hour}:00"}
        if paid:
            body["payment"] = {"amount": paid, "method": "card"}
        sale = self.ok(self.api.post(f"/patients/{self.patient}/packages", body), 201)
        return sale["patient_package"]["id"], sale["invoice"]["id"]

    def book(self, day, service=None):
        return self.ok(self.api.post("/appointments", {"patient_id": self.patient, "service_id": service or self.acu60,
                                                       "starts_at": f"2026-03-{day:02d}T10:00:00"}), 201)["id"]

    def visit(self, day, **check_in):
        appointment = self.book(day)
        result = self.ok(self.api.post(f"/appointments/{appointment}/check-in", check_in))
        return appointment, result

    def investigate(self, package_id, **params):
        return self.ok(self.api.get(f"/patient-packages/{package_id}/investigation", **params))


@pytest.fixture
def desk_history(desk_api, owner_api, patient, acu60, acu90, ten_pack):
    return Desk(desk_api, owner_api, patient, acu60, acu90, ten_pack)


def codes(investigation):
    return [f["code"] for f in investigation["findings"]]


def the(investigation, code):
    found = [f for f in investigation["findings"] if f["code"] == code]
    assert len(found) == 1, codes(investigation)
    return found[0]


def fixed(h, package_id, finding, api=None):
    """Post the finding's fix as it is; it applies, a repeat changes nothing, the finding is gone."""
    api = api or h.api
    first = h.ok(api.post(f"/patient-packages/{package_id}/fixes", finding["fix"]))
    assert first["applied"] is True
    again = h.ok(api.post(f"/patient-packages/{package_id}/fixes", finding["fix"]))
    assert again["applied"] is False
    assert finding["code"] not in codes(first["investigation"])
    return first


def test_first_session_not_used_and_its_fix(desk_history):
    h = desk_history
    h.visit(4)
    package, _ = h.sell(4, hour="15:00")
    finding = the(h.investigate(package), "FIRST_SESSION_NOT_USED")
    result = fixed(h, package, finding)
    assert result["investigation"]["summary"]["sessions_used"] == 1
    assert result["ledger_entry"]["kind"] == "use"


def test_not_checked_in_and_its_fix(desk_history):
    h = desk_history
    package, _ = h.sell(1)
    h.book(5)
    finding = the(h.investigate(package), "NOT_CHECKED_IN")
    assert finding["severity"] == "warning"
    assert fixed(h, package, finding)["investigation"]["summary"]["sessions_used"] == 1


def test_no_charges_and_its_fix(desk_history):
    h = desk_history
    package, _ = h.sell(1)
    h.visit(5, no_charges=True)
    assert fixed(h, package, the(h.investigate(package), "NO_CHARGES"))["investigation"]["summary"]["sessions_used"] == 1


def test_not_invoiced_and_its_fix(desk_history):
    h = desk_history
    package, _ = h.sell(1)
    _, charged = h.visit(5)
    assert h.api.delete(f"/invoices/{charged['invoice']['id']}/lines/{charged['line']['id']}").status_code == 204
    assert fixed(h, package, the(h.investigate(package), "NOT_INVOICED"))["investigation"]["summary"]["sessions_used"] == 1


def test_appointment_deleted_and_its_fix(desk_history):
    h = desk_history
    package, _ = h.sell(1)
    appointment = h.book(5)
    assert h.owner_api.delete(f"/appointments/{appointment}", reason="double booking").status_code == 204
    finding = the(h.investigate(package), "APPOINTMENT_DELETED")
    assert finding["tombstone_id"] is not None
    fixed(h, package, finding)
    timeline = h.investigate(package)["timeline"]
    assert any(e["kind"] == "tombstone" for e in timeline)  # the tombstone stays as history


def test_schedule_gap_is_info_until_the_count_is_disputed(desk_history):
    h = desk_history
    package, _ = h.sell(1)
    for day in (2, 3, 4, 5, 27):
        h.visit(day)
    finding = the(h.investigate(package), "SCHEDULE_GAP")
    assert finding["severity"] == "info" and finding["fix"] is None
    disputed = h.investigate(package, expected_used=7)
    assert the(disputed, "SCHEDULE_GAP")["severity"] == "warning"
    assert disputed["summary"]["difference"] == 2


def test_service_not_in_package_and_its_fix(desk_history):
    h = desk_history
    package, _ = h.sell(1)
    h.visit(5, service_id=h.acu90)
    finding = the(h.investigate(package), "SERVICE_NOT_IN_PACKAGE")
    assert finding["fix"]["params"]["service_id"] == h.acu60
    fixed(h, package, finding)


def test_package_not_paid_and_its_fix(desk_history):
    h = desk_history
    package, sale = h.sell(1, paid="300.00")
    h.visit(5)
    h.ok(h.api.post(f"/invoices/{sale}/payments", {"amount": "500.00", "method": "card",
                                                   "received_at": "2026-03-06T12:00:00"}), 201)
    finding = the(h.investigate(package), "PACKAGE_NOT_PAID")
    assert "$300.00 of $800.00" in finding["message"]
    fixed(h, package, finding)


def test_a_fix_never_applies_a_package_to_a_paid_invoice(desk_history):
    h = desk_history
    package, sale = h.sell(1, paid="300.00")
    _, charged = h.visit(5)
    h.ok(h.api.post(f"/invoices/{charged['invoice']['id']}/payments", {"amount": "95.00", "method": "card"}), 201)
    h.ok(h.api.post(f"/invoices/{sale}/payments", {"amount": "500.00", "method": "card"}), 201)
    finding = the(h.investigate(package), "PACKAGE_NOT_PAID")
    # The finding offers no fix that would be refused; it says to refund first.
    assert finding["fix"] is None and "refund that payment first" in finding["message"]
    fix = {"action": "apply_to_line", "params": {"line_id": finding["line_id"]}}
    assert_error(h.api.post(f"/patient-packages/{package}/fixes", fix), 409, "conflict")


@pytest.mark.parametrize("code", ["CHARGED_BEFORE_PURCHASE", "COVERED_BY_OTHER_PACKAGE", "PACKAGE_EXHAUSTED",
                                  "PACKAGE_EXPIRED", "PACKAGE_CANCELLED"])
def test_rules_working_as_designed_are_info_without_a_fix(desk_history, owner_api, code):
    h = desk_history
    if code == "CHARGED_BEFORE_PURCHASE":
        package, _ = h.sell(10)
        h.ok(h.api.post("/invoices", {"patient_id": h.patient, "issued_at": "2026-03-05",
                                      "lines": [{"service_id": h.acu60}]}), 201)
    elif code == "COVERED_BY_OTHER_PACKAGE":
        h.sell(1)
        package, _ = h.sell(2)
        h.visit(5)
    elif code == "PACKAGE_EXHAUSTED":
        single = h.ok(owner_api.post("/packages", {"name": "Single", "price": "90.00", "sessions": 1,
                                                   "service_ids": [h.acu60]}), 201)["id"]
        package, _ = h.sell(1, package=single, paid="90.00")
        h.visit(2)
        h.visit(3)
    elif code == "PACKAGE_EXPIRED":
        weekly = h.ok(owner_api.post("/packages", {"name": "Week", "price": "90.00", "sessions": 3, "valid_days": 7,
                                                   "service_ids": [h.acu60]}), 201)["id"]
        package, _ = h.sell(1, package=weekly, paid="90.00")
        h.visit(9)
    else:
        package, _ = h.sell(1)
        h.ok(h.api.post(f"/patient-packages/{package}/cancel", {"reason": "moving away"}))
        h.visit(5)
    finding = the(h.investigate(package), code)
    assert finding["severity"] == "info"
    assert finding["fix"] is None


def test_an_owner_may_override_a_rule_working_as_designed(desk_history, owner_api):
    h = desk_history
    package, _ = h.sell(10)
    invoice = h.ok(h.api.post("/invoices", {"patient_id": h.patient, "issued_at": "2026-03-05",
                                            "lines": [{"service_id": h.acu60}]}), 201)
    finding = the(h.investigate(package), "CHARGED_BEFORE_PURCHASE")
    override = {"action": "apply_to_line", "params": {"line_id": finding["line_id"], "override": True,
                                                      "reason": "patient bought the package that morning"}}
    assert_error(h.api.post(f"/patient-packages/{package}/fixes", override), 403, "forbidden")
    result = h.ok(owner_api.post(f"/patient-packages/{package}/fixes", override))
    assert result["applied"] is True
    assert result["investigation"]["summary"]["sessions_used"] == 1
    line = h.ok(h.api.get(f"/invoices/{invoice['id']}"))["lines"][0]
    assert line["covered_by"] == package and line["amount"] == "0.00"


def test_possible_double_use_is_a_warning(desk_history):
    h = desk_history
    package, _ = h.sell(1)
    appointment, charged = h.visit(5)
    lines = f"/invoices/{charged['invoice']['id']}/lines"
    # One visit, one session: a second charge naming the counted visit is refused; one that names
    # no visit is charged, and two sessions on one day are the finding.
    assert h.api.post(lines, {"service_id": h.acu60, "appointment_id": appointment}).status_code == 409
    h.ok(h.api.post(lines, {"service_id": h.acu60}), 201)
    finding = the(h.investigate(package, expected_used=1), "POSSIBLE_DOUBLE_USE")
    assert finding["severity"] == "warning"
    assert codes(h.investigate(package, expected_used=1))[0] == "POSSIBLE_DOUBLE_USE"


def test_a_corrupted_count_is_a_ledger_mismatch_error(desk_history):
    h = desk_history
    package, _ = h.sell(1)
    h.visit(5)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE clinic_patientpackage SET sessions_used = 4 WHERE id = %s", [package])
    finding = the(h.investigate(package), "LEDGER_MISMATCH")
    assert finding["severity"] == "error"


def test_the_owner_adjusts_within_bounds_only(desk_history, owner_api):
    h = desk_history
    package, _ = h.sell(1)
    adjust = {"action": "adjust", "params": {"change": -2, "reason": "two paper-chart visits"}}
    assert_error(h.api.post(f"/patient-packages/{package}/fixes", adjust), 403, "forbidden")
    result = h.ok(owner_api.post(f"/patient-packages/{package}/fixes", adjust))
    assert result["investigation"]["summary"]["sessions_used"] == 2
    assert result["ledger_entry"]["kind"] == "adjustment"
    too_far = {"action": "adjust", "params": {"change": 9, "reason": "oops"}}
    assert_error(owner_api.post(f"/patient-packages/{package}/fixes", too_far), 422, "validation_error")


def test_an_adjustment_naming_the_count_it_saw_is_made_once(desk_history, owner_api):
    """SPEC: a fix is idempotent. With `sessions_used` (the count the owner looked at), the same
    adjustment posted again (a resend without its Idempotency-Key, a second click) changes
    nothing; a count that moved another way since is a 409, not an adjustment on top of it."""
    h = desk_history
    package, _ = h.sell(1)
    url = f"/patient-packages/{package}/fixes"
    adjust = {"action": "adjust", "params": {"change": -2, "reason": "two paper-chart visits", "sessions_used": 0}}
    first = h.ok(owner_api.post(url, adjust))
    assert first["applied"] is True and first["investigation"]["summary"]["sessions_used"] == 2
    again = h.ok(owner_api.post(url, adjust))
    assert again["applied"] is False and again["investigation"]["summary"]["sessions_used"] == 2
    assert again["ledger_entry"]["id"] == first["ledger_entry"]["id"]
    assert PackageLedgerEntry.objects.filter(patient_package_id=package, kind="adjustment").count() == 1

    h.visit(5)  # the count moves: 3 used
    stale = {"action": "adjust", "params": {"change": 1, "reason": "one visit was a consult", "sessions_used": 2}}
    assert_error(owner_api.post(url, stale), 409, "conflict")
    same_change_other_reason = {"action": "adjust", "params": {"change": -2, "reason": "other", "sessions_used": 0}}
    assert_error(owner_api.post(url, same_change_other_reason), 409, "conflict")
    fresh = {"action": "adjust", "params": {"change": 1, "reason": "one visit was a consult", "sessions_used": 3}}
    assert h.ok(owner_api.post(url, fresh))["investigation"]["summary"]["sessions_used"] == 2
    bad = {"action": "adjust", "params": {"change": 1, "reason": "x", "sessions_used": "three"}}
    assert_error(owner_api.post(url, bad), 422, "validation_error")


def test_visit_findings_with_no_package_are_fixed_on_the_patient(desk_history):
    h = desk_history
    h.visit(5, no_charges=True)
    patient = h.ok(h.api.get(f"/patients/{h.patient}/investigation"))
    assert patient["packages"] == []
    finding = patient["findings"][0]
    assert finding["code"] == "NO_CHARGES"
    result = h.ok(h.api.post(f"/patients/{h.patient}/fixes", finding["fix"]))
    assert result["applied"] is True and result["findings"] == []


def test_a_patient_fix_replaces_a_lines_service_only_by_an_eligible_one(desk_history, owner):
    """apply_to_line's service_id is "that eligible one" (API.md): a service none of the
    patient's packages includes is refused, and the line keeps its service and price."""
    from decimal import Decimal

    from tally.clinic.actions import catalog

    h = desk_history
    h.sell(1)
    cupping = catalog.do_create_service(acting_user=owner, name="Cupping", duration_minutes=30, price=Decimal("40"))
    _, charged = h.visit(5, service_id=h.acu90)
    fix = {"action": "apply_to_line", "params": {"line_id": charged["line"]["id"], "service_id": cupping.pk}}
    assert_error(h.api.post(f"/patients/{h.patient}/fixes", fix), 422, "validation_error", "params.service_id")
    line = h.ok(h.api.get(f"/invoices/{charged['invoice']['id']}"))["lines"][0]
    assert (line["service_id"], line["amount"]) == (h.acu90, "130.00")
    fix["params"]["service_id"] = h.acu60
    result = h.ok(h.api.post(f"/patients/{h.patient}/fixes", fix))
    assert result["applied"] is True


def test_a_fix_for_another_patients_line_is_not_found(desk_history, desk, acu60):
    from tally.clinic.actions import catalog

    h = desk_history
    package, _ = h.sell(1)
    other = catalog.do_create_patient(acting_user=desk, first_name="Ana", last_name="Silva")
    appointment = h.ok(h.api.post("/appointments", {"patient_id": other.pk, "service_id": acu60.pk,
                                                    "starts_at": "2026-03-05T10:00:00"}), 201)["id"]
    charged = h.ok(h.api.post(f"/appointments/{appointment}/check-in", {}))
    fix = {"action": "apply_to_line", "params": {"line_id": charged["line"]["id"]}}
    assert_error(h.api.post(f"/patient-packages/{package}/fixes", fix), 404, "not_found")


def test_bad_fix_bodies_are_422(desk_history):
    h = desk_history
    package, _ = h.sell(1)
    assert_error(h.api.post(f"/patient-packages/{package}/fixes", {"action": "teleport"}), 422, "validation_error")
    assert_error(h.api.post(f"/patient-packages/{package}/fixes", {"action": "apply_to_line"}), 422,
                 "validation_error")
    assert_error(h.api.post(f"/patient-packages/{package}/fixes",
                            {"action": "apply_to_line", "params": {"line_id": "x"}}), 422, "validation_error")
    for other_digits in ("²", "-²"):  # digits to str.isdigit(), no number to int(): was a 500
        assert_error(h.api.post(f"/patient-packages/{package}/fixes",
                                {"action": "apply_to_line", "params": {"line_id": other_digits}}), 422, "validation_error")
    assert_error(h.api.get(f"/patient-packages/{package}/investigation", expected_used=-1), 422, "validation_error")
    assert_error(h.api.get("/patient-packages/999999/investigation"), 404, "not_found")


def test_a_fix_refuses_a_parameter_its_action_does_not_take(desk_history):
    """A misspelt parameter (`service` for `service_id`) is a 422 naming it, as an unknown field
    of any body is: applied without it, the fix did something other than what was asked."""
    h = desk_history
    package, _ = h.sell(1)
    _, charged = h.visit(5, service_id=h.acu90)
    misspelt = {"action": "apply_to_line", "params": {"line_id": charged["line"]["id"], "service": h.acu60}}
    error = assert_error(h.api.post(f"/patient-packages/{package}/fixes", misspelt), 422, "validation_error",
                         "params.service")
    assert "service_id" in error["message"]
    line = h.ok(h.api.get(f"/invoices/{charged['invoice']['id']}"))["lines"][0]
    assert (line["service_id"], line["covered_by"]) == (h.acu90, None)
    for action, params in [("adjust", {"change": -1, "reason": "x", "line_id": 1}),
                           ("check_in_and_charge", {"appointment_id": 1, "tombstone_id": 1}),
                           ("recreate_from_tombstone", {"tombstone_id": 1, "reason": "x"})]:
        assert_error(h.api.post(f"/patient-packages/{package}/fixes", {"action": action, "params": params}), 422,
                     "validation_error")
        assert_error(h.api.post(f"/patients/{h.patient}/fixes", {"action": action, "params": params}), 422,
                     "validation_error")


def test_a_refused_fix_names_its_fields_where_the_request_has_them(desk_history, owner_api):
    """`fields` names a parameter as `params.<name>`, whichever check refused it (as for
    `params.line_id` "required"); `override` and `reason` sent beside `params` keep their names."""
    h = desk_history
    package, sale_invoice = h.sell(1)
    url = f"/patient-packages/{package}/fixes"
    assert_error(owner_api.post(url, {"action": "adjust", "params": {"change": 0, "reason": "x"}}), 422,
                 "validation_error", "params.change")
    assert_error(owner_api.post(url, {"action": "adjust", "params": {"change": -1, "reason": " "}}), 422,
                 "validation_error", "params.reason")
    sale_line = h.ok(h.api.get(f"/invoices/{sale_invoice}"))["lines"][0]["id"]
    assert_error(h.api.post(url, {"action": "apply_to_line", "params": {"line_id": sale_line}}), 422,
                 "validation_error", "params.line_id")
    _, charged = h.visit(5, service_id=h.acu90)
    override = {"action": "apply_to_line", "params": {"line_id": charged["line"]["id"]}, "override": True}
    assert_error(owner_api.post(url, override), 422, "validation_error", "reason")
    override_in_params = {"action": "apply_to_line",
                          "params": {"line_id": charged["line"]["id"], "override": True, "reason": ""}}
    assert_error(owner_api.post(url, override_in_params), 422, "validation_error", "params.reason")


def test_the_clinic_audit_lists_packages_with_findings_worst_first(desk_history, practitioner_api, anonymous):
    h = desk_history
    clean, _ = h.sell(1)
    h.visit(2)
    broken, _ = h.sell(3)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE clinic_patientpackage SET sessions_used = 5 WHERE id = %s", [broken])
    h.visit(6, no_charges=True)
    audit = h.ok(h.api.get("/audit/packages", min_severity="warning"))
    assert audit["scanned"] == 2
    assert audit["items"][0]["patient_package_id"] == broken
    assert audit["items"][0]["worst_severity"] == "error"
    page = h.ok(h.api.get("/audit/packages", limit=1))
    assert len(page["items"]) == 1 and page["next"]
    assert_error(practitioner_api.get("/audit/packages"), 403, "forbidden")
    assert_error(anonymous.get("/audit/packages"), 401, "unauthenticated")
    assert_error(h.api.get("/audit/packages", min_severity="loud"), 422, "validation_error")
    assert_error(h.api.get("/audit/packages", cursor="!!!"), 422, "validation_error")


def broken_packages(h, days=(1, 2, 3)):
    """Packages whose cached count disagrees with their ledger (LEDGER_MISMATCH, an error)."""
    packages = [h.sell(day)[0] for day in days]
    with connection.cursor() as cursor:
        cursor.execute("UPDATE clinic_patientpackage SET sessions_used = 5 WHERE id IN (%s, %s, %s)", packages)
    return packages


def test_the_clinic_audit_pages_through_one_run_so_a_fix_meanwhile_skips_nothing(desk_history):
    h = desk_history
    packages = broken_packages(h)
    first = h.ok(h.api.get("/audit/packages", min_severity="error", limit=1))
    assert first["scanned"] == 3 and first["as_of"][-6] in "+-"
    shown = [first["items"][0]["patient_package_id"]]
    # The package on the first page is repaired before the second page is asked for: with
    # offsets over a fresh run, the list would shift under the cursor and skip a package.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE clinic_patientpackage SET sessions_used = 0 WHERE id = %s", [shown[0]])
    cursor_ = first["next"]
    while cursor_:
        with CaptureQueriesContext(connection) as queries:
            page = h.ok(h.api.get("/audit/packages", min_severity="error", limit=1, cursor=cursor_))
        assert not [q for q in queries if "clinic_packageledgerentry" in q["sql"]], "a later page ran the audit again"
        assert page["as_of"] == first["as_of"] and page["scanned"] == 3
        shown += [item["patient_package_id"] for item in page["items"]]
        cursor_ = page["next"]
    assert sorted(shown) == sorted(packages)  # every package once: none skipped, none repeated
    fresh = h.ok(h.api.get("/audit/packages", min_severity="error"))  # no cursor: a new run
    assert {item["patient_package_id"] for item in fresh["items"]} == set(packages) - {shown[0]}
    assert fresh["as_of"] >= first["as_of"]


def test_an_audit_cursor_keeps_its_severity_and_expires(desk_history, settings):
    h = desk_history
    broken_packages(h)
    first = h.ok(h.api.get("/audit/packages", min_severity="error", limit=1))
    assert_error(h.api.get("/audit/packages", min_severity="info", cursor=first["next"]), 422, "validation_error",
                 "cursor")
    offset_cursor = base64.urlsafe_b64encode(b"o:1").decode().rstrip("=")  # an older release's cursor
    assert_error(h.api.get("/audit/packages", cursor=offset_cursor), 422, "validation_error", "cursor")
    huge = base64.urlsafe_b64encode(b"s:99999999999999999999:info:0").decode().rstrip("=")  # past a bigint
    assert_error(h.api.get("/audit/packages", cursor=huge), 422, "validation_error", "cursor")
    ClinicAuditSnapshot.objects.update(created_at=timezone.now() - dt.timedelta(hours=25))
    expired = assert_error(h.api.get("/audit/packages", min_severity="error", limit=1, cursor=first["next"]),
                           422, "validation_error", "cursor")
    assert expired["fields"]["cursor"] == "expired"
    # Taking a new run deletes the expired ones.
    h.ok(h.api.get("/audit/packages", min_severity="error", limit=1))
    assert ClinicAuditSnapshot.objects.count() == 1


def test_the_audit_log_is_owner_only_and_filters_by_patient(desk_history, owner_api, desk_api):
    h = desk_history
    h.sell(1)
    events = h.ok(owner_api.get("/audit-log", patient_id=h.patient))["items"]
    assert {"patient.create", "package.sell"} <= {e["action"] for e in events}
    assert all(e["patient_id"] == h.patient for e in events)
    assert_error(desk_api.get("/audit-log"), 403, "forbidden")
    assert h.ok(owner_api.get("/audit-log", **{"from": "2199-01-01"}))["items"] == []


def test_the_audit_log_of_an_unknown_patient_is_404(owner_api):
    assert_error(owner_api.get("/audit-log", patient_id=999999), 404, "not_found")


def test_a_practitioner_may_not_investigate_as_on_the_staff_site(desk_history, practitioner_api):
    """Investigations are the front desk's (SPEC, Who uses it); the staff site refuses them to a
    practitioner, whose chart is read-only and shows no tombstone. Over the API they read every
    deleted visit with the reason the owner typed, removed charges, refunds and adjustments."""
    h = desk_history
    package, _ = h.sell(1)
    appointment = h.book(5)
    assert h.owner_api.delete(f"/appointments/{appointment}", reason="patient asked: see safeguarding note").status_code == 204
    assert_error(practitioner_api.get(f"/patient-packages/{package}/investigation"), 403, "forbidden")
    assert_error(practitioner_api.get(f"/patients/{h.patient}/investigation"), 403, "forbidden")
    assert h.ok(h.api.get(f"/patients/{h.patient}/investigation"))["packages"]
