"""Sessions end after 15 idle minutes or 12 hours; signing out or deactivating someone ends
all of their sessions and revokes their API tokens."""

from __future__ import annotations

import io
import time

import pytest
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.test import Client

from tally.clinic.models import ApiToken, AuditEvent, Staff
from tally.security.models import SignedInSession
from tally.security.sessions import LAST_SEEN, SIGNED_IN_AT

from .conftest import PASSWORD, password_sign_in


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def shift(client: Client, **seconds_ago: float) -> None:
    """Move the session's sign-in and last-seen times into the past."""
    session = client.session
    now = time.time()
    if "signed_in" in seconds_ago:
        session[SIGNED_IN_AT] = now - seconds_ago["signed_in"]
    if "last_seen" in seconds_ago:
        session[LAST_SEEN] = now - seconds_ago["last_seen"]
    session.save()


def is_signed_in(client: Client) -> bool:
    response = client.get("/today/")
    return response.status_code == 200


def test_the_defaults_are_15_idle_minutes_and_12_hours(settings):
    assert settings.TALLY_SESSION_IDLE_MINUTES == 15
    assert settings.TALLY_SESSION_MAX_HOURS == 12
    assert settings.SESSION_COOKIE_AGE == 12 * 3600


def test_a_session_idle_for_more_than_15_minutes_is_signed_out(desk, clinic):
    client = signed_in(desk)
    shift(client, last_seen=15 * 60 + 5)
    response = client.get("/today/", follow=True)
    assert response.redirect_chain[0][0].startswith("/login/")
    assert b"signed out after 15 minutes without activity" in response.content
    assert not is_signed_in(client)


def test_activity_keeps_a_session_alive(desk, clinic):
    client = signed_in(desk)
    shift(client, last_seen=14 * 60)
    assert is_signed_in(client)
    assert time.time() - client.session[LAST_SEEN] < 5, "the request moved last-seen on"
    shift(client, last_seen=14 * 60)
    assert is_signed_in(client)


def test_the_idle_timeout_is_a_setting(desk, clinic, settings):
    settings.TALLY_SESSION_IDLE_MINUTES = 5
    client = signed_in(desk)
    shift(client, last_seen=5 * 60 + 5)
    assert not is_signed_in(client)


def test_a_session_ends_12_hours_after_signing_in_even_when_active(desk, clinic):
    client = signed_in(desk)
    shift(client, signed_in=12 * 3600 - 60, last_seen=30)
    assert is_signed_in(client)
    shift(client, signed_in=12 * 3600 + 5, last_seen=30)
    response = client.get("/today/", follow=True)
    assert b"12 hours after signing in" in response.content
    assert not is_signed_in(client)


def test_a_session_without_the_times_is_not_trusted(desk, clinic):
    client = signed_in(desk)
    session = client.session
    del session[SIGNED_IN_AT]
    session.save()
    assert not is_signed_in(client)


def test_a_timeout_ends_only_that_session(desk, clinic):
    idle, busy = signed_in(desk), signed_in(desk)
    shift(idle, last_seen=3600)
    assert not is_signed_in(idle)
    assert is_signed_in(busy)


def test_signing_out_ends_every_session_of_that_user(desk, practitioner, clinic):
    laptop, tablet, someone_else = signed_in(desk), password_sign_in_client(desk), signed_in(practitioner)
    assert SignedInSession.objects.filter(staff=desk).count() == 2
    assert laptop.post("/logout/").status_code == 302
    assert not is_signed_in(tablet)
    assert not SignedInSession.objects.filter(staff=desk).exists()
    assert is_signed_in(someone_else)


def password_sign_in_client(user) -> Client:
    client = Client()
    assert password_sign_in(client, user.username).status_code == 302
    return client


def test_signing_out_also_revokes_that_users_api_tokens(desk, practitioner, clinic):
    """Issue 5: signing out ends all of that user's sessions and API tokens, wherever they
    were issued (POST /auth/token or tally createtoken); other staff keep theirs."""
    token, raw = ApiToken.issue(desk, label="script")
    _, others = ApiToken.issue(practitioner, label="theirs")
    api = Client(headers={"Authorization": f"Bearer {raw}"})
    assert api.get("/api/v1/me").status_code == 200
    signed_in(desk).post("/logout/")
    response = api.get("/api/v1/me")
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthenticated"
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert Client().get("/api/v1/me", headers={"Authorization": f"Bearer {others}"}).status_code == 200
    event = AuditEvent.objects.filter(action="token.revoke").get()  # why its 401s began
    assert (event.actor_id, event.object_id, event.after) == (desk.pk, str(desk.pk), {"tokens": 1, "cause": "sign_out"})


