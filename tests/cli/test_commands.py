"""`tally init | createuser | createtoken | backup | serve`, run as a separate process."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import time

import pytest

PASSWORD = "correct horse battery staple"

# `tally` runs on a SQLite file of its own whatever the run's database: the PostgreSQL run would
# repeat the SQLite run's processes exactly, so these run once per CI run, in the SQLite run.
OWN_SQLITE_FILE = pytest.mark.sqlite_only


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


@OWN_SQLITE_FILE
def test_init_creates_the_database_and_a_private_secret_key_and_can_run_again(tally):
    first = tally("init")
    assert first.returncode == 0, first.stderr
    assert "Database ready" in first.stdout
    key_file = tally.cwd / ".tally-secret-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text()
    assert len(key.strip()) >= 50

    again = tally("init")
    assert again.returncode == 0, again.stderr
    assert key_file.read_text() == key
    with sqlite3.connect(tally.database) as db:
        assert db.execute("select count(*) from clinic_clinicsettings").fetchone()[0] == 1


@OWN_SQLITE_FILE
def test_init_creates_a_database_only_its_owner_can_read(tally):
    """Patients' health data, password hashes, two-factor secrets and live sessions: with the
    usual umask (022) the file was created readable by every local user, while backups were 0600."""
    previous = os.umask(0o022)
    try:
        result = tally("init")
    finally:
        os.umask(previous)
    assert result.returncode == 0, result.stderr
    files = [path for path in tally.cwd.iterdir() if path.name.startswith(tally.database.name)]
    assert tally.database in files
    for path in files:  # the database, and SQLite's -wal and -shm and the writer queue beside it
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path.name} is {oct(path.stat().st_mode)}"


@OWN_SQLITE_FILE
def test_init_warns_about_a_database_other_users_can_read(tally):
    """A database made before init made it private (or copied in with cp under umask 022) is left
    as it is: init says so, naming the command that fixes it."""
    sqlite3.connect(tally.database).close()
    os.chmod(tally.database, 0o644)
    result = tally("init")
    assert result.returncode == 0, result.stderr
    assert f"{tally.database} can be read by other users of this machine (mode 0644)" in result.stderr
    assert f"chmod 600 {tally.database}" in result.stderr
    os.chmod(tally.database, 0o600)
    again = tally("init")
    assert "other users" not in again.stderr


@OWN_SQLITE_FILE
@pytest.mark.usefixtures("initialized")
def test_createuser_adds_staff_and_refuses_duplicates_bad_roles_and_weak_passwords_in_one_line(tally):
    made = tally("createuser", "ana", "--role", "owner", "--password", PASSWORD, "--first-name", "Ana")
    assert made.returncode == 0, made.stderr
    with sqlite3.connect(tally.database) as db:
        row = db.execute("select role, first_name, is_superuser from clinic_staff where username='ana'").fetchone()
    assert row == ("owner", "Ana", 1)

    duplicate = tally("createuser", "ana", "--role", "front_desk", "--password", PASSWORD)
    assert duplicate.returncode != 0
    assert "already exists" in one_line(duplicate.stderr)

    bad_role = tally("createuser", "bo", "--role", "janitor", "--password", PASSWORD)
    assert bad_role.returncode != 0
    assert "janitor" in one_line(bad_role.stderr)

    weak = tally("createuser", "cy", "--role", "practitioner", "--password", "password")
    assert weak.returncode != 0
    assert "Password refused" in one_line(weak.stderr)


@OWN_SQLITE_FILE
@pytest.mark.usefixtures("initialized")
def test_createuser_reads_the_password_from_standard_input_when_not_given(tally):
    made = tally("createuser", "dee", "--role", "front_desk", stdin=PASSWORD + "\n")
    assert made.returncode == 0, made.stderr


@OWN_SQLITE_FILE
@pytest.mark.usefixtures("initialized")
def test_createtoken_prints_the_token_alone_and_stores_only_its_hash(tally):
    assert tally("createuser", "ana", "--role", "front_desk", "--password", PASSWORD).returncode == 0
    issued = tally("createtoken", "ana")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert issued.stdout == token + "\n"
    assert token.startswith("tly_") and " " not in token
    with sqlite3.connect(tally.database) as db:
        hashes = [h for (h,) in db.execute("select token_hash from clinic_apitoken")]
    assert hashes == [hashlib.sha256(token.encode()).hexdigest()]

    unknown = tally("createtoken", "nobody")
    assert unknown.returncode != 0
    assert unknown.stdout == ""
    assert "nobody" in one_line(unknown.stderr)


@OWN_SQLITE_FILE
@pytest.mark.usefixtures("initialized")
def test_backup_writes_a_copy_that_opens_and_passes_integrity_check_and_never_overwrites(tally):
    assert tally("createuser", "ana", "--role", "owner", "--password", PASSWORD).returncode == 0
    target = tally.cwd / "backups" / "copy.sqlite3"
    target.parent.mkdir()
    done = tally("backup", str(target))
    assert done.returncode == 0, done.stderr
    assert "integrity ok" in done.stdout
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    with sqlite3.connect(target) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert copy.execute("select username from clinic_staff").fetchall() == [("ana",)]
    assert not list(target.parent.glob("*.partial")), "no temporary file left behind"

    refused = tally("backup", str(target))
    assert refused.returncode != 0
    assert "--force" in one_line(refused.stderr)
    assert tally("backup", str(target), "--force").returncode == 0
    # Each backup is audited in the live database once its copy is taken, so a copy holds the
    # events of the backups before it, not its own; the refused one wrote none.
    backups = "select after from clinic_auditevent where action = 'database.backup'"
    with sqlite3.connect(tally.database) as live, sqlite3.connect(target) as copy:
        assert len(live.execute(backups).fetchall()) == 2
        assert len(copy.execute(backups).fetchall()) == 1


@OWN_SQLITE_FILE
def test_serve_refuses_a_database_that_is_not_set_up(tally, free_port):
    refused = tally("serve", "--port", str(free_port), timeout=60)
    assert refused.returncode != 0
    assert "tally init" in one_line(refused.stderr)


def get(port: int, path: str, headers: dict | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def raw_exchange(port: int, request: bytes) -> tuple[bytes, bytes]:
    """Send bytes no HTTP library would, and read the whole answer (the server closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


def wait_until_serving(server: subprocess.Popen, port: int, seconds: float = 240) -> http.client.HTTPResponse:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"tally serve exited with {server.returncode}:\n{server.stdout.read()}")
        try:
            return get(port, "/")
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"tally serve did not answer on port {port} within {seconds} s")


