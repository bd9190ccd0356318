from __future__ import annotations

from django.db import IntegrityError, models
from django.db.models import Q


class EntryKind(models.TextChoices):
    USE = "use"
    REVERSAL = "reversal"
    ADJUSTMENT = "adjustment"


class AppendOnlyQuerySet(models.QuerySet):
    """Refuses bulk rewrites in Python, before the database triggers have to."""

    def update(self, **kwargs):
        raise IntegrityError(f"{self.model._meta.db_table} is append-only")

    def delete(self):
        raise IntegrityError(f"{self.model._meta.db_table} is append-only")


class AppendOnlyModel(models.Model):
    """A row is written once: saving it again or deleting it is refused in Python too."""

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise IntegrityError(f"{self._meta.db_table} is append-only")
        return super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise IntegrityError(f"{self._meta.db_table} is append-only")


class PackageLedgerEntry(AppendOnlyModel):
    """One change of a patient package's count. Append-only: no update, no delete
    (refused by database triggers too). Written only by `tally.clinic.ledger.post_entry`.

    `change` is the effect on sessions_remaining (use -1, reversal +1, adjustment ±n);
    `used_after` is the running count of used sessions after this entry.
    """

    patient_package = models.ForeignKey(
        "clinic.PatientPackage", on_delete=models.PROTECT, related_name="ledger_entries"
    )
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=20, choices=EntryKind.choices)
    change = models.IntegerField()
    used_after = models.IntegerField()
    sessions_total = models.PositiveIntegerField()
    at = models.DateTimeField()
    invoice_line = models.ForeignKey(
        "clinic.InvoiceLine", on_delete=models.PROTECT, null=True, blank=True, related_name="ledger_entries"
    )
    appointment = models.ForeignKey(
        "clinic.Appointment", on_delete=models.PROTECT, null=True, blank=True, related_name="ledger_entries"
    )
    reverses = models.OneToOneField(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="reversed_by"
    )
    reason = models.TextField(blank=True)
    by = models.ForeignKey("clinic.Staff", on_delete=models.PROTECT, null=True, blank=True, related_name="+")

    class Meta:
        ordering = ["patient_package_id", "seq"]
        verbose_name_plural = "package ledger entries"
        constraints = [
            models.UniqueConstraint(fields=["patient_package", "seq"], name="ledger_unique_seq"),
            models.CheckConstraint(
                condition=Q(used_after__gte=0) & Q(used_after__lte=models.F("sessions_total")),
                name="ledger_used_within_total",
            ),
            models.CheckConstraint(
                condition=(
                    (Q(kind="use") & Q(change=-1) & Q(reverses__isnull=True))
                    | (Q(kind="reversal") & Q(change=1) & Q(reverses__isnull=False))
                    | (Q(kind="adjustment") & ~Q(change=0) & Q(reverses__isnull=True))
                ),
                name="ledger_kind_matches_change",
            ),
        ]
        indexes = [models.Index(fields=["invoice_line"]), models.Index(fields=["appointment"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.change:+d} (package {self.patient_package_id} #{self.seq})"
