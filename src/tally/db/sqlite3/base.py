"""SQLite with a queue in front of its one writer.

SQLite lets one connection write at a time. Tally starts every transaction with
`BEGIN IMMEDIATE`, so a second writer waits in SQLite's busy handler, which sleeps
1, 2, 5, 10 ... 100 ms between tries: the lock is often free while every waiter sleeps.
Under a burst of check-ins that left the write lock idle a fifth of the time and gave
some check-ins a wait of seconds (measured in docs/reliability.md, Load).

Here a writer first takes a queue, and only then runs `BEGIN IMMEDIATE`:

- inside a process, a `threading.Lock`: a waiting thread blocks without the GIL and
  wakes when the lock is released;
- between processes (gunicorn's workers, the command line), an exclusive `flock` on a
  file beside the database, `<database>-queue`. The kernel drops it when its holder
  dies, so a crashed writer never leaves the queue held. Only the one thread per
  process that holds the in-process lock waits for it, polling every 0.2 ms at first,
  because `flock` itself cannot time out.

The queue only orders writers; SQLite's own locking still guarantees correctness, and a
connection that does not take the queue (the sqlite3 shell, a raw connection) is simply
waited for by SQLite's busy handler as before. A writer that waits longer than the
database's timeout gets SQLite's own error, "database is locked", which the server
answers with a 503 (tally.unavailable). Reads never queue: only a transaction does.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from django.db import OperationalError
from django.db.backends.sqlite3 import base, creation

logger = logging.getLogger("tally.db")

QUEUE_SUFFIX = "-queue"
FIRST_POLL_SECONDS = 0.0002
LONG_WAIT_SECONDS = 0.05
LONG_POLL_SECONDS = 0.002

_process_locks: dict[str, threading.Lock] = {}
_process_locks_guard = threading.Lock()
_warned: set[str] = set()


def _reset_after_fork() -> None:
    # A lock some other thread held at fork() would stay held forever in the child.
    global _process_locks_guard
    _process_locks.clear()
    _process_locks_guard = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


def _process_lock(path: str) -> threading.Lock:
    with _process_locks_guard:
        return _process_locks.setdefault(path, threading.Lock())


# SQLite's own files beside a database: its write-ahead log, its shared memory, its rollback journal.
JOURNAL_SUFFIXES = ("-wal", "-shm", "-journal")


def own_files(database: Path) -> list[Path]:
    """The database and every file beside it that belongs to it: SQLite's journals, the writers'
    queue and a server's mark (`serving_path`). Neither a backup nor a restore may take one of
    them for the copy: replacing one under a running server makes every new connection read a
    malformed database, or hides the server from `tally restore`."""
    suffixes = (*JOURNAL_SUFFIXES, QUEUE_SUFFIX, SERVING_SUFFIX)
    return [database, *(database.with_name(database.name + suffix) for suffix in suffixes)]


def queue_path(database_name: str) -> str:
    return os.fspath(database_name) + QUEUE_SUFFIX


# --- a server's mark ---
#
# `tally serve` holds a shared flock on `<database>-serving` for as long as it (and the workers
# it forks, which share the open file) runs. Connections are opened per request, so an idle
# server holds no lock on the database itself; this mark is how `tally restore` tells that one
# is running, by trying for the flock exclusively. The kernel drops it when the server dies.

SERVING_SUFFIX = "-serving"
_serving_fds: list[int] = []


def serving_path(database_name: str) -> str:
    return os.fspath(database_name) + SERVING_SUFFIX


def _open_lock_file(path: str, database_name: str) -> int:
    # The database's own permissions, as for the queue.
    try:
        mode = os.stat(database_name).st_mode & 0o666
    except OSError:
        mode = 0o600
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)


def mark_served(database_name: str) -> None:
    """Mark the database as served until this process exits. Waits while a restore holds the
    mark (a server started during a restore then serves the restored database)."""
    try:
        fd = _open_lock_file(serving_path(database_name), database_name)
    except OSError as exc:
        logger.warning("cannot mark the SQLite database as served (tally restore will not see it): %s", exc)
        return
    fcntl.flock(fd, fcntl.LOCK_SH)
    _serving_fds.append(fd)


@contextlib.contextmanager
def held_if_free(path: str, database_name: str) -> Iterator[bool]:
    """Try for an exclusive flock on one of the database's lock files (`serving_path` or
    `queue_path`) without waiting: yields True, holding it, when it was free; False when someone
    holds it. A directory where it cannot be made holds no one's lock either: True."""
    try:
        fd = _open_lock_file(path, database_name)
    except OSError:
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


