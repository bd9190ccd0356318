"""Booking, the day schedule, check-in and its undo, cancel, no-show, deletion."""

import datetime as dt
from decimal import Decimal

import pytest

from tally.clinic.actions import billing, catalog, sales, visits
from tally.clinic.audit import AUDIT_APPEND_QUERIES
from tally.clinic.models import Appointment, Tombstone

from .conftest import assert_error


@pytest.fixture
def visit(desk, patient, acu60, practitioner):
    """Pat's visit with Maria, today at 10:00 in New York."""
    starts = dt.datetime.combine(dt.date.today(), dt.time(10), tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    return visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=starts,
                          practitioner=practitioner)


@pytest.fixture
def paid_pack(desk, patient, ten_pack):
    pp, _ = sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False,
                                  sold_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), payment=(Decimal("800"), "card"))
    return pp


def test_the_front_desk_books_at_midnight_of_a_bare_date(desk_api, patient, acu60, practitioner):
    response = desk_api.post("/appointments", {"patient_id": patient.pk, "service_id": acu60.pk,
                                               "starts_at": "2026-03-04", "practitioner_id": practitioner.pk})
    assert response.status_code == 201
    body = response.json()
    assert body["starts_at"] == "2026-03-04T00:00:00-05:00"
    assert body["ends_at"] == "2026-03-04T01:00:00-05:00"
    assert body["status"] == "booked" and body["practitioner_id"] == practitioner.pk


def test_a_naive_start_is_read_in_the_clinic_zone(desk_api, patient, acu60):
    body = desk_api.post("/appointments", {"patient_id": patient.pk, "service_id": acu60.pk,
                                           "starts_at": "2026-07-04T09:30:00", "duration_minutes": 30}).json()
    assert body["starts_at"] == "2026-07-04T09:30:00-04:00" and body["ends_at"] == "2026-07-04T10:00:00-04:00"


@pytest.mark.parametrize(("starts_at", "ends_at"), [
    # New York springs forward at 02:00 on 8 March 2026: 02:30 is read as 02:30 EST, 03:30 EDT.
    ("2026-03-08T02:30:00", "2026-03-08T04:30:00-04:00"),
    ("2026-03-08T01:30:00", "2026-03-08T03:30:00-04:00"),
    # and falls back at 02:00 on 1 November 2026: 01:30 is the first (EDT) one.
    ("2026-11-01T01:30:00", "2026-11-01T01:30:00-05:00"),
])
def test_a_visit_lasts_its_minutes_across_a_clock_change(desk_api, patient, acu60, starts_at, ends_at):
    """A 60-minute visit ends 60 real minutes after it starts, not 60 minutes of wall clock
    (which, started in the spring gap, ended when it started: a 500 from the database)."""
    response = desk_api.post("/appointments", {"patient_id": patient.pk, "service_id": acu60.pk,
                                               "starts_at": starts_at})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["ends_at"] == ends_at
    length = dt.datetime.fromisoformat(body["ends_at"]) - dt.datetime.fromisoformat(body["starts_at"])
    assert length == dt.timedelta(minutes=60)


@pytest.mark.parametrize("change, field", [({"starts_at": "tomorrow"}, "starts_at"),
                                           ({"starts_at": "99999-01-01T00:00:00"}, "starts_at"),
                                           ({"patient_id": 999}, "patient_id"), ({"service_id": "x"}, "service_id"),
                                           ({"duration_minutes": 0}, "duration_minutes")])
def test_it_refuses_a_bad_booking(desk_api, patient, acu60, change, field):
    body = {"patient_id": patient.pk, "service_id": acu60.pk, "starts_at": "2026-03-04T10:00:00Z"} | change
    assert_error(desk_api.post("/appointments", body), 422, "validation_error", field)


def test_it_refuses_booking_by_a_practitioner(practitioner_api, patient, acu60):
    response = practitioner_api.post("/appointments", {"patient_id": patient.pk, "service_id": acu60.pk,
                                                       "starts_at": "2026-03-04T10:00:00Z"})
    assert_error(response, 403, "forbidden")


