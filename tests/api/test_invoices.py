"""Manual invoices, lines, payments and refunds, voids, and a patient's invoice list."""

import datetime as dt
from decimal import Decimal

import pytest

from tally.clinic.actions import billing, sales, visits
from tally.clinic.audit import AUDIT_APPEND_QUERIES
from tally.clinic.consistency import verify_database
from tally.clinic.models import Invoice

from .conftest import assert_error


@pytest.fixture
def invoice(desk, patient, acu60):
    return billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(acu60, None)],
                                     issued_at=dt.datetime(2026, 3, 4, 15, tzinfo=dt.UTC))


def test_the_front_desk_makes_a_manual_invoice(desk_api, patient, acu60, acu90):
    response = desk_api.post("/invoices", {"patient_id": patient.pk, "issued_at": "2026-03-04",
                                           "lines": [{"service_id": acu60.pk}, {"service_id": acu90.pk}]})
    assert response.status_code == 201
    body = response.json()
    assert body["number"] == f"INV-{body['id']:06d}"
    assert body["total"] == "225.00" and body["status"] == "unpaid"
    assert body["issued_at"] == "2026-03-04T00:00:00-05:00"
    assert [ln["list_price"] for ln in body["lines"]] == ["95.00", "130.00"]


def test_a_manual_invoice_line_uses_a_session(desk_api, desk, patient, ten_pack, acu60):
    pp, _ = sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False,
                                  payment=(Decimal("800"), "card"))
    body = desk_api.post("/invoices", {"patient_id": patient.pk, "lines": [{"service_id": acu60.pk}]}).json()
    assert body["lines"][0]["covered_by"] == pp.pk and body["total"] == "0.00"


@pytest.mark.parametrize("change, field", [({"patient_id": 999}, "patient_id"),
                                           ({"lines": [{"service_id": 999}]}, "lines.0.service_id"),
                                           ({"issued_at": "2026-02-30"}, "issued_at"),
                                           ({"lines": "no"}, "lines")])
def test_it_refuses_a_bad_manual_invoice(desk_api, patient, acu60, change, field):
    body = {"patient_id": patient.pk, "lines": [{"service_id": acu60.pk}]} | change
    assert_error(desk_api.post("/invoices", body), 422, "validation_error", field)


def test_it_refuses_a_manual_invoice_without_lines(desk_api, patient):
    """Found by the Schemathesis run: `"lines": []` wrote an invoice with no line at all,
    which `tally verify` reports as half-written."""
    assert_error(desk_api.post("/invoices", {"patient_id": patient.pk, "lines": []}), 422, "validation_error", "lines")
    assert not Invoice.objects.exists()
    assert verify_database() == []


def test_it_refuses_invoicing_by_a_practitioner(practitioner_api, patient, acu60):
    response = practitioner_api.post("/invoices", {"patient_id": patient.pk, "lines": [{"service_id": acu60.pk}]})
    assert_error(response, 403, "forbidden")


def test_a_practitioner_reads_an_invoice(practitioner_api, invoice):
    assert practitioner_api.get(f"/invoices/{invoice.pk}").json()["total"] == "95.00"


def test_an_unknown_invoice_is_404(desk_api):
    assert_error(desk_api.get("/invoices/999"), 404, "not_found")
    assert_error(desk_api.post("/invoices/999/payments", {"amount": "1", "method": "cash"}), 404, "not_found")


def test_adding_and_removing_a_line(desk_api, invoice, acu90):
    response = desk_api.post(f"/invoices/{invoice.pk}/lines", {"service_id": acu90.pk})
    assert response.status_code == 201 and response.json()["amount"] == "130.00"
    line_id = response.json()["id"]
    assert desk_api.delete(f"/invoices/{invoice.pk}/lines/{line_id}").status_code == 204
    assert [ln["id"] for ln in desk_api.get(f"/invoices/{invoice.pk}").json()["lines"]] != [line_id]
    assert desk_api.get(f"/invoices/{invoice.pk}").json()["total"] == "95.00"


