"""Bad input on the command line: one clear line on standard error and a non-zero exit,
never a Python traceback, and nothing changed."""

from __future__ import annotations

import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .test_commands import PASSWORD, one_line

# Every command here runs on a SQLite file of its own, or on a fixed URL, whatever the run's
# database: the PostgreSQL run would repeat the SQLite run's processes exactly. Once per CI run.
pytestmark = pytest.mark.sqlite_only

COMMANDS_THAT_NEED_A_DATABASE = [
    ("investigate", "P-000001"),
    ("audit", "--json"),
    ("createuser", "ana", "--role", "owner", "--password", PASSWORD),
    ("createtoken", "ana"),
    ("tokens", "ana"),
    ("revoketoken", "1"),
    ("deactivate", "ana"),
    ("verify",),
    ("activatepaid",),
    ("verify-audit",),
    ("rekey-audit",),
]


def refused(done: subprocess.CompletedProcess, *expected: str) -> str:
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    line = one_line(done.stderr)
    for text in expected:
        assert text in line, line
    return line


@pytest.mark.parametrize("args", COMMANDS_THAT_NEED_A_DATABASE, ids=lambda args: args[0])
def test_a_command_on_a_missing_database_says_to_run_init_and_creates_nothing(tally, args):
    done = tally(*args)
    refused(done, "tally init")
    assert done.stdout == ""
    assert not tally.database.exists(), "an empty database file was left behind"


@pytest.mark.parametrize("args", COMMANDS_THAT_NEED_A_DATABASE, ids=lambda args: args[0])
def test_a_command_on_a_database_that_is_not_migrated_says_to_run_init(tally, args):
    sqlite3.connect(tally.database).close()  # an empty SQLite file: no tables at all
    done = tally(*args)
    refused(done, "tally init")
    assert done.stdout == ""


def test_a_database_url_that_is_not_sqlite_or_postgresql_is_one_line(tally):
    for url in ("garbage", "mysql://clinic@localhost/clinic"):
        tally.env["TALLY_DATABASE_URL"] = url
        refused(tally("audit"), "TALLY_DATABASE_URL")


READ_SYSCALL = {"x86_64": "0", "aarch64": "63"}.get(platform.machine())


def wait_until_reading_standard_input(process: subprocess.Popen, seconds: float = 120) -> None:
    """Until the process is blocked in read(0, ...), as /proc/<pid>/syscall shows; where that
    cannot be read, a few seconds (as before this waited)."""
    syscall = Path(f"/proc/{process.pid}/syscall")
    if READ_SYSCALL is None or not syscall.exists():
        time.sleep(4)
        return
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if syscall.read_text().split()[:2] == [READ_SYSCALL, "0x0"]:
            return
        time.sleep(0.05)
    pytest.fail(f"the command did not read its standard input within {seconds} s")


