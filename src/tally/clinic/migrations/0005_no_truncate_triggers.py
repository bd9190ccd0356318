"""PostgreSQL: the append-only tables refuse TRUNCATE too (tally.clinic.triggers). It fires no
row trigger, so one statement, or `tally flush`, emptied the audit log and the ledger.
Installing is idempotent: the other triggers are put back as they were."""

from django.db import migrations

from tally.clinic import triggers


def install(apps, schema_editor):
    triggers.install(schema_editor.connection)


def uninstall_truncate_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            for table in triggers.APPEND_ONLY_TABLES:
                cursor.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")


class Migration(migrations.Migration):
    dependencies = [("clinic", "0004_clinic_audit_snapshot")]
    operations = [migrations.RunPython(install, uninstall_truncate_triggers)]
