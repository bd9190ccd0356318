"""Bad input on the command line: one clear line on standard error and a non-zero exit,
never a Python traceback, and nothing changed."""

from __future__ import annotations

import sqlite3
import subprocess

import pytest

from .test_commands import PASSWORD, one_line

COMMANDS_THAT_NEED_A_DATABASE = [
    ("investigate", "P-000001"),
    ("audit", "--json"),
    ("createuser", "ana", "--role", "owner", "--password", PASSWORD),
    ("createtoken", "ana"),
    ("deactivate", "ana"),
    ("verify",),
    ("verify-audit",),
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
