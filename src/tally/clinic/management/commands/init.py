"""tally init: create or migrate the database. Safe to run again."""

from __future__ import annotations

import os
import stat

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
        self.warn_if_others_can_read()
        if verbosity:
            self.stdout.write(f"Database ready: {describe_database()}")

    def warn_if_others_can_read(self) -> None:
        """A SQLite database holds every patient's health data, the password hashes, two-factor
        secrets and live sessions. `tally init` makes a new one 0600 (tally.cli); one made before
        that, or copied in under the usual umask, other local users can read: say so (changing
        the mode of an existing file is the administrator's call)."""
        name = str(connection.settings_dict["NAME"])
        if connection.vendor != "sqlite" or name == ":memory:" or name.startswith("file:"):
            return
        for path in (name, f"{name}-wal", f"{name}-shm"):
            try:
                mode = stat.S_IMODE(os.stat(path).st_mode)
            except OSError:
                continue
            if mode & 0o044:
                self.stderr.write(f"tally: warning: {path} can be read by other users of this machine "
                                  f"(mode {mode:04o}): `chmod 600 {path}`")