def test_the_day_schedule_is_the_clinic_local_day(desk_api, desk, patient, acu60):
    ny = dt.timezone(dt.timedelta(hours=-5))
    late = visits.do_book(acting_user=desk, patient=patient, service=acu60,
                          starts_at=dt.datetime(2026, 3, 4, 23, 30, tzinfo=ny))
    visits.do_book(acting_user=desk, patient=patient, service=acu60,
                   starts_at=dt.datetime(2026, 3, 5, 0, 30, tzinfo=ny))
    items = desk_api.get("/appointments", date="2026-03-04").json()["items"]
    assert [a["id"] for a in items] == [late.pk]


def test_a_practitioners_schedule_holds_only_theirs(practitioner_api, desk, patient, acu60, visit,
                                                    other_practitioner):
    visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=visit.starts_at,
                   practitioner=other_practitioner)
    items = practitioner_api.get("/appointments", date=dt.date.today().isoformat()).json()["items"]
    assert [a["id"] for a in items] == [visit.pk]


def test_a_practitioner_may_not_see_anothers_appointment(api_as, other_practitioner, visit):
    assert_error(api_as(other_practitioner).get(f"/appointments/{visit.pk}"), 403, "forbidden")


def test_a_practitioner_sees_their_own_appointment(practitioner_api, visit):
    assert practitioner_api.get(f"/appointments/{visit.pk}").json()["id"] == visit.pk


def test_an_unknown_appointment_is_404(desk_api):
    assert_error(desk_api.get("/appointments/999"), 404, "not_found")
    assert_error(desk_api.post("/appointments/999/check-in"), 404, "not_found")


def test_a_bad_date_is_refused(desk_api):
    assert_error(desk_api.get("/appointments", date="2026-02-30"), 422, "validation_error", "date")


def test_a_patients_appointments_filter_by_period_and_status(desk_api, desk, patient, acu60):
    utc = dt.UTC
    a = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=dt.datetime(2026, 1, 5, 15, tzinfo=utc))
    b = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=dt.datetime(2026, 2, 5, 15, tzinfo=utc))
    visits.do_cancel_appointment(acting_user=desk, appointment=b)
    path = f"/patients/{patient.pk}/appointments"
    assert [x["id"] for x in desk_api.get(path).json()["items"]] == [a.pk, b.pk]
    assert [x["id"] for x in desk_api.get(path, to="2026-01-05").json()["items"]] == [a.pk]
    assert [x["id"] for x in desk_api.get(path, **{"from": "2026-02-01"}).json()["items"]] == [b.pk]
    assert [x["id"] for x in desk_api.get(path, status="cancelled").json()["items"]] == [b.pk]
    assert_error(desk_api.get(path, status="gone"), 422, "validation_error", "status")
    assert_error(desk_api.get(path, to="someday"), 422, "validation_error", "to")


def test_checking_in_charges_the_visit_and_uses_a_session(practitioner_api, visit, paid_pack):
    response = practitioner_api.post(f"/appointments/{visit.pk}/check-in", {})
    assert response.status_code == 200
    body = response.json()
    assert body["appointment"]["status"] == "attended"
    assert body["line"]["covered_by"] == paid_pack.pk and body["line"]["amount"] == "0.00"
    assert body["line"]["session_number"] == 1
    assert body["invoice"]["issued_at"] == body["appointment"]["starts_at"]


def test_checking_in_without_a_body_charges_the_booked_service(desk_api, visit, acu60):
    body = desk_api.post(f"/appointments/{visit.pk}/check-in").json()
    assert body["line"]["service_id"] == acu60.pk and body["line"]["amount"] == "95.00"


def test_no_charges_charges_nothing(desk_api, visit):
    body = desk_api.post(f"/appointments/{visit.pk}/check-in", {"no_charges": True}).json()
    assert body["invoice"] is None and body["line"] is None and body["appointment"]["no_charges"] is True