def test_tally_deactivate_ends_sessions_and_revokes_tokens(desk, clinic):
    browser = signed_in(desk)
    _, raw = ApiToken.issue(desk)
    api = Client(headers={"Authorization": f"Bearer {raw}"})
    assert api.get("/api/v1/me").status_code == 200
    out = io.StringIO()
    call_command("deactivate", "frank", stdout=out)
    assert "Deactivated frank" in out.getvalue()
    assert not is_signed_in(browser)
    assert api.get("/api/v1/me").status_code == 401
    assert not ApiToken.objects.filter(staff=desk, revoked_at__isnull=True).exists()
    assert not SignedInSession.objects.filter(staff=desk).exists()
    assert AuditEvent.objects.filter(action="staff.deactivate", object_id=str(desk.pk)).exists()
    # And the password no longer signs in, on the web or the API.
    assert password_sign_in(Client(), "frank").status_code == 200
    assert Client().post("/api/v1/auth/token", {"username": "frank", "password": PASSWORD},
                         content_type="application/json").status_code == 401


def test_deactivate_refuses_unknown_and_already_inactive_staff(desk, clinic):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No staff member"):
        call_command("deactivate", "nobody")
    call_command("deactivate", "frank", stdout=io.StringIO())
    with pytest.raises(CommandError, match="already deactivated"):
        call_command("deactivate", "frank")


