"""The production server: gunicorn, embedded, serving tally.wsgi.application.

`tally serve` and `tally demo` both end here. Before forking, check that the database
answers and is migrated (a clear error instead of a 500 on every request), collect the
static files for WhiteNoise, and close the parent's database connections so that no
worker inherits one.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.db import connection, connections
from gunicorn import util as gunicorn_util
from gunicorn.app.base import BaseApplication

from tally.clinic.management.base import check_database_ready
from tally.db.sqlite3.base import mark_served

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


DEFAULT_THREADS = 4


def default_workers() -> int:
    # One per core (at least 2, so one busy worker never stalls the site; at most 4, past which
    # the SQLite writer queue is the limit anyway). Each worker has DEFAULT_THREADS threads.
    # Measured on 2 cores (docs/reliability.md, Load): 2 workers x 4 threads checked in 52-64
    # visits/s against 35-47 with gunicorn's "2 per core" 4 x 4, and 45 with 2 x 8; the
    # request handling is CPU-bound Python, so processes beyond the cores only add switching.
    return max(2, min(4, os.cpu_count() or 1))


def static_fingerprint() -> str:
    """What collectstatic would collect: every found file's path, size and mtime, and the storage."""
    from django.contrib.staticfiles.finders import get_finders

    digest = hashlib.sha256(repr(settings.STORAGES.get("staticfiles")).encode())
    for finder in get_finders():
        for path, storage in finder.list([]):
            stat = storage.stat(path) if hasattr(storage, "stat") else os.stat(storage.path(path))
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def collect_static(stdout=None) -> None:
    """WhiteNoise serves STATIC_ROOT, compressed. Compressing takes a while, so collect only
    when the static files changed since the last collect (a fingerprint kept in STATIC_ROOT)."""
    root = Path(settings.STATIC_ROOT)
    stamp = root / ".tally-collected"
    fingerprint = static_fingerprint()
    if stamp.exists() and stamp.read_text().strip() == fingerprint:
        return
    if stdout is not None:
        stdout.write(f"Collecting static files into {root} (once per install)...")
        stdout.flush()
    call_command("collectstatic", interactive=False, verbosity=0)
    stamp.write_text(fingerprint + "\n")


ERROR_CODES = {401: "unauthenticated", 403: "forbidden", 404: "not_found"}


def write_error_as_json(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn answers a request it cannot parse itself, before Django sees it: a request
    line over its 4094-byte limit (a long ?q=), too many or too long headers, a malformed
    request line or header. Its own answer is an HTML page; the contract's errors are JSON
    in one shape (`fields` included, empty: nothing in a body was read), so this writes that
    shape with gunicorn's status and reason."""
    code = ERROR_CODES.get(status_int, "validation_error" if status_int < 500 else "server_error")
    message = f"{reason}: {mesg}" if mesg else reason
    body = json.dumps({"error": {"code": code, "message": message, "fields": {}}}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Cache-Control: no-store\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    gunicorn_util.write_nonblock(sock, head.encode("latin-1") + body)


class TallyServer(BaseApplication):
    def __init__(self, options: dict[str, Any]):
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        # gunicorn's workers write their parse errors through util.write_error; forked
        # workers inherit this replacement.
        gunicorn_util.write_error = write_error_as_json
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)

    def load(self):
        from tally.wsgi import application

        # Everything loaded so far (Django, the app, its modules: a few hundred thousand
        # objects) lives as long as the worker. Freezing it keeps every full garbage
        # collection from walking it again: about 12 ms of each 1,000-visit investigation.
        gc.freeze()
        return application


# gunicorn's default line has the request's query string ("%(r)s") and the Referer ("%(f)s"),
# which carry patient names (?q=Smith), deletion reasons (?reason=...) and the page staff came
# from: the access log is kept and shipped apart from the database, outside the audit log's
# access rules. The path alone (ids, never names), the method, status, size and timing.
ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(a)s" %(M)sms'


def gunicorn_options(host: str, port: int, workers: int | None, threads: int | None = None) -> dict[str, Any]:
    bind = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    return {
        "bind": bind,
        "workers": workers or default_workers(),
        "worker_class": "gthread",
        "threads": threads or DEFAULT_THREADS,
        "timeout": 60,
        "graceful_timeout": 10,
        "accesslog": "-",
        "access_log_format": ACCESS_LOG_FORMAT,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "tally",
        # Gunicorn >= 25 opens a control socket in ~/.gunicorn by default; two Tally
        # servers on one machine would fight over it, and nothing here uses it.
        "control_socket_disable": True,
    }


def serve(*, host: str, port: int, workers: int | None = None, threads: int | None = None, stdout=None) -> None:
    check_database_ready()
    collect_static(stdout)
    connections.close_all()
    if connection.vendor == "sqlite":
        mark_served(str(connection.settings_dict["NAME"]))  # tally restore refuses while it is held
    if stdout is not None:
        stdout.write(f"Tally is serving at http://{host_for_url(host)}:{port}/  (Ctrl+C stops it)")
        if host not in LOCAL_HOSTS and "*" not in settings.ALLOWED_HOSTS:
            stdout.write(
                f"Note: only {', '.join(settings.ALLOWED_HOSTS)} are allowed host names; "
                "set TALLY_ALLOWED_HOSTS to the name clients use."
            )
        stdout.flush()
    TallyServer(gunicorn_options(host, port, workers, threads)).run()


def host_for_url(host: str) -> str:
    if host in {"0.0.0.0", "::"}:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
