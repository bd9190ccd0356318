"""What every command that reads or writes the clinic's data checks first.

A missing, unreachable or unmigrated database is the commonest mistake on the command
line (a wrong TALLY_DATABASE_URL, a forgotten `tally init`, an upgrade not yet migrated).
It gets one line that says what to do, never a traceback, and a missing SQLite file is
not created empty on the way.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor

from tally.unavailable import first_line, is_unavailable

# C0 and C1 control characters (ESC starts every terminal escape sequence; BEL ends OSC ones)
# and the bidirectional overrides and isolates, which reorder what a line shows.
_TERMINAL_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def terminal_text(text: str) -> str:
    """Text staff typed (a patient's name, a package's, a service's), fit to print on a
    terminal: each control character written as its escape (`\\x1b`), never sent as itself.
    A name holding escape sequences would otherwise drive the terminal of the owner running
    the command: retitle it, clear the findings off the screen, on some terminals write the
    clipboard (OSC 52)."""
    return _TERMINAL_CONTROLS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def check_database_ready() -> None:
    """Refuse a database that is missing or not migrated (`tally init` fixes both)."""
    if connection.vendor == "sqlite":
        name = str(connection.settings_dict["NAME"])
        if name != ":memory:" and not name.startswith("file:") and not Path(name).exists():
            raise CommandError(f"there is no database at {name}: run `tally init` first")
    try:
        executor = MigrationExecutor(connection)
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError as exc:
        raise CommandError(f"cannot reach the database: {first_line(exc)}") from exc
    if pending:
        raise CommandError(
            f"the database is not set up ({len(pending)} migrations to apply): run `tally init` first"
        )


class ClinicCommand(BaseCommand):
    """A command on the clinic's data: checks the database before anything else runs."""

    def execute(self, *args: Any, **options: Any) -> Any:
        check_database_ready()
        try:
            return super().execute(*args, **options)
        except DatabaseError as exc:
            if not is_unavailable(exc):
                raise
            raise CommandError(f"cannot reach the database: {first_line(exc)}") from exc