def test_removing_an_unknown_line_is_404(desk_api, invoice):
    assert_error(desk_api.delete(f"/invoices/{invoice.pk}/lines/999"), 404, "not_found")


def test_a_payment_is_recorded(desk_api, invoice):
    response = desk_api.post(f"/invoices/{invoice.pk}/payments", {"amount": 50, "method": "cash"})
    assert response.status_code == 201
    assert response.json()["amount"] == "50.00" and response.json()["invoice_id"] == invoice.pk
    assert desk_api.get(f"/invoices/{invoice.pk}").json()["status"] == "partially_paid"


def test_paying_more_than_the_balance_is_refused(desk_api, invoice):
    assert_error(desk_api.post(f"/invoices/{invoice.pk}/payments", {"amount": "95.01", "method": "cash"}), 422,
                 "validation_error", "amount")


def test_a_refund_needs_a_reason(desk_api, desk, invoice):
    billing.do_record_payment(acting_user=desk, invoice=invoice, amount=Decimal("95"), method="cash")
    assert_error(desk_api.post(f"/invoices/{invoice.pk}/payments", {"amount": "-10", "method": "cash"}), 422,
                 "validation_error", "reason")
    response = desk_api.post(f"/invoices/{invoice.pk}/payments", {"amount": "-10", "method": "cash",
                                                                  "reason": "goodwill"})
    assert response.status_code == 201 and response.json()["amount"] == "-10.00"


def test_a_line_that_takes_a_removed_lines_session_says_which_and_how_many_are_left(desk_api, desk, patient,
                                                                                    ten_pack, acu60):
    pp, _ = sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False,
                                  payment=(Decimal("800"), "card"))
    invoice = desk_api.post("/invoices", {"patient_id": patient.pk, "lines": [{"service_id": acu60.pk}] * 3}).json()
    assert [(ln["session_number"], ln["sessions_left"]) for ln in invoice["lines"]] == [(1, 9), (2, 8), (3, 7)]
    assert desk_api.delete(f"/invoices/{invoice['id']}/lines/{invoice['lines'][1]['id']}").status_code == 204
    line = desk_api.post(f"/invoices/{invoice['id']}/lines", {"service_id": acu60.pk}).json()
    assert (line["covered_by"], line["session_number"], line["sessions_left"]) == (pp.pk, 2, 7)


def test_a_plain_refund_on_an_active_packages_sale_is_a_conflict_saying_to_cancel_it(desk_api, desk, patient,
                                                                                     ten_pack):
    """Rules 1 and 11: the package would stay active while its sale is no longer paid."""
    pp, sale = sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False,
                                     payment=(Decimal("800"), "card"))
    error = assert_error(desk_api.post(f"/invoices/{sale.pk}/payments", {"amount": "-800.00", "method": "card",
                                                                        "reason": "moving away"}), 409, "conflict")
    assert "cancel it with a refund" in error["message"]
    assert desk_api.get(f"/invoices/{sale.pk}").json()["paid"] == "800.00"
    assert desk_api.get(f"/patient-packages/{pp.pk}").json()["status"] == "active"


def test_a_line_that_would_unpay_an_active_packages_sale_is_a_conflict_saying_to_use_a_new_invoice(
        desk_api, desk, patient, ten_pack, acu60, acu90):
    """Rule 1 after activation: the package would stay active while its sale has a balance."""
    pp, sale = sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False,
                                     payment=(Decimal("800"), "card"))
    error = assert_error(desk_api.post(f"/invoices/{sale.pk}/lines", {"service_id": acu90.pk}), 409, "conflict",
                         "service_id")
    assert sale.number in error["message"] and "Charge it on a new invoice" in error["message"]
    body = desk_api.get(f"/invoices/{sale.pk}").json()
    assert (body["balance"], len(body["lines"])) == ("0.00", 1)
    covered = desk_api.post(f"/invoices/{sale.pk}/lines", {"service_id": acu60.pk})  # costs nothing: fine
    assert covered.status_code == 201 and covered.json()["covered_by"] == pp.pk
    assert desk_api.get(f"/patient-packages/{pp.pk}").json()["status"] == "active"


