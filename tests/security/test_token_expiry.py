"""API tokens from a password sign-in (POST /auth/token) end TALLY_TOKEN_MAX_HOURS after they
were issued, like a web session; tokens from `tally createtoken` (scripts) keep working unless
given `--expires-hours`. The expiry is stored on the token when it is issued, so a changed
setting neither ends nor extends tokens already out."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tally.api import auth
from tally.clinic.models import ApiToken, AuditEvent
from tally.clinic.models.staff import hash_token

from .conftest import PASSWORD


def sign_in(username: str = "frank") -> dict:
    response = Client().post("/api/v1/auth/token", {"username": username, "password": PASSWORD},
                             content_type="application/json")
    assert response.status_code == 200, response.content
    return response.json()


def me(raw: str):
    return Client().get("/api/v1/me", headers={"Authorization": f"Bearer {raw}"})


def row(raw: str) -> ApiToken:
    return ApiToken.objects.get(token_hash=hash_token(raw))


def at(monkeypatch, moment: dt.datetime) -> None:
    """The time the token check reads."""
    monkeypatch.setattr(auth.timezone, "now", lambda: moment)


def test_a_signed_in_token_says_when_it_expires_and_stores_it(desk, clinic, settings):
    settings.TALLY_TOKEN_MAX_HOURS = 12
    before = timezone.now()
    body = sign_in()
    after = timezone.now()
    assert set(body) == {"token", "role", "expires_at"}
    expires_at = dt.datetime.fromisoformat(body["expires_at"])
    assert expires_at.utcoffset() == dt.timedelta(0)  # UTC
    assert before + dt.timedelta(hours=12) <= expires_at <= after + dt.timedelta(hours=12)
    token = row(body["token"])
    assert token.expires_at == expires_at and token.origin == "password"
    event = AuditEvent.objects.filter(action="token.issue").get()
    assert event.after["expires_at"] == body["expires_at"]


def test_the_lifetime_follows_the_setting(desk, clinic, settings):
    settings.TALLY_TOKEN_MAX_HOURS = 2
    body = sign_in()
    token = row(body["token"])
    assert token.expires_at - token.created_at == pytest.approx(dt.timedelta(hours=2), abs=dt.timedelta(seconds=5))


def test_a_token_works_until_its_expiry_and_not_from_then_on(desk, clinic, monkeypatch):
    body = sign_in()
    expires_at = row(body["token"]).expires_at
    at(monkeypatch, expires_at - dt.timedelta(microseconds=1))
    assert me(body["token"]).status_code == 200
    at(monkeypatch, expires_at)
    response = me(body["token"])
    assert response.status_code == 401
    error = response.json()["error"]
    # API.md's code, which clients already answer by signing in again; the message and the
    # header say why.
    assert error["code"] == "unauthenticated" and error["fields"] == {}
    assert "expired" in error["message"] and "sign in again" in error["message"].lower()
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert 'error="invalid_token"' in response["WWW-Authenticate"]
    assert 'error_description="The token has expired"' in response["WWW-Authenticate"]
    at(monkeypatch, expires_at + dt.timedelta(days=30))
    assert "expired" in me(body["token"]).json()["error"]["message"]


def test_an_expired_token_is_refused_on_writes_too(desk, clinic, monkeypatch):
    body = sign_in()
    at(monkeypatch, row(body["token"]).expires_at + dt.timedelta(seconds=1))
    response = Client().post("/api/v1/patients", {"first_name": "A", "last_name": "B"},
                             content_type="application/json",
                             headers={"Authorization": f"Bearer {body['token']}"})
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthenticated"
    assert "expired" in response.json()["error"]["message"]


def test_an_unknown_revoked_or_deactivated_token_is_still_just_unauthenticated(desk, clinic, monkeypatch):
    body = sign_in()
    assert me("tly_not-a-real-token").json()["error"]["code"] == "unauthenticated"
    ApiToken.objects.filter(token_hash=hash_token(body["token"])).update(revoked_at=timezone.now())
    revoked = me(body["token"])
    assert revoked.json()["error"]["code"] == "unauthenticated"  # revoked, though not expired
    assert "expired" not in revoked.json()["error"]["message"] and "expired" not in revoked["WWW-Authenticate"]


def test_a_changed_setting_does_not_change_tokens_already_issued(desk, clinic, settings, monkeypatch):
    settings.TALLY_TOKEN_MAX_HOURS = 12
    body = sign_in()
    issued = row(body["token"])
    settings.TALLY_TOKEN_MAX_HOURS = 1
    at(monkeypatch, issued.created_at + dt.timedelta(hours=2))
    assert me(body["token"]).status_code == 200


def test_checking_a_token_is_still_one_query_and_writes_nothing(desk, clinic):
    raw = sign_in()["token"]
    me(raw)  # the token statement compiled on this connection
    with CaptureQueriesContext(connection) as queries:
        assert me(raw).status_code == 200
    assert len(queries) == 1, [q["sql"] for q in queries]


def test_createtoken_tokens_do_not_expire_by_default(desk, clinic, monkeypatch):
    out = io.StringIO()
    call_command("createtoken", "frank", stdout=out)
    raw = out.getvalue().strip()
    assert row(raw).expires_at is None
    at(monkeypatch, timezone.now() + dt.timedelta(days=3650))
    assert me(raw).status_code == 200


def test_createtoken_expires_hours_gives_a_lifetime(desk, clinic, monkeypatch):
    out, err = io.StringIO(), io.StringIO()
    before = timezone.now()
    call_command("createtoken", "frank", "--expires-hours", "48", stdout=out, stderr=err)
    raw = out.getvalue().strip()
    assert raw.startswith("tly_") and "\n" not in raw  # still the token alone on standard output
    token = row(raw)
    assert token.origin == "command_line"
    assert token.expires_at - before == pytest.approx(dt.timedelta(hours=48), abs=dt.timedelta(seconds=5))
    assert "expires" in err.getvalue()
    event = AuditEvent.objects.filter(action="token.issue").get()
    assert event.after["expires_at"] == token.expires_at.isoformat()
    at(monkeypatch, token.expires_at)
    assert "expired" in me(raw).json()["error"]["message"]


@pytest.mark.parametrize("hours", ["0", "-3"])
def test_createtoken_refuses_a_lifetime_that_is_not_positive(desk, clinic, hours):
    with pytest.raises(CommandError, match="at least 1"):
        call_command("createtoken", "frank", "--expires-hours", hours, stdout=io.StringIO())
    assert not ApiToken.objects.exists()


@pytest.mark.parametrize("hours", ["99999999999", "100000000", "876001"])
def test_createtoken_refuses_a_lifetime_past_any_calendar_with_a_sentence(desk, clinic, hours):
    """An expiry past year 9999 (or an hour count past a C int) was a traceback; over a
    hundred years is refused, naming the way to a token that never expires."""
    with pytest.raises(CommandError, match="at most 876000"):
        call_command("createtoken", "frank", "--expires-hours", hours, stdout=io.StringIO())
    assert not ApiToken.objects.exists()


def test_tokens_from_before_expiry_was_stored_get_one_from_their_origin(desk, clinic, settings):
    """Migration 0008: a password token issued before it ends its lifetime after it was issued
    (an old one, at once); a command-line token keeps no expiry."""
    from importlib import import_module

    from django.apps import apps

    settings.TALLY_TOKEN_MAX_HOURS = 12
    migration = import_module("tally.clinic.migrations.0008_apitoken_expires_at")
    old, _ = ApiToken.issue(desk, label="api", origin="password")
    recent, _ = ApiToken.issue(desk, label="api", origin="password")
    script, _ = ApiToken.issue(desk, label="nightly export", origin="command_line")
    long_ago = timezone.now() - dt.timedelta(days=40)
    ApiToken.objects.filter(pk=old.pk).update(created_at=long_ago)
    ApiToken.objects.update(expires_at=None)  # as every row was after AddField
    migration.expire_password_tokens(apps, None)
    old.refresh_from_db()
    recent.refresh_from_db()
    script.refresh_from_db()
    assert old.expires_at == long_ago + dt.timedelta(hours=12)
    assert recent.expires_at == recent.created_at + dt.timedelta(hours=12)
    assert script.expires_at is None


def test_undoing_0008_refuses_while_a_command_line_token_has_an_expiry_to_lose(desk, clinic):
    """The earlier release has no expires_at: undone, a `tally createtoken --expires-hours 8`
    token lost its end, and upgrading again gave it none (0008 expires only password tokens),
    so a token meant for an afternoon worked for ever. The undo names it and changes nothing;
    once revoked or expired, the undo goes through. Password tokens get their end back from
    created_at on the way up, so they do not stop it."""
    from importlib import import_module

    from django.apps import apps

    migration = import_module("tally.clinic.migrations.0008_apitoken_expires_at")
    for_an_afternoon, _ = ApiToken.issue(desk, label="afternoon", origin="command_line",
                                         expires_at=timezone.now() + dt.timedelta(hours=8))
    ApiToken.issue(desk, label="api", origin="password", expires_at=timezone.now() + dt.timedelta(hours=8))
    ApiToken.issue(desk, label="nightly export", origin="command_line")
    with pytest.raises(CommandError, match=rf"token {for_an_afternoon.pk} .*tally revoketoken.*stays applied"):
        migration.keep_command_line_expiries(apps, None)
    ApiToken.objects.filter(pk=for_an_afternoon.pk).update(revoked_at=timezone.now())
    migration.keep_command_line_expiries(apps, None)
