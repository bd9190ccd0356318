"""Two-factor sign-in (TOTP): anyone may turn it on; owners must have it (by default); the web
sign-in and POST /auth/token ask for the code once it is on; `tally createtoken` still works."""

from __future__ import annotations

import functools
import io
import json
import re
from urllib.parse import parse_qs, urlparse

import pytest
from django.core.management import call_command
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice

from tally import settings as tally_settings
from tally.clinic import demo
from tally.clinic.models import ApiToken, AuditEvent
from tally.clinic.models.staff import hash_token

from .conftest import PASSWORD, code_for, password_sign_in, wrong_code


def token_request(username: str, password: str = PASSWORD, otp: str | None = None):
    body = {"username": username, "password": password} | ({"otp": otp} if otp is not None else {})
    return Client().post("/api/v1/auth/token", json.dumps(body), content_type="application/json")


def secret_on(page) -> str:
    return re.search(rb'class="secret">([A-Z2-7 ]+)<', page.content).group(1).decode().replace(" ", "")


SET_UP = "/account/two-factor/"


def start_set_up(client: Client, next_url: str | None = None):
    """The set-up page's "Start set-up" button: a POST, which makes the unconfirmed device."""
    response = client.post(SET_UP, {"start": "1"} | ({"next": next_url} if next_url else {}))
    assert response.status_code == 302, response.content[:500]
    return response


def test_owners_must_use_two_factor_by_default():
    """The production default, whatever the test suite switches."""
    assert tally_settings.TALLY_OWNER_2FA_REQUIRED is True


# --- owners, web --------------------------------------------------------------------------


def test_an_owner_without_a_device_sets_it_up_right_after_the_password(owner, clinic):
    client = Client()
    response = password_sign_in(client, "olivia")
    assert response.status_code == 302 and response["Location"].startswith("/account/two-factor/")
    # No other page until it is set up.
    for path in ("/today/", "/patients/", "/catalog/", "/admin/"):
        blocked = client.get(path)
        assert blocked.status_code == 302 and blocked["Location"].startswith("/account/two-factor/"), path
    first = client.get(response["Location"])
    assert first.status_code == 200 and b"Owners must use two-factor sign-in" in first.content
    assert b"Start set-up" in first.content and b"otpauth://" not in first.content
    assert not TOTPDevice.objects.filter(user=owner).exists(), "a GET writes nothing"
    started = start_set_up(client, parse_qs(urlparse(response["Location"]).query)["next"][0])
    assert started["Location"] == response["Location"], "back to the page, the next page kept"
    setup = client.get(started["Location"])
    assert setup.status_code == 200
    assert b"Owners must use two-factor sign-in" in setup.content
    assert b"otpauth://totp/Tally%3Aolivia?secret=" in setup.content
    assert b"<svg" in setup.content, "a QR code to scan"
    assert setup["Cache-Control"].startswith("max-age=0") or "no-cache" in setup["Cache-Control"]
    device = TOTPDevice.objects.get(user=owner, confirmed=False)
    assert secret_on(setup) in setup.content.decode().replace("%3D", "=")

    refused = client.post(response["Location"], {"code": wrong_code(device)})
    assert refused.status_code == 200 and b"does not match" in refused.content
    device.refresh_from_db()
    device.throttling_failure_count = 0
    device.save()

    done = client.post(response["Location"], {"code": code_for(device)})
    assert done.status_code == 302 and done["Location"] == "/today/"
    assert client.get("/today/").status_code == 200
    device.refresh_from_db()
    assert device.confirmed
    assert AuditEvent.objects.filter(action="auth.two_factor.enable", actor=owner).exists()


def test_reloading_the_set_up_page_keeps_the_same_secret(owner, clinic):
    client = Client()
    password_sign_in(client, "olivia")
    start_set_up(client)
    assert secret_on(client.get(SET_UP)) == secret_on(client.get(SET_UP))
    start_set_up(client)  # pressed again (another tab, Back): the same device, not a second one
    assert secret_on(client.get(SET_UP)) == secret_on(client.get(SET_UP))
    assert TOTPDevice.objects.filter(user=owner).count() == 1
    assert AuditEvent.objects.filter(action="auth.two_factor.start").count() == 1