def test_charging_a_no_show_whose_session_the_policy_used_is_a_conflict(owner_api, desk_api, desk, patient,
                                                                          ten_pack, acu60):
    """Rules 2 and 13: one visit, one session. The no-show used it; a line naming the visit would
    use a second: 409, saying to undo the no-show first."""
    pp, _ = sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False,
                                  sold_at=dt.datetime(2026, 3, 1, 15, tzinfo=dt.UTC), payment=(Decimal("800"), "card"))
    owner_api.patch("/clinic", {"no_show_uses_session": True})
    visit = visits.do_book(acting_user=desk, patient=patient, service=acu60,
                           starts_at=dt.datetime(2026, 3, 4, 15, tzinfo=dt.UTC))
    assert desk_api.post(f"/appointments/{visit.pk}/no-show").status_code == 200
    line = {"service_id": acu60.pk, "appointment_id": visit.pk}
    error = assert_error(desk_api.post("/invoices", {"patient_id": patient.pk, "lines": [line]}), 409, "conflict",
                         "appointment_id")
    assert "undo the no-show" in error["message"]
    invoice = desk_api.post("/invoices", {"patient_id": patient.pk, "lines": [{"service_id": acu60.pk}]}).json()
    assert_error(desk_api.post(f"/invoices/{invoice['id']}/lines", line), 409, "conflict", "appointment_id")
    assert desk_api.get(f"/patient-packages/{pp.pk}").json()["sessions_used"] == 2  # the no-show's, the plain line's
    assert verify_database() == []


@pytest.mark.parametrize("amount", ["NaN", "-Infinity", "0.001", None, [], "1e999999"])
def test_it_refuses_bad_amounts(desk_api, invoice, amount):
    assert_error(desk_api.post(f"/invoices/{invoice.pk}/payments", {"amount": amount, "method": "cash"}), 422,
                 "validation_error", "amount")


def test_a_repeated_payment_with_the_same_key_is_recorded_once(desk_api, invoice):
    path = f"/invoices/{invoice.pk}/payments"
    first = desk_api.post(path, {"amount": "20", "method": "cash"}, key="pay-1")
    again = desk_api.post(path, {"method": "cash", "amount": "20"}, key="pay-1")
    assert first.status_code == again.status_code == 201 and again.json() == first.json()
    assert desk_api.get(f"/invoices/{invoice.pk}").json()["paid"] == "20.00"
    assert_error(desk_api.post(path, {"amount": "21", "method": "cash"}, key="pay-1"), 409, "idempotency_conflict")


def test_the_same_key_on_another_path_is_an_idempotency_conflict(desk_api, invoice, patient):
    desk_api.post(f"/invoices/{invoice.pk}/payments", {"amount": "20", "method": "cash"}, key="k")
    response = desk_api.post("/patients", {"first_name": "A", "last_name": "B"}, key="k")
    assert_error(response, 409, "idempotency_conflict")


def test_voiding_gives_sessions_back(desk_api, desk, patient, ten_pack, acu60):
    pp, _ = sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False,
                                  payment=(Decimal("800"), "card"))
    invoice = billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(acu60, None)])
    response = desk_api.post(f"/invoices/{invoice.pk}/void", {"reason": "wrong patient"})
    assert response.status_code == 200 and response.json()["status"] == "void"
    assert desk_api.get(f"/patient-packages/{pp.pk}").json()["sessions_used"] == 0


def test_voiding_needs_a_reason_and_happens_once(desk_api, invoice):
    assert_error(desk_api.post(f"/invoices/{invoice.pk}/void", {}), 422, "validation_error", "reason")
    desk_api.post(f"/invoices/{invoice.pk}/void", {"reason": "x"})
    assert_error(desk_api.post(f"/invoices/{invoice.pk}/void", {"reason": "x"}), 409, "conflict")


