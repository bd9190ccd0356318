"""Ending API tokens without the web site: `POST /api/v1/auth/sign-out` (a client's own sign
out, everywhere, as the web's is), and `tally tokens` / `tally revoketoken` for the one token
of a script that leaked, without deactivating its staff account."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from tally.clinic.models import ApiToken, AuditEvent
from tally.clinic.models.staff import TokenOrigin
from tally.security.models import SignedInSession


def api(raw: str) -> Client:
    return Client(headers={"Authorization": f"Bearer {raw}"})


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_signing_out_over_the_api_revokes_every_token_and_ends_every_web_session(desk, practitioner, clinic):
    _, device = ApiToken.issue(desk, label="front desk app")
    _, script = ApiToken.issue(desk, label="script", origin=TokenOrigin.COMMAND_LINE)
    _, theirs = ApiToken.issue(practitioner, label="theirs")
    browser = Client()
    browser.force_login(desk)
    assert SignedInSession.objects.filter(staff=desk).exists()
    response = api(device).post("/api/v1/auth/sign-out")
    assert response.status_code == 200, response.content
    assert response.json() == {"tokens_revoked": 2, "sessions_ended": 1}
    for raw in (device, script):
        assert api(raw).get("/api/v1/me").status_code == 401
    assert browser.get("/today/").status_code == 302  # back to the sign-in page
    assert api(theirs).get("/api/v1/me").status_code == 200
    event = AuditEvent.objects.filter(action="token.revoke").get()
    assert (event.actor_id, event.after) == (desk.pk, {"tokens": 2, "cause": "sign_out"})


def test_signing_out_needs_a_token_and_a_second_one_is_refused(desk, clinic):
    assert Client().post("/api/v1/auth/sign-out").status_code == 401
    _, raw = ApiToken.issue(desk)
    assert api(raw).post("/api/v1/auth/sign-out").status_code == 200
    again = api(raw).post("/api/v1/auth/sign-out")  # the token is gone: nothing more to end
    assert again.status_code == 401 and again.json()["error"]["code"] == "unauthenticated"


def test_tally_tokens_lists_a_staff_members_tokens_without_their_secrets(desk, clinic):
    live, raw = ApiToken.issue(desk, label="bookkeeping export", origin=TokenOrigin.COMMAND_LINE)
    revoked, _ = ApiToken.issue(desk, label="old app")
    ApiToken.objects.filter(pk=revoked.pk).update(revoked_at=revoked.created_at)
    listed = run("tokens", "frank")
    assert raw not in listed and live.token_hash not in listed
    [header, *rows] = listed.splitlines()
    assert header.split() == ["id", "origin", "created", "expires", "state", "label"]
    assert any(row.split()[0] == str(live.pk) and "live" in row and "bookkeeping export" in row for row in rows)
    assert any(row.split()[0] == str(revoked.pk) and "revoked" in row for row in rows)
    assert any("expires" not in row and "never" in row for row in rows if row.split()[0] == str(live.pk))


def test_tally_revoketoken_ends_that_token_alone_and_is_audited(desk, clinic):
    leaked, leaked_raw = ApiToken.issue(desk, label="leaked", origin=TokenOrigin.COMMAND_LINE)
    _, other = ApiToken.issue(desk, label="still needed", origin=TokenOrigin.COMMAND_LINE)
    assert "Revoked" in run("revoketoken", str(leaked.pk))
    assert api(leaked_raw).get("/api/v1/me").status_code == 401
    assert api(other).get("/api/v1/me").status_code == 200
    event = AuditEvent.objects.filter(action="token.revoke").get()
    assert event.actor_id is None and event.object_id == str(desk.pk)
    assert event.after == {"tokens": 1, "cause": "revoketoken", "token_id": leaked.pk}
    assert "already revoked" in run("revoketoken", str(leaked.pk))  # a repeat changes nothing
    assert AuditEvent.objects.filter(action="token.revoke").count() == 1


@pytest.mark.parametrize("token_id, says", [("999999", "No API token 999999"), ("0", "No API token 0"),
                                             ("abc", "invalid int value")])
def test_tally_revoketoken_refuses_a_token_that_is_not_there(desk, clinic, token_id, says):
    with pytest.raises(CommandError, match=says):
        run("revoketoken", token_id)
    assert not AuditEvent.objects.filter(action="token.revoke").exists()
