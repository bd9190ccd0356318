"""`tally verify-audit` as a user runs it, and migrations 0003 and 0009 chaining, then re-signing
with the server's key, the events an existing install already has (scratch SQLite databases,
separate processes)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.cli.conftest import Tally, free_port, static_root, tally  # noqa: F401  (fixtures)

# Scratch SQLite files of their own whatever the run's database: the PostgreSQL run would
# repeat the SQLite run's processes exactly. Once per CI run.
pytestmark = pytest.mark.sqlite_only


def insert_old_events(database, count: int) -> None:
    with sqlite3.connect(database) as db:
        db.executemany(
            "INSERT INTO clinic_auditevent (at, role, action, object_type, object_id, before, after, ip) "
            "VALUES (?, '', ?, 'patient', ?, NULL, ?, '127.0.0.1')",
            [(f"2025-01-0{i % 9 + 1} 10:00:00.123456", f"old.{i}", str(i), json.dumps({"n": i})) for i in range(count)])


def test_existing_events_are_chained_by_the_migration_then_tampering_is_named(tally: Tally):  # noqa: F811
    assert tally("migrate", "clinic", "0002").returncode == 0
    insert_old_events(tally.database, 5)
    assert tally("migrate").returncode == 0
    result = tally("verify-audit")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "6 events, chain intact"  # and 0009's audit.rekeyed
    with sqlite3.connect(tally.database) as db:
        assert db.execute("SELECT action FROM clinic_auditevent ORDER BY id DESC LIMIT 1").fetchone() == \
            ("audit.rekeyed",)
    with sqlite3.connect(tally.database) as db:  # the triggers are back after the migration
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("UPDATE clinic_auditevent SET action = 'x' WHERE id = 3")
        db.execute("DROP TRIGGER clinic_auditevent_no_update")
        db.execute("UPDATE clinic_auditevent SET action = 'x' WHERE id = 3")
    result = tally("verify-audit")
    assert result.returncode == 1
    assert "event 3: its content does not match its hash" in result.stderr


def test_help_lists_verify_audit(tally: Tally):  # noqa: F811
    assert "verify-audit" in tally("--help").stdout


def test_an_upgrade_over_a_broken_chain_stops_naming_the_event_and_changes_nothing(tally: Tally):  # noqa: F811
    assert tally("migrate", "clinic", "0002").returncode == 0
    insert_old_events(tally.database, 5)
    assert tally("migrate", "clinic", "0008").returncode == 0  # an install of the previous release
    with sqlite3.connect(tally.database) as db:
        db.execute("DROP TRIGGER clinic_auditevent_no_update")
        db.execute("UPDATE clinic_auditevent SET action = 'x' WHERE id = 3")
        db.execute("CREATE TRIGGER clinic_auditevent_no_update BEFORE UPDATE ON clinic_auditevent "
                   "BEGIN SELECT RAISE(ABORT, 'clinic_auditevent is append-only'); END")
        links = db.execute("SELECT id, prev_hash, hash FROM clinic_auditevent ORDER BY id").fetchall()
    result = tally("migrate")
    assert result.returncode == 1
    assert "event 3: its content does not match its hash" in result.stderr
    assert "TALLY_AUDIT_REKEY_ACCEPT=3" in result.stderr and "Traceback" not in result.stderr
    with sqlite3.connect(tally.database) as db:
        assert db.execute("SELECT id, prev_hash, hash FROM clinic_auditevent ORDER BY id").fetchall() == links
        assert not db.execute("SELECT 1 FROM django_migrations WHERE app = 'clinic' AND name LIKE '0009%'").fetchall()
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("UPDATE clinic_auditevent SET action = 'y' WHERE id = 3")
    # Looked into and accepted: the upgrade goes through, the break named in its event.
    tally.env["TALLY_AUDIT_REKEY_ACCEPT"] = "3"
    assert tally("migrate").returncode == 0
    result = tally("verify-audit")
    assert result.returncode == 0 and result.stdout.startswith("6 events, chain intact"), result.stderr
