"""Fixtures for the command line: run `tally` as a user would, in a scratch directory with
its own SQLite file, so nothing here touches the test database."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Tally:
    """`python -m tally.cli ...` in a scratch directory, with a fresh-machine environment."""

    cwd: Path
    env: dict[str, str]

    @property
    def database(self) -> Path:
        return self.cwd / "clinic.sqlite3"

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "tally.cli", *args]

    def __call__(self, *args: str, timeout: float = 120, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*args), cwd=self.cwd, env=self.env, capture_output=True, text=True,
                              timeout=timeout, input=stdin if stdin is not None else "")

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.command(*args), cwd=self.cwd, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)


@pytest.fixture(scope="session")
def static_root(tmp_path_factory) -> Path:
    """Shared, so the (slow, compressing) collectstatic happens once per test run."""
    return tmp_path_factory.mktemp("static")


def fresh_machine(cwd: Path, static_root: Path) -> Tally:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_") and k != "DJANGO_SETTINGS_MODULE"}
    env["TALLY_DATABASE_URL"] = f"sqlite:///{cwd / 'clinic.sqlite3'}"
    env["TALLY_STATIC_ROOT"] = str(static_root)
    env["PYTHONUNBUFFERED"] = "1"
    return Tally(cwd=cwd, env=env)


@pytest.fixture
def tally(tmp_path: Path, static_root: Path) -> Tally:
    return fresh_machine(tmp_path, static_root)


@pytest.fixture(scope="session")
def initialized_install(tmp_path_factory, static_root: Path) -> Path:
    """What one real `tally init` leaves in a fresh directory: the migrated database, its
    secret key file and its queue file. Run once per session (about 5 s of CPU each)."""
    cwd = tmp_path_factory.mktemp("initialized")
    done = fresh_machine(cwd, static_root)("init")
    assert done.returncode == 0, done.stderr
    return cwd


@pytest.fixture
def initialized(tally: Tally, initialized_install: Path) -> Tally:
    """`tally` after `tally init`, for tests about what comes after it (init itself is tested
    on its own): a copy of the session's freshly initialized directory, with the same files,
    modes and contents as running init here would leave."""
    for path in initialized_install.iterdir():
        shutil.copy2(path, tally.cwd / path.name)
    return tally


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
