"""The `tally` command: Tally's management commands, plus every Django one.

    tally init | createuser | createtoken | serve | demo | backup | migrate | ...

Before Django starts, make sure there is a secret key: TALLY_SECRET_KEY if set, else a
random per-install key kept in `.tally-secret-key` next to the SQLite database (or in
the working directory for PostgreSQL), created once with mode 0600. So `tally demo`
works on a fresh machine with no environment at all, and sessions survive restarts.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
from pathlib import Path

SECRET_KEY_FILE = ".tally-secret-key"

TALLY_COMMANDS = """\
Usage: tally COMMAND [options]     (tally COMMAND --help for its options)

  init          create or migrate the database
  createuser    add a staff member: NAME --role owner|front_desk|practitioner --password PW
  createtoken   issue an API token for a staff member and print it alone
  tokens        a staff member's API tokens, to find one to revoke: NAME
  revoketoken   end one API token now: ID (from tally tokens)
  deactivate    stop a staff member signing in: ends their sessions, revokes their tokens: NAME
  resettwofactor  remove a staff member's two-factor device (a lost phone): NAME
  serve         run the production server (gunicorn)
  demo          init, load a demo clinic and serve it
  democode      the demo owner's current two-factor code
  backup        a consistent copy of the database while it serves: PATH [--force]
  restore       put a backup back, checked first, the current database kept aside: PATH [--yes] [--force] [--with-problems]
  investigate   why a patient's package counts are what they are: P-000123 [--json]
  audit         every package through the investigator: [--json|--csv] [--min-severity warning]
  verify        re-derive every package from its ledger, check no invoice is half-written; exit 1 on any problem
  activatepaid  activate packages left pending on a sale paid in full (tally verify names them)
  verify-audit  check the audit log's keyed hash chain; exit 1 naming the first tampered event [--head HASH]
  rekey-audit   re-sign the audit log's chain with the current secret key (after a key rotation)

