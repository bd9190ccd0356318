"""tally demo: init, load the demo clinic (into an empty database only), print how to
sign in, then serve it like `tally serve`."""

from __future__ import annotations

from django.core.management import call_command
from django.core.management.base import BaseCommand

from tally.clinic.actions.staff_accounts import do_create_staff, do_grant_token
from tally.clinic.actions.two_factor import base32_secret, confirmed_device
from tally.clinic.demo import (
    DEMO_API,
    DEMO_DESK,
    DEMO_OWNER,
    DEMO_OWNER_TOTP_KEY,
    DEMO_SCENARIOS,
    database_is_empty,
    load_demo,
)
from tally.clinic.models import Patient, Staff
from tally.clinic.models.staff import Role
from tally.server import host_for_url, serve

from .serve import add_server_arguments


class Command(BaseCommand):
    help = "Set up the database, load a demo clinic with a year of history, and serve it."

    def add_arguments(self, parser) -> None:
        add_server_arguments(parser)
        parser.add_argument("--no-serve", action="store_true", help="load and exit (for scripts and tests)")

    def handle(self, *args, **options) -> None:
        out = self.stdout
        call_command("init", verbosity=options["verbosity"])
        if database_is_empty():
            out.write("Loading the demo clinic (about 200 patients, a year of visits)...")
            out.flush()
            result = load_demo()
            out.write(f"Loaded {result.clinic.name}: {result.patients} patients in {result.seconds:.0f} s.")
        else:
            out.write("The database already has data, so the demo clinic was not loaded again.")
        base = f"http://{host_for_url(options['host'])}:{options['port']}"
        owner = Staff.objects.filter(username=DEMO_OWNER[0]).first()
        # A database that was not the demo's (tally createuser first) has no demo logins.
        demo_logins = owner is not None and owner.check_password(DEMO_OWNER[1])
        out.write("")
        out.write(f"  Open        {base}/  (sign in with {'a login below' if demo_logins else 'your own login'})")
        out.write(f"  API docs    {base}/api/v1/docs")
        out.write(f"  Admin       {base}/admin/")
        if owner is not None and demo_logins:
            out.write(f"  Owner       {DEMO_OWNER[0]} / {DEMO_OWNER[1]}  then a two-factor code (owners must use one):")
            device = confirmed_device(owner)
            if device is not None and device.key == DEMO_OWNER_TOTP_KEY:
                out.write(f"              `tally democode` prints it, or add the demo's public key "
                          f"{base32_secret(device)} to an authenticator app")
            out.write(f"  Front desk  {DEMO_DESK[0]} / {DEMO_DESK[1]}  (no two-factor code)")
            api_name, first_name, last_name = DEMO_API
            if not Staff.objects.filter(username=api_name).exists():
                do_create_staff(acting_user=None, username=api_name, role=Role.OWNER, password=None,
                                first_name=first_name, last_name=last_name)
            _, token = do_grant_token(acting_user=None, username=api_name, label="tally demo")
            out.write(f"  API token   {token}  (owner role, account {api_name}: tokens only, no sign-in)")
            out.write(f'  Try         curl -H "Authorization: Bearer {token}" {base}/api/v1/me')
            self.write_scenarios()
        out.write("")
        if options["no_serve"]:
            return
        serve(host=options["host"], port=options["port"], workers=options["workers"], threads=options["threads"],
              stdout=out)

    def write_scenarios(self) -> None:
        names = {(p.first_name, p.last_name): p.patient_number
                 for p in Patient.objects.filter(last_name__in=[s.last_name for s in DEMO_SCENARIOS])}
        self.stdout.write("")
        self.stdout.write("  One patient for each thing the investigator finds:")
        for scenario in DEMO_SCENARIOS:
            number = names.get((scenario.first_name, scenario.last_name), scenario.patient_number)
            self.stdout.write(f"    {number}  {scenario.name:<18} {scenario.code}")
