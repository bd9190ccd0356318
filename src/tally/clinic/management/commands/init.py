"""tally init: create or migrate the database. Safe to run again."""

from __future__ import annotations

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connection

from tally.clinic.models import ClinicSettings


def describe_database() -> str:
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"SQLite {settings['NAME']}"
    host = settings.get("HOST") or "localhost"
    port = f":{settings['PORT']}" if settings.get("PORT") else ""
    return f"{connection.vendor} {settings['NAME']} on {host}{port}"


class Command(BaseCommand):
    help = "Create or migrate the database, and make sure the clinic settings exist. Idempotent."

    def handle(self, *args, **options) -> None:
        verbosity = options["verbosity"]
        try:
            call_command("migrate", interactive=False, verbosity=max(verbosity - 1, 0))
            ClinicSettings.load()
        except DatabaseError as exc:
            raise CommandError(f"cannot set up {describe_database()}: {str(exc).strip().splitlines()[0]}") from exc
        if verbosity:
            self.stdout.write(f"Database ready: {describe_database()}")
