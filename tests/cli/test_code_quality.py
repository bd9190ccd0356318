"""The house rules a reviewer would otherwise check by hand: ruff's lint and mypy's types
(with the Django plugin, which knows every model's fields) are clean. Configured in
pyproject.toml; run once per CI run, like the packaging test (no database in them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import tally

PROJECT = Path(tally.__file__).resolve().parent.parent.parent

pytestmark = [
    pytest.mark.sqlite_only,
    pytest.mark.skipif(not (PROJECT / "pyproject.toml").exists(), reason="tally is installed, not a checkout"),
]


def run(*args: str, cwd: Path = PROJECT, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})


def test_ruff_finds_nothing():
    result = run("ruff", "check", "src", "tests", "bench")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_mypy_finds_nothing(tmp_path: Path):
    # The Django plugin imports the settings: give them what a server would have.
    result = run("mypy", "--cache-dir", str(tmp_path / "mypy-cache"), TALLY_SECRET_KEY="mypy-" + "x" * 40)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Success: no issues found" in result.stdout
