"""Database triggers that keep the ledger and the audit log append-only, even against
wrong code or a hand-typed UPDATE (or, on PostgreSQL, TRUNCATE). Installed by migration 0002
on SQLite and PostgreSQL, again by 0005 (PostgreSQL's TRUNCATE trigger). Lifted once since, for
the audit log's UPDATE alone and inside one transaction: to re-sign its chain (`audit_log_updatable`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

APPEND_ONLY_TABLES = ("clinic_packageledgerentry", "clinic_auditevent")

_LIVE_USE_EXISTS = """
    SELECT 1 FROM clinic_packageledgerentry u
    WHERE u.invoice_line_id = NEW.invoice_line_id AND u.kind = 'use'
      AND NOT EXISTS (SELECT 1 FROM clinic_packageledgerentry r WHERE r.reverses_id = u.id)
"""


def sqlite_statements() -> list[str]:
    statements = []
    for table in APPEND_ONLY_TABLES:
        for op in ("UPDATE", "DELETE"):
            statements.append(
                f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )
    statements.append(
        "CREATE TRIGGER IF NOT EXISTS clinic_ledger_one_live_use BEFORE INSERT ON clinic_packageledgerentry "
        f"WHEN NEW.kind = 'use' AND NEW.invoice_line_id IS NOT NULL AND EXISTS ({_LIVE_USE_EXISTS}) "
        "BEGIN SELECT RAISE(ABORT, 'invoice line already has a live use'); END"
    )
    return statements


def sqlite_drop_statements() -> list[str]:
    names = [f"{t}_no_{op}" for t in APPEND_ONLY_TABLES for op in ("update", "delete")]
    return [f"DROP TRIGGER IF EXISTS {n}" for n in [*names, "clinic_ledger_one_live_use"]]


def postgresql_statements() -> list[str]:
    statements = [
        """
        CREATE OR REPLACE FUNCTION tally_append_only() RETURNS trigger AS $$
        BEGIN
            RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'integrity_constraint_violation';
        END;
        $$ LANGUAGE plpgsql
        """,
        f"""
        CREATE OR REPLACE FUNCTION tally_ledger_one_live_use() RETURNS trigger AS $$
        BEGIN
            IF NEW.kind = 'use' AND NEW.invoice_line_id IS NOT NULL AND EXISTS ({_LIVE_USE_EXISTS}) THEN
                RAISE EXCEPTION 'invoice line % already has a live use', NEW.invoice_line_id
                    USING ERRCODE = 'unique_violation';
            END IF;
            RETURN NEW;
        END;
        $$ LANGUAGE plpgsql
        """,
    ]
    for table in APPEND_ONLY_TABLES:
        statements.append(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        statements.append(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION tally_append_only()"
        )
        # TRUNCATE fires no row trigger: one statement (or `tally flush`) would empty the table.
        statements.append(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        statements.append(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION tally_append_only()"
        )
    statements.append("DROP TRIGGER IF EXISTS clinic_ledger_one_live_use ON clinic_packageledgerentry")
    statements.append(
        "CREATE TRIGGER clinic_ledger_one_live_use BEFORE INSERT ON clinic_packageledgerentry "
        "FOR EACH ROW EXECUTE FUNCTION tally_ledger_one_live_use()"
    )
    return statements


def postgresql_drop_statements() -> list[str]:
    statements = [f"DROP TRIGGER IF EXISTS {t}_{name} ON {t}" for t in APPEND_ONLY_TABLES
                  for name in ("append_only", "no_truncate")]
    statements.append("DROP TRIGGER IF EXISTS clinic_ledger_one_live_use ON clinic_packageledgerentry")
    return statements


def install(connection) -> None:
    statements = postgresql_statements() if connection.vendor == "postgresql" else sqlite_statements()
    with connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)


def uninstall(connection) -> None:
    statements = postgresql_drop_statements() if connection.vendor == "postgresql" else sqlite_drop_statements()
    with connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)


AUDIT_TABLE = "clinic_auditevent"


@contextmanager
def audit_log_updatable(connection) -> Iterator[None]:
    """Within the caller's transaction, the audit log takes UPDATE (on PostgreSQL one trigger
    refuses UPDATE and DELETE, so both; its TRUNCATE trigger stays): for re-signing its chain (tally.clinic.audit.rechain: migration 0009, `tally rekey-audit`).
    The trigger is back before the block's transaction commits; if the block raises, the
    transaction's rollback puts it back (both databases roll DDL back)."""
    if not connection.in_atomic_block:
        raise RuntimeError("audit_log_updatable() must run inside a transaction")
    if connection.vendor == "postgresql":
        lift = [f"DROP TRIGGER IF EXISTS {AUDIT_TABLE}_append_only ON {AUDIT_TABLE}"]
        restore = [sql for sql in postgresql_statements() if f"{AUDIT_TABLE}_append_only" in sql]
    else:
        lift = [f"DROP TRIGGER IF EXISTS {AUDIT_TABLE}_no_update"]
        restore = [sql for sql in sqlite_statements() if f"{AUDIT_TABLE}_no_update" in sql]
    with connection.cursor() as cursor:
        for sql in lift:
            cursor.execute(sql)
    yield
    with connection.cursor() as cursor:
        for sql in restore:
            cursor.execute(sql)