class DatabaseCreation(creation.DatabaseCreation):
    def _destroy_test_db(self, test_database_name, verbosity):
        """A test database's queue file goes with it (SQLite removes its own -wal and -shm)."""
        super()._destroy_test_db(test_database_name, verbosity)
        if test_database_name and not self.is_in_memory_db(test_database_name):
            with contextlib.suppress(FileNotFoundError):
                os.remove(queue_path(test_database_name))


class DatabaseWrapper(base.DatabaseWrapper):
    creation_class = DatabaseCreation

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._queue_fd: int | None = None
        self._queue_fd_pid: int | None = None
        self._queue_held: threading.Lock | None = None

    # --- the queue ---

    def _queue_timeout(self) -> float:
        return float(self.settings_dict.get("OPTIONS", {}).get("timeout", 5))

    def _open_queue_file(self) -> int | None:
        """This connection's own descriptor of the queue file (flock locks belong to an
        open file, so two connections of one process exclude each other too)."""
        if self._queue_fd is not None and self._queue_fd_pid == os.getpid():
            return self._queue_fd
        # Opened in a parent before fork(): the child must not share its lock.
        self._queue_fd = None
        name = self.settings_dict["NAME"]
        try:
            # The database's own permissions, as SQLite gives its -wal and -shm: whoever may
            # write the database may queue for it.
            mode = os.stat(name).st_mode & 0o666
        except OSError:
            mode = 0o600
        try:
            fd = os.open(queue_path(name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
        except OSError as exc:
            # A read-only directory: SQLite's busy handler still orders the writers.
            if queue_path(name) not in _warned:
                _warned.add(queue_path(name))
                logger.warning("no writer queue for the SQLite database: %s", exc)
            return None
        self._queue_fd, self._queue_fd_pid = fd, os.getpid()
        return fd

    def _enter_queue(self) -> None:
        if self._queue_held is not None or self.is_in_memory_db() or self.transaction_mode is None:
            return
        fd = self._open_queue_file()
        if fd is None:
            return
        timeout = self._queue_timeout()
        deadline = time.monotonic() + timeout
        lock = _process_lock(queue_path(self.settings_dict["NAME"]))
        if not lock.acquire(timeout=timeout):
            raise OperationalError("database is locked")
        try:
            self._flock_until(fd, deadline)
        except BaseException:
            lock.release()
            raise
        self._queue_held = lock

    @staticmethod
    def _flock_until(fd: int, deadline: float) -> None:
        started = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            now = time.monotonic()
            if now >= deadline:
                raise OperationalError("database is locked")
            pause = FIRST_POLL_SECONDS if now - started < LONG_WAIT_SECONDS else LONG_POLL_SECONDS
            time.sleep(min(pause, deadline - now))

    def _leave_queue(self) -> None:
        lock, self._queue_held = self._queue_held, None
        if lock is None:
            return
        try:
            if self._queue_fd is not None:
                fcntl.flock(self._queue_fd, fcntl.LOCK_UN)
        finally:
            lock.release()

    # --- where a transaction starts and ends ---

    def _start_transaction_under_autocommit(self):
        self._enter_queue()
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._leave_queue()
            raise

    def _commit(self):
        try:
            return super()._commit()
        finally:
            self._leave_queue()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._leave_queue()

    def _close(self):
        try:
            return super()._close()
        finally:
            self._leave_queue()
            if self._queue_fd is not None:
                if self._queue_fd_pid == os.getpid():
                    os.close(self._queue_fd)
                self._queue_fd = None
