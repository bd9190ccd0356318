"""tally democode: the demo owner's current two-factor code (only while the demo's published key is theirs)."""

from __future__ import annotations

import time

from django.core.management.base import CommandError
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from tally.clinic.demo import DEMO_OWNER, DEMO_OWNER_TOTP_KEY
from tally.clinic.management.base import ClinicCommand


class Command(ClinicCommand):
    help = "Print the demo owner's current two-factor code (demo databases only)."

    def handle(self, *args, **options) -> None:
        device = TOTPDevice.objects.filter(user__username=DEMO_OWNER[0], confirmed=True,
                                           key=DEMO_OWNER_TOTP_KEY).first()
        if device is None:
            raise CommandError("there is no demo owner with the demo's published two-factor key here")
        totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
        now = time.time()
        totp.time = now
        left = device.step - int(now - device.t0) % device.step
        self.stdout.write(f"{totp.token():0{device.digits}d}")
        self.stderr.write(f"(the code of {DEMO_OWNER[0]}, for {left} more seconds; each code signs in once)")
