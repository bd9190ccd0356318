"""Two-factor sign-in (TOTP, django-otp): setting it up, turning it off, and who must use it.

A staff member sets it up from the staff site: the "Start set-up" button (a POST) makes an
unconfirmed device (its secret shown as a QR code, an otpauth:// URI and base32 text until it
is confirmed), then a code from the app confirms it. Opening the page writes nothing.
From then on the web sign-in asks for a code, and so does `POST /auth/token` (`otp`).
Owners must use it while TALLY_OWNER_2FA_REQUIRED is on (the default).
"""

from __future__ import annotations

import base64
from binascii import unhexlify

from django.conf import settings
from django.db import transaction
from django_otp.plugins.otp_totp.models import TOTPDevice

from ..audit import record
from ..errors import Conflict, Forbidden, Invalid, NotFound
from ..models import Staff
from ..models.staff import Role
from .common import clinic_action

DEVICE_NAME = "Authenticator app"


def confirmed_device(staff: Staff) -> TOTPDevice | None:
    return TOTPDevice.objects.filter(user=staff, confirmed=True).order_by("pk").first()


def has_two_factor(staff: Staff) -> bool:
    return TOTPDevice.objects.filter(user=staff, confirmed=True).exists()


def must_use_two_factor(staff: Staff) -> bool:
    """Owners (and anyone else who can open the admin, the owner's back office) must, unless
    the clinic switched the requirement off (TALLY_OWNER_2FA_REQUIRED=0)."""
    if not settings.TALLY_OWNER_2FA_REQUIRED:
        return False
    return staff.role == Role.OWNER or staff.is_staff or staff.is_superuser


def base32_secret(device: TOTPDevice) -> str:
    return base64.b32encode(unhexlify(device.key)).decode()


def verify_code(device: TOTPDevice, code: str | None) -> bool:
    """django-otp checks the code, refuses a replayed one and slows down repeated failures.
    Its bookkeeping is saved at once, so call this outside a transaction that may roll back.

    It checks the device as stored now, read again under a lock held until its bookkeeping is
    saved: `device` may have been loaded before another request used the same code, and
    django-otp trusts the copy it is given (two requests at once both signed in with one code)."""
    code = "".join((code or "").split())
    if not (code and code.isdigit() and len(code) <= 10):
        return False
    with transaction.atomic():
        current = TOTPDevice.objects.select_for_update().filter(pk=device.pk).first()
        return current is not None and current.verify_token(code)


def pending_device(staff: Staff) -> TOTPDevice | None:
    """The device set-up made and no code has confirmed yet (read only: the page shows it)."""
    return TOTPDevice.objects.filter(user=staff, confirmed=False).order_by("pk").first()


@clinic_action
def do_start_two_factor(*, acting_user: Staff, key: str | None = None) -> TOTPDevice:
    """The staff member's unconfirmed device, made on first call and kept until confirmed,
    so that reloading the set-up page shows the same secret (and pressing "Start set-up"
    again makes no second one). Audited when made, never with its secret. A POST only: the
    page's GET shows an existing one with `pending_device`. `key` (hex) is for the demo only."""
    Staff.objects.select_for_update().filter(pk=acting_user.pk).first()  # two presses at once: one device
    if has_two_factor(acting_user):
        raise Conflict("Two-factor sign-in is already on for you.")
    device = pending_device(acting_user)
    if device is None:
        device = TOTPDevice(user=acting_user, name=DEVICE_NAME, confirmed=False)
        if key is not None:
            device.key = key
        device.save()
        record("auth.two_factor.start", actor=acting_user, obj=acting_user, after={"device_id": device.pk})
    return device


def do_confirm_two_factor(*, acting_user: Staff, code: str) -> TOTPDevice:
    """Turn two-factor sign-in on once a code from the app matches the new device's secret."""
    device = pending_device(acting_user)
    if device is None:
        raise Conflict("Start setting up two-factor sign-in first.")
    if not verify_code(device, code):  # before the transaction: a failure's throttling is kept
        raise Invalid("That code does not match. Check the app shows Tally and try the newest code.",
                      fields={"code": "does not match"})
    return _confirm(acting_user=acting_user, device=device)


@clinic_action
def _confirm(*, acting_user: Staff, device: TOTPDevice) -> TOTPDevice:
    TOTPDevice.objects.filter(user=acting_user).exclude(pk=device.pk).delete()
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    record("auth.two_factor.enable", actor=acting_user, obj=acting_user, after={"device_id": device.pk})
    return device


def do_remove_two_factor(*, acting_user: Staff, code: str) -> None:
    """Turn two-factor sign-in off, proving it with a current code. Not for those who must use it."""
    if must_use_two_factor(acting_user):
        raise Forbidden("Owners must keep two-factor sign-in on.")
    device = confirmed_device(acting_user)
    if device is None:
        raise Conflict("Two-factor sign-in is not on.")
    if not verify_code(device, code):
        raise Invalid("That code does not match.", fields={"code": "does not match"})
    _remove(acting_user=acting_user)


@clinic_action
def _remove(*, acting_user: Staff) -> None:
    TOTPDevice.objects.filter(user=acting_user).delete()
    record("auth.two_factor.disable", actor=acting_user, obj=acting_user)


@clinic_action
def do_add_known_device(*, acting_user: Staff | None, staff: Staff, key: str) -> TOTPDevice:
    """A confirmed device with a given key, without a code. For the demo owner only, whose
    key is published (tally.clinic.demo): never for a real account."""
    TOTPDevice.objects.filter(user=staff).delete()
    device = TOTPDevice.objects.create(user=staff, name=DEVICE_NAME, key=key, confirmed=True)
    record("auth.two_factor.enable", actor=acting_user, obj=staff, after={"device_id": device.pk, "demo": True})
    return device


@clinic_action
def do_reset_two_factor(*, acting_user: Staff | None, username: str) -> int:
    """Command line: remove a staff member's two-factor devices (a lost phone). They set it up
    again at their next sign-in. The number of devices removed."""
    staff = Staff.objects.filter(username=Staff.normalize_username(username)).first()
    if staff is None:
        raise NotFound(f"No staff member named {username!r}.")
    removed, _ = TOTPDevice.objects.filter(user=staff).delete()
    record("auth.two_factor.reset", actor=acting_user, obj=staff, after={"devices_removed": removed})
    return removed


__all__ = [
    "base32_secret", "do_add_known_device", "confirmed_device", "do_confirm_two_factor", "do_remove_two_factor", "do_reset_two_factor",
    "do_start_two_factor", "has_two_factor", "must_use_two_factor", "pending_device", "verify_code",
]
