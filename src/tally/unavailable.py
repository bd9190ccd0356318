"""The database is unavailable: answer 503 in the error shape, never a 500 or a hang.

A connection-class failure (the server refused or dropped us, the SQLite file cannot be
opened, the database is busy past its timeout) is not a bug in the request: the client
may retry. The API answers `503 {"error": {"code": "unavailable", ...}}` with Retry-After
(api.py registers `unavailable_api_response` for ninja); the staff pages get a plain 503
page from `DatabaseUnavailableMiddleware`, and `server_error` (handler500) catches the same
failures raised in other middleware (a session saved on the way out).

The broken connection is closed at once, so the next request opens a fresh one and service
resumes on its own when the database returns (SQLite opens a connection per request;
PostgreSQL keeps connections, and CONN_HEALTH_CHECKS checks each before a request reuses
it). Nothing partial is written: every action runs in one transaction, which the failure
rolls back (or the server discards with the dropped connection).
"""

from __future__ import annotations

import contextlib
import logging
import sys

from django.db import InterfaceError, OperationalError, connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import server_error as django_server_error

logger = logging.getLogger("tally.unavailable")

RETRY_AFTER_SECONDS = 5
MESSAGE = "The database is unavailable right now; nothing was changed. Please try again in a moment."

# PostgreSQL SQLSTATE classes and codes that mean "cannot talk to the database" rather
# than "this statement is wrong": 08 connection exception, 53 insufficient resources,
# 57 operator intervention (admin shutdown, crash shutdown, cannot connect now, query
# cancelled), 3D000 the database does not exist, 55000 not accepting connections.
PG_UNAVAILABLE_CLASSES = {"08", "53", "57"}
PG_UNAVAILABLE_CODES = {"3D000", "55000"}
SQLITE_UNAVAILABLE = (
    "unable to open database file",
    "disk i/o error",
    "database is locked",
    "attempt to write a readonly database",
    "readonly database",
)


def is_unavailable(exc: BaseException) -> bool:
    """Is this a failure to reach the database (503), not a bug (500)?"""
    if isinstance(exc, InterfaceError):
        return True  # the connection is already closed
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__
    sqlstate = getattr(cause, "sqlstate", None)
    if cause is not None and type(cause).__module__.startswith("psycopg"):
        # libpq failures (refused, timed out, dropped mid-query) carry no SQLSTATE.
        return sqlstate is None or sqlstate[:2] in PG_UNAVAILABLE_CLASSES or sqlstate in PG_UNAVAILABLE_CODES
    message = str(exc).lower()
    return any(text in message for text in SQLITE_UNAVAILABLE)


def drop_broken_connections() -> None:
    """Close every connection now, so that the next request reconnects."""
    for conn in connections.all(initialized_only=True):
        with contextlib.suppress(Exception):
            conn.close()


def first_line(exc: BaseException) -> str:
    """An error's first line, for a log line or a one-line refusal."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _log(request: HttpRequest, exc: BaseException) -> None:
    logger.warning("database unavailable: %s %s: %s", request.method, request.path, first_line(exc))


def unavailable_json() -> JsonResponse:
    response = JsonResponse({"error": {"code": "unavailable", "message": MESSAGE, "fields": {}}}, status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Tally is unavailable</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: system-ui, sans-serif; max-width: 36rem; margin: 4rem auto; padding: 0 1rem">
<h1>Tally cannot reach its database</h1>
<p>Nothing was changed. This usually passes by itself: wait a few seconds and reload the page.</p>
<p>If it persists, tell whoever runs Tally that the database is unavailable.</p>
</body></html>
"""


def unavailable_page() -> HttpResponse:
    # A plain string, not a template: rendering with the request context would ask the
    # database for the signed-in user.
    response = HttpResponse(PAGE, status=503, content_type="text/html; charset=utf-8")
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def unavailable_response(request: HttpRequest) -> HttpResponse:
    return unavailable_json() if request.path.startswith("/api/") else unavailable_page()


def unavailable_api_response(request: HttpRequest, exc: Exception) -> HttpResponse:
    """ninja's exception handler for OperationalError and InterfaceError (see api.py)."""
    if not is_unavailable(exc):
        raise exc
    _log(request, exc)
    drop_broken_connections()
    return unavailable_json()


class DatabaseUnavailableMiddleware:
    """503 for a view that fails to reach the database (the staff pages; the API too,
    should an error escape ninja's handlers)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if not is_unavailable(exc):
            return None
        _log(request, exc)
        drop_broken_connections()
        return unavailable_response(request)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: the database failures raised outside a view (in a middleware) are 503s too."""
    exc = sys.exc_info()[1]
    if exc is not None and is_unavailable(exc):
        drop_broken_connections()
        return unavailable_response(request)
    return django_server_error(request)
