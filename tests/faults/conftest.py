"""Fault tests: a real `tally serve` in its own process group (so that kill -9 reaches the
gunicorn master and every worker), on a scratch database of the run's kind."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import TALLY, free_port

OWNER_PASSWORD = "a long fault-testing password 7"


def tally_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "TALLY_DATABASE_URL": database_url,
        "TALLY_SECRET_KEY": "faults-" + uuid.uuid4().hex,
        "TALLY_DEBUG": "",
        "TALLY_STATIC_ROOT": str(tmp_path / "static"),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def run_tally(env: dict[str, str], *args: str, check: bool = True, timeout: int = 120) -> subprocess.CompletedProcess:
    done = subprocess.run([TALLY, *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"tally {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


@dataclass
class ServerProcess:
    """`tally serve` in a new session: killpg reaches the master and its workers."""

    tmp_path: Path
    env: dict[str, str]
    workers: int = 2
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def start(self, timeout: float = 60) -> None:
        assert self.proc is None
        self.starts += 1
        log = open(self.tmp_path / f"server-{self.port}-{self.starts}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [TALLY, "serve", "--host", self.host, "--port", str(self.port), "--workers", str(self.workers)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp_path, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                output = self.log_text()
                self.proc = None
                raise RuntimeError("tally serve exited:\n" + output)
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=1):
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("tally serve did not start in time")

    def log_text(self) -> str:
        return (self.tmp_path / f"server-{self.port}-{self.starts}.log").read_text(errors="replace")

    def kill9(self) -> None:
        """SIGKILL the whole process group: master and workers die at once, mid-request."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None
        wait_port_free(self.host, self.port)

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        # Workers may outlive a master killed in the middle of its shutdown.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None


def wait_port_free(host: str, port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                pass
        except OSError:
            return
        time.sleep(0.05)


@contextlib.contextmanager
def serving(tmp_path: Path, env: dict[str, str], workers: int = 2) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path, env, workers=workers)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@dataclass
class Answer:
    status: int | None  # None: no answer (connection refused or dropped)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    error: str = ""
    seconds: float = 0.0


class Client:
    """A small JSON client over http.client: one connection per request (the server may die)."""

    def __init__(self, server: ServerProcess, token: str, timeout: float = 30):
        self.server = server
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None, key: str | None = None,
             headers: dict[str, str] | None = None) -> Answer:
        send = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            send["Content-Type"] = "application/json"
        if key is not None:
            send["Idempotency-Key"] = key
        started = time.monotonic()
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=self.timeout)
        try:
            conn.request(method, path, body=data, headers=send)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            return Answer(None, error=f"{type(exc).__name__}: {exc}", seconds=time.monotonic() - started)
        finally:
            conn.close()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return Answer(response.status, parsed, {k.lower(): v for k, v in response.getheaders()},
                      seconds=time.monotonic() - started)

    def ok(self, method: str, path: str, body: Any = None, key: str | None = None) -> Any:
        answer = self.call(method, path, body, key)
        assert answer.status is not None and 200 <= answer.status < 300, (method, path, answer)
        return answer.body


def create_owner_token(env: dict[str, str], name: str = "fault-owner") -> str:
    run_tally(env, "createuser", name, "--role", "owner", "--password", OWNER_PASSWORD)
    return run_tally(env, "createtoken", name).stdout.strip()


COUNT_SCRIPT = """
import json
from tally.clinic.models import Appointment, IdempotencyRecord, Invoice, InvoiceLine, PackageLedgerEntry, Payment
print(json.dumps({
    "appointments": Appointment.objects.count(),
    "attended": Appointment.objects.filter(status="attended").count(),
    "invoices": Invoice.objects.count(),
    "void_invoices": Invoice.objects.filter(voided_at__isnull=False).count(),
    "lines": InvoiceLine.objects.count(),
    "payments": Payment.objects.count(),
    "ledger_entries": PackageLedgerEntry.objects.count(),
    "idempotency_records": IdempotencyRecord.objects.count(),
}))
"""


def db_counts(env: dict[str, str]) -> dict[str, int]:
    out = run_tally(env, "shell", "-c", COUNT_SCRIPT).stdout
    return json.loads(out.strip().splitlines()[-1])


COLLECT_SCRIPT = "from tally.server import collect_static; collect_static()"


@pytest.fixture(scope="session")
def static_root() -> Path:
    """One collected static root for every server the fault tests start, kept between runs
    (collectstatic compresses for a minute on a busy 2-core machine; `tally serve` collects
    again by itself whenever the static files' fingerprint changes). Collected here, under
    a lock, so that no server start pays for it and parallel runs do not collide."""
    import fcntl
    import tempfile

    root = Path(tempfile.gettempdir()) / f"tally-test-static-{os.getuid()}"
    root.mkdir(exist_ok=True)
    with open(root.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        env = tally_env("sqlite:///:memory:", root) | {"TALLY_STATIC_ROOT": str(root)}
        run_tally(env, "shell", "-c", COLLECT_SCRIPT, timeout=600)
    return root
