"""The audit log's hash chain: prev_hash and hash on every event, existing events chained in
id order. The append-only triggers are lifted for the backfill only and put back at the end
(SQLite also loses them when AddField rebuilds the table)."""

from django.db import migrations, models

from tally.clinic import triggers


def lift_triggers(apps, schema_editor):
    triggers.uninstall(schema_editor.connection)


def install_triggers(apps, schema_editor):
    triggers.install(schema_editor.connection)


def chain_existing_events(apps, schema_editor):
    # The chain's form then: a plain sha256 (migration 0008 checks it and re-chains it keyed).
    from tally.clinic.audit import GENESIS
    from tally.clinic.audit import unkeyed_event_hash as event_hash

    AuditEvent = apps.get_model("clinic", "AuditEvent")
    prev = GENESIS
    with schema_editor.connection.cursor() as cursor:
        for event in AuditEvent.objects.order_by("id").iterator(chunk_size=2000):
            digest = event_hash(prev, event)
            cursor.execute("UPDATE clinic_auditevent SET prev_hash = %s, hash = %s WHERE id = %s",
                           [prev, digest, event.pk])
            prev = digest


class Migration(migrations.Migration):
    dependencies = [("clinic", "0002_append_only_triggers")]

    operations = [
        migrations.RunPython(lift_triggers, install_triggers),
        migrations.AddField(model_name="auditevent", name="prev_hash",
                            field=models.CharField(default="", max_length=64), preserve_default=False),
        migrations.AddField(model_name="auditevent", name="hash",
                            field=models.CharField(default="", max_length=64), preserve_default=False),
        migrations.RunPython(chain_existing_events, migrations.RunPython.noop),
        migrations.AlterField(model_name="auditevent", name="prev_hash",
                              field=models.CharField(max_length=64, unique=True)),
        migrations.RunPython(install_triggers, lift_triggers),
    ]
