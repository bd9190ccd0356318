"""Registering, searching and reading patients."""

import datetime as dt

import pytest
from django.utils import timezone

from tally.clinic.actions import catalog

from .conftest import assert_error


def test_the_front_desk_registers_a_patient(desk_api):
    response = desk_api.post("/patients", {"first_name": "Ana", "last_name": "Silva", "date_of_birth": "1990-01-31"})
    assert response.status_code == 201
    body = response.json()
    assert body["patient_number"] == f"P-{body['id']:06d}"
    assert body["date_of_birth"] == "1990-01-31"


def test_it_refuses_patient_registration_by_a_practitioner(practitioner_api):
    assert_error(practitioner_api.post("/patients", {"first_name": "A", "last_name": "B"}), 403, "forbidden")


@pytest.mark.parametrize("body, field", [
    ({"last_name": "Silva"}, "first_name"),
    ({"first_name": " ", "last_name": "Silva"}, "first_name"),
    ({"first_name": "A", "last_name": "B", "date_of_birth": "1990-02-30"}, "date_of_birth"),
    ({"first_name": "A", "last_name": "B", "date_of_birth": "9999-01-01"}, "date_of_birth"),
    ({"first_name": "A" * 101, "last_name": "B"}, "first_name"),
])
def test_it_refuses_a_bad_patient(desk_api, body, field):
    assert_error(desk_api.post("/patients", body), 422, "validation_error", field)


@pytest.mark.parametrize("date_of_birth", [0, 86400, "86400", "1700000000", 1.5e9, "0"])
def test_a_number_is_no_date_of_birth(desk_api, clinic, date_of_birth):
    """pydantic reads a number, or a string of digits, as seconds since 1970: 0 was a patient
    born on 1 January 1970. A date is written as one (1990-01-31)."""
    body = {"first_name": "A", "last_name": "B", "date_of_birth": date_of_birth}
    assert_error(desk_api.post("/patients", body), 422, "validation_error", "date_of_birth")


@pytest.mark.parametrize("date", ["0", "1700000000", "86400.5"])
def test_a_number_is_no_day_of_the_schedule(desk_api, date):
    assert_error(desk_api.get("/appointments", date=date), 422, "validation_error", "date")


def test_it_finds_patients_by_name_and_by_number(desk_api, patient, desk):
    catalog.do_create_patient(acting_user=desk, first_name="John", last_name="Smith")
    assert [p["id"] for p in desk_api.get("/patients", q="mar lop").json()["items"]] == [patient.pk]
    assert [p["id"] for p in desk_api.get("/patients", q=patient.patient_number).json()["items"]] == [patient.pk]
    assert desk_api.get("/patients", q="nobody").json()["items"] == []


def test_it_finds_patients_by_phone_email_and_bare_number_the_way_callers_give_them(desk_api, desk, clinic):
    """A patient on the phone gives a number as they say it; the record may hold it written
    another way. A bare patient number ("42", "000042") is the P-000042 staff quote."""
    ana = catalog.do_create_patient(acting_user=desk, first_name="Ana", last_name="Ruiz",
                                    phone="(555) 010-4477", email="ana.ruiz@example.org")
    other = catalog.do_create_patient(acting_user=desk, first_name="Ben", last_name="Ode", phone="+1 555 999 0000")

    def found(q):
        return [p["id"] for p in desk_api.get("/patients", q=q).json()["items"]]

    for spoken in ("555-010-4477", "5550104477", "555.010.4477", "010 4477", "4477"):
        assert found(spoken) == [ana.pk], spoken
    assert found("ana.ruiz@example") == [ana.pk]
    assert found("ruiz example.org") == [ana.pk]  # every word must match something
    assert found(str(other.pk)) == [other.pk] and found(f"{other.pk:06d}") == [other.pk]
    assert found("555") == []  # three digits are not enough to be a phone number's part
    assert found("99999999999999999999") == []  # no row can have that id


def test_patients_are_paged_with_a_cursor(desk_api, desk, clinic):
    for last in ("Adams", "Brown", "Clark"):
        catalog.do_create_patient(acting_user=desk, first_name="X", last_name=last)
    first = desk_api.get("/patients", limit=2).json()
    assert [p["last_name"] for p in first["items"]] == ["Adams", "Brown"]
    rest = desk_api.get("/patients", limit=2, cursor=first["next"]).json()
    assert [p["last_name"] for p in rest["items"]] == ["Clark"]
    assert rest["next"] is None


def test_a_practitioner_reads_a_chart(practitioner_api, patient):
    assert practitioner_api.get(f"/patients/{patient.pk}").json()["first_name"] == "Maria"


def test_an_unknown_patient_is_404(desk_api):
    assert_error(desk_api.get("/patients/424242"), 404, "not_found")


def test_a_change_is_audited_with_the_callers_address(desk_api):
    from tally.clinic.models import AuditEvent

    desk_api.post("/patients", {"first_name": "Ana", "last_name": "Silva"})
    event = AuditEvent.objects.get(action="patient.create")
    assert event.ip == "127.0.0.1"


def test_a_date_of_birth_is_judged_by_the_clinics_calendar_not_the_servers(desk_api, clinic):
    """A baby born today, in a clinic whose date is not the server's (UTC): today is not the
    future, and tomorrow is, by the clinic's calendar."""
    now = timezone.now()
    clinic.time_zone = "Etc/GMT-14" if now.hour >= 10 else "Etc/GMT+12"  # a date other than UTC's
    clinic.save()
    today = timezone.localdate(now, timezone=clinic.tz)
    assert today != now.date()
    born_today = desk_api.post("/patients", {"first_name": "New", "last_name": "Born",
                                             "date_of_birth": today.isoformat()})
    assert born_today.status_code == 201, born_today.json()
    tomorrow = (today + dt.timedelta(days=1)).isoformat()
    assert_error(desk_api.post("/patients", {"first_name": "Not", "last_name": "Yet", "date_of_birth": tomorrow}),
                 422, "validation_error", "date_of_birth")
