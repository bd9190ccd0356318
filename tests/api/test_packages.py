"""Selling packages, reading them and their ledger, cancelling, extending expiry."""

import datetime as dt
from decimal import Decimal

import pytest

from tally.clinic.actions import sales, visits
from tally.clinic.models import IdempotencyRecord, PatientPackage

from .conftest import assert_error


def sell(api, patient, package, **extra):
    body = {"package_id": package.pk, "use_first_session": False} | extra
    return api.post(f"/patients/{patient.pk}/packages", body)


def test_selling_a_paid_package_activates_it(desk_api, patient, ten_pack, acu60):
    response = sell(desk_api, patient, ten_pack, payment={"amount": "800.00", "method": "card"})
    assert response.status_code == 201
    body = response.json()
    pp = body["patient_package"]
    assert pp["status"] == "active"
    assert (pp["sessions_total"], pp["sessions_used"], pp["sessions_remaining"]) == (10, 0, 10)
    assert pp["eligible_service_ids"] == [acu60.pk]
    assert pp["sale_invoice_id"] == body["invoice"]["id"]
    assert body["invoice"]["status"] == "paid" and body["invoice"]["total"] == "800.00"
    assert pp["sold_at"].endswith("-05:00") or pp["sold_at"].endswith("-04:00")


def test_an_unpaid_sale_is_pending(desk_api, patient, ten_pack):
    body = sell(desk_api, patient, ten_pack).json()
    assert body["patient_package"]["status"] == "pending_payment"
    assert body["invoice"]["balance"] == "800.00"


def test_use_first_session_is_required_with_no_default(desk_api, patient, ten_pack):
    response = desk_api.post(f"/patients/{patient.pk}/packages", {"package_id": ten_pack.pk})
    assert_error(response, 422, "validation_error", "use_first_session")


def test_a_ticked_first_session_is_used_at_a_paid_sale(desk_api, patient, ten_pack):
    body = sell(desk_api, patient, ten_pack, use_first_session=True,
                payment={"amount": 800, "method": "card"}).json()
    assert body["patient_package"]["sessions_used"] == 1
    first = [ln for ln in body["invoice"]["lines"] if ln["kind"] == "first_session"][0]
    assert first["covered_by"] == body["patient_package"]["id"] and first["session_number"] == 1


def test_it_refuses_selling_to_an_unknown_patient(desk_api, ten_pack):
    assert_error(desk_api.post("/patients/999/packages", {"package_id": ten_pack.pk, "use_first_session": False}),
                 404, "not_found")


def test_it_refuses_selling_an_unknown_package(desk_api, patient):
    response = desk_api.post(f"/patients/{patient.pk}/packages", {"package_id": 999, "use_first_session": False})
    assert_error(response, 422, "validation_error", "package_id")


def test_it_refuses_selling_by_a_practitioner(practitioner_api, patient, ten_pack):
    assert_error(sell(practitioner_api, patient, ten_pack), 403, "forbidden")


def test_it_refuses_an_overpayment_at_the_sale(desk_api, patient, ten_pack):
    response = sell(desk_api, patient, ten_pack, payment={"amount": "900.00", "method": "card"})
    assert_error(response, 422, "validation_error", "payment.amount")


def test_a_repeated_sale_with_the_same_key_is_replayed_not_repeated(desk_api, patient, ten_pack):
    body = {"package_id": ten_pack.pk, "use_first_session": False}
    first = desk_api.post(f"/patients/{patient.pk}/packages", body, key="sale-1")
    again = desk_api.post(f"/patients/{patient.pk}/packages", body, key="sale-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert PatientPackage.objects.count() == 1


def test_the_same_key_with_another_body_is_an_idempotency_conflict(desk_api, patient, ten_pack):
    desk_api.post(f"/patients/{patient.pk}/packages", {"package_id": ten_pack.pk, "use_first_session": False},
                  key="sale-2")
    response = desk_api.post(f"/patients/{patient.pk}/packages",
                             {"package_id": ten_pack.pk, "use_first_session": True}, key="sale-2")
    assert_error(response, 409, "idempotency_conflict")
    assert PatientPackage.objects.count() == 1


def test_a_refused_request_does_not_use_up_its_key(desk_api, patient, ten_pack):
    bad = desk_api.post(f"/patients/{patient.pk}/packages", {"package_id": ten_pack.pk}, key="sale-3")
    assert bad.status_code == 422
    good = desk_api.post(f"/patients/{patient.pk}/packages", {"package_id": ten_pack.pk, "use_first_session": False},
                         key="sale-3")
    assert good.status_code == 201


def test_keys_are_scoped_to_the_staff_member(desk_api, owner_api, patient, ten_pack):
    body = {"package_id": ten_pack.pk, "use_first_session": False}
    assert desk_api.post(f"/patients/{patient.pk}/packages", body, key="shared").status_code == 201
    assert owner_api.post(f"/patients/{patient.pk}/packages", body, key="shared").status_code == 201
    assert PatientPackage.objects.count() == 2


def test_an_expired_key_is_forgotten(desk_api, patient, ten_pack, settings):
    body = {"package_id": ten_pack.pk, "use_first_session": False}
    desk_api.post(f"/patients/{patient.pk}/packages", body, key="old")
    IdempotencyRecord.objects.update(created_at=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    assert desk_api.post(f"/patients/{patient.pk}/packages", body, key="old").status_code == 201
    assert PatientPackage.objects.count() == 2


def test_a_patients_packages_are_listed_oldest_first(practitioner_api, desk, patient, ten_pack):
    for _ in range(3):
        sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False)
    first = practitioner_api.get(f"/patients/{patient.pk}/packages", limit=2).json()
    rest = practitioner_api.get(f"/patients/{patient.pk}/packages", limit=2, cursor=first["next"]).json()
    ids = [p["id"] for p in first["items"] + rest["items"]]
    assert ids == sorted(ids) and len(ids) == 3 and rest["next"] is None


def test_a_package_and_its_ledger_add_up(desk_api, desk, patient, ten_pack, acu60):
    pp, _ = sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False,
                                  payment=(Decimal("800"), "card"))
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60,
                                 starts_at=dt.datetime.now(dt.UTC))
    visits.do_check_in(acting_user=desk, appointment=appointment)
    visits.do_undo_check_in(acting_user=desk, appointment=appointment)
    visits.do_check_in(acting_user=desk, appointment=appointment)
    package = desk_api.get(f"/patient-packages/{pp.pk}").json()
    ledger = desk_api.get(f"/patient-packages/{pp.pk}/ledger").json()
    assert [e["kind"] for e in ledger["items"]] == ["use", "reversal", "use"]
    assert ledger["items"][1]["reverses"] == ledger["items"][0]["id"]
    assert ledger["items"][0]["by"] == desk.pk
    assert package["sessions_remaining"] == package["sessions_total"] + sum(e["change"] for e in ledger["items"])


