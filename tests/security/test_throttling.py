"""Sign-in throttling (django-axes): per user name AND address, a pause that ends, every
lockout in the logs and the audit trail; on the staff site and on POST /auth/token."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.test import Client
from django.utils import timezone

from tally.clinic.models import AuditEvent

from .conftest import PASSWORD, code_for, wrong_code

LIMIT = 5


def token_request(client: Client, username: str, password: str, otp: str | None = None, **extra):
    body = {"username": username, "password": password} | ({"otp": otp} if otp is not None else {})
    return client.post("/api/v1/auth/token", json.dumps(body), content_type="application/json", **extra)


def web_sign_in(client: Client, username: str, password: str, **extra):
    return client.post("/login/", {"username": username, "password": password}, **extra)


def end_the_pause() -> None:
    """As if the cool-off had passed."""
    AccessAttempt.objects.update(attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - dt.timedelta(seconds=1))


def test_the_settings_lock_per_user_name_and_address_for_a_while():
    assert settings.AXES_LOCKOUT_PARAMETERS == [["username", "ip_address"]]
    assert settings.AXES_FAILURE_LIMIT == LIMIT
    assert settings.AXES_COOLOFF_TIME == dt.timedelta(minutes=15)
    assert "axes.backends.AxesStandaloneBackend" == settings.AUTHENTICATION_BACKENDS[0]


def test_each_test_starts_with_no_failed_attempts(db):
    assert AccessAttempt.objects.count() == 0


def test_the_web_sign_in_pauses_after_five_failures(desk, clinic, caplog):
    client = Client()
    for _ in range(LIMIT - 1):
        response = web_sign_in(client, "frank", "wrong password!")
        assert response.status_code == 200 and b"enter a correct username and password" in response.content
    with caplog.at_level(logging.WARNING):
        paused = web_sign_in(client, "frank", "wrong password!")
    assert paused.status_code == 429
    assert b"Sign-in paused" in paused.content
    assert 14 * 60 < int(paused["Retry-After"]) <= 15 * 60
    assert any("Locking out" in r.getMessage() for r in caplog.records if r.name == "axes.handlers.database")

    # The right password is refused too, until the pause ends.
    assert web_sign_in(client, "frank", PASSWORD).status_code == 429
    event = AuditEvent.objects.filter(action="auth.lockout").order_by("pk").first()
    assert event is not None
    assert event.after["username"] == "frank" and event.after["ip_address"] == "127.0.0.1"
    assert event.object_type == "staff" and event.object_id == str(desk.pk)

    end_the_pause()
    response = web_sign_in(client, "frank", PASSWORD)
    assert response.status_code == 302 and response["Location"] == "/today/"


def test_failures_during_the_pause_do_not_extend_it(desk, clinic):
    client = Client()
    for _ in range(LIMIT):
        web_sign_in(client, "frank", "wrong password!")
    first = AccessAttempt.objects.get().attempt_time
    for _ in range(3):
        assert web_sign_in(client, "frank", "wrong password!").status_code == 429
    assert AccessAttempt.objects.get().attempt_time == first
    assert AuditEvent.objects.filter(action="auth.lockout").count() == 4, "the lockout and each refused attempt"


def test_the_pause_is_for_that_user_name_from_that_address_only(desk, owner, clinic):
    for _ in range(LIMIT):
        web_sign_in(Client(), "frank", "wrong password!")
    assert web_sign_in(Client(), "frank", PASSWORD).status_code == 429
    # The real Frank at the front desk's own computer is not locked out by a guesser elsewhere.
    other_address = web_sign_in(Client(), "frank", PASSWORD, REMOTE_ADDR="10.1.2.3")
    assert other_address.status_code == 302
    # And another user from the guesser's address is not either.
    assert web_sign_in(Client(), "olivia", PASSWORD).status_code == 302


def test_a_good_sign_in_clears_the_failures(desk, clinic):
    for _ in range(LIMIT - 1):
        web_sign_in(Client(), "frank", "wrong password!")
    assert web_sign_in(Client(), "frank", PASSWORD).status_code == 302
    for _ in range(LIMIT - 1):
        assert web_sign_in(Client(), "frank", "wrong password!").status_code == 200
    assert web_sign_in(Client(), "frank", PASSWORD).status_code == 302


def test_the_api_answers_429_rate_limited_with_retry_after(desk, clinic):
    client = Client()
    for _ in range(LIMIT - 1):
        assert token_request(client, "frank", "wrong password!").status_code == 401
    paused = token_request(client, "frank", "wrong password!")
    assert paused.status_code == 429
    body = paused.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "fields"}
    assert body["error"]["code"] == "rate_limited" and "Try again in 15 minutes" in body["error"]["message"]
    assert 14 * 60 < int(paused["Retry-After"]) <= 15 * 60

    refused = token_request(client, "frank", PASSWORD)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert int(refused["Retry-After"]) <= 15 * 60
    assert AuditEvent.objects.filter(action="auth.lockout", after__username="frank").count() == 2

    assert token_request(client, "frank", PASSWORD, REMOTE_ADDR="10.1.2.3").status_code == 200
    end_the_pause()
    assert token_request(client, "frank", PASSWORD).status_code == 200
    assert not AccessAttempt.objects.exists(), "a good sign-in clears the failures"


def test_the_api_and_the_web_count_together(desk, clinic):
    for _ in range(LIMIT - 1):
        token_request(Client(), "frank", "wrong password!")
    assert web_sign_in(Client(), "frank", "wrong password!").status_code == 429


def test_wrong_two_factor_codes_count_as_failures(owner, owner_device, clinic):
    for _ in range(LIMIT - 1):
        response = token_request(Client(), "olivia", PASSWORD, otp=wrong_code(owner_device))
        assert response.status_code == 401 and response.json()["error"]["fields"] == {"otp": "wrong or expired"}
        owner_device.refresh_from_db()
        owner_device.throttling_failure_count = 0  # django-otp's own slow-down, not under test here
        owner_device.save()
    assert token_request(Client(), "olivia", PASSWORD, otp=wrong_code(owner_device)).status_code == 429
    assert token_request(Client(), "olivia", PASSWORD, otp=code_for(owner_device)).status_code == 429


def test_wrong_codes_at_the_web_code_step_pause_and_sign_the_session_out(owner, owner_device, clinic):
    client = Client()
    assert web_sign_in(client, "olivia", PASSWORD)["Location"].startswith("/login/code/")
    for _ in range(LIMIT - 1):
        response = client.post("/login/code/", {"code": wrong_code(owner_device)})
        assert response.status_code == 200 and b"does not match" in response.content
        owner_device.refresh_from_db()
        owner_device.throttling_failure_count = 0
        owner_device.save()
    paused = client.post("/login/code/", {"code": wrong_code(owner_device)})
    assert paused.status_code == 429 and "Retry-After" in paused
    # The half-signed-in session is gone: after the pause it starts again at the password.
    assert client.get("/today/")["Location"].startswith("/login/")
    assert AuditEvent.objects.filter(action="auth.lockout", after__username="olivia").exists()


@pytest.mark.parametrize("path", ["/login/", "/admin/login/"])
def test_every_password_form_is_throttled(path, owner, clinic):
    client = Client()
    for _ in range(LIMIT):
        client.post(path, {"username": "olivia", "password": "wrong password!"})
    assert client.post(path, {"username": "olivia", "password": PASSWORD}).status_code == 429


@pytest.mark.parametrize("path", ["/login/", "/admin/login/"])
def test_a_user_name_longer_than_any_is_refused_not_a_500_on_every_sign_in_form(path, clinic):
    """django-axes records a failed name in a column of 255 characters: a longer one made a
    500 on PostgreSQL, through the admin's form too (found by the form fuzzing, then review).
    The name it records is clipped; the staff form also refuses it outright."""
    name = "z" * 300
    response = Client().post(path, {"username": name, "password": "not the password at all"})
    assert response.status_code == 200
    for attempt in AccessAttempt.objects.all():
        assert len(attempt.username or "") <= 255


def test_signing_in_again_with_the_password_does_not_clear_wrong_codes(owner, owner_device, clinic):
    """The password is only half a sign-in for someone with two-factor: if it cleared the
    failures, whoever knows it could guess codes without end, 4 at a time."""
    for _ in range(2):
        client = Client()
        assert web_sign_in(client, "olivia", PASSWORD)["Location"].startswith("/login/code/")
        for _ in range(3):  # 6 in all: the pause begins at the 5th
            client.post("/login/code/", {"code": wrong_code(owner_device)})
            owner_device.refresh_from_db()
            owner_device.throttling_failure_count = 0  # django-otp's own slow-down, not under test here
            owner_device.save()
    client = Client()
    assert web_sign_in(client, "olivia", PASSWORD).status_code == 429


def test_the_code_step_passed_clears_the_failures(owner, owner_device, clinic):
    client = Client()
    for _ in range(LIMIT - 1):
        web_sign_in(Client(), "olivia", "wrong password!")
    web_sign_in(client, "olivia", PASSWORD)
    assert client.post("/login/code/", {"code": code_for(owner_device)}).status_code == 302
    assert not AccessAttempt.objects.exists()


def test_behind_a_proxy_the_pause_and_the_audit_use_the_address_the_proxy_saw(desk, clinic, settings):
    """Behind a proxy (TALLY_BEHIND_PROXY) every request comes from the proxy's address: keyed on
    it, five wrong passwords from anywhere paused the real user everywhere, and the audit log
    named the proxy for everyone. The client's address is the last X-Forwarded-For entry, the
    one the proxy added; what a client sends before it is not trusted."""
    settings.TALLY_BEHIND_PROXY = True
    via_proxy = {"REMOTE_ADDR": "127.0.0.1"}
    guesser = {"HTTP_X_FORWARDED_FOR": "198.51.100.7", **via_proxy}
    for _ in range(LIMIT):
        web_sign_in(Client(), "frank", "wrong password!", **guesser)
    assert web_sign_in(Client(), "frank", PASSWORD, **guesser).status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"198.51.100.7"}
    assert AuditEvent.objects.filter(action="auth.lockout").values_list("ip", flat=True)[0] == "198.51.100.7"
    spoofed = {"HTTP_X_FORWARDED_FOR": "10.9.9.9, 198.51.100.7", **via_proxy}
    assert web_sign_in(Client(), "frank", PASSWORD, **spoofed).status_code == 429, "a new address by sending one"

    front_desk = Client()
    at_the_desk = {"HTTP_X_FORWARDED_FOR": "203.0.113.20", **via_proxy}
    assert web_sign_in(front_desk, "frank", PASSWORD, **at_the_desk).status_code == 302
    assert token_request(Client(), "frank", PASSWORD, **at_the_desk).status_code == 200
    issued = AuditEvent.objects.filter(action="token.issue").get()
    assert issued.ip == "203.0.113.20"


def test_without_a_proxy_a_forwarded_for_header_is_not_trusted(desk, clinic, settings):
    settings.TALLY_BEHIND_PROXY = False
    for n in range(LIMIT):
        web_sign_in(Client(), "frank", "wrong password!", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}")
    assert web_sign_in(Client(), "frank", PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.99").status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"127.0.0.1"}