def stop(server: subprocess.Popen) -> str:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=5)
    return server.stdout.read() if server.stdout else ""


@OWN_SQLITE_FILE
@pytest.mark.usefixtures("initialized")
def test_serve_runs_gunicorn_and_answers_http(tally, free_port):
    server = tally.popen("serve", "--port", str(free_port), "--workers", "1")
    try:
        home = wait_until_serving(server, free_port)
        assert home.status in (200, 302), "the home page, or its redirect to sign in"
        docs = get(free_port, "/api/v1/openapi.json")
        assert docs.status == 200
        login = get(free_port, "/admin/login/")
        assert login.status == 200
        css = get(free_port, "/static/admin/css/base.css")
        assert css.status == 200, "WhiteNoise serves the collected static files"
        # gunicorn refuses these before Django sees them; the answer is still the contract's JSON.
        for request, status in (
            (b"GET /api/v1/patients?q=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 414),
            (b"GET /api/v1/me HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: localhost\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", 431),
        ):
            head, body = raw_exchange(free_port, request)
            assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
            assert b"Content-Type: application/json" in head, head
            error = json.loads(body)["error"]
            assert error["code"] == "validation_error" and error["message"], error
    finally:
        output = stop(server)
    assert server.returncode is not None
    assert "Tally is serving at" in output and "Booting worker" in output, output


@pytest.mark.postgres_only
def test_backup_on_postgresql_writes_a_pg_dump_archive_and_an_audit_event(tally, tmp_path):
    import psycopg

    from tests.e2e.conftest import scratch_database_url

    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("PostgreSQL backup: pg_dump/pg_restore are not installed")
    # A database of its own: the backup writes its audit event there.
    with scratch_database_url(tmp_path) as url:
        tally.env["TALLY_DATABASE_URL"] = url
        assert tally("init").returncode == 0
        target = tally.cwd / "clinic.dump"
        done = tally("backup", str(target))
        if done.returncode != 0 and "server version mismatch" in done.stderr:
            pytest.skip("PostgreSQL backup: pg_dump is older than the server")
        assert done.returncode == 0, done.stderr
        assert target.read_bytes()[:5] == b"PGDMP"
        listing = subprocess.run(["pg_restore", "--list", str(target)], capture_output=True, text=True, timeout=60)
        assert listing.returncode == 0, listing.stderr
        assert tally("backup", str(target)).returncode != 0
        with psycopg.connect(url) as db:
            events = db.execute("select action, actor_id, after->>'path' from clinic_auditevent "
                                "where action = 'database.backup'").fetchall()
        assert events == [("database.backup", None, str(target))], "one event: the refused second backup wrote none"