def test_checking_in_twice_is_a_conflict(desk_api, visit):
    desk_api.post(f"/appointments/{visit.pk}/check-in")
    assert_error(desk_api.post(f"/appointments/{visit.pk}/check-in"), 409, "conflict")


def test_checking_in_a_visit_charged_on_a_manual_invoice_answers_with_that_charge(desk_api, visit, paid_pack,
                                                                                  acu60):
    """Rule 2: the manual invoice charged the visit and used its session; the check-in does not
    charge it again, and shows the client where it is charged."""
    invoice = desk_api.post("/invoices", {"patient_id": visit.patient_id,
                                          "lines": [{"service_id": acu60.pk, "appointment_id": visit.pk}]}).json()
    line = invoice["lines"][0]
    assert line["covered_by"] == paid_pack.pk and line["session_number"] == 1
    response = desk_api.post(f"/appointments/{visit.pk}/check-in")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["appointment"]["status"] == "attended"
    assert body["invoice"]["id"] == invoice["id"] and body["line"] == line
    package = desk_api.get(f"/patient-packages/{paid_pack.pk}").json()
    assert package["sessions_used"] == 1
    findings = desk_api.get(f"/patient-packages/{paid_pack.pk}/investigation").json()["findings"]
    assert "POSSIBLE_DOUBLE_USE" not in {f["code"] for f in findings}


def test_checking_in_a_charged_visit_with_another_service_is_a_conflict_naming_its_invoice(
        desk_api, visit, paid_pack, acu60, acu90):
    invoice = desk_api.post("/invoices", {"patient_id": visit.patient_id,
                                          "lines": [{"service_id": acu60.pk, "appointment_id": visit.pk}]}).json()
    for body in ({"service_id": acu90.pk}, {"no_charges": True}):
        error = assert_error(desk_api.post(f"/appointments/{visit.pk}/check-in", body), 409, "conflict")
        assert invoice["number"] in error["message"] and "remove that line first" in error["message"]
    assert desk_api.get(f"/appointments/{visit.pk}").json()["status"] == "booked"
    assert desk_api.get(f"/patient-packages/{paid_pack.pk}").json()["sessions_used"] == 1


def test_a_repeated_check_in_with_the_same_key_is_replayed(desk_api, visit):
    first = desk_api.post(f"/appointments/{visit.pk}/check-in", {}, key="checkin-1")
    again = desk_api.post(f"/appointments/{visit.pk}/check-in", {}, key="checkin-1")
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()


def test_a_practitioner_may_not_check_in_anothers_visit(api_as, other_practitioner, visit):
    assert_error(api_as(other_practitioner).post(f"/appointments/{visit.pk}/check-in"), 403, "forbidden")


def test_it_refuses_check_in_on_an_unknown_service(desk_api, visit):
    assert_error(desk_api.post(f"/appointments/{visit.pk}/check-in", {"service_id": 999}), 422,
                 "validation_error", "service_id")


def test_undoing_a_check_in_gives_the_session_back(practitioner_api, desk_api, visit, paid_pack):
    practitioner_api.post(f"/appointments/{visit.pk}/check-in")
    response = practitioner_api.post(f"/appointments/{visit.pk}/undo-check-in")
    assert response.status_code == 200 and response.json()["status"] == "booked"
    assert desk_api.get(f"/patient-packages/{paid_pack.pk}").json()["sessions_used"] == 0


def test_undoing_a_check_in_that_never_happened_is_a_conflict(desk_api, visit):
    assert_error(desk_api.post(f"/appointments/{visit.pk}/undo-check-in"), 409, "conflict")


def test_the_front_desk_cancels_with_a_reason(desk_api, visit):
    response = desk_api.post(f"/appointments/{visit.pk}/cancel", {"reason": "sick"})
    assert response.json()["status"] == "cancelled" and response.json()["status_reason"] == "sick"


def test_it_refuses_cancelling_by_a_practitioner(practitioner_api, visit):
    assert_error(practitioner_api.post(f"/appointments/{visit.pk}/cancel"), 403, "forbidden")


