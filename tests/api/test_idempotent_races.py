"""Idempotency-Key under concurrency (API.md "Conventions"): a client that resends a POST
while the first is still running (a timeout, a double click) gets the first answer back,
whichever request wins, never an error the first request caused."""

from __future__ import annotations

import datetime as dt

import pytest

from tally.clinic.actions import visits
from tally.clinic.models import IdempotencyRecord, Payment
from tests.clinic.test_concurrency import run_together

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("triggers_off_for_flush")]

RACERS = 6


def test_check_ins_resent_with_one_key_all_get_the_first_answer(api_as, desk, clinic, patient, acu60):
    visit = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=dt.datetime(2026, 3, 4, 15, tzinfo=dt.UTC))
    api = api_as(desk)
    path = f"/appointments/{visit.pk}/check-in"
    responses, errors = run_together([lambda: api.post(path, {}, key="check-in-once")] * RACERS)
    assert not errors
    assert [r.status_code for r in responses] == [200] * RACERS, [r.content for r in responses]
    assert all(r.json() == responses[0].json() for r in responses)
    assert sum(r.get("Idempotent-Replayed") == "true" for r in responses) == RACERS - 1
    assert IdempotencyRecord.objects.count() == 1


def test_payments_resent_with_one_key_are_recorded_once(api_as, desk, clinic, patient, acu60):
    invoice = api_as(desk).post("/invoices", {"patient_id": patient.pk, "lines": [{"service_id": acu60.pk}]}).json()
    api = api_as(desk)
    path = f"/invoices/{invoice['id']}/payments"
    responses, errors = run_together([lambda: api.post(path, {"amount": "95.00", "method": "card"}, key="pay-once")]
                                     * RACERS)
    assert not errors
    assert [r.status_code for r in responses] == [201] * RACERS, [r.content for r in responses]
    assert all(r.json() == responses[0].json() for r in responses)
    assert Payment.objects.count() == 1
