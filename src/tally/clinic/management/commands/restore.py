"""tally restore PATH: put back a copy made by `tally backup`, checked first, never over the only copy.

The backup is first copied into a staging database of its own (SQLite: a hidden file beside the
database; PostgreSQL: a new database restored with pg_restore), and checked there: it is a Tally
database, its migrations are ones this release knows (an older release's are applied), `tally
verify` finds no problem and its audit log verifies with this server's secret key. Nothing of the
current database has been touched so far. Then, unless a server or another program is using the
database (or --force), and once confirmed (a terminal's question, or --yes), the restore is
recorded in the restored database's audit log and the staging database takes the current one's
place; the current one is kept aside under a timestamped name that is printed:

- SQLite: `clinic.sqlite3.before-restore-20260304-101500` (with its -wal and -shm, which are
  moved with it, so no stale -wal is ever replayed into the restored file);
- PostgreSQL: `ALTER DATABASE clinic RENAME TO clinic_before_restore_20260304_101500`, then the
  staging database is renamed to `clinic`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections
from django.db.migrations.exceptions import InconsistentMigrationHistory
from django.db.migrations.executor import MigrationExecutor
from django.db.utils import load_backend

from tally.clinic.audit import Shown, command_line_details, record_reads, verify_chain
from tally.clinic.consistency import verify_database
from tally.clinic.management.commands.backup import (
    copy_self_contained,
    pg_dump_error,
    pg_environment,
)
from tally.db.sqlite3.base import (
    JOURNAL_SUFFIXES,
    held_if_free,
    own_files,
    queue_path,
    serving_path,
)
from tally.unavailable import first_line

try:
    import psycopg

    DatabaseError_: type[Exception] = psycopg.Error  # the maintenance connection's errors
except ImportError:  # pragma: no cover - PostgreSQL support is installed with Tally
    DatabaseError_ = DatabaseError

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_DUMP_MAGIC = b"PGDMP"  # pg_dump --format=custom
# SQLite's files beside a database: each belongs to that database's content.

Confirm = Callable[[str], bool]


@dataclass
class Checked:
    """What the staging copy held once checked."""

    migrations_applied: int
    packages: int
    patients: int
    events: int
    problems: list[str] = field(default_factory=list)  # `tally verify`'s, restored --with-problems


class Command(BaseCommand):
    help = ("Restore a backup made by `tally backup`: checked first, the current database kept aside "
            "under a timestamped name.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("path", help="the backup (a SQLite file, or a pg_dump custom-format file)")
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation (for scripts)")
        parser.add_argument("--with-problems", action="store_true",
                            help="restore even when `tally verify` finds problems in the backup (they are "
                                 "listed; the investigator names them after): the only copy may have one")
        parser.add_argument("--force", action="store_true",
                            help="restore even while a server or another program uses the database")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["yes"] and not sys.stdin.isatty():
            raise CommandError("not on a terminal, so nobody can confirm: add --yes to restore without being asked")
        backup = Path(options["path"]).expanduser().absolute()
        settings_dict = dict(connection.settings_dict)
        connections.close_all()  # this command's own connection must not count as a user of the database
        confirm = (lambda question: True) if options["yes"] else ask
        restore(backup, settings_dict, force=options["force"], confirm=confirm, say=self.stdout.write,
                with_problems=options["with_problems"])


def ask(question: str) -> bool:
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in {"y", "yes"}


def restore(backup: Path, settings_dict: dict[str, Any], *, force: bool, confirm: Confirm,
            say: Callable[[str], Any], with_problems: bool = False) -> None:
    """Restore `backup` over the database of `settings_dict` (the default connection's settings).
    A backup in which `tally verify` finds problems is refused unless `with_problems`."""
    vendor = vendor_of(settings_dict)
    check_backup_file(backup, vendor)
    # A failure while files or databases move (a read-only directory, a full disk) is one line:
    # whatever was moved aside has been moved back.
    try:
        if vendor == "sqlite":
            restore_sqlite(backup, settings_dict, force=force, confirm=confirm, say=say, with_problems=with_problems)
        else:
            restore_postgresql(backup, settings_dict, force=force, confirm=confirm, say=say,
                               with_problems=with_problems)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise CommandError(f"cannot restore: {exc.strerror or exc}{where}; nothing was restored") from exc
    except (DatabaseError, DatabaseError_) as exc:  # Django's (a migration), or psycopg's (a rename)
        raise CommandError(f"cannot restore: {first_line(exc)}; nothing was restored") from exc


def vendor_of(settings_dict: dict[str, Any]) -> str:
    engine = str(settings_dict["ENGINE"])
    if engine.endswith("sqlite3"):
        return "sqlite"
    if engine.endswith("postgresql"):
        return "postgresql"
    raise CommandError(f"no restore method for {engine}")


def check_backup_file(backup: Path, vendor: str) -> None:
    """A missing file, a directory, or a file of another kind: refused before anything is done."""
    if not backup.exists():
        raise CommandError(f"no backup at {backup}")
    if backup.is_dir():
        raise CommandError(f"{backup} is a directory; give the backup file")
    try:
        with backup.open("rb") as handle:
            head = handle.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise CommandError(f"cannot read {backup}: {exc.strerror or exc}") from exc
    if vendor == "sqlite" and head.startswith(SQLITE_MAGIC):
        return
    if vendor == "postgresql" and head.startswith(PG_DUMP_MAGIC):
        return
    if head.startswith(PG_DUMP_MAGIC):
        raise CommandError(f"{backup} is a PostgreSQL backup (pg_dump), but this clinic's database is SQLite: set "
                           "TALLY_DATABASE_URL to the PostgreSQL database to restore it into")
    if head.startswith(SQLITE_MAGIC):
        raise CommandError(f"{backup} is a SQLite backup, but this clinic's database is PostgreSQL: set "
                           "TALLY_DATABASE_URL to the SQLite file to restore it into (sqlite:///path)")
    raise CommandError(f"{backup} is not a backup made by `tally backup` (neither a SQLite database nor a "
                       "pg_dump custom-format file)")


def utc_stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")


# ------------------------------------------------------------------ checking the staging copy


@contextlib.contextmanager
def using_database(settings_dict: dict[str, Any]) -> Iterator[None]:
    """The default connection is, within the block, one to the database of `settings_dict`: the
    checks, migrations and audit functions all use the default connection. The previous one is
    put back untouched afterwards."""
    wrapper = load_backend(settings_dict["ENGINE"]).DatabaseWrapper(settings_dict, DEFAULT_DB_ALIAS)
    previous = connections[DEFAULT_DB_ALIAS]
    connections[DEFAULT_DB_ALIAS] = wrapper
    try:
        yield
    finally:
        try:
            wrapper.close()
        finally:
            connections[DEFAULT_DB_ALIAS] = previous


def check_and_migrate(backup: Path, *, with_problems: bool = False) -> Checked:
    """On the staging copy (the default connection): a Tally database of a release this one knows,
    brought up to this release, with no `tally verify` problem (unless `with_problems`: a clinic's
    only backup may hold a fault, and refusing it would leave the clinic with nothing) and an
    audit log this key verifies."""
    try:
        tables = set(connection.introspection.table_names())
    except DatabaseError as exc:
        raise CommandError(f"{backup} cannot be read as a database: {first_line(exc)}") from exc
    if not {"django_migrations", "clinic_auditevent", "clinic_patient"} <= tables:
        raise CommandError(f"{backup} holds no Tally clinic (none of its tables): it is not a backup made by "
                           "`tally backup`")
    executor = MigrationExecutor(connection)
    loader = executor.loader
    newer = sorted(set(loader.applied_migrations) - set(loader.graph.nodes))
    if newer:
        names = ", ".join(f"{app}.{name}" for app, name in newer[:3]) + (" ..." if len(newer) > 3 else "")
        raise CommandError(f"{backup} comes from a newer release of Tally (its migrations {names} are unknown "
                           "to this one): install that release or a later one, then restore")
    try:
        loader.check_consistent_history(connection)
    except InconsistentMigrationHistory as exc:
        raise CommandError(f"{backup} has a migration history this release cannot follow: {exc}") from exc
    plan = executor.migration_plan(loader.graph.leaf_nodes())
    if plan:  # an older release's backup: brought up to this one, as `tally init` would
        call_command("migrate", interactive=False, verbosity=0)
    from tally.clinic.models import AuditEvent, ClinicSettings, Patient, PatientPackage

    ClinicSettings.load()
    problems = [str(problem) for problem in verify_database()]
    if problems and not with_problems:
        raise CommandError(f"{backup} fails `tally verify` ({len(problems)} problem(s), the first: {problems[0]}); "
                           "nothing was restored (--with-problems restores it anyway, and lists them)")
    report = verify_chain()
    if not report.intact:
        if report.events == 0 and "signed with a key this server does not have" in report.problem:
            raise CommandError(f"{backup}'s audit log was signed with another secret key: set TALLY_SECRET_KEY "
                               "to the key of the clinic it comes from (docs/audit-log.md) and restore again; "
                               "nothing was restored")
        raise CommandError(f"{backup}'s audit log does not verify after {report.events} good events: "
                           f"{report.problem}; nothing was restored")
    return Checked(migrations_applied=len(plan), packages=PatientPackage.objects.count(),
                   patients=Patient.objects.count(), events=AuditEvent.objects.count(), problems=problems)


def describe(checked: Checked) -> str:
    release = (f"from an older release, {checked.migrations_applied} migration(s) applied"
               if checked.migrations_applied else "from this release")
    verified = (f"`tally verify` finds {counted(len(checked.problems), 'problem')}" if checked.problems
                else "verified")
    return (f"{counted(checked.patients, 'patient')}, {counted(checked.packages, 'package')}, {release}; "
            f"{verified}, audit chain intact ({counted(checked.events, 'event')})")


def say_problems(checked: Checked, say: Callable[[str], Any]) -> None:
    """A backup restored --with-problems: what `tally verify` found in it, to mend next."""
    if checked.problems:
        say("`tally verify` finds these problems in it (`tally investigate` explains a package's count):")
        for problem in checked.problems:
            say(f"  {problem}")


def counted(number: int, thing: str) -> str:
    return f"{number} {thing}" + ("" if number == 1 else "s")


def record_restore(backup: Path, *, replaced: str | None, checked: Checked, force: bool) -> None:
    """The restore's audit event, in the restored database (the default connection): it follows
    the backup's own events on their chain."""
    try:
        record_reads(None, "database.restore", [Shown(None, "database", connection.vendor)],
                     details=command_line_details("tally restore", path=str(backup), replaced=replaced,
                                                  migrations_applied=checked.migrations_applied, force=force,
                                                  verify_problems=checked.problems))
    except DatabaseError as exc:
        raise CommandError(f"cannot record the restore in the audit log, so nothing was restored: "
                           f"{first_line(exc)}") from exc


# ------------------------------------------------------------------ SQLite


def restore_sqlite(backup: Path, settings_dict: dict[str, Any], *, force: bool, confirm: Confirm,
                   say: Callable[[str], Any], with_problems: bool) -> None:
    name = str(settings_dict["NAME"])
    if name == ":memory:" or name.startswith("file:"):
        raise CommandError(f"cannot restore into {name}: TALLY_DATABASE_URL must name a file")
    live = Path(name).expanduser().absolute()
    if not live.parent.is_dir():
        raise CommandError(f"no such directory: {live.parent}")
    if backup.resolve() in {p.resolve() for p in own_files(live)}:
        raise CommandError("the backup is the database itself (or one of its files): give the copy to restore")
    stamp = utc_stamp()
    staging = live.with_name(f".{live.name}.restoring-{stamp}-{os.getpid()}")  # this restore's own
    staging_settings = {**settings_dict, "NAME": str(staging)}
    try:
        copy_sqlite(backup, staging)
        with using_database(staging_settings):
            checked = check_and_migrate(backup, with_problems=with_problems)
        aside = free_name(live.with_name(f"{live.name}.before-restore-{stamp}"))
        with sqlite_in_use(live) as user:
            refuse_if_used(user, force=force, say=say)
        kept = f"the current database is kept as {aside}" if live.exists() else "there is no current database"
        if not confirm(f"Restore {backup} ({describe(checked)}) into {live}? {kept[0].upper()}{kept[1:]}."):
            raise CommandError("nothing restored (not confirmed)")
        with using_database(staging_settings):
            record_restore(backup, replaced=str(aside) if live.exists() else None, checked=checked, force=force)
        self_contained(staging)
        with sqlite_in_use(live) as user:  # held while the files move: no Tally writer or server starts
            refuse_if_used(user, force=force, say=say)
            replaced = live.exists()
            if replaced:
                same_permissions(staging, live)
            moved = move_aside(live, aside)
            try:
                take_the_place_of(staging, live)
            except BaseException:
                move_back(aside, live, moved if replaced else None)
                raise
    finally:
        for leftover in (staging, *companions(staging), Path(queue_path(str(staging)))):
            leftover.unlink(missing_ok=True)
    say(f"Restored {backup} into {live}: {describe(checked)}.")
    say_problems(checked, say)
    if replaced:
        say(f"The database it replaced is kept as {aside}" +
            (f" (with its {' and '.join(moved)} files)" if moved else "") + ".")


def companions(database: Path) -> list[Path]:
    return [database.with_name(database.name + suffix) for suffix in JOURNAL_SUFFIXES]


def copy_sqlite(backup: Path, staging: Path) -> None:
    """The backup, through SQLite's backup API (a -wal beside a hand-made copy is read too),
    opened read-only: the backup file is never changed."""
    try:
        source = sqlite3.connect(f"{backup.as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # patient data
            os.close(fd)
            result = copy_self_contained(source, staging)
        finally:
            source.close()
    except sqlite3.DatabaseError as exc:
        raise CommandError(f"{backup} cannot be read as a SQLite database: {exc}") from exc
    except OSError as exc:
        raise CommandError(f"cannot write the staging copy {staging}: {exc.strerror or exc}") from exc
    if result != "ok":
        raise CommandError(f"{backup} is damaged (SQLite's integrity check: {result}); nothing was restored")


def self_contained(database: Path) -> None:
    """One file, in rollback-journal mode, with no -wal or -shm: what is renamed into place."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute("PRAGMA journal_mode=DELETE")
    for companion in companions(database):
        if companion.exists():
            raise CommandError(f"the staging copy still has {companion} beside it; nothing was restored")


@contextlib.contextmanager
def sqlite_in_use(live: Path) -> Iterator[str | None]:
    """Who is using the database, or None. While the block runs, and when nobody was, the
    server's mark and the writers' queue are held: no server starts and no Tally writer begins."""
    name = str(live)
    if not live.exists():
        yield None
        return
    with held_if_free(serving_path(name), name) as not_served, held_if_free(queue_path(name), name) as not_queued:
        if not not_served:
            yield "a server (tally serve) is running on it"
        elif not not_queued:
            yield "a Tally command or server is writing to it"
        else:
            yield sqlite_connection_open(live)


def sqlite_connection_open(live: Path) -> str | None:
    """An open connection (a request in progress, the sqlite3 shell) holds a shared lock on the
    database as long as it is open in WAL mode: an exclusive one cannot be had meanwhile. The
    probe closes before anything moves (SQLite removes a -wal by its name on close)."""
    try:
        with contextlib.closing(sqlite3.connect(live, timeout=0, isolation_level=None)) as probe:
            probe.execute("PRAGMA locking_mode=EXCLUSIVE")
            probe.execute("BEGIN EXCLUSIVE")
            probe.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return "another program has it open (a server's request, a `tally` command or the sqlite3 shell)"
        return None  # a damaged database: what the restore is for
    except sqlite3.DatabaseError:
        return None
    return None


def refuse_if_used(user: str | None, *, force: bool, say: Callable[[str], Any]) -> None:
    if user is None:
        return
    if not force:
        raise CommandError(f"the database is in use: {user}. Stop it first (or use --force); nothing was restored")
    say(f"Warning: the database is in use ({user}); restoring anyway (--force).")


def free_name(aside: Path) -> Path:
    """`aside`, or `aside-2`, `-3` ... when a restore in the same second kept one under that name
    (rename() would replace it without a word)."""
    candidate, number = aside, 1
    while any(p.exists() for p in (candidate, *companions(candidate))):
        number += 1
        candidate = aside.with_name(f"{aside.name}-{number}")
    return candidate


def take_the_place_of(staging: Path, live: Path) -> None:
    os.rename(staging, live)


def same_permissions(staging: Path, live: Path) -> None:
    """The restored file gets the current one's mode (and owner, when run as root): the server's
    user must still be able to open it."""
    current = live.stat()
    os.chmod(staging, current.st_mode & 0o7777)
    if os.geteuid() == 0:
        os.chown(staging, current.st_uid, current.st_gid)


def move_back(aside: Path, live: Path, moved: list[str] | None) -> None:
    """Undo `move_aside` (None: there was no database to move)."""
    if moved is None:
        return
    aside.rename(live)
    for suffix in moved:
        aside.with_name(aside.name + suffix).rename(live.with_name(live.name + suffix))


def move_aside(live: Path, aside: Path) -> list[str]:
    """The database and its -wal, -shm and -journal, renamed together (SQLite pairs `X-wal` with
    `X`, so the kept copy opens with its last writes). Returns the companions moved."""
    if not live.exists():
        for companion in companions(live):  # stale files of a database that is gone
            if companion.exists():
                companion.rename(aside.with_name(aside.name + companion.name.removeprefix(live.name)))
        return []
    moved: list[str] = []
    try:
        live.rename(aside)
        for companion in companions(live):
            if companion.exists():
                companion.rename(aside.with_name(aside.name + companion.name.removeprefix(live.name)))
                moved.append(companion.name.removeprefix(live.name))
    except BaseException:
        if aside.exists():  # never the database without its -wal: all of it goes back
            move_back(aside, live, moved)
        raise
    return moved


# ------------------------------------------------------------------ PostgreSQL


def restore_postgresql(backup: Path, settings_dict: dict[str, Any], *, force: bool, confirm: Confirm,
                       say: Callable[[str], Any], with_problems: bool) -> None:
    pg_restore = shutil.which("pg_restore")
    if pg_restore is None:
        raise CommandError("pg_restore is not installed (Debian: apt-get install postgresql-client)")
    env = pg_environment(settings_dict)
    listed = subprocess.run([pg_restore, "--list", str(backup)], env=env, capture_output=True, text=True,
                            check=False)
    if listed.returncode != 0:
        raise CommandError(f"{backup} cannot be read by pg_restore: {pg_dump_error(listed, 'pg_restore')}")
    target = str(settings_dict["NAME"])
    stamp = utc_stamp().replace("-", "_")
    staging = pg_name(target, f"_restoring_{stamp}")
    aside = pg_name(target, f"_before_restore_{stamp}")
    with contextlib.closing(maintenance_connection(settings_dict)) as admin:
        try:
            admin.execute(f"CREATE DATABASE {quoted(staging)} TEMPLATE template0")
        except DatabaseError_ as exc:
            raise CommandError(f"cannot create the database {staging} to check the backup in (the role needs "
                               f"CREATEDB): {first_line(exc)}") from exc
        swapped = False
        try:
            run_pg_restore(pg_restore, env, staging, backup)
            staging_settings = {**settings_dict, "NAME": staging}
            with using_database(staging_settings):
                checked = check_and_migrate(backup, with_problems=with_problems)
            exists = database_exists(admin, target)
            empty = exists and pg_is_empty(settings_dict)
            refuse_if_used(pg_sessions(admin, target), force=force, say=say)
            kept = ("the current database is empty: the backup is restored into it" if empty else
                    f"the current database is kept as {aside}" if exists else "there is no current database")
            if not confirm(f"Restore {backup} ({describe(checked)}) into the PostgreSQL database {target}? "
                           f"{kept[0].upper()}{kept[1:]}."):
                raise CommandError("nothing restored (not confirmed)")
            if force and exists:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = %s AND pid <> pg_backend_pid()", [target])
            if empty:
                # Into the database itself (its owner and grants stay), now that the copy checked.
                restore_into_empty(pg_restore, env, backup, settings_dict, force=force, with_problems=with_problems)
            else:
                with using_database(staging_settings):
                    record_restore(backup, replaced=aside if exists else None, checked=checked, force=force)
                swap_in(admin, staging, target, aside if exists else None)
                swapped = True
        finally:
            if not swapped:
                admin.execute(f"DROP DATABASE IF EXISTS {quoted(staging)} WITH (FORCE)")
    say(f"Restored {backup} into the PostgreSQL database {target}: {describe(checked)}.")
    say_problems(checked, say)
    if exists and not empty:
        say(f"The database it replaced is kept as {aside} (drop it with `dropdb {aside}` once you no longer "
            "need it).")


def run_pg_restore(pg_restore: str, env: dict[str, str], dbname: str, backup: Path) -> None:
    restored = subprocess.run(
        [pg_restore, "--no-owner", "--no-privileges", "--exit-on-error", "--no-password", "--dbname", dbname,
         str(backup)],
        env=env, capture_output=True, text=True, check=False)
    if restored.returncode != 0:
        raise CommandError(f"pg_restore failed: {pg_dump_error(restored, 'pg_restore')}")


def restore_into_empty(pg_restore: str, env: dict[str, str], backup: Path, settings_dict: dict[str, Any], *,
                       force: bool, with_problems: bool) -> None:
    """The checked backup, restored again into the empty target, migrated and recorded there."""
    target = str(settings_dict["NAME"])
    try:
        run_pg_restore(pg_restore, env, target, backup)
        with using_database(settings_dict):
            checked = check_and_migrate(backup, with_problems=with_problems)
            record_restore(backup, replaced=None, checked=checked, force=force)
    except CommandError as exc:
        raise CommandError(f"the restore into the empty database {target} failed half-way ({exc}): drop and "
                           "create it again, then restore again") from exc


def swap_in(admin: Any, staging: str, target: str, aside: str | None) -> None:
    """The checked copy takes the target's name; the target (if any) is renamed `aside` first, and
    renamed back if the copy cannot take its place."""
    if aside is not None:
        try:
            admin.execute(f"ALTER DATABASE {quoted(target)} RENAME TO {quoted(aside)}")
        except DatabaseError_ as exc:
            raise CommandError(f"cannot move {target} aside: {first_line(exc)}; nothing was restored") from exc
    try:
        pg_take_the_place_of(admin, staging, target)
    except BaseException:
        if aside is not None:
            admin.execute(f"ALTER DATABASE {quoted(aside)} RENAME TO {quoted(target)}")
        raise


def pg_is_empty(settings_dict: dict[str, Any]) -> bool:
    """No table, view or sequence outside PostgreSQL's own schemas: nothing there to keep."""
    with contextlib.closing(connect_postgresql(settings_dict, str(settings_dict["NAME"]))) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"
        ).fetchone()
    return bool(row) and row[0] == 0


def pg_take_the_place_of(admin: Any, staging: str, target: str) -> None:
    admin.execute(f"ALTER DATABASE {quoted(staging)} RENAME TO {quoted(target)}")


def pg_name(target: str, suffix: str) -> str:
    return target[: 63 - len(suffix)] + suffix  # PostgreSQL's names are at most 63 bytes


def quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def connect_postgresql(settings_dict: dict[str, Any], dbname: str) -> Any:
    from psycopg.conninfo import make_conninfo

    options = {k: v for k, v in (settings_dict.get("OPTIONS") or {}).items() if isinstance(v, str | int)}
    conninfo = make_conninfo("", **{"connect_timeout": 5, **options}, dbname=dbname, application_name=RESTORING,
                             user=settings_dict.get("USER") or None, password=settings_dict.get("PASSWORD") or None,
                             host=settings_dict.get("HOST") or None, port=settings_dict.get("PORT") or None)
    return psycopg.connect(conninfo, autocommit=True)


# This command's own sessions, which pg_sessions does not count (one just closed may still be
# listed for a moment).
RESTORING = "tally restore"


def maintenance_connection(settings_dict: dict[str, Any]) -> Any:
    """A connection to the server's `postgres` database: a database can be renamed or dropped only
    from another one."""
    try:
        return connect_postgresql(settings_dict, "postgres")
    except psycopg.Error as exc:
        raise CommandError(f"cannot reach the PostgreSQL server: {first_line(exc)}") from exc


def database_exists(admin: Any, name: str) -> bool:
    return admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


def pg_sessions(admin: Any, name: str) -> str | None:
    """Other sessions on the database (a server's connections, psql), or None."""
    rows = admin.execute("SELECT coalesce(nullif(application_name, ''), 'unnamed'), count(*) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid <> pg_backend_pid() AND application_name <> %s GROUP BY 1 ORDER BY 1",
                         [name, RESTORING]).fetchall()
    if not rows:
        return None
    total = sum(count for _, count in rows)
    return f"{total} other session(s) are connected to it ({', '.join(f'{app}: {n}' for app, n in rows)})"