def test_a_practitioner_marks_their_own_no_show(practitioner_api, visit):
    assert practitioner_api.post(f"/appointments/{visit.pk}/no-show").json()["status"] == "no_show"


def test_a_practitioner_may_not_mark_anothers_no_show(api_as, other_practitioner, visit):
    assert_error(api_as(other_practitioner).post(f"/appointments/{visit.pk}/no-show"), 403, "forbidden")


def test_undo_no_show_books_the_visit_again_and_gives_back_a_policy_session(owner_api, practitioner_api, desk_api,
                                                                           visit, paid_pack):
    owner_api.patch("/clinic", {"no_show_uses_session": True})
    practitioner_api.post(f"/appointments/{visit.pk}/no-show")
    assert desk_api.get(f"/patient-packages/{paid_pack.pk}").json()["sessions_used"] == 1
    response = practitioner_api.post(f"/appointments/{visit.pk}/undo-no-show")
    assert response.status_code == 200 and response.json()["status"] == "booked"
    assert desk_api.get(f"/patient-packages/{paid_pack.pk}").json()["sessions_used"] == 0
    assert_error(practitioner_api.post(f"/appointments/{visit.pk}/undo-no-show"), 409, "conflict")


def test_undo_cancel_is_for_the_desk(desk_api, practitioner_api, visit):
    desk_api.post(f"/appointments/{visit.pk}/cancel", {"reason": "sick"})
    assert_error(practitioner_api.post(f"/appointments/{visit.pk}/undo-cancel"), 403, "forbidden")
    response = desk_api.post(f"/appointments/{visit.pk}/undo-cancel")
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["status_reason"]) == ("booked", "")
    assert_error(desk_api.post(f"/appointments/{visit.pk}/undo-cancel"), 409, "conflict")
    assert_error(desk_api.post("/appointments/999999/undo-cancel"), 404, "not_found")


def test_an_owner_deletes_an_appointment_leaving_a_tombstone(owner_api, visit):
    response = owner_api.delete(f"/appointments/{visit.pk}", reason="booked in error")
    assert response.status_code == 204 and response.content == b""
    assert Tombstone.objects.filter(appointment_id=visit.pk).exists()
    assert_error(owner_api.get(f"/appointments/{visit.pk}"), 404, "not_found")
    assert Appointment.all_objects.filter(pk=visit.pk).exists()


def test_deleting_needs_a_reason(owner_api, visit):
    assert_error(owner_api.delete(f"/appointments/{visit.pk}"), 422, "validation_error", "reason")


def test_deleting_is_owner_only(desk_api, visit):
    assert_error(desk_api.delete(f"/appointments/{visit.pk}", reason="x"), 403, "forbidden")


def test_deleting_a_visit_with_a_covered_charge_is_a_conflict(owner_api, desk, visit, paid_pack):
    visits.do_check_in(acting_user=desk, appointment=visit)
    assert_error(owner_api.delete(f"/appointments/{visit.pk}", reason="x"), 409, "conflict")


def test_the_day_schedule_takes_a_fixed_number_of_queries(desk_api, desk, patient, acu60,
                                                          django_assert_max_num_queries):
    starts = dt.datetime(2026, 3, 4, 15, tzinfo=dt.UTC)
    for hour in range(8):
        visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=starts + dt.timedelta(minutes=hour))
    # + the read's audit append, a constant (lock on PostgreSQL, last hash, one INSERT for all rows).
    with django_assert_max_num_queries(4 + AUDIT_APPEND_QUERIES):
        items = desk_api.get("/appointments", date="2026-03-04").json()["items"]
    assert len(items) == 8


