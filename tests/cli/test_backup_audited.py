"""tally backup copies every patient's data: like any other read of it, it leaves an audit event
(who: the command line and the operating-system user; what: the backup and where it went; when)."""

from __future__ import annotations

import io
import shutil

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from tally.clinic.audit import verify_chain
from tally.clinic.models import AuditEvent


@pytest.fixture
def can_back_up(db):
    if connection.vendor == "postgresql" and shutil.which("pg_dump") is None:
        pytest.skip("PostgreSQL backup: pg_dump is not installed")


def test_a_backup_leaves_one_audit_event_naming_the_command_line_and_the_target(can_back_up, patient, tmp_path):
    target = tmp_path / "copy.backup"
    before = AuditEvent.objects.count()
    call_command("backup", str(target), stdout=io.StringIO())
    assert target.exists()
    events = list(AuditEvent.objects.order_by("id")[before:])
    assert [(e.action, e.actor_id, e.patient_id, e.object_type) for e in events] == [
        ("database.backup", None, None, "database")]
    details = events[0].after
    assert details["via"] == "command line" and details["command"] == "tally backup" and details["os_user"]
    assert details["path"] == str(target.resolve())
    assert events[0].at.utcoffset().total_seconds() == 0
    assert verify_chain().intact


def test_a_refused_backup_leaves_no_event_and_no_file(can_back_up, patient, tmp_path):
    target = tmp_path / "copy.backup"
    target.write_text("an older copy")
    before = AuditEvent.objects.count()
    with pytest.raises(CommandError, match="--force"):
        call_command("backup", str(target), stdout=io.StringIO())
    assert AuditEvent.objects.count() == before
    assert target.read_text() == "an older copy"


def test_a_backup_whose_event_cannot_be_written_keeps_no_copy(can_back_up, patient, tmp_path, monkeypatch):
    from django.db import OperationalError

    from tally.clinic.management.commands import backup

    def audit_log_unavailable(*args, **kwargs):
        raise OperationalError("database is locked")

    monkeypatch.setattr(backup, "record_reads", audit_log_unavailable)
    with pytest.raises(CommandError, match="cannot record the backup in the audit log"):
        call_command("backup", str(tmp_path / "copy.backup"), stdout=io.StringIO())
    assert list(tmp_path.iterdir()) == [], "neither the copy nor its temporary file is left"


def test_a_backup_onto_a_file_system_without_hard_links_is_written_and_still_never_overwrites(
        can_back_up, patient, tmp_path, monkeypatch):
    """A USB stick formatted exFAT or FAT, or an SMB share, has no hard links: link() fails with
    EPERM there, and every backup without --force failed ("cannot write ...: Operation not
    permitted") though the copy was taken and audited."""
    import errno
    import os

    def no_hard_links(src, dst, *args, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_links)
    target = tmp_path / "copy.backup"
    call_command("backup", str(target), stdout=io.StringIO())
    assert target.stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir()] == ["copy.backup"], "no temporary file left"
    with pytest.raises(CommandError, match="--force"):
        call_command("backup", str(target), stdout=io.StringIO())


def test_a_backup_into_a_directory_says_to_give_a_file_name_not_to_use_force(can_back_up, patient, tmp_path):
    """`tally backup /backups` answered "/backups exists; use --force to overwrite it": the advice
    to overwrite, for a directory it then refused anyway."""
    with pytest.raises(CommandError, match="is a directory; give a file name"):
        call_command("backup", str(tmp_path), stdout=io.StringIO())
