"""tally backup PATH: a consistent copy of the database, taken while the server runs.

SQLite: the online backup API (a snapshot even with writers active), written to a
temporary file beside PATH, checked with PRAGMA integrity_check, then moved into place.
PostgreSQL: pg_dump --format=custom (restore with pg_restore), also via a temporary file.

A backup is a read of every patient's data, so it is audited like `tally investigate`: one
event naming the command line, the operating-system user and the target path (`record_backup`).
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connection

from tally.clinic.audit import Shown, command_line_details, record_reads
from tally.db.sqlite3.base import own_files
from tally.unavailable import first_line


class Command(BaseCommand):
    help = "Write a consistent copy of the database to PATH (SQLite file, or pg_dump custom format)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("path", help="where to write the copy")
        parser.add_argument("--force", action="store_true", help="overwrite PATH if it exists")

    def handle(self, *args, **options) -> None:
        target = Path(options["path"]).expanduser().resolve()
        force = options["force"]
        if target.is_dir():
            raise CommandError(f"{target} is a directory; give a file name")
        if target.exists() and not force:
            raise CommandError(f"{target} exists; use --force to overwrite it")
        if not target.parent.is_dir():
            raise CommandError(f"no such directory: {target.parent}")
        # The event is written after the copy is taken and checked, and before it is moved to PATH.
        # After: the copy is a snapshot (SQLite's online backup, pg_dump's one transaction) taken
        # first, so the event, a transaction of its own on the live database, cannot make it
        # inconsistent (the copy simply does not hold its own event; the live log does), and a
        # copy that failed (pg_dump, the integrity check) leaves no event claiming a backup.
        # Before PATH: no copy of every patient's data lands where others may read it without its
        # event; if the event cannot be written, the temporary file is deleted and nothing is kept.
        def audited() -> None:
            record_backup(target, force=force)

        try:
            if connection.vendor == "sqlite":
                detail = backup_sqlite(connection.settings_dict["NAME"], target, force=force, audited=audited)
            elif connection.vendor == "postgresql":
                detail = backup_postgresql(connection.settings_dict, target, force=force, audited=audited)
            else:
                raise CommandError(f"no backup method for {connection.vendor}")
        except OSError as exc:  # a directory we may not write to, a full disk
            raise CommandError(f"cannot write {target}: {exc.strerror or exc}") from exc
        size = target.stat().st_size
        self.stdout.write(f"Backed up to {target} ({size / 1_000_000:.1f} MB, {detail}).")


def record_backup(target: Path, *, force: bool) -> None:
    """The audit event of a backup: no staff member signs in to `tally`, so it names the command
    and the operating-system user; the event's time is UTC, as every event's."""
    try:
        record_reads(None, "database.backup", [Shown(None, "database", connection.vendor)],
                     details=command_line_details("tally backup", path=str(target), force=force))
    except DatabaseError as exc:
        raise CommandError(f"cannot record the backup in the audit log, so no copy was kept: {first_line(exc)}") \
            from exc


def temporary_beside(target: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    os.chmod(name, 0o600)  # patient data
    return Path(name)


# link() on a file system that has no hard links.
NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV}


def move_into_place(partial: Path, target: Path, *, force: bool) -> None:
    if force:
        os.replace(partial, target)
        return
    try:
        os.link(partial, target)  # fails if PATH appeared meanwhile: never overwrite silently
    except FileExistsError:
        raise CommandError(f"{target} appeared while backing up; nothing overwritten") from None
    except OSError as exc:
        if exc.errno not in NO_HARD_LINKS:
            raise
        # A file system without hard links (exFAT or FAT on a USB stick, an SMB share): claim the
        # name with an exclusive create, then rename the copy over that empty file of our own.
        try:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            raise CommandError(f"{target} appeared while backing up; nothing overwritten") from None
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def copy_self_contained(source: sqlite3.Connection, target: Path) -> str:
    """Copy a SQLite database through its backup API (committed writes still in its -wal are
    copied too) into `target`, one self-contained file with no -wal beside it to forget, and
    answer SQLite's integrity check of the copy ("ok", or what is wrong)."""
    copy = sqlite3.connect(target)
    try:
        source.backup(copy, pages=1024)
        copy.execute("PRAGMA journal_mode=DELETE")
        return copy.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        copy.close()


def backup_sqlite(source_name: str, target: Path, *, force: bool, audited: Callable[[], None]) -> str:
    source_path = Path(str(source_name))
    if str(source_name) == ":memory:" or not source_path.exists():
        raise CommandError(f"no SQLite database at {source_name}; run `tally init` first")
    live = source_path.resolve()
    if target in own_files(live):
        raise CommandError("the backup cannot be the database itself or its -wal, -shm, -journal, -queue or "
                           "-serving file")
    partial = temporary_beside(target)
    try:
        source = sqlite3.connect(source_path, timeout=30)
        try:
            result = copy_self_contained(source, partial)
        finally:
            source.close()
        if result != "ok":
            raise CommandError(f"the copy failed its integrity check: {result}")
        audited()
        move_into_place(partial, target, force=force)
    except sqlite3.Error as exc:
        raise CommandError(f"SQLite backup failed: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return "SQLite, integrity ok"


def backup_postgresql(settings: dict, target: Path, *, force: bool, audited: Callable[[], None]) -> str:
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise CommandError("pg_dump is not installed (Debian: apt-get install postgresql-client)")
    partial = temporary_beside(target)
    try:
        done = subprocess.run(
            [pg_dump, "--format=custom", "--no-password", f"--file={partial}", "--dbname", settings["NAME"]],
            env=pg_environment(settings), capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            raise CommandError(f"pg_dump failed: {pg_dump_error(done)}")
        audited()
        move_into_place(partial, target, force=force)
    finally:
        partial.unlink(missing_ok=True)
    return "pg_dump custom format; restore with pg_restore"


def pg_environment(settings: dict) -> dict[str, str]:
    """The environment that points pg_dump and pg_restore at the database of `settings`."""
    env = dict(os.environ)
    for key, var in (("HOST", "PGHOST"), ("PORT", "PGPORT"), ("USER", "PGUSER"), ("PASSWORD", "PGPASSWORD")):
        if settings.get(key):
            env[var] = str(settings[key])
    options = settings.get("OPTIONS") or {}
    if options.get("sslmode"):
        env["PGSSLMODE"] = str(options["sslmode"])
    # The connect timeout every other command has (tally.settings): without it pg_dump waits for
    # ever on a host that takes the connection and never answers.
    if options.get("connect_timeout"):
        env["PGCONNECT_TIMEOUT"] = str(options["connect_timeout"])
    return env


def pg_dump_error(done: subprocess.CompletedProcess, program: str = "pg_dump") -> str:
    """pg_dump's (or pg_restore's) error line, not the hint libpq prints after it ("Is the server
    running...")."""
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line] or lines
    if not errors:
        return f"exit status {done.returncode}"
    return errors[-1].removeprefix(f"{program}: ").removeprefix("error: ")
