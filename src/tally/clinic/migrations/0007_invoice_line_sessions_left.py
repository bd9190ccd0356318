"""A covered line keeps the sessions left after its charge ("7 left"). Until now every line's
session number was the package's used count after its charge, so the lines charged before
this migration get total - number: what their invoices have shown all along."""

from django.db import migrations, models
from django.db.models import F, OuterRef, Subquery


def fill_sessions_left(apps, schema_editor):
    InvoiceLine = apps.get_model("clinic", "InvoiceLine")
    PatientPackage = apps.get_model("clinic", "PatientPackage")
    total = PatientPackage.objects.filter(pk=OuterRef("covered_by_id")).values("sessions_total")[:1]
    InvoiceLine.objects.filter(covered_by__isnull=False, session_number__isnull=False).update(
        sessions_left=Subquery(total) - F("session_number"))


class Migration(migrations.Migration):

    dependencies = [
        ("clinic", "0006_apitoken_origin"),
    ]

    operations = [
        migrations.AddField(
            model_name="invoiceline",
            name="sessions_left",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.RunPython(fill_sessions_left, migrations.RunPython.noop),
    ]