def test_opening_the_set_up_page_writes_nothing(desk, clinic):
    """A GET (or HEAD) shows the page and its "Start set-up" button: no device, no audit row.
    Only the button's POST makes the device, and says so in the audit log."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(desk)
    before = AuditEvent.objects.count()
    for _ in range(2):
        page = client.get(SET_UP)
        assert page.status_code == 200
        assert client.head(SET_UP).status_code == 200
    assert not TOTPDevice.objects.filter(user=desk).exists()
    assert AuditEvent.objects.count() == before
    form = re.search(rb'<form method="post" class="form-card">(.*?)</form>', page.content, re.S).group(1)
    assert b"csrfmiddlewaretoken" in form and b'name="start"' in form and b"Start set-up" in form


def test_starting_set_up_needs_the_csrf_token_and_is_audited(desk, clinic):
    client = Client(enforce_csrf_checks=True)
    client.force_login(desk)
    page = client.get(SET_UP)
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content).group(1).decode()
    assert client.post(SET_UP, {"start": "1"}).status_code == 403
    assert not TOTPDevice.objects.filter(user=desk).exists()
    started = client.post(SET_UP, {"start": "1", "csrfmiddlewaretoken": token})
    assert started.status_code == 302 and started["Location"] == SET_UP
    device = TOTPDevice.objects.get(user=desk)
    assert not device.confirmed
    event = AuditEvent.objects.get(action="auth.two_factor.start")
    assert (event.actor_id, event.object_id, event.after) == (desk.pk, str(desk.pk), {"device_id": device.pk})
    assert device.key not in json.dumps(event.after), "never the secret"
    assert secret_on(client.get(SET_UP))


def test_a_code_sent_before_starting_set_up_is_refused_without_a_device(desk, clinic):
    client = Client()
    password_sign_in(client, "frank")
    response = client.post(SET_UP, {"code": "123456"}, follow=True)
    assert response.status_code == 200 and b"Start setting up two-factor sign-in first" in response.content
    assert not TOTPDevice.objects.exists()


def test_starting_when_it_is_already_on_changes_nothing(desk, clinic):
    from django_otp import DEVICE_ID_SESSION_KEY

    from tally.clinic.actions.two_factor import do_add_known_device

    do_add_known_device(acting_user=None, staff=desk, key=b"desk-test-device-0001".hex())
    client = Client()
    client.force_login(desk)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = TOTPDevice.objects.get(user=desk).persistent_id
    session.save()
    response = client.post(SET_UP, {"start": "1"})
    assert response.status_code in (200, 302)
    assert TOTPDevice.objects.filter(user=desk).count() == 1
    assert not AuditEvent.objects.filter(action="auth.two_factor.start").exists()


def test_an_owner_with_a_device_is_asked_for_the_code(owner, owner_device, clinic):
    client = Client()
    response = password_sign_in(client, "olivia")
    assert response.status_code == 302
    step = urlparse(response["Location"])
    assert step.path == "/login/code/" and parse_qs(step.query)["next"] == ["/today/"]
    assert client.get("/today/")["Location"].startswith("/login/code/")
    assert client.get("/account/two-factor/")["Location"].startswith("/login/code/"), "no way around the code"
    page = client.get(response["Location"])
    assert page.status_code == 200 and b"authenticator app" in page.content

    wrong = client.post("/login/code/", {"code": wrong_code(owner_device), "next": "/today/"})
    assert wrong.status_code == 200 and b"does not match" in wrong.content
    owner_device.refresh_from_db()
    owner_device.throttling_failure_count = 0
    owner_device.save()
    key_before = client.session.session_key
    right = client.post("/login/code/", {"code": code_for(owner_device), "next": "/patients/"})
    assert right.status_code == 302 and right["Location"] == "/patients/"
    assert client.session.session_key != key_before, "a new session key once fully signed in"
    assert client.get("/today/").status_code == 200

    # A code works once.
    again = Client()
    password_sign_in(again, "olivia")
    assert again.post("/login/code/", {"code": code_for(owner_device)}).status_code == 200


def test_the_code_step_refuses_to_send_anyone_off_site(owner, owner_device, clinic):
    client = Client()
    password_sign_in(client, "olivia")
    response = client.post("/login/code/", {"code": code_for(owner_device), "next": "https://evil.example/"})
    assert response["Location"] == "/today/"


def test_an_htmx_request_is_sent_to_the_code_step_as_a_whole_page(owner, owner_device, clinic):
    client = Client()
    password_sign_in(client, "olivia")
    response = client.get("/today/", headers={"HX-Request": "true"})
    assert response.status_code == 204 and response["HX-Redirect"].startswith("/login/code/")


def test_an_owner_cannot_turn_it_off(owner, owner_device, clinic):
    client = Client()
    password_sign_in(client, "olivia")
    client.post("/login/code/", {"code": code_for(owner_device)})
    page = client.get("/account/two-factor/")
    assert b"Owners must keep it on" in page.content and b"Turn two-factor sign-in off" not in page.content
    refused = client.post("/account/two-factor/", {"code": code_for(owner_device, steps_ahead=1)})
    assert refused.status_code == 403
    assert TOTPDevice.objects.filter(user=owner, confirmed=True).exists()


def test_the_requirement_can_be_switched_off(owner, clinic, settings):
    settings.TALLY_OWNER_2FA_REQUIRED = False
    client = Client()
    assert password_sign_in(client, "olivia")["Location"] == "/today/"
    assert client.get("/today/").status_code == 200


def test_the_admin_login_leads_to_the_same_code_step(owner, owner_device, clinic):
    owner.is_staff = owner.is_superuser = True
    owner.save()
    client = Client()
    response = client.post("/admin/login/?next=/admin/", {"username": "olivia", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get("/admin/")["Location"].startswith("/login/code/")
    client.post("/login/code/", {"code": code_for(owner_device)})
    assert client.get("/admin/").status_code == 200


# --- other staff --------------------------------------------------------------------------


def test_front_desk_signs_in_without_a_code(desk, clinic):
    client = Client()
    assert password_sign_in(client, "frank")["Location"] == "/today/"
    assert client.get("/today/").status_code == 200
    assert b"Two-factor sign-in" in client.get("/today/").content, "the page is linked for everyone"


def test_front_desk_may_turn_it_on_and_is_then_asked_for_codes(desk, clinic):
    client = Client()
    password_sign_in(client, "frank")
    page = client.get("/account/two-factor/")
    assert page.status_code == 200 and b"Owners must" not in page.content
    start_set_up(client)
    device = TOTPDevice.objects.get(user=desk)
    assert client.post("/account/two-factor/", {"code": code_for(device)})["Location"] == "/today/"
    assert client.get("/today/").status_code == 200, "this session proved the code already"

    later = Client()
    assert password_sign_in(later, "frank")["Location"].startswith("/login/code/")
    later.post("/login/code/", {"code": code_for(device, steps_ahead=1)})
    assert later.get("/today/").status_code == 200

    # And may turn it off again, with a current code (a fresh one: as if a minute had passed).
    TOTPDevice.objects.filter(pk=device.pk).update(last_t=-1)
    off = later.post("/account/two-factor/", {"code": code_for(device)})
    assert off.status_code == 302
    assert not TOTPDevice.objects.filter(user=desk).exists()
    assert AuditEvent.objects.filter(action="auth.two_factor.disable", actor=desk).exists()
    assert password_sign_in(Client(), "frank")["Location"] == "/today/"


# --- the API ------------------------------------------------------------------------------


def test_the_api_asks_for_the_code_once_there_is_a_device(owner, owner_device, clinic):
    missing = token_request("olivia")
    assert missing.status_code == 401
    error = missing.json()["error"]
    assert error["code"] == "unauthenticated" and "two-factor" in error["message"] and error["fields"] == {"otp": "required"}

    wrong = token_request("olivia", otp=wrong_code(owner_device))
    assert wrong.status_code == 401 and wrong.json()["error"]["fields"] == {"otp": "wrong or expired"}
    owner_device.refresh_from_db()
    owner_device.throttling_failure_count = 0
    owner_device.save()

    assert token_request("olivia", password="wrong password!", otp=code_for(owner_device)).status_code == 401
    right = token_request("olivia", otp=code_for(owner_device))
    assert right.status_code == 200 and right.json()["role"] == "owner"


def test_the_api_refuses_an_owner_who_has_not_set_it_up(owner, clinic):
    response = token_request("olivia")
    assert response.status_code == 401
    assert "set it up first" in response.json()["error"]["message"]


def test_the_api_issues_tokens_without_a_code_to_staff_without_a_device(desk, clinic):
    assert token_request("frank").status_code == 200


def test_createtoken_keeps_working_for_owners_with_two_factor(owner, owner_device, clinic):
    out = io.StringIO()
    call_command("createtoken", "olivia", stdout=out)
    raw = out.getvalue().strip()
    assert ApiToken.objects.filter(token_hash=hash_token(raw), staff=owner).exists()
    assert Client().get("/api/v1/me", headers={"Authorization": f"Bearer {raw}"}).status_code == 200


def test_resettwofactor_removes_the_device_for_a_lost_phone(owner, owner_device, clinic):
    out = io.StringIO()
    call_command("resettwofactor", "olivia", stdout=out)
    assert "Removed 1 two-factor device(s) of olivia" in out.getvalue()
    assert not TOTPDevice.objects.filter(user=owner).exists()
    assert password_sign_in(Client(), "olivia")["Location"].startswith("/account/two-factor/")


# --- the demo -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_demo_says_how_the_owner_signs_in_and_the_desk_needs_no_code(monkeypatch):
    monkeypatch.setattr("tally.clinic.management.commands.demo.load_demo",
                        functools.partial(demo.load_demo, regular_patients=3))
    out = io.StringIO()
    call_command("demo", "--no-serve", "--port", "8123", stdout=out)
    text = out.getvalue()
    assert "tally democode" in text and "two-factor code" in text
    device = TOTPDevice.objects.get(user__username=demo.DEMO_OWNER[0], confirmed=True)
    assert device.key == demo.DEMO_OWNER_TOTP_KEY
    from tally.clinic.actions.two_factor import base32_secret

    assert base32_secret(device) in text

    code = io.StringIO()
    call_command("democode", stdout=code, stderr=io.StringIO())
    client = Client()
    assert password_sign_in(client, *demo.DEMO_OWNER)["Location"].startswith("/login/code/")
    assert client.post("/login/code/", {"code": code.getvalue().strip()})["Location"] == "/today/"
    assert client.get("/today/").status_code == 200

    desk = Client()
    assert password_sign_in(desk, *demo.DEMO_DESK)["Location"] == "/today/"


def test_a_fully_signed_in_owner_opening_the_sign_in_page_goes_straight_on(owner, owner_device, clinic):
    client = Client()
    password_sign_in(client, "olivia")
    client.post("/login/code/", {"code": code_for(owner_device)})
    assert client.get("/login/")["Location"] == "/today/"


def test_a_code_used_by_a_request_running_beside_this_one_is_refused(owner, owner_device, clinic):
    """Two requests with the same code at once: each loaded the device before the other used
    the code, so each saw it unused and both signed in (django-otp checks the copy it is
    given). The check reads the device again, locked, so the code works once."""
    from tally.clinic.actions.two_factor import confirmed_device, verify_code

    code = code_for(owner_device)
    loaded_by_the_other_request = confirmed_device(owner)
    assert token_request("olivia", otp=code).status_code == 200
    assert verify_code(loaded_by_the_other_request, code) is False
    assert token_request("olivia", otp=code).status_code == 401
