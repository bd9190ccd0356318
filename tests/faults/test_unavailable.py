"""The database goes away under a running server: requests get a clear 503 in the error
shape (not a 500, not a hang), nothing partial is written, and service resumes by itself
when the database returns, without restarting the server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

from tests.e2e.conftest import scratch_database_url

from .conftest import Answer, Client, create_owner_token, db_counts, run_tally, serving, tally_env

SESSION_COOKIE = {"Cookie": "sessionid=abcdefghijklmnopqrstuvwxyz012345"}  # makes a page load the session


def superuser_conninfo() -> str:
    db = settings.DATABASES["default"]
    return f"host={db['HOST'] or '127.0.0.1'} port={db['PORT'] or 5432} user={db['USER']} dbname=postgres"


@contextlib.contextmanager
def postgresql_outage(database_url: str) -> Iterator[None]:
    """No new connections to that one database, and its open ones terminated; the shared
    PostgreSQL server itself keeps running."""
    import psycopg

    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(superuser_conninfo(), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        try:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s AND pid <> pg_backend_pid()", [name])
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')


@contextlib.contextmanager
def sqlite_outage(directory: Path) -> Iterator[None]:
    """The database's directory moved away (as root, chmod 000 would not stop us): the file
    cannot be opened, and SQLite cannot create a new empty one in its place."""
    away = directory.with_name(directory.name + "-away")
    directory.rename(away)
    try:
        yield
    finally:
        away.rename(directory)


def assert_unavailable_json(answer: Answer) -> None:
    assert answer.status == 503, answer
    assert answer.body["error"]["code"] == "unavailable", answer.body
    assert answer.body["error"]["message"] and answer.body["error"]["fields"] == {}, answer.body
    assert answer.headers.get("retry-after"), answer.headers
    assert answer.seconds < 10, f"took {answer.seconds:.1f} s: connect_timeout is 5 s"


def test_database_outage_is_a_clean_503_and_service_resumes(tmp_path, static_root):
    is_sqlite = settings.DATABASES["default"]["ENGINE"].endswith("sqlite3")
    db_dir = tmp_path / "db"
    db_dir.mkdir()
    scratch = (contextlib.nullcontext(f"sqlite:///{db_dir / 'server.sqlite3'}") if is_sqlite
               else scratch_database_url(tmp_path))
    with scratch as url:
        env = tally_env(url, tmp_path) | {"TALLY_STATIC_ROOT": str(static_root)}
        run_tally(env, "init")
        token = create_owner_token(env)
        with serving(tmp_path, env) as server:
            client = Client(server, token, timeout=30)
            service = client.ok("POST", "/api/v1/services", {"name": "Acupuncture", "duration_minutes": 60,
                                                             "price": "95.00"})
            patient = client.ok("POST", "/api/v1/patients", {"first_name": "Out", "last_name": "Age"})
            visit = client.ok("POST", "/api/v1/appointments", {"patient_id": patient["id"], "service_id": service["id"],
                                                               "starts_at": "2026-03-04T10:00:00+00:00"})
            check_in_path = f"/api/v1/appointments/{visit['id']}/check-in"
            assert client.call("GET", "/api/v1/me").status == 200
            before = db_counts(env)

            outage = sqlite_outage(db_dir) if is_sqlite else postgresql_outage(url)
            with outage:
                # Several of each, so that every worker meets the outage.
                for _ in range(4):
                    assert_unavailable_json(client.call("GET", "/api/v1/me"))
                    assert_unavailable_json(client.call("GET", f"/api/v1/patients/{patient['id']}"))
                    assert_unavailable_json(client.call("POST", check_in_path, {}, key="outage-check-in"))
                page = client.call("GET", "/today/", headers=SESSION_COOKIE)
                assert page.status == 503, page
                assert "text/html" in page.headers["content-type"] and "database" in page.body, page
                assert page.seconds < 10

            # Back, without restarting the server: every request succeeds again at once.
            resumed = [client.call("GET", "/api/v1/me") for _ in range(6)]
            assert [a.status for a in resumed] == [200] * 6, resumed
            assert client.call("GET", "/today/", headers=SESSION_COOKIE).status in (200, 302)
            # Nothing partial was written: the visit is still booked and no invoice appeared.
            assert client.ok("GET", f"/api/v1/appointments/{visit['id']}")["status"] == "booked"
            assert db_counts(env) == before
            # The refused check-in, retried with its key, is done now, once.
            done = client.call("POST", check_in_path, {}, key="outage-check-in")
            assert done.status == 200 and "idempotent-replayed" not in done.headers, done
            again = client.call("POST", check_in_path, {}, key="outage-check-in")
            assert again.status == 200 and again.headers.get("idempotent-replayed") == "true", again
            assert again.body == done.body
            verified = run_tally(env, "verify", check=False)
            assert verified.returncode == 0, verified.stdout + verified.stderr
            log = server.log_text()
            assert "database unavailable" in log and "Internal Server Error" not in log, log[-3000:]
