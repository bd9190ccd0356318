"""Helpers for tests that run the real `tally` command and server in a subprocess."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings

TALLY = str(Path(sys.executable).parent / "tally")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    env: dict[str, str]
    database_url: str

    def tally(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([TALLY, *args], env=self.env, capture_output=True, text=True, timeout=120,
                              check=check)


@contextlib.contextmanager
def scratch_database_url(tmp_path: Path) -> Iterator[str]:
    """A database of the same kind as the test run's, private to one server."""
    engine = settings.DATABASES["default"]["ENGINE"]
    if engine.endswith("sqlite3"):
        yield f"sqlite:///{tmp_path / 'server.sqlite3'}"
        return
    import psycopg

    db = settings.DATABASES["default"]
    name = f"tally_e2e_{uuid.uuid4().hex[:10]}"
    conninfo = f"host={db['HOST'] or '127.0.0.1'} port={db['PORT'] or 5432} user={db['USER']} dbname=postgres"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{name}"
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def running_server(tmp_path: Path, database_url: str, workers: int = 2) -> Iterator[Server]:
    port = free_port()
    env = {
        **os.environ,
        "TALLY_DATABASE_URL": database_url,
        "TALLY_SECRET_KEY": "e2e-" + uuid.uuid4().hex,
        "TALLY_DEBUG": "",
        "TALLY_TESTING": "",
        "TALLY_STATIC_ROOT": str(tmp_path / "static"),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    server = Server(url=f"http://127.0.0.1:{port}", env=env, database_url=database_url)
    server.tally("init")
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([TALLY, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("tally serve exited:\n" + (tmp_path / "server.log").read_text())
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("tally serve did not start in 60 s")
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def live_server_process(tmp_path) -> Iterator[Server]:
    with scratch_database_url(tmp_path) as url, running_server(tmp_path, url) as server:
        yield server
