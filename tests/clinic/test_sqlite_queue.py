"""The writer queue in front of SQLite (tally.db.sqlite3).

Writers take an in-process lock and a `flock` on `<database>-queue` before `BEGIN
IMMEDIATE`. These tests pin what the queue must never do: let two writers in at once,
stay held after its holder committed, rolled back, closed or died, or wait past the
database's timeout without the "database is locked" error that the server turns into a 503.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from django.db import OperationalError, connection, connections, transaction

from tally.db.sqlite3.base import queue_path

pytestmark = [pytest.mark.sqlite_only, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def other() -> Iterator:
    """A second connection to the same database, as another thread or request would have."""
    wrapper = connections.create_connection("default")
    yield wrapper
    wrapper.close()


def short_timeout(wrapper, seconds: float) -> None:
    wrapper.settings_dict = {**wrapper.settings_dict, "OPTIONS": {**wrapper.settings_dict["OPTIONS"], "timeout": seconds}}


def begin(wrapper) -> None:
    """What `transaction.atomic()` does on entry, on a connection that is not the thread's own."""
    wrapper.ensure_connection()
    wrapper.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)


def end(wrapper, commit: bool = True) -> None:
    wrapper.commit() if commit else wrapper.rollback()
    wrapper.set_autocommit(True)


def test_the_queue_file_lies_beside_the_database_with_its_permissions():
    with transaction.atomic():
        pass
    name = connection.settings_dict["NAME"]
    assert queue_path(name) == f"{name}-queue"
    assert os.stat(queue_path(name)).st_mode & 0o777 == os.stat(name).st_mode & 0o666


def test_a_second_writer_waits_for_the_first_to_commit():
    order: list[str] = []
    begin(connection)
    order.append("first began")

    def second() -> None:
        try:
            with transaction.atomic():  # the thread's own connection, as another request's
                order.append("second began")
        finally:
            connection.close()

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.3)
    assert order == ["first began"], "the second writer got in while the first held the queue"
    order.append("first commits")
    end(connection)
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert order == ["first began", "first commits", "second began"]


@pytest.mark.parametrize("finish", ["rollback", "close", "error"])
def test_the_queue_is_free_again_after_a_rollback_a_closed_connection_or_an_error(other, finish):
    short_timeout(other, 2)
    if finish == "error":
        with pytest.raises(ZeroDivisionError), transaction.atomic():
            1 / 0  # noqa: B018
    else:
        begin(connection)
        if finish == "rollback":
            end(connection, commit=False)
        else:
            connection.close()  # a broken request: the connection dropped inside its transaction
    begin(other)  # would wait 2 s and fail if the queue were still held
    end(other)


def test_a_writer_waiting_past_the_timeout_gets_database_is_locked(other):
    short_timeout(other, 0.3)
    begin(connection)
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError, match="database is locked"):
            begin(other)
        assert 0.25 <= time.monotonic() - started < 5
        other.set_autocommit(True)
    finally:
        end(connection)
    begin(other)  # and the failed wait left nothing held
    end(other)


HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


def test_another_process_holding_the_queue_is_waited_for_and_its_death_frees_it(other):
    """A gunicorn worker killed with kill -9 inside a transaction must not stop the others."""
    with transaction.atomic():
        pass  # the database file exists
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, queue_path(connection.settings_dict["NAME"])],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        short_timeout(other, 0.3)
        with pytest.raises(OperationalError, match="database is locked"):
            begin(other)
        other.set_autocommit(True)

        killer = threading.Timer(0.3, holder.send_signal, [signal.SIGKILL])
        killer.start()
        started = time.monotonic()
        short_timeout(other, 10)
        begin(other)
        waited = time.monotonic() - started
        end(other)
        killer.join()
        assert 0.2 <= waited < 5, waited
    finally:
        holder.kill()
        holder.wait()


def test_reads_outside_a_transaction_do_not_queue(other):
    """WAL readers run beside the writer: a chart view never waits for a check-in."""
    begin(connection)
    try:
        other.ensure_connection()
        with other.cursor() as cursor:
            cursor.execute("select count(*) from clinic_patient")
            assert cursor.fetchone()[0] >= 0
    finally:
        end(connection)


def test_a_database_whose_directory_cannot_hold_the_queue_file_still_writes(tmp_path, other, caplog):
    """Without the file the queue steps aside and SQLite's busy handler orders writers alone."""
    name = other.settings_dict["NAME"]
    os.makedirs(queue_path(tmp_path / "blocked"), exist_ok=True)  # a directory where the file would go
    other.settings_dict = {**other.settings_dict, "NAME": str(tmp_path / "blocked")}
    other.close()
    try:
        begin(other)
        with other.cursor() as cursor:
            cursor.execute("create table t (x int)")
            cursor.execute("insert into t values (1)")
        end(other)
    finally:
        other.close()
        other.settings_dict = {**other.settings_dict, "NAME": name}
    assert "no writer queue" in caplog.text


@pytest.mark.parametrize(("setting", "engine"), [(None, "tally.db.sqlite3"), ("1", "tally.db.sqlite3"), ("0", "django.db.backends.sqlite3"), (" Off ", "django.db.backends.sqlite3")])
def test_the_queue_is_on_by_default_and_tally_sqlite_queue_0_turns_it_off(monkeypatch, setting, engine):
    from tally.settings import database_from_url

    if setting is None:
        monkeypatch.delenv("TALLY_SQLITE_QUEUE", raising=False)
    else:
        monkeypatch.setenv("TALLY_SQLITE_QUEUE", setting)
    config = database_from_url("sqlite:////tmp/tally-queue-setting.sqlite3")
    assert config["ENGINE"] == engine
    assert config["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert database_from_url("postgresql://postgres@127.0.0.1:5432/x")["ENGINE"] == "django.db.backends.postgresql"


def test_a_test_database_takes_its_queue_file_with_it_when_destroyed(tmp_path, other):
    """Each test run makes a database named for its process; its queue file must not be left behind."""
    name = str(tmp_path / "run.sqlite3")
    other.settings_dict = {**other.settings_dict, "NAME": name}
    other.close()
    begin(other)
    end(other)
    other.close()
    assert os.path.exists(queue_path(name))
    other.creation._destroy_test_db(name, verbosity=0)
    assert not os.path.exists(name) and not os.path.exists(queue_path(name))
