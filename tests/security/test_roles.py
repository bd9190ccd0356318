"""The role decides what a staff member may do, the Django admin (the owner's back office)
included: taking the owner role away takes the admin with it."""

from __future__ import annotations

from django.test import Client

from tally.clinic.actions.staff_accounts import do_create_staff

from .conftest import PASSWORD


def test_an_owner_demoted_in_the_admin_loses_the_admin(owner, clinic, settings):
    settings.TALLY_OWNER_2FA_REQUIRED = False  # the admin's two-factor gate is tested in test_two_factor
    owner.is_staff = owner.is_superuser = True  # as `tally createuser --role owner` makes them
    owner.save()
    other = do_create_staff(acting_user=None, username="otto", role="owner", password=PASSWORD)
    others_browser = Client()
    others_browser.force_login(other)
    assert others_browser.get("/admin/").status_code == 200

    admin = Client()
    admin.force_login(owner)
    page = admin.get(f"/admin/clinic/staff/{other.pk}/change/")
    form = page.context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None and name != "password"}
    data.update({"role": "front_desk", "date_joined_0": "2026-01-01", "date_joined_1": "09:00:00",
                 "last_login_0": "", "last_login_1": "", "groups": [], "user_permissions": [], "is_active": "on"})
    response = admin.post(f"/admin/clinic/staff/{other.pk}/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response

    # Their open session, and a new admin sign-in, no longer reach the admin (nor can they
    # give themselves the owner role back there).
    assert others_browser.get("/admin/")["Location"].startswith("/admin/login/")
    assert others_browser.get(f"/admin/clinic/staff/{other.pk}/change/").status_code == 302
    fresh = Client()
    fresh.post("/admin/login/?next=/admin/", {"username": "otto", "password": PASSWORD})
    assert fresh.get("/admin/").status_code == 302
    # The staff site follows the role as before.
    assert others_browser.get("/catalog/").status_code == 403


def test_an_owner_still_opens_the_admin(owner, clinic, settings):
    settings.TALLY_OWNER_2FA_REQUIRED = False
    created = do_create_staff(acting_user=None, username="otto", role="owner", password=PASSWORD)
    client = Client()
    client.force_login(created)
    assert client.get("/admin/").status_code == 200


def test_the_admin_shows_no_two_factor_secret_and_cannot_change_two_factor(owner, clinic, settings):
    """django-otp registers its devices in the admin: every staff member's TOTP secret (the key
    and a QR code of it), and adding, changing or deleting devices, none of it in the audit log.
    Whoever held an owner's session could read a colleague's second factor, or give themselves
    one for any account, unseen. Two-factor is set up and turned off on the staff site with a
    code, and reset by `tally resettwofactor`, all audited; the admin has none of it."""
    from tally.clinic.actions.two_factor import do_add_known_device

    settings.TALLY_OWNER_2FA_REQUIRED = False
    owner.is_staff = owner.is_superuser = True
    owner.save()
    colleague = do_create_staff(acting_user=None, username="otto", role="front_desk", password=PASSWORD)
    device = do_add_known_device(acting_user=None, staff=colleague, key=b"colleague-secret-key".hex())
    admin = Client()
    admin.force_login(owner)
    index = admin.get("/admin/")
    assert index.status_code == 200
    assert b"otp_totp" not in index.content and b"TOTP" not in index.content
    assert admin.get("/admin/otp_totp/totpdevice/").status_code == 404
    assert admin.get(f"/admin/otp_totp/totpdevice/{device.pk}/change/").status_code == 404
    assert admin.get(f"/admin/otp_totp/totpdevice/{device.pk}/config/").status_code == 404
    assert admin.get("/admin/auth/group/").status_code == 404  # unused, and not audited either


def test_the_admin_shows_sign_in_attempts_but_cannot_erase_them(owner, clinic, settings):
    """django-axes registers its records of sign-ins, failures and pauses in the admin, where an
    owner could delete them (one by one or with its clean-up action), outside the audit log:
    whoever held an owner's session could erase the trace of their guessing, or lift a pause
    on another account to go on guessing its password or codes. They are read-only here."""
    from axes.models import AccessAttempt, AccessFailureLog, AccessLog

    settings.TALLY_OWNER_2FA_REQUIRED = False
    owner.is_staff = owner.is_superuser = True
    owner.save()
    attempt = AccessAttempt.objects.create(username="otto", ip_address="10.0.0.9", user_agent="x",
                                           failures_since_start=5, get_data="", post_data="")
    failure = AccessFailureLog.objects.create(username="otto", ip_address="10.0.0.9", user_agent="x")
    log = AccessLog.objects.create(username="owner", ip_address="10.0.0.9", user_agent="x")
    admin = Client()
    admin.force_login(owner)
    for model, row in ((AccessAttempt, attempt), (AccessFailureLog, failure), (AccessLog, log)):
        url = f"/admin/axes/{model._meta.model_name}/"
        assert admin.get(url).status_code == 200  # still there to read
        assert admin.post(f"{url}{row.pk}/delete/", {"post": "yes"}).status_code == 403
        admin.post(url, {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"})
        assert model.objects.filter(pk=row.pk).exists()
    admin.post("/admin/axes/accessattempt/", {"action": "cleanup_expired_attempts", "_selected_action": [attempt.pk]})
    assert AccessAttempt.objects.filter(pk=attempt.pk).exists()