Every Django management command works too (tally migrate, tally shell, tally check, ...).
Configuration: TALLY_DATABASE_URL, TALLY_SECRET_KEY (and TALLY_SECRET_KEY_FALLBACKS), TALLY_DEBUG,
TALLY_ALLOWED_HOSTS.
"""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def database_url() -> str:
    """The database URL exactly as tally.settings will read it."""
    return os.environ.get("TALLY_DATABASE_URL") or f"sqlite:///{Path.cwd() / 'tally.sqlite3'}"


def secret_key_path(url: str | None = None) -> Path:
    """Next to the SQLite database file; the working directory for anything else."""
    url = url or database_url()
    if url.startswith("sqlite:"):
        import dj_database_url

        name = str(dj_database_url.parse(url)["NAME"] or "")
        if name and name != ":memory:":
            return Path(name).expanduser().resolve().parent / SECRET_KEY_FILE
    return Path.cwd() / SECRET_KEY_FILE


def ensure_secret_key(args: list[str] | None = None) -> None:
    """Set TALLY_SECRET_KEY from the per-install key file, creating the file once."""
    if os.environ.get("TALLY_SECRET_KEY") or _truthy(os.environ.get("TALLY_DEBUG")):
        return
    path = secret_key_path()
    args = args or []
    if args[:1] == ["restore"] and not path.exists() and not {"-h", "--help"} & set(args):
        # The database to restore into may be gone or empty, but the backup's audit log was
        # signed with the clinic's key: a new one would only be refused, and left behind.
        sys.exit(f"tally: restoring needs the secret key the backup's audit log was signed with, and there is "
                 f"none here (no TALLY_SECRET_KEY, no {path}): set TALLY_SECRET_KEY to the clinic's key "
                 f"(docs/audit-log.md)")
    if not path.exists() and database_has_audit_events():
        # A restored backup (or a PostgreSQL command run from another directory): a new key
        # would sign new events onto a chain that no key here vouches for, and say nothing.
        sys.exit(f"tally: the database already has an audit log, signed with a secret key that is not here "
                 f"(no TALLY_SECRET_KEY, no {path}): set TALLY_SECRET_KEY to the key it was signed with "
                 f"(docs/audit-log.md); only if that key is lost, set a new one")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            key = path.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "it is not text"
            sys.exit(f"tally: cannot read the secret key file {path}: {reason}; fix it or set TALLY_SECRET_KEY")
        if not key:
            sys.exit(f"tally: {path} is empty; delete it to get a new key, or set TALLY_SECRET_KEY")
    except OSError as exc:
        sys.exit(f"tally: cannot create the secret key file {path}: {exc.strerror}; set TALLY_SECRET_KEY")
    else:
        key = secrets.token_urlsafe(50)
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
    os.environ["TALLY_SECRET_KEY"] = key


COMMANDS_THAT_CREATE_THE_DATABASE = {"init", "demo", "migrate"}


def create_private_database_file() -> None:
    """A new SQLite database file is made readable and writable by its owner alone (0600), as
    backups and the key file are: it holds patients' health data, password hashes, two-factor
    secrets and the live sessions. SQLite would create it with the umask's mode (0644 usually:
    every local user could read it), and gives its -wal, -shm (and Tally its -queue) the
    database's mode. An empty file is an empty database. An existing file is left as it is."""
    import dj_database_url

    name = str(dj_database_url.parse(database_url()).get("NAME") or "")
    if not name or name == ":memory:" or not database_url().startswith("sqlite:"):
        return
    path = Path(name).expanduser()
    if not path.parent.is_dir():
        return  # the command says what is wrong with the path itself
    with contextlib.suppress(FileExistsError, PermissionError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def database_has_audit_events() -> bool:
    """Whether the configured database exists and holds audit events, asked before Django
    starts (the secret key must be settled first). Any failure counts as no: the command
    itself then says what is wrong with the database."""
    import dj_database_url

    try:
        config = dj_database_url.parse(database_url())
        if config["ENGINE"] == "django.db.backends.sqlite3":
            import sqlite3

            name = str(config["NAME"] or "")
            if not name or name == ":memory:" or not Path(name).is_file():
                return False
            with contextlib.closing(sqlite3.connect(name, timeout=5)) as db:  # closed last: no -wal left
                return db.execute("SELECT EXISTS (SELECT 1 FROM clinic_auditevent)").fetchone()[0] == 1
        if config["ENGINE"] == "django.db.backends.postgresql":
            import psycopg
            from psycopg.conninfo import make_conninfo

            options = {k: v for k, v in (config.get("OPTIONS") or {}).items() if isinstance(v, str | int)}
            conninfo = make_conninfo("", **{"connect_timeout": 5, **options}, dbname=config["NAME"],
                                     user=config["USER"] or None, password=config["PASSWORD"] or None,
                                     host=config["HOST"] or None, port=config["PORT"] or None)
            with psycopg.connect(conninfo) as conn:
                row = conn.execute("SELECT EXISTS (SELECT 1 FROM clinic_auditevent)").fetchone()
                return bool(row and row[0])
    except Exception:  # noqa: BLE001 - a probe: the command reports the database's own faults
        return False
    return False


SUPPORTED_ENGINES = {"django.db.backends.sqlite3", "django.db.backends.postgresql"}


def check_database_url() -> None:
    """A TALLY_DATABASE_URL Tally cannot use is one line, not a traceback from the settings.
    The message names only the scheme: the URL may hold a password."""
    import dj_database_url

    url = database_url()
    try:
        config = dj_database_url.parse(url)
    except ValueError:
        config = {}
    engine, name = config.get("ENGINE"), config.get("NAME")
    scheme = url.split(":", 1)[0] if ":" in url else url[:20]
    if engine not in SUPPORTED_ENGINES:
        sys.exit(f"tally: TALLY_DATABASE_URL must be sqlite:///path or postgresql://user@host/db, not {scheme!r}")
    # A URL without its database: PostgreSQL's settings would raise ImproperlyConfigured on the
    # first query, and SQLite's would silently be a database in memory, gone at exit (an init
    # that "succeeds"). An explicit sqlite:///:memory: stays allowed.
    if not name or (name == ":memory:" and ":memory:" not in url):
        sys.exit(f"tally: TALLY_DATABASE_URL ({scheme}) names no database: sqlite:///path/to/file or "
                 "postgresql://user@host:5432/dbname")


def main(argv: list[str] | None = None) -> None:
    try:
        run(argv)
    except KeyboardInterrupt:
        # Ctrl+C: one line, not a traceback. Each write is one transaction, so the step that
        # was interrupted is rolled back whole.
        sys.stderr.write("\ntally: interrupted\n")
        sys.exit(130)
    except BrokenPipeError:
        # The reader went away (tally audit --csv | head -1): stop quietly, as other tools do.
        # Standard output now points nowhere, so Python's own flush at exit cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except Exception as exc:
        line = database_refusal(exc)
        if line is None:
            raise
        sys.exit(line)


def database_refusal(exc: BaseException) -> str | None:
    """A database error that escaped a command as one line, as Tally's own commands refuse
    (tally.clinic.management.base): Django's commands (`tally changepassword`, `createsuperuser`,
    `flush`) do not check the database first. None for any other exception."""
    db = sys.modules.get("django.db")
    if db is None or not isinstance(exc, db.DatabaseError):
        return None
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if "no such table" in text or (isinstance(exc, db.ProgrammingError) and "does not exist" in text):
        return f"tally: the database is not set up ({text}): run `tally init` first"
    if isinstance(exc, db.OperationalError | db.InterfaceError):
        return f"tally: cannot reach the database: {text}"
    return f"tally: database error: {text}"


def run(argv: list[str] | None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or (len(args) == 1 and args[0] in {"-h", "--help", "help"}):
        sys.stdout.write(TALLY_COMMANDS)
        return
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tally.settings")
    check_database_url()
    ensure_secret_key(args)
    if not args[0].startswith("-"):
        args[0] = args[0].replace("-", "_")  # tally verify-audit runs the verify_audit command
    if args[0] in COMMANDS_THAT_CREATE_THE_DATABASE:
        create_private_database_file()  # the others refuse a missing database and create nothing
    from django.core.management import execute_from_command_line

    execute_from_command_line(["tally", *args])


if __name__ == "__main__":
    main()