def test_a_covered_check_in_takes_a_fixed_number_of_statements_and_chains_its_audit_event_last(
        desk_api, visit, paid_pack, monkeypatch):
    """What one check-in costs (bench/checkin_cost.py profiles it; docs/reliability.md "Load"):
    the token, the idempotency record looked up and written, the clinic settings once, the
    appointment locked and updated, the packages locked with their services once, the invoice,
    the visit's lines on file (its charge, its first session), the session numbers the package's
    live lines show (a removed line's session is reused, not shown twice), the line written
    covered, the ledger entry with its count, and
    the audit event; no savepoint (the request's transaction ends on any error). The audit
    chain's lock (PostgreSQL) and its last hash come last, just before the commit, so the one
    lock every write shares is held for the commit only."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    monkeypatch.setattr("tally.api.idempotency.PURGE_CHANCE", 0)  # the occasional purge of old keys
    with CaptureQueriesContext(connection) as queries:
        response = desk_api.post(f"/appointments/{visit.pk}/check-in", {}, key="one check-in")
    assert response.status_code == 200 and response.json()["line"]["covered_by"] == paid_pack.pk
    statements = [q["sql"] for q in queries]
    postgresql = connection.vendor == "postgresql"
    # + SET LOCAL lock_timeout, the key's lock (a resent request waits for this one) and the
    # chain's pg_advisory_xact_lock on PostgreSQL
    assert len(statements) == (22 if postgresql else 19), "\n".join(statements)
    # The action runs in the request's transaction, which any error rolls back: no savepoint
    # of its own. (The one seen is the request's block, nested here in the test's transaction.)
    assert [sql.split()[0] for sql in statements].count("SAVEPOINT") == 1
    writes = [i for i, sql in enumerate(statements) if sql.startswith(("INSERT", "UPDATE"))]
    audit = [i for i, sql in enumerate(statements) if 'INTO "clinic_auditevent"' in sql]
    assert audit == [writes[-1]]
    chain = [i for i, sql in enumerate(statements) if ("pg_advisory_xact_lock" in sql and "," not in sql) or
             sql.startswith('SELECT "clinic_auditevent"."hash"')]
    assert chain == ([audit[0] - 2, audit[0] - 1] if postgresql else [audit[0] - 1])
    assert all(i > writes[-2] for i in chain)


def test_a_check_in_refused_after_its_first_write_leaves_nothing_behind(desk_api, desk, visit, paid_pack, acu60):
    """The action takes no savepoint in the request's transaction: a refusal after the
    appointment's UPDATE must still roll back that UPDATE, the key and the audit event."""
    from tally.clinic.models import AuditEvent, IdempotencyRecord, Invoice

    other = catalog.do_create_patient(acting_user=desk, first_name="Other", last_name="Patient")
    theirs = billing.do_create_invoice(acting_user=desk, patient=other, lines=[(acu60, None)])
    events = AuditEvent.objects.count()
    response = desk_api.post(f"/appointments/{visit.pk}/check-in", {"invoice_id": theirs.pk}, key="refused")
    assert_error(response, 422, "validation_error", "invoice_id")
    visit.refresh_from_db()
    assert visit.status == "booked" and visit.checked_in_at is None
    assert not IdempotencyRecord.objects.filter(key="refused").exists()
    assert AuditEvent.objects.count() == events and Invoice.objects.filter(patient=visit.patient).count() == 1
    again = desk_api.post(f"/appointments/{visit.pk}/check-in", {}, key="refused")  # the key is free
    assert again.status_code == 200 and again.json()["line"]["covered_by"] == paid_pack.pk


def test_a_check_in_on_an_active_packages_sale_invoice_that_would_unpay_it_is_a_conflict(
        desk_api, desk, patient, visit, paid_pack, acu90):
    """Rule 1 after activation: a charge the package does not cover goes on a new invoice."""
    sale = paid_pack.sale_invoice
    response = desk_api.post(f"/appointments/{visit.pk}/check-in", {"invoice_id": sale.pk, "service_id": acu90.pk})
    error = assert_error(response, 409, "conflict", "invoice_id")
    assert sale.number in error["message"] and "Charge it on a new invoice" in error["message"]
    visit.refresh_from_db()
    assert visit.status == "booked"
    assert desk_api.get(f"/invoices/{sale.pk}").json()["balance"] == "0.00"
    done = desk_api.post(f"/appointments/{visit.pk}/check-in", {"service_id": acu90.pk})
    assert done.status_code == 200 and done.json()["invoice"]["id"] != sale.pk