def test_a_patients_invoices_filter_by_status_and_period(desk_api, desk, patient, acu60, invoice):
    paid = billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(acu60, None)],
                                     issued_at=dt.datetime(2026, 4, 1, 15, tzinfo=dt.UTC))
    billing.do_record_payment(acting_user=desk, invoice=paid, amount=Decimal("95"), method="cash")
    path = f"/patients/{patient.pk}/invoices"
    assert [i["id"] for i in desk_api.get(path).json()["items"]] == [invoice.pk, paid.pk]
    assert [i["id"] for i in desk_api.get(path, status="paid").json()["items"]] == [paid.pk]
    assert [i["id"] for i in desk_api.get(path, status="unpaid").json()["items"]] == [invoice.pk]
    assert desk_api.get(path, status="partially_paid").json()["items"] == []
    assert [i["id"] for i in desk_api.get(path, **{"from": "2026-03-05"}).json()["items"]] == [paid.pk]
    assert [i["id"] for i in desk_api.get(path, to="2026-03-04").json()["items"]] == [invoice.pk]
    assert_error(desk_api.get("/patients/999/invoices"), 404, "not_found")


def test_the_status_filter_agrees_with_each_invoices_status_to_the_cent(desk_api, desk, owner, patient, acu60):
    """95.00 + 49.90 + 59.95 summed as binary floats (SQLite's SUM) is 204.85000000000002: a
    fully paid invoice must still be listed as paid, and one cent short as partially paid."""
    from tally.clinic.actions import catalog

    others = [catalog.do_create_service(acting_user=owner, name=name, duration_minutes=30, price=Decimal(price))
              for name, price in (("Cupping", "49.90"), ("Moxa", "59.95"))]
    lines = [(acu60, None), *((service, None) for service in others)]
    paid = billing.do_create_invoice(acting_user=desk, patient=patient, lines=lines)
    short = billing.do_create_invoice(acting_user=desk, patient=patient, lines=lines)
    for payment in ("100.00", "104.85"):
        billing.do_record_payment(acting_user=desk, invoice=paid, amount=Decimal(payment), method="card")
    billing.do_record_payment(acting_user=desk, invoice=short, amount=Decimal("204.84"), method="card")
    path = f"/patients/{patient.pk}/invoices"
    shown = {i["id"]: i["status"] for i in desk_api.get(path).json()["items"]}
    assert shown == {paid.pk: "paid", short.pk: "partially_paid"}
    for status in ("paid", "partially_paid", "unpaid"):
        listed = [i["id"] for i in desk_api.get(path, status=status).json()["items"]]
        assert listed == [pk for pk, s in shown.items() if s == status], status


def test_a_patients_invoices_take_a_fixed_number_of_queries(desk_api, desk, patient, acu60,
                                                            django_assert_max_num_queries):
    for _ in range(6):
        inv = billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(acu60, None), (acu60, None)])
        billing.do_record_payment(acting_user=desk, invoice=inv, amount=Decimal("10"), method="cash")
    # + the read's audit append, a constant (lock on PostgreSQL, last hash, one INSERT).
    with django_assert_max_num_queries(6 + AUDIT_APPEND_QUERIES):
        body = desk_api.get(f"/patients/{patient.pk}/invoices").json()
    assert len(body["items"]) == 6 and all(len(i["payments"]) == 1 for i in body["items"])


def test_invoice_pages_follow_the_cursor(desk_api, desk, patient, acu60):
    ids = [billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(acu60, None)]).pk for _ in range(5)]
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = desk_api.get(f"/patients/{patient.pk}/invoices", **params).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == ids


def test_checking_in_onto_an_existing_invoice(desk_api, desk, patient, acu60, invoice):
    visit = visits.do_book(acting_user=desk, patient=patient, service=acu60,
                           starts_at=dt.datetime(2026, 3, 4, 15, tzinfo=dt.UTC))
    body = desk_api.post(f"/appointments/{visit.pk}/check-in", {"invoice_id": invoice.pk}).json()
    assert body["invoice"]["id"] == invoice.pk and len(body["invoice"]["lines"]) == 2
