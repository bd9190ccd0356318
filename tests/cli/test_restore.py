"""`tally restore PATH`: a backup checked before anything is touched, never restored over the only
copy of the current database, refused while the database is in use, recorded in the restored
database's audit log. In process, on scratch databases of the run's kind (a copy of the test
database's schema), never on the test database itself."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import io
import os
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from tally import cli
from tally.clinic.actions import catalog
from tally.clinic.audit import verify_chain
from tally.clinic.management.commands import backup as backup_command
from tally.clinic.management.commands import restore as restore_command
from tally.clinic.management.commands.restore import check_backup_file, restore, using_database
from tally.clinic.models import AuditEvent, Patient, Staff
from tests.e2e.conftest import scratch_database_url

IS_SQLITE = connection.vendor == "sqlite"


@pytest.fixture(scope="module")
def schema_backup(django_db_setup, django_db_blocker, tmp_path_factory) -> Path:
    """The test database's schema, as `tally backup` writes it (once per module)."""
    if not IS_SQLITE and not (shutil.which("pg_dump") and shutil.which("pg_restore")):
        pytest.skip("PostgreSQL restore: pg_dump and pg_restore are not installed")
    target = tmp_path_factory.mktemp("schema") / "schema.backup"
    with django_db_blocker.unblock():
        if IS_SQLITE:
            backup_command.backup_sqlite(connection.settings_dict["NAME"], target, force=False, audited=lambda: None)
        else:
            backup_command.backup_postgresql(connection.settings_dict, target, force=False, audited=lambda: None)
    return target


@dataclass
class Clinic:
    """A scratch clinic database: `use()` makes it the default connection for a block."""

    settings: dict[str, Any]
    tmp_path: Path

    def use(self):
        return using_database(self.settings)

    @property
    def file(self) -> Path:
        return Path(self.settings["NAME"])

    def add_patient(self, last_name: str) -> None:
        with self.use():
            desk = Staff.objects.filter(username="frank").first() or Staff.objects.create_user(
                "frank", password="correct horse battery staple", role="front_desk")
            catalog.do_create_patient(acting_user=desk, first_name="Ana", last_name=last_name)

    def last_names(self) -> list[str]:
        with self.use():
            return sorted(Patient.objects.values_list("last_name", flat=True))

    def backup(self, name: str = "clinic.backup") -> Path:
        target = self.tmp_path / name
        with self.use():
            call_command("backup", str(target), stdout=io.StringIO())
        return target

    def restore(self, backup: Path, *, force: bool = False, answer: bool = True) -> list[str]:
        said: list[str] = []
        restore(backup, self.settings, force=force, confirm=lambda question: said.append(question) or answer,
                say=said.append)
        return said


@pytest.fixture
def clinic(db, schema_backup, tmp_path) -> Iterator[Clinic]:
    """A clinic with one patient, Before, in a database of its own."""
    if IS_SQLITE:
        live = tmp_path / "srv" / "clinic.sqlite3"
        live.parent.mkdir()
        shutil.copyfile(schema_backup, live)
        scratch = Clinic({**connection.settings_dict, "NAME": str(live)}, tmp_path)
        scratch.add_patient("Before")
        yield scratch
        return
    name = f"tally_restore_{uuid.uuid4().hex[:10]}"
    with postgres_admin() as admin:  # a copy of the module's template: much faster than pg_restore
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template(schema_backup)}"')
    try:
        scratch = Clinic({**connection.settings_dict, "NAME": name}, tmp_path)
        scratch.add_patient("Before")
        yield scratch
    finally:
        drop_databases_named(name)


_templates: dict[Path, str] = {}