@pytest.mark.usefixtures("initialized")
def test_ctrl_c_ends_a_command_with_one_line_and_status_130(tally):
    # Without --password and with standard input a pipe, createuser waits for the password line.
    # SIGINT as a terminal gives it: a suite started in the background by a shell without job
    # control (as CI may be) inherits SIGINT ignored, and the command would never see it.
    waiting = subprocess.Popen(tally.command("createuser", "ana", "--role", "owner"), cwd=tally.cwd, env=tally.env,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_until_reading_standard_input(waiting)  # Django is set up and the command waits for its line
    waiting.send_signal(signal.SIGINT)
    waiting.wait(timeout=30)  # before communicate(), which closes standard input: an end of file
    out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 130, err
    assert "Traceback" not in err, err
    assert "interrupted" in one_line(err)
    with sqlite3.connect(tally.database) as db:
        assert db.execute("select count(*) from clinic_staff").fetchone()[0] == 0


@pytest.mark.parametrize("suffix", ["-wal", "-shm", "-journal", "-queue", "-serving"])
@pytest.mark.usefixtures("initialized")
def test_backup_refuses_the_live_databases_own_journal_files(tally, suffix):
    """Replacing the -wal of a database in use makes every new connection read a malformed database."""
    assert tally("createuser", "ana", "--role", "owner", "--password", PASSWORD).returncode == 0
    holder = sqlite3.connect(tally.database, isolation_level=None)  # the server, keeping the WAL
    try:
        holder.execute("PRAGMA wal_autocheckpoint=0")
        holder.execute("update clinic_staff set first_name='Ana'")
        refused(tally("backup", f"{tally.database}{suffix}", "--force"), "database")
        with sqlite3.connect(tally.database) as reader:
            assert reader.execute("select first_name from clinic_staff").fetchall() == [("Ana",)]
    finally:
        holder.close()


@pytest.mark.skipif(not Path("/proc/self").is_dir() or sys.platform != "linux", reason="needs Linux /proc")
@pytest.mark.usefixtures("initialized")
def test_backup_into_a_directory_it_cannot_write_is_one_line(tally):
    refused(tally("backup", "/proc/tally-backup.sqlite3"), "/proc")


def test_an_empty_database_url_means_the_default_as_the_command_line_says(tally):
    tally.env["TALLY_DATABASE_URL"] = ""
    done = tally("init")
    assert done.returncode == 0, done.stderr
    assert (tally.cwd / "tally.sqlite3").exists()


@pytest.mark.parametrize("port", ["99999", "-1", "0", "http"])
@pytest.mark.usefixtures("initialized")
def test_serve_refuses_a_port_that_is_not_one_before_starting(tally, port):
    done = tally("serve", "--port", port, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "--port" in done.stderr and "1 to 65535" in done.stderr


@pytest.mark.parametrize(("option", "value"), [("--workers", "99999999999"), ("--workers", "0"),
                                               ("--workers", "-2"), ("--threads", "100000"), ("--threads", "0")])
@pytest.mark.parametrize("command", ["serve", "demo"])
def test_serve_refuses_a_number_of_workers_or_threads_it_cannot_run_before_starting(command, option, value):
    """`--workers 99999999999` forked workers until the machine stopped answering; 0 started a
    server with none. Refused by the parser, as a bad --port is, before anything starts (from
    the command line, exit status 2 and this sentence)."""
    from django.core.management import CommandError, load_command_class

    parser = load_command_class("tally.clinic", command).create_parser("tally", command)
    with pytest.raises(CommandError, match=f"argument {option}: .* give 1 to"):
        parser.parse_args([option, value])


@pytest.mark.usefixtures("initialized")
def test_a_reader_that_stops_early_ends_the_command_quietly(tally):
    """`tally audit --csv | head -1`: the pipe closes under the command; that is no error to show."""
    reading = subprocess.Popen(tally.command("audit", "--json"), cwd=tally.cwd, env=tally.env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reading.stdout.close()  # the reader is gone before the command writes anything
    err = reading.stderr.read()
    reading.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert err.strip() == ""


def test_ctrl_d_at_the_password_prompt_is_a_refusal_not_a_traceback(monkeypatch):
    """On a terminal, createuser asks twice with getpass; Ctrl+D there raised EOFError."""
    from django.core.management.base import CommandError

    from tally.clinic.management.commands import createuser

    def end_of_input(prompt: str = "") -> str:
        raise EOFError

    monkeypatch.setattr(createuser.sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(createuser.getpass, "getpass", end_of_input)
    with pytest.raises(CommandError, match="password"):
        createuser.read_password()


@pytest.mark.parametrize("url", ["postgresql://clinic@127.0.0.1:5432", "postgres://clinic@127.0.0.1/", "sqlite:///",
                                 "sqlite://"])
def test_a_database_url_without_its_database_is_one_line(tally, url):
    """PostgreSQL's raised ImproperlyConfigured as a traceback; SQLite's was a database in
    memory, so `tally init` said "Database ready" and kept nothing."""
    tally.env["TALLY_DATABASE_URL"] = url
    for command in ("init", "verify"):
        refused(tally(command), "TALLY_DATABASE_URL", "names no database")
    assert not list(tally.cwd.iterdir())


@pytest.mark.parametrize("url", ["postgresql://clinic@127.0.0.1:1/clinic",  # nothing listens
                                 "postgresql://no-such-role:wrong@127.0.0.1:5432/postgres"])
def test_a_database_that_cannot_be_reached_or_refuses_the_login_is_one_line(tally, url):
    if "5432" in url:
        import socket

        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", 5432)) != 0:
                pytest.skip("no PostgreSQL on 127.0.0.1:5432 to refuse the login")
    tally.env["TALLY_DATABASE_URL"] = url
    refused(tally("init"), "cannot set up postgresql")
    for command in ("verify", "verify-audit"):
        line = refused(tally(command), "cannot reach the database")
        assert "wrong" not in line  # never the password


@pytest.mark.usefixtures("initialized")
def test_a_read_only_sqlite_database_is_one_line(tally, tmp_path):
    """A database on a read-only file system (a mounted backup disk). Root ignores chmod,
    so this needs a read-only bind mount; skipped where mount is not allowed."""
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    if subprocess.run(["mount", "--bind", "-o", "ro", str(tally.cwd), str(read_only)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot make a read-only bind mount here")
    try:
        tally.env["TALLY_DATABASE_URL"] = f"sqlite:///{read_only / tally.database.name}"
        tally.env["TALLY_SECRET_KEY"] = "k" * 50
        for args in (("init",), ("verify",), ("verify-audit",), ("backup", str(tmp_path / "copy.sqlite3"))):
            refused(tally(*args), "unable to open database file")
    finally:
        subprocess.run(["umount", str(read_only)], check=True)


def test_production_without_a_secret_key_or_a_place_for_one_is_one_line(tally, tmp_path):
    """No TALLY_SECRET_KEY and no TALLY_DEBUG: the key file beside the database cannot be made."""
    tally.env["TALLY_DATABASE_URL"] = "sqlite:////proc/clinic.sqlite3"
    line = refused(tally("init"), "TALLY_SECRET_KEY")
    assert "/proc/.tally-secret-key" in line


DJANGO_COMMANDS_ON_THE_DATA = [("changepassword", "ana"), ("createsuperuser", "--noinput", "--username", "root")]


@pytest.mark.parametrize("args", DJANGO_COMMANDS_ON_THE_DATA, ids=lambda args: args[0])
def test_a_django_command_on_a_database_that_is_not_set_up_is_one_line(tally, args):
    """`tally changepassword NAME` (in the README) printed an OperationalError traceback."""
    done = tally(*args)
    refused(done, "tally init")


@pytest.mark.parametrize("args", DJANGO_COMMANDS_ON_THE_DATA, ids=lambda args: args[0])
def test_a_django_command_on_a_database_it_cannot_reach_is_one_line(tally, args):
    tally.env["TALLY_DATABASE_URL"] = "postgresql://clinic@127.0.0.1:1/clinic"  # nothing listens
    refused(tally(*args), "cannot reach the database", "Connection refused")


@pytest.mark.parametrize("content", [None, b"\xff\xfe\n"], ids=["a directory", "not text"])
def test_a_secret_key_file_that_cannot_be_read_is_one_line(tally, content):
    key_file = tally.cwd / ".tally-secret-key"
    if content is None:
        key_file.mkdir()
    else:
        key_file.write_bytes(content)
    line = refused(tally("init"), str(key_file), "TALLY_SECRET_KEY")
    assert "Traceback" not in line
    assert not tally.database.exists()


def test_backup_from_a_postgresql_server_that_never_answers_gives_up_in_one_line(tally):
    """A host that takes the connection and says nothing (a firewall, a hung server): every other
    command gives up after the connect timeout; `tally backup`'s pg_dump waited for ever."""
    if shutil.which("pg_dump") is None:
        pytest.skip("pg_dump is not installed")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # never accepts: the handshake completes, no answer comes
        tally.env["TALLY_DATABASE_URL"] = f"postgresql://clinic@127.0.0.1:{silent.getsockname()[1]}/clinic"
        tally.env["TALLY_SECRET_KEY"] = "k" * 50
        started = time.monotonic()
        done = tally("backup", str(tally.cwd / "clinic.pgdump"), timeout=60)
        assert time.monotonic() - started < 30
    refused(done, "pg_dump failed", "timeout")
    assert not (tally.cwd / "clinic.pgdump").exists()


def test_backup_names_pg_dumps_error_not_its_hint(tally):
    if shutil.which("pg_dump") is None:
        pytest.skip("pg_dump is not installed")
    tally.env["TALLY_DATABASE_URL"] = "postgresql://clinic@127.0.0.1:1/clinic"  # nothing listens
    tally.env["TALLY_SECRET_KEY"] = "k" * 50
    refused(tally("backup", str(tally.cwd / "clinic.pgdump")), "pg_dump failed", "Connection refused")
