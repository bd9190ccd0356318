"""tally activatepaid: activate the packages an older release left pending on a sale that is
paid in full (`tally verify` names them)."""

from __future__ import annotations

from tally.clinic.actions.billing import do_activate_paid_off_packages
from tally.clinic.management.base import ClinicCommand
from tally.clinic.models import Invoice


class Command(ClinicCommand):
    help = ("Activate every package left pending although its sale is paid in full (a charge removed "
            "after the payment, before this release activated on that): audited, first sessions used.")

    def handle(self, *args, **options) -> None:
        activated = do_activate_paid_off_packages(acting_user=None)
        for package in activated:
            self.stdout.write(f"Activated {package.name} (patient package {package.pk}), sold on "
                              f"{Invoice(pk=package.sale_invoice_id).number}.")
        if not activated:
            self.stdout.write("Nothing to activate: every package whose sale is paid in full is active.")