def pg_template(schema_backup: Path) -> str:
    """A database restored from the schema backup once per run, that each test's clinic copies."""
    if schema_backup not in _templates:
        name = f"tally_restore_template_{uuid.uuid4().hex[:10]}"
        with postgres_admin() as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        atexit.register(drop_databases_named, name)
        done = subprocess.run([shutil.which("pg_restore") or "pg_restore", "--no-owner", "--exit-on-error",
                               "--dbname", name, str(schema_backup)],
                              env=backup_command.pg_environment(connection.settings_dict),
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        _templates[schema_backup] = name
    return _templates[schema_backup]


def postgres_admin():
    import psycopg

    db = connection.settings_dict
    conninfo = f"host={db['HOST'] or '127.0.0.1'} port={db['PORT'] or 5432} user={db['USER']} dbname=postgres"
    return psycopg.connect(conninfo, autocommit=True)


def drop_databases_named(prefix: str) -> None:
    """The database, and what was renamed from it (kept aside, staging)."""
    with postgres_admin() as admin:
        for (name,) in admin.execute("SELECT datname FROM pg_database WHERE datname = %s OR datname LIKE %s",
                                     [prefix, prefix + "\\_%"]).fetchall():
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def databases_named(prefix: str) -> list[str]:
    with postgres_admin() as admin:
        return sorted(name for (name,) in admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", [prefix + "%"]).fetchall())


def files_beside(clinic: Clinic) -> list[str]:
    """The database's files, but for the lock files a look for users of it may create."""
    return sorted(p.name for p in clinic.file.parent.iterdir() if not p.name.endswith(("-serving", "-queue")))


def nothing_changed(clinic: Clinic, before: list[str]) -> None:
    assert clinic.last_names() == ["After", "Before"]
    if IS_SQLITE:
        assert files_beside(clinic) == before, "no staging copy left, nothing moved"
    else:
        assert databases_named(clinic.settings["NAME"]) == [clinic.settings["NAME"]], "no staging database left"


def test_it_restores_the_backup_and_keeps_the_current_database_aside(clinic):
    backup = clinic.backup()
    clinic.add_patient("After")
    said = clinic.restore(backup)
    assert clinic.last_names() == ["Before"], "what was written after the backup is gone"
    assert said[0].startswith(f"Restore {backup} (1 patient, 0 packages, from this release; verified, audit "
                              "chain intact"), said
    assert said[1].startswith(f"Restored {backup} into "), said
    kept = said[2].removeprefix("The database it replaced is kept as ").split(" ")[0].rstrip(".")
    with clinic.use():
        events = list(AuditEvent.objects.order_by("id"))
        assert events[-1].action == "database.restore"  # (the copy does not hold its own backup's event)
        assert events[-1].after["path"] == str(backup) and events[-1].after["replaced"] == kept
        assert verify_chain().intact
    if IS_SQLITE:
        assert not Path(f"{clinic.file}-wal").exists() and not Path(f"{clinic.file}-shm").exists()
        with contextlib.closing(sqlite3.connect(kept)) as aside:  # the replaced database, whole
            assert sorted(n for (n,) in aside.execute("SELECT last_name FROM clinic_patient")) == ["After", "Before"]
        assert not [n for n in files_beside(clinic) if "restoring" in n], "no staging copy left"
    else:
        aside = Clinic({**clinic.settings, "NAME": kept}, clinic.tmp_path)
        assert aside.last_names() == ["After", "Before"]
        assert databases_named(clinic.settings["NAME"]) == sorted([clinic.settings["NAME"], kept])


@pytest.mark.sqlite_only
def test_a_stale_wal_of_the_current_database_is_kept_aside_with_it_not_replayed(clinic):
    """The README's manual steps had to say to move the -wal aside: a -wal left beside the restored
    file is replayed into it. A connection that dies without closing leaves one behind."""
    backup = clinic.backup()
    writer = sqlite3.connect(clinic.file)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("UPDATE clinic_patient SET last_name = 'Changed after the backup'")
    writer.commit()
    wal = Path(f"{clinic.file}-wal")
    stale = wal.read_bytes()
    writer.close()
    wal.write_bytes(stale)  # what a crashed server leaves
    clinic.restore(backup)
    assert not wal.exists()
    assert clinic.last_names() == ["Before"]


@pytest.mark.sqlite_only
def test_a_damaged_or_missing_sqlite_database_is_restored_over(clinic):
    """Why one restores: the file is garbage, or gone."""
    backup = clinic.backup()
    clinic.file.write_bytes(b"not a database any more")
    said = clinic.restore(backup)
    assert clinic.last_names() == ["Before"] and "kept as" in said[-1], said
    clinic.file.unlink()
    said = clinic.restore(backup)
    assert "There is no current database" in said[0] and said[-1].startswith("Restored "), said
    assert clinic.last_names() == ["Before"]


def test_each_refused_backup_says_why_and_changes_nothing(clinic, settings):
    """One clinic for several refusals (a scratch PostgreSQL database is slow to make): a backup
    from a newer release, one that holds no clinic, one not confirmed, one signed with another key."""
    backup = clinic.backup()
    with clinic.use(), connection.cursor() as cursor:
        cursor.execute("INSERT INTO django_migrations (app, name, applied) VALUES "
                       "('clinic', '9999_from_the_future', CURRENT_TIMESTAMP)")
    newer = clinic.backup("newer.backup")
    with clinic.use(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM django_migrations WHERE name = '9999_from_the_future'")
    if IS_SQLITE:
        not_a_clinic = clinic.tmp_path / "other.sqlite3"
        with contextlib.closing(sqlite3.connect(not_a_clinic)) as db:
            db.execute("CREATE TABLE notes (text)")
            db.commit()
    else:
        not_a_clinic = clinic.tmp_path / "other.pgdump"
        backup_command.backup_postgresql({**clinic.settings, "NAME": "postgres"}, not_a_clinic, force=False,
                                         audited=lambda: None)
    clinic.add_patient("After")
    before = files_beside(clinic) if IS_SQLITE else []

    with pytest.raises(CommandError, match=r"newer release of Tally \(its migrations clinic.9999_from_the_future"):
        clinic.restore(newer)
    nothing_changed(clinic, before)
    with pytest.raises(CommandError, match="holds no Tally clinic"):
        clinic.restore(not_a_clinic)
    nothing_changed(clinic, before)
    with pytest.raises(CommandError, match="not confirmed"):
        clinic.restore(backup, answer=False)
    nothing_changed(clinic, before)
    settings.SECRET_KEY = "another clinic's key"  # as `tally` refuses a database whose events are not its key's
    with pytest.raises(CommandError, match="signed with another secret key: set TALLY_SECRET_KEY"):
        clinic.restore(backup)
    nothing_changed(clinic, before)


def test_a_backup_of_an_older_release_is_migrated(clinic):
    with clinic.use():
        call_command("migrate", "security", "zero", verbosity=0)
    backup = clinic.backup()
    said = clinic.restore(backup)
    assert "from an older release, 1 migration(s) applied" in said[1], said
    with clinic.use():
        from tally.security.models import SignedInSession

        assert SignedInSession.objects.count() == 0
        assert AuditEvent.objects.order_by("-id").first().after["migrations_applied"] == 1


def test_when_the_restored_copy_cannot_take_its_place_the_current_database_is_put_back(clinic, monkeypatch):
    """Moved aside, then the rename of the checked copy fails (a full disk, Ctrl+C): the clinic
    was left with no database under its name, and the checked copy deleted. The failure is one
    line, not a traceback."""
    import psycopg

    backup = clinic.backup()
    clinic.add_patient("After")
    before = files_beside(clinic) if IS_SQLITE else []

    def fails(*args, **kwargs):
        if IS_SQLITE:
            raise OSError(28, "No space left on device")
        raise psycopg.errors.DiskFull("No space left on device")

    monkeypatch.setattr(restore_command, "take_the_place_of", fails)
    monkeypatch.setattr(restore_command, "pg_take_the_place_of", fails)
    with pytest.raises(CommandError, match="No space left on device; nothing was restored"):
        clinic.restore(backup)
    nothing_changed(clinic, before)


@pytest.mark.sqlite_only
def test_the_restored_sqlite_file_keeps_the_current_ones_permissions(clinic):
    """The copy was made 0600: a database the server's user reads through its group became
    unreadable to it."""
    backup = clinic.backup()
    clinic.file.chmod(0o660)
    clinic.restore(backup)
    assert clinic.file.stat().st_mode & 0o777 == 0o660


@pytest.mark.sqlite_only
def test_two_restores_in_the_same_second_keep_both_replaced_databases(clinic, monkeypatch):
    """The kept copy is named after the second: a second restore within it renamed the database
    over the first kept copy, which rename() replaces without a word."""
    monkeypatch.setattr(restore_command, "utc_stamp", lambda: "20260304-101500")
    backup = clinic.backup()
    clinic.add_patient("After")
    first = clinic.restore(backup)[-1]
    clinic.add_patient("Again")
    second = clinic.restore(backup)[-1]
    kept = [line.removeprefix("The database it replaced is kept as ").split(" ")[0].rstrip(".")
            for line in (first, second)]
    assert kept[0] != kept[1]
    for name, expected in zip(kept, (["After", "Before"], ["Again", "Before"]), strict=True):
        with contextlib.closing(sqlite3.connect(name)) as aside:
            assert sorted(n for (n,) in aside.execute("SELECT last_name FROM clinic_patient")) == expected


@pytest.mark.sqlite_only
def test_it_refuses_while_a_server_runs_on_the_sqlite_database_unless_forced(clinic):
    backup = clinic.backup()
    clinic.add_patient("After")
    before = files_beside(clinic)
    # What `tally serve` holds for as long as it runs (tally.db.sqlite3.mark_served).
    serving = os.open(f"{clinic.file}-serving", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(serving, fcntl.LOCK_SH)
        with pytest.raises(CommandError, match=r"in use: a server \(tally serve\) is running on it"):
            clinic.restore(backup)
        nothing_changed(clinic, before)
        said = clinic.restore(backup, force=True)
        assert any(line.startswith("Warning: the database is in use") for line in said), said
        assert clinic.last_names() == ["Before"]
    finally:
        os.close(serving)


@pytest.mark.sqlite_only
def test_it_refuses_while_another_program_has_the_sqlite_database_open(clinic):
    backup = clinic.backup()
    clinic.add_patient("After")
    before = files_beside(clinic)
    with contextlib.closing(sqlite3.connect(clinic.file)) as other:  # a request in progress, the sqlite3 shell
        other.execute("SELECT count(*) FROM clinic_patient").fetchone()
        with pytest.raises(CommandError, match="in use: another program has it open"):
            clinic.restore(backup)
    nothing_changed(clinic, before)


@pytest.mark.postgres_only
def test_it_refuses_while_other_sessions_use_the_postgresql_database_unless_forced(clinic):
    import psycopg

    backup = clinic.backup()
    clinic.add_patient("After")
    db = clinic.settings
    other = psycopg.connect(f"host={db['HOST'] or '127.0.0.1'} port={db['PORT'] or 5432} user={db['USER']} "
                            f"dbname={db['NAME']} application_name=tally-serve", autocommit=True)
    try:
        with pytest.raises(CommandError, match=r"in use: 1 other session\(s\) are connected to it \(tally-serve: 1\)"):
            clinic.restore(backup)
        nothing_changed(clinic, [])
        said = clinic.restore(backup, force=True)
        assert any(line.startswith("Warning: the database is in use") for line in said), said
        assert clinic.last_names() == ["Before"]
    finally:
        other.close()


@pytest.mark.postgres_only
def test_an_empty_postgresql_database_is_restored_into_not_renamed_aside(clinic, tmp_path):
    """A database made empty for the restore (createdb, perhaps by the server's administrator, who
    owns it) is where the backup goes: renaming it aside left an empty database behind, and fails
    for a role that does not own it."""
    backup = clinic.backup()
    with scratch_database_url(tmp_path / "empty") as url:
        name = url.rsplit("/", 1)[1]
        empty = Clinic({**clinic.settings, "NAME": name}, tmp_path)
        try:
            said = empty.restore(backup)
            assert "The current database is empty: the backup is restored into it" in said[0], said
            assert empty.last_names() == ["Before"]
            with empty.use():
                assert AuditEvent.objects.order_by("-id").first().action == "database.restore"
                assert verify_chain().intact
            assert databases_named(name) == [name], "nothing renamed aside, no staging database left"
        finally:
            drop_databases_named(name)


def test_it_refuses_a_missing_file_and_files_of_another_kind(tmp_path):
    with pytest.raises(CommandError, match="no backup at"):
        check_backup_file(tmp_path / "missing.backup", "sqlite")
    with pytest.raises(CommandError, match="is a directory"):
        check_backup_file(tmp_path, "postgresql")
    text = tmp_path / "notes.txt"
    text.write_text("not a backup\n")
    for vendor in ("sqlite", "postgresql"):
        with pytest.raises(CommandError, match="is not a backup made by `tally backup`"):
            check_backup_file(text, vendor)
    dump = tmp_path / "clinic.pgdump"
    dump.write_bytes(b"PGDMP\x01\x0f\x00" + b"\x00" * 64)
    with pytest.raises(CommandError, match="is a PostgreSQL backup \\(pg_dump\\), but this clinic's database is SQLite"):
        check_backup_file(dump, "sqlite")
    copy = tmp_path / "clinic.sqlite3"
    with contextlib.closing(sqlite3.connect(copy)) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(CommandError, match="is a SQLite backup, but this clinic's database is PostgreSQL"):
        check_backup_file(copy, "postgresql")


def test_the_command_refuses_to_run_unasked_off_a_terminal_without_yes(tmp_path, monkeypatch):
    monkeypatch.setattr(restore_command.sys.stdin, "isatty", lambda: False, raising=False)
    with pytest.raises(CommandError, match="add --yes"):
        call_command("restore", str(tmp_path / "clinic.backup"))


def test_tally_help_lists_restore():
    assert "\n  restore " in cli.TALLY_COMMANDS


@pytest.mark.sqlite_only
def test_restore_on_a_new_machine_without_the_key_asks_for_it_and_makes_no_key(tally, tmp_path):
    """With neither TALLY_SECRET_KEY nor a key file (a new machine, the database gone), `tally`
    made a new random key file first, as for any command on an empty database; the restore was then
    refused for that key, leaving a key file that was never the clinic's."""
    backup = tmp_path / "backups" / "clinic.sqlite3"
    backup.parent.mkdir()
    with contextlib.closing(sqlite3.connect(backup)) as db:
        db.execute("CREATE TABLE t (x)")
    done = tally("restore", "--yes", str(backup))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "TALLY_SECRET_KEY" in lines[0], done.stderr
    assert not (tally.cwd / ".tally-secret-key").exists()
    assert not tally.database.exists()


def test_a_backup_that_fails_verify_is_refused_unless_restored_with_problems(clinic):
    """A clinic's only backup may hold a count fault (a hand-typed UPDATE, an old release's bug):
    refused by default, so nobody restores one unawares; --with-problems restores it, says what
    `tally verify` found and records it, as the owner has nothing better to restore."""
    from tally.clinic.actions import sales
    from tally.clinic.demo import corrupt_cached_count

    with clinic.use():
        owner = Staff.objects.create_user("olga", password="correct horse battery staple", role="owner")
        service = catalog.do_create_service(acting_user=owner, name="Acupuncture", duration_minutes=60, price="95")
        package = catalog.do_create_package(acting_user=owner, name="10 x Acupuncture", price="800", sessions=10,
                                            service_ids=[service.pk])
        sold, _ = sales.do_sell_package(acting_user=owner, patient=Patient.objects.get(), package=package,
                                        use_first_session=False)
        corrupt_cached_count(sold)
    backup = clinic.backup()
    clinic.add_patient("After")
    before = files_beside(clinic) if IS_SQLITE else []
    with pytest.raises(CommandError, match=r"fails `tally verify` \(1 problem\(s\), the first: ledger: patient "
                                           r"package .*--with-problems restores it anyway"):
        clinic.restore(backup)
    nothing_changed(clinic, before)

    said: list[str] = []
    restore(backup, clinic.settings, force=False, confirm=lambda question: said.append(question) or True,
            say=said.append, with_problems=True)
    assert "`tally verify` finds 1 problem, audit chain intact" in said[0], said
    assert said[2] == "`tally verify` finds these problems in it (`tally investigate` explains a package's count):"
    assert said[3].startswith(f"  ledger: patient package {sold.pk}"), said
    assert clinic.last_names() == ["Before"]
    with clinic.use():
        event = AuditEvent.objects.order_by("id").last()
        assert event.action == "database.restore" and len(event.after["verify_problems"]) == 1
        assert verify_chain().intact