def test_an_unknown_patient_package_is_404(desk_api):
    assert_error(desk_api.get("/patient-packages/999"), 404, "not_found")
    assert_error(desk_api.get("/patient-packages/999/ledger"), 404, "not_found")


def test_cancelling_with_a_refund_credits_the_sale_invoice(desk_api, desk, patient, ten_pack):
    pp, invoice = sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack,
                                        use_first_session=False, payment=(Decimal("800"), "card"))
    response = desk_api.post(f"/patient-packages/{pp.pk}/cancel",
                             {"reason": "moving away", "refund": {"amount": "-500.00", "method": "card"}})
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    sale = desk_api.get(f"/invoices/{invoice.pk}").json()
    assert sale["paid"] == "300.00" and sale["balance"] == "0.00"
    assert sale["lines"][-1]["kind"] == "package_refund"


def test_cancelling_twice_is_a_conflict(desk_api, desk, patient, ten_pack):
    pp, _ = sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False)
    assert desk_api.post(f"/patient-packages/{pp.pk}/cancel", {"reason": "x"}).status_code == 200
    assert_error(desk_api.post(f"/patient-packages/{pp.pk}/cancel", {"reason": "x"}), 409, "conflict")


@pytest.mark.parametrize("body, field", [({}, "reason"), ({"reason": "x", "refund": {"amount": "10", "method": "card"}},
                                                        "refund.amount")])
def test_it_refuses_a_bad_cancellation(desk_api, desk, patient, ten_pack, body, field):
    pp, _ = sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False,
                                  payment=(Decimal("800"), "card"))
    assert_error(desk_api.post(f"/patient-packages/{pp.pk}/cancel", body), 422, "validation_error", field)


def test_it_refuses_cancelling_by_a_practitioner(practitioner_api, desk, patient, ten_pack):
    pp, _ = sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False)
    assert_error(practitioner_api.post(f"/patient-packages/{pp.pk}/cancel", {"reason": "x"}), 403, "forbidden")


def test_an_owner_extends_expiry_to_the_end_of_a_bare_date(owner_api, desk, patient, ten_pack):
    pp, _ = sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False,
                                  payment=(Decimal("800"), "card"))
    response = owner_api.patch(f"/patient-packages/{pp.pk}", {"expires_at": "2099-06-30"})
    assert response.status_code == 200
    assert response.json()["expires_at"] == "2099-06-30T23:59:59.999999-04:00"


def test_it_refuses_expiry_changes_from_the_front_desk(desk_api, desk, patient, ten_pack):
    pp, _ = sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False)
    assert_error(desk_api.patch(f"/patient-packages/{pp.pk}", {"expires_at": "2099-06-30"}), 403, "forbidden")


@pytest.mark.parametrize("expires_at", ["not a date", "2099-13-01", "99999-01-01", 12, None])
def test_it_refuses_a_bad_expiry(owner_api, desk, patient, ten_pack, expires_at):
    pp, _ = sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False,
                                  payment=(Decimal("800"), "card"))
    assert_error(owner_api.patch(f"/patient-packages/{pp.pk}", {"expires_at": expires_at}), 422,
                 "validation_error", "expires_at")


def test_setting_expiry_on_an_unpaid_package_is_a_conflict(owner_api, desk, patient, ten_pack):
    pp, _ = sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False)
    assert_error(owner_api.patch(f"/patient-packages/{pp.pk}", {"expires_at": "2099-06-30"}), 409, "conflict")