def test_deactivating_in_the_admin_ends_sessions_and_tokens(desk, owner, clinic, settings):
    settings.TALLY_OWNER_2FA_REQUIRED = False  # the admin's two-factor gate is tested in test_two_factor
    owner.is_staff = owner.is_superuser = True  # as `tally createuser --role owner` makes them
    owner.save()
    browser = signed_in(desk)
    token, raw = ApiToken.issue(desk)
    admin = signed_in(owner)
    page = admin.get(f"/admin/clinic/staff/{desk.pk}/change/")
    assert page.status_code == 200
    form = page.context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None and name != "password"}
    data.update({"is_active": "", "date_joined_0": "2026-01-01", "date_joined_1": "09:00:00",
                 "last_login_0": "", "last_login_1": "", "groups": [], "user_permissions": []})
    response = admin.post(f"/admin/clinic/staff/{desk.pk}/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    desk.refresh_from_db()
    assert desk.is_active is False
    assert not is_signed_in(browser)
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_a_user_deactivated_behind_djangos_back_is_refused_on_the_next_request(desk, clinic):
    """A bulk update sends no signal; each request still checks is_active (ModelBackend.get_user)."""
    browser = signed_in(desk)
    _, raw = ApiToken.issue(desk)
    Staff.objects.filter(pk=desk.pk).update(is_active=False)
    assert not is_signed_in(browser)
    assert Client().get("/api/v1/me", headers={"Authorization": f"Bearer {raw}"}).status_code == 401


def test_the_session_registry_forgets_sessions_that_ended(desk, clinic):
    first = signed_in(desk)
    Session.objects.filter(session_key=first.session.session_key).delete()
    signed_in(desk)
    assert SignedInSession.objects.filter(staff=desk).count() == 1


def test_signing_out_before_the_code_step_ends_only_that_half_signed_in_session(owner, clinic):
    """Someone with an owner's password but not their code must not be able to sign the owner
    out everywhere and revoke their tokens: only a full sign-in's sign-out does that."""
    from tally.clinic.actions.two_factor import do_add_known_device

    from .conftest import code_for

    device = do_add_known_device(acting_user=None, staff=owner, key=b"owner-test-device-01".hex())
    owners_browser = Client()
    password_sign_in(owners_browser, "olivia")
    assert owners_browser.post("/login/code/", {"code": code_for(device)}).status_code == 302
    _, raw = ApiToken.issue(owner, label="script")
    intruder = Client()
    assert password_sign_in(intruder, "olivia")["Location"].startswith("/login/code/")
    assert intruder.post("/logout/").status_code == 302
    assert intruder.get("/today/")["Location"].startswith("/login/"), "that session is over"
    assert is_signed_in(owners_browser)
    assert Client().get("/api/v1/me", headers={"Authorization": f"Bearer {raw}"}).status_code == 200
    assert not AuditEvent.objects.filter(action="token.revoke").exists()


# --- a password change -----------------------------------------------------------------------------
# It ends the staff member's other web sessions (Django's session auth hash) and revokes the API
# tokens obtained with the old password (POST /auth/token); tokens from `tally createtoken` were
# never tied to the password and keep working.

NEW_PASSWORD = "a brand new passphrase 42"


def password_token(username: str, password: str = PASSWORD) -> str:
    response = Client().post("/api/v1/auth/token", {"username": username, "password": password},
                             content_type="application/json")
    assert response.status_code == 200, response.content
    return response.json()["token"]


def command_line_token(username: str, *args: str) -> str:
    out = io.StringIO()
    call_command("createtoken", username, *args, stdout=out)
    return out.getvalue().strip()


def answers(raw: str) -> int:
    return Client().get("/api/v1/me", headers={"Authorization": f"Bearer {raw}"}).status_code


def test_changing_a_password_in_the_admin_ends_sessions_and_revokes_password_tokens_only(desk, owner, clinic,
                                                                                         settings):
    settings.TALLY_OWNER_2FA_REQUIRED = False  # the admin's two-factor gate is tested in test_two_factor
    owner.is_staff = owner.is_superuser = True  # as `tally createuser --role owner` makes them
    owner.save()
    browser, signed_in_token = password_sign_in_client(desk), password_token("frank")
    script_token, labelled_api = command_line_token("frank"), command_line_token("frank", "--label", "api")
    _, others = ApiToken.issue(owner, label="theirs")
    admin = signed_in(owner)
    response = admin.post(f"/admin/clinic/staff/{desk.pk}/password/",
                          {"usable_password": "true", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert response.status_code == 302, response.context["form"].errors if response.context else response
    assert not is_signed_in(browser)
    assert answers(signed_in_token) == 401
    assert (answers(script_token), answers(labelled_api), answers(others)) == (200, 200, 200)
    assert is_signed_in(admin)
    event = AuditEvent.objects.filter(action="token.revoke").get()  # why its 401s began
    assert (event.actor_id, event.object_id, event.after) == (None, str(desk.pk),
                                                              {"tokens": 1, "cause": "password_change"})
    assert answers(password_token("frank", NEW_PASSWORD)) == 200


def test_a_password_set_anywhere_else_revokes_the_tokens_signed_in_with_the_old_one(desk, clinic):
    """`tally changepassword`, `tally shell`, a data fix: each ends in set_password() and save()."""
    old, script = password_token("frank"), command_line_token("frank")
    desk.set_password(NEW_PASSWORD)
    desk.save()
    assert (answers(old), answers(script)) == (401, 200)
    desk.save()  # a later save that changes no password revokes nothing more
    assert AuditEvent.objects.filter(action="token.revoke").count() == 1


def test_disabling_a_password_revokes_the_tokens_signed_in_with_it(desk, clinic):
    old, script = password_token("frank"), command_line_token("frank")
    desk.set_unusable_password()
    desk.save()
    assert (answers(old), answers(script)) == (401, 200)


def test_a_password_re_hashed_at_sign_in_is_no_change(desk, clinic):
    """Django re-hashes a password stored with an older hasher when it is next checked: the same
    password, so the tokens signed in with it stay valid."""
    from django.contrib.auth.hashers import make_password

    Staff.objects.filter(pk=desk.pk).update(password=make_password(PASSWORD, hasher="pbkdf2_sha256"))
    first = password_token("frank")
    assert Staff.objects.get(pk=desk.pk).password.startswith("pbkdf2_sha256$") is False  # re-hashed
    assert answers(first) == 200
    assert answers(password_token("frank")) == 200
    assert not AuditEvent.objects.filter(action="token.revoke").exists()


def test_each_token_records_how_it_was_obtained(desk, clinic):
    from tally.clinic.models.staff import hash_token

    signed_in_token, script_token = password_token("frank"), command_line_token("frank", "--label", "api")
    origins = {raw: ApiToken.objects.get(token_hash=hash_token(raw)).origin for raw in (signed_in_token, script_token)}
    assert origins == {signed_in_token: "password", script_token: "command_line"}


def test_tokens_from_before_origins_were_recorded_are_read_from_their_label(desk, clinic):
    """Migration 0006: POST /auth/token labelled every token "api"; any other label came from the
    command line. An "api" one stays a password token (it may be `createtoken --label api`: the
    cautious reading, since it is revoked rather than kept)."""
    from importlib import import_module

    from django.apps import apps

    migration = import_module("tally.clinic.migrations.0006_apitoken_origin")
    labels = ["api", "command line", "tally demo", "nightly export"]
    for label in labels:
        ApiToken.issue(desk, label=label)  # the field's default, as every row had after AddField
    migration.mark_command_line_tokens(apps, None)
    assert dict(ApiToken.objects.values_list("label", "origin")) == {
        "api": "password", "command line": "command_line", "tally demo": "command_line",
        "nightly export": "command_line"}


def test_a_promotion_to_owner_revokes_the_tokens_signed_in_without_a_code(desk, clinic, settings):
    """Owners sign in to the API with a two-factor code. A front desk's tokens were issued
    without one: promoted to owner, they kept working with the owner's powers (the audit log,
    the catalog, permanent deletion) for up to 12 hours while the staff site already asked for
    the two-factor set-up. Signing in again now asks for the code."""
    settings.TALLY_OWNER_2FA_REQUIRED = True
    signed_in_token, script_token = password_token("frank"), command_line_token("frank")
    desk.role = "owner"
    desk.save()
    assert answers(signed_in_token) == 401
    assert answers(script_token) == 200  # `tally createtoken` needs no code, for owners either
    event = AuditEvent.objects.filter(action="token.revoke").get()
    assert event.after == {"tokens": 1, "cause": "two_factor_required"}
    desk.first_name = "Frankie"
    desk.save()  # a later save that changes no role revokes nothing more
    assert AuditEvent.objects.filter(action="token.revoke").count() == 1


def test_a_promotion_when_owners_need_no_code_revokes_nothing(desk, clinic, settings):
    settings.TALLY_OWNER_2FA_REQUIRED = False
    signed_in_token = password_token("frank")
    desk.role = "owner"
    desk.save()
    assert answers(signed_in_token) == 200
