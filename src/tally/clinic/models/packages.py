from __future__ import annotations

import datetime as dt

from django.db import models
from django.utils import timezone

from .catalog import Package, Service
from .patients import Patient


class PackageStatus(models.TextChoices):
    PENDING_PAYMENT = "pending_payment"
    ACTIVE = "active"
    EXHAUSTED = "exhausted"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class PatientPackage(models.Model):
    """A package sold to one patient on one invoice, with a snapshot of the template.

    `sessions_used` is a cache of the ledger: only `tally.clinic.ledger.post_entry`
    moves it, and `verify` re-derives it from the entries.
    """

    # The services it covers, set by the reads that lock packages (locking.py): not a column.
    eligible_ids: frozenset[int]

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="packages")
    package = models.ForeignKey(Package, on_delete=models.PROTECT, related_name="sold")
    # Snapshot of the template at the sale.
    name = models.CharField(max_length=200)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    sessions_total = models.PositiveIntegerField()
    eligible_services = models.ManyToManyField(Service, related_name="+")
    valid_days = models.PositiveIntegerField(null=True, blank=True)

    sale_invoice = models.ForeignKey(
        "clinic.Invoice", on_delete=models.PROTECT, related_name="sold_packages"
    )
    sold_at = models.DateTimeField()
    sold_by = models.ForeignKey("clinic.Staff", on_delete=models.PROTECT, null=True, related_name="+")
    use_first_session = models.BooleanField()
    first_session_appointment = models.ForeignKey(
        "clinic.Appointment", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    activated_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    cancel_reason = models.TextField(blank=True)

    sessions_used = models.IntegerField(default=0)
    ledger_seq = models.IntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["patient", "sold_at"])]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(sessions_used__gte=0) & models.Q(sessions_used__lte=models.F("sessions_total")),
                name="patient_package_used_within_total",
            ),
            models.CheckConstraint(condition=models.Q(sessions_total__gt=0), name="patient_package_total_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.sessions_used}/{self.sessions_total})"

    @property
    def sessions_remaining(self) -> int:
        return self.sessions_total - self.sessions_used

    def status_at(self, when: dt.datetime | None = None) -> str:
        when = when or timezone.now()
        if self.cancelled_at is not None:
            return PackageStatus.CANCELLED
        if self.activated_at is None:
            return PackageStatus.PENDING_PAYMENT
        if self.expires_at is not None and when > self.expires_at:
            return PackageStatus.EXPIRED
        if self.sessions_remaining <= 0:
            return PackageStatus.EXHAUSTED
        return PackageStatus.ACTIVE

    @property
    def status(self) -> str:
        return self.status_at()
