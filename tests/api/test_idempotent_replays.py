"""Idempotency-Key on every POST (API.md "Conventions"): the same key with the same body
returns the first response again, the very same JSON, and changes nothing."""

import pytest

from tally.clinic.models import AuditEvent, IdempotencyRecord, PackageLedgerEntry


def replayed(api, path, body=None, key="replay-1"):
    first = api.post(path, body, key=key)
    assert first.status_code < 400, first.content
    changes = (AuditEvent.objects.exclude(action__contains="view").count(), PackageLedgerEntry.objects.count())
    again = api.post(path, body, key=key)
    assert again["Idempotent-Replayed"] == "true"
    assert again.status_code == first.status_code
    assert again.json() == first.json()
    assert (AuditEvent.objects.exclude(action__contains="view").count(),
            PackageLedgerEntry.objects.count()) == changes
    return first.json()


@pytest.fixture
def sold(desk_api, patient, ten_pack):
    return desk_api.post(f"/patients/{patient.pk}/packages", {"package_id": ten_pack.pk, "use_first_session": False,
                                                              "sold_at": "2026-01-02",
                                                              "payment": {"amount": "800", "method": "card"}}).json()


def test_a_package_fix_is_replayed_as_first_answered(desk_api, patient, sold, acu60, acu90):
    line = desk_api.post("/invoices", {"patient_id": patient.pk, "lines": [{"service_id": acu90.pk}]}).json()["lines"][0]
    fix = {"action": "apply_to_line", "params": {"line_id": line["id"], "service_id": acu60.pk}}
    answer = replayed(desk_api, f"/patient-packages/{sold['patient_package']['id']}/fixes", fix)
    assert answer["applied"] is True
    assert IdempotencyRecord.objects.count() == 1


def test_a_patient_fix_is_replayed_as_first_answered(desk_api, patient, acu60):
    visit = desk_api.post("/appointments", {"patient_id": patient.pk, "service_id": acu60.pk,
                                            "starts_at": "2026-01-05T10:00:00-05:00"}).json()
    fix = {"action": "check_in_and_charge", "params": {"appointment_id": visit["id"]}}
    answer = replayed(desk_api, f"/patients/{patient.pk}/fixes", fix)
    assert answer["applied"] is True


def test_every_other_post_is_replayed_as_first_answered(owner_api, desk_api, patient, sold, acu60, acu90, ten_pack):
    replayed(owner_api, "/services", {"name": "Cupping", "duration_minutes": 30, "price": "40"}, key="s")
    replayed(owner_api, "/packages", {"name": "5 x Acu", "price": "450", "sessions": 5, "service_ids": [acu60.pk]},
             key="p")
    replayed(desk_api, "/patients", {"first_name": "Ann", "last_name": "Lee"}, key="pt")
    other = replayed(desk_api, f"/patients/{patient.pk}/packages", {"package_id": ten_pack.pk,
                                                                    "use_first_session": False}, key="sale")
    replayed(desk_api, f"/patient-packages/{other['patient_package']['id']}/cancel", {"reason": "changed mind"},
             key="cancel")
    visit = replayed(desk_api, "/appointments", {"patient_id": patient.pk, "service_id": acu60.pk,
                                                 "starts_at": "2026-01-05T10:00:00-05:00"}, key="book")
    checked = replayed(desk_api, f"/appointments/{visit['id']}/check-in", {}, key="ci")
    replayed(desk_api, f"/appointments/{visit['id']}/undo-check-in", None, key="undo")
    replayed(desk_api, f"/appointments/{visit['id']}/no-show", {"reason": "away"}, key="ns")
    replayed(desk_api, f"/appointments/{visit['id']}/undo-no-show", None, key="undo-ns")
    later = desk_api.post("/appointments", {"patient_id": patient.pk, "service_id": acu60.pk,
                                            "starts_at": "2026-01-06T10:00:00-05:00"}).json()
    replayed(desk_api, f"/appointments/{later['id']}/cancel", {}, key="cancel-visit")
    replayed(desk_api, f"/appointments/{later['id']}/undo-cancel", None, key="undo-cancel-visit")
    invoice = replayed(desk_api, "/invoices", {"patient_id": patient.pk, "lines": [{"service_id": acu60.pk}]},
                       key="inv")
    replayed(desk_api, f"/invoices/{invoice['id']}/lines", {"service_id": acu60.pk}, key="line")
    replayed(desk_api, f"/invoices/{invoice['id']}/void", {"reason": "wrong patient"}, key="void")
    assert checked["line"]["covered_by"] == sold["patient_package"]["id"]
    # A refund on an invoice of visits: a package's own sale is refunded by cancelling it (rule 11).
    billed = desk_api.post("/invoices", {"patient_id": patient.pk, "lines": [{"service_id": acu90.pk}]}).json()
    assert desk_api.post(f"/invoices/{billed['id']}/payments", {"amount": "130.00", "method": "card"}).status_code == 201
    replayed(desk_api, f"/invoices/{billed['id']}/payments",
             {"amount": "-10", "method": "card", "reason": "goodwill"}, key="refund")
