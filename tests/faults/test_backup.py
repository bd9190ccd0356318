"""`tally backup` taken while a stream of writes runs gives a copy that opens, verifies and serves."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings

from tests.e2e.conftest import TALLY, scratch_database_url

from .conftest import (
    Client,
    ServerProcess,
    create_owner_token,
    db_counts,
    run_tally,
    serving,
    tally_env,
)
from .stream import Stream, seed_clinic


def restore_postgresql(dump: Path, database_url: str) -> None:
    pg_restore = shutil.which("pg_restore")
    if pg_restore is None:
        pytest.skip("pg_restore is not installed (apt-get install postgresql-client): cannot restore the dump")
    done = subprocess.run([pg_restore, "--no-owner", "--exit-on-error", "--dbname", database_url, str(dump)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_backup_during_load_opens_verifies_and_serves(tmp_path, static_root):
    is_sqlite = settings.DATABASES["default"]["ENGINE"].endswith("sqlite3")
    copy = tmp_path / ("copy.sqlite3" if is_sqlite else "copy.pgdump")
    with scratch_database_url(tmp_path) as url:
        env = tally_env(url, tmp_path) | {"TALLY_STATIC_ROOT": str(static_root)}
        run_tally(env, "init")
        token = create_owner_token(env)
        with serving(tmp_path, env) as server:
            client = Client(server, token, timeout=20)
            stream = Stream(client, seed_clinic(client, patients=3), seed=11)
            stream.start()
            time.sleep(1.5)
            backup_done: list[subprocess.CompletedProcess] = []
            backup = threading.Thread(target=lambda: backup_done.append(run_tally(env, "backup", str(copy), check=False)))
            backup.start()
            backup.join(60)
            time.sleep(1.0)  # writes go on after the copy
            sent = stream.finish()
        assert backup_done and backup_done[0].returncode == 0, backup_done
        assert all(s.ok for s in sent), [(s.kind, s.answer) for s in sent if not s.ok][:5]
        assert sum(s.ok for s in sent) >= 10
        live_counts = db_counts(env)

    with scratch_database_url(tmp_path / "restored") if not is_sqlite else contextlib.nullcontext() as restored_url:
        if is_sqlite:
            copy_url = f"sqlite:///{copy}"
        else:
            restore_postgresql(copy, restored_url)
            copy_url = restored_url
        # The copy is served, and its audit log verifies, with the server's secret key: the chain is keyed by it.
        other_key_env = tally_env(copy_url, tmp_path) | {"TALLY_STATIC_ROOT": str(static_root)}
        copy_env = other_key_env | {"TALLY_SECRET_KEY": env["TALLY_SECRET_KEY"]}
        verified = run_tally(copy_env, "verify", check=False)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        chained = run_tally(copy_env, "verify-audit", check=False)  # the copy's audit log is whole
        assert chained.returncode == 0 and "chain intact" in chained.stdout, chained.stdout + chained.stderr
        other_key = run_tally(other_key_env, "verify-audit", check=False)  # another key cannot vouch for it
        assert other_key.returncode == 1 and "after 0 good events" in other_key.stderr, other_key.stdout + other_key.stderr
        copy_counts = db_counts(copy_env)
        assert 0 < copy_counts["appointments"] <= live_counts["appointments"]
        # Serves as it is: no `tally init` (serve refuses a database that is not fully migrated).
        server = ServerProcess(tmp_path, copy_env)
        try:
            server.start()
            me = Client(server, token).call("GET", "/api/v1/me")
            assert me.status == 200 and me.body["username"] == "fault-owner", me
        finally:
            server.stop()
        print(f"\n[backup] copy {copy.stat().st_size / 1e6:.2f} MB taken during load; copy {copy_counts}; "
              f"live at the end {live_counts}; {verified.stdout.strip()}")



def test_restoring_a_backup_as_the_readme_says_verifies_and_serves(tmp_path, static_root):
    """README, "Backing up and restoring", step by step: a backup while serving; `tally restore`
    refused while the server runs; the server killed (a crash is when one restores: SQLite's -wal
    may be left with frames in it); `tally restore --yes`, which keeps the crashed database aside
    (SQLite: with its -wal and -shm; PostgreSQL: renamed), then `tally verify-audit` and `tally
    serve` with the same secret key. What was written after the backup is gone; the rest is there."""
    is_sqlite = settings.DATABASES["default"]["ENGINE"].endswith("sqlite3")
    backup = tmp_path / ("backups" if is_sqlite else "") / ("clinic.sqlite3" if is_sqlite else "clinic.pgdump")
    backup.parent.mkdir(exist_ok=True)
    live = tmp_path / "srv" / "clinic.sqlite3"
    live.parent.mkdir()
    with contextlib.ExitStack() as stack:
        url = f"sqlite:///{live}" if is_sqlite else stack.enter_context(scratch_database_url(tmp_path / "live"))
        env = tally_env(url, tmp_path) | {"TALLY_STATIC_ROOT": str(static_root)}
        run_tally(env, "init")
        token = create_owner_token(env)
        server = ServerProcess(tmp_path, env)
        server.start()
        try:
            client = Client(server, token)
            clinic = seed_clinic(client, patients=2)
            run_tally(env, "backup", str(backup))
            late = client.ok("POST", "/api/v1/patients", {"first_name": "After", "last_name": "Backup"})
            refused = run_tally(env, "restore", "--yes", str(backup), check=False)
            assert refused.returncode == 1 and "the database is in use" in refused.stderr, refused.stderr
            assert client.call("GET", f"/api/v1/patients/{late['id']}").status == 200, "nothing was restored"
            server.kill9()
        finally:
            server.stop()
        restored = run_tally(env, "restore", "--yes", str(backup))
        kept = restored.stdout.split("kept as ", 1)[1].split(" ")[0].rstrip(".")
        if is_sqlite:
            assert not Path(f"{live}-wal").exists() and Path(kept).exists()
        else:
            stack.callback(drop_database, url, kept)
        chained = run_tally(env, "verify-audit", check=False)
        assert chained.returncode == 0 and "chain intact" in chained.stdout, chained.stdout + chained.stderr
        server = ServerProcess(tmp_path, env)
        try:
            server.start()
            client = Client(server, token)
            for patient_id in clinic.patients:
                assert client.call("GET", f"/api/v1/patients/{patient_id}").status == 200
                packages = client.ok("GET", f"/api/v1/patients/{patient_id}/packages")["items"]
                assert len(packages) == 1 and packages[0]["status"] == "active", packages
            assert client.call("GET", f"/api/v1/patients/{late['id']}").status == 404
            client.ok("POST", "/api/v1/patients", {"first_name": "After", "last_name": "Restore"})  # writes go on
        finally:
            server.stop()
        chained = run_tally(env, "verify-audit", check=False)
        assert chained.returncode == 0 and "chain intact" in chained.stdout, chained.stdout + chained.stderr


def drop_database(url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_restored_clinic_without_its_secret_key_is_refused_not_given_a_new_one(tmp_path):
    """On a new machine, with neither TALLY_SECRET_KEY nor the key file: `tally init` made a new
    key and said "Database ready"; the server then signed new events onto a chain no key there
    vouched for. Now every command refuses in one line, and no key file is made."""
    with scratch_database_url(tmp_path) as url:
        env = tally_env(url, tmp_path)
        run_tally(env, "init")
        create_owner_token(env)  # audit events
        elsewhere = tmp_path / "new-machine"
        elsewhere.mkdir()
        keyless = {k: v for k, v in env.items() if k != "TALLY_SECRET_KEY"}
        for args in (("init",), ("verify-audit",), ("serve",)):
            done = subprocess.run([TALLY, *args], env=keyless, cwd=elsewhere, capture_output=True, text=True,
                                  timeout=60)
            assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and "TALLY_SECRET_KEY" in lines[0] and "audit log" in lines[0], done.stderr
        assert not list(tmp_path.rglob(".tally-secret-key"))
        chained = subprocess.run([TALLY, "verify-audit"], env=env, cwd=elsewhere, capture_output=True, text=True,
                                 timeout=60)
        assert chained.returncode == 0, chained.stderr
