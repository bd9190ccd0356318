"""The demo clinic: ~200 patients, a year of history, one patient for every finding."""

from __future__ import annotations

import datetime as dt
import functools
import io

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from tally.clinic import demo
from tally.clinic.ledger import verify
from tally.clinic.models import ApiToken, Appointment, Patient, PatientPackage, Staff
from tally.clinic.models.packages import PackageStatus
from tally.clinic.models.staff import hash_token


@pytest.mark.slow
@pytest.mark.django_db
def test_the_demo_clinic_has_every_scenario_and_only_the_deliberate_ledger_fault():
    result = demo.load_demo()

    assert 190 <= result.patients <= 210
    assert Patient.objects.count() == result.patients
    assert result.clinic.time_zone == "America/New_York" and result.clinic.currency == "USD"
    assert Staff.objects.filter(role="practitioner").count() >= 3

    # One patient per finding, in DEMO_SCENARIOS order, named as listed.
    assert [s.code for s in demo.DEMO_SCENARIOS] == list(result.scenario_patients)
    first_pk = result.scenario_patients[demo.DEMO_SCENARIOS[0].code].pk
    for scenario in demo.DEMO_SCENARIOS:
        patient = result.scenario_patients[scenario.code]
        assert (patient.first_name, patient.last_name) == (scenario.first_name, scenario.last_name)
        assert patient.pk == first_pk + scenario.number - 1
    codes = {s.code for s in demo.DEMO_SCENARIOS}
    assert {"FIRST_SESSION_NOT_USED", "NOT_CHECKED_IN", "NO_CHARGES", "NOT_INVOICED", "APPOINTMENT_DELETED",
            "SCHEDULE_GAP", "SERVICE_NOT_IN_PACKAGE", "PACKAGE_NOT_PAID", "CHARGED_BEFORE_PURCHASE",
            "COVERED_BY_OTHER_PACKAGE", "PACKAGE_EXHAUSTED", "PACKAGE_EXPIRED", "PACKAGE_CANCELLED",
            "POSSIBLE_DOUBLE_USE", "LEDGER_MISMATCH"} <= codes

    # The investigator names each scenario patient's cause.
    from tally.clinic.investigator.service import investigate_patient

    for scenario in demo.DEMO_SCENARIOS:
        packages, orphans = investigate_patient(result.scenario_patients[scenario.code].pk)
        found = {f.code for inv in packages for f in inv.findings} | {f.code for f in orphans}
        assert scenario.code in found, (scenario.code, found)

    # The ledger is consistent everywhere but the one package corrupted on purpose.
    problems = verify()
    assert problems, "the LEDGER_MISMATCH patient's package must disagree with its ledger"
    assert {p.patient_package_id for p in problems} == {result.corrupted_package_id}
    corrupted = PatientPackage.objects.get(pk=result.corrupted_package_id)
    assert corrupted.patient == result.scenario_patients["LEDGER_MISMATCH"]

    # Packages in every state, and history dated over the past year.
    states = {p.status for p in PatientPackage.objects.all()}
    assert set(PackageStatus.values) <= states
    now = timezone.now()
    earliest = Appointment.all_objects.order_by("starts_at").first().starts_at
    assert now - dt.timedelta(days=380) < earliest < now - dt.timedelta(days=250)
    assert Appointment.objects.filter(starts_at__gt=now, status="booked").exists()
    statuses = set(Appointment.all_objects.values_list("status", flat=True))
    assert {"attended", "booked", "cancelled", "no_show"} <= statuses
    # The only past appointment left booked is the NOT_CHECKED_IN scenario's.
    stale = Appointment.objects.filter(starts_at__lt=now - dt.timedelta(hours=1), status="booked")
    assert {a.patient_id for a in stale} == {result.scenario_patients["NOT_CHECKED_IN"].pk}


@pytest.mark.django_db
def test_the_demo_command_loads_once_and_prints_working_logins(monkeypatch):
    monkeypatch.setattr("tally.clinic.management.commands.demo.load_demo",
                        functools.partial(demo.load_demo, regular_patients=3))
    out = io.StringIO()
    call_command("demo", "--no-serve", "--port", "8123", stdout=out)
    text = out.getvalue()
    assert "http://127.0.0.1:8123/api/v1/docs" in text and "http://127.0.0.1:8123/admin/" in text
    owner_name, owner_password = demo.DEMO_OWNER
    assert f"{owner_name} / {owner_password}" in text
    assert Staff.objects.get(username=owner_name).check_password(owner_password)
    desk_name, desk_password = demo.DEMO_DESK
    assert Staff.objects.get(username=desk_name, role="front_desk").check_password(desk_password)
    token = text.split("API token")[1].split()[0]
    api_name = demo.DEMO_API[0]
    assert ApiToken.objects.filter(token_hash=hash_token(token), staff__username=api_name,
                                   staff__role="owner").exists()
    assert not Staff.objects.get(username=api_name).has_usable_password()  # tokens only
    # Signing out as the owner revokes her tokens, not the integration's.
    owner_browser = Client()
    owner_browser.force_login(Staff.objects.get(username=owner_name))
    owner_browser.post("/logout/")
    assert Client().get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    patients = Patient.objects.count()

    again = io.StringIO()
    call_command("demo", "--no-serve", stdout=again)
    assert "not loaded again" in again.getvalue()
    assert Patient.objects.count() == patients


@pytest.mark.django_db
def test_the_demo_over_a_clinic_of_its_own_does_not_promise_logins_it_cannot_print():
    # `tally init; tally createuser ...; tally demo`: the database has data, so no demo
    # clinic and no demo logins; the user signs in with the account they made.
    call_command("createuser", "ana", "--role", "owner", "--password", "correct horse battery staple",
                 stdout=io.StringIO())
    out = io.StringIO()
    call_command("demo", "--no-serve", stdout=out)
    text = out.getvalue()
    assert "not loaded again" in text
    assert "a login below" not in text and "API token" not in text
    assert "sign in with your own login" in text


@pytest.mark.django_db
def test_a_token_from_createtoken_signs_in_to_the_api(client):
    call_command("createuser", "ana", role="front_desk", password="correct horse battery staple")
    out = io.StringIO()
    call_command("createtoken", "ana", stdout=out)
    token = out.getvalue().strip()
    response = client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {token}")
    if response.status_code == 404:
        pytest.skip("the API is not mounted at /api/v1/ yet")
    assert response.status_code == 200, response.content
    assert "ana" in response.content.decode()


@pytest.mark.django_db
def test_a_tokens_only_account_for_an_integration(client):
    call_command("createuser", "billing-sync", role="front_desk", tokens_only=True, stdout=io.StringIO())
    staff = Staff.objects.get(username="billing-sync")
    assert not staff.has_usable_password()
    out = io.StringIO()
    call_command("createtoken", "billing-sync", stdout=out)
    token = out.getvalue().strip()
    assert client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    # It cannot sign in with a password, on the web or for a token.
    response = client.post("/api/v1/auth/token", {"username": "billing-sync", "password": "any password at all"},
                           content_type="application/json")
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthenticated"
    web = client.post("/login/", {"username": "billing-sync", "password": "any password at all"})
    assert web.status_code == 200 and "_auth_user_id" not in client.session
    with pytest.raises(CommandError, match="takes no --password"):
        call_command("createuser", "other", role="owner", tokens_only=True, password="correct horse battery staple")
