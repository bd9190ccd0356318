"""Sign-in security: owners must use two-factor sign-in here, as in production."""

from __future__ import annotations

import time

import pytest
from django.test import Client
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from tally.clinic.actions.two_factor import do_add_known_device
from tests.staff.conftest import charged_visit, desk_client, sold_pack  # noqa: F401  (shared fixtures)

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def owners_must_use_two_factor(settings, owners_sign_in_without_two_factor):
    """Undo the root conftest's switch: here the production default holds."""
    settings.TALLY_OWNER_2FA_REQUIRED = True


def code_for(device: TOTPDevice, *, steps_ahead: int = 0) -> str:
    """The device's code now (or `steps_ahead` periods later, still within its tolerance)."""
    device.refresh_from_db()
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() + steps_ahead * device.step
    return f"{totp.token():0{device.digits}d}"


def wrong_code(device: TOTPDevice) -> str:
    right = {code_for(device, steps_ahead=n) for n in (-1, 0, 1)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in right)


@pytest.fixture
def owner_device(owner) -> TOTPDevice:
    return do_add_known_device(acting_user=None, staff=owner, key=b"owner-test-device-01".hex())


def password_sign_in(client: Client, username: str, password: str = PASSWORD, **extra):
    return client.post("/login/", {"username": username, "password": password}, **extra)
