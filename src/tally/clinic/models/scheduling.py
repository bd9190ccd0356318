from __future__ import annotations

from django.db import models

from .catalog import Service
from .patients import Patient


class AppointmentStatus(models.TextChoices):
    BOOKED = "booked"
    ATTENDED = "attended"
    CANCELLED = "cancelled"
    NO_SHOW = "no_show"


class LiveAppointments(models.Manager):
    def get_queryset(self) -> models.QuerySet:
        return super().get_queryset().filter(deleted_at__isnull=True)


class Appointment(models.Model):
    """A booked visit. Permanent deletion hides it everywhere but the investigator,
    which reads its tombstone; the row stays so that history pointing at it holds."""

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="appointments")
    service = models.ForeignKey(Service, on_delete=models.PROTECT, related_name="+")
    practitioner = models.ForeignKey(
        "clinic.Staff", on_delete=models.PROTECT, null=True, blank=True, related_name="appointments"
    )
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    status = models.CharField(max_length=20, choices=AppointmentStatus.choices, default=AppointmentStatus.BOOKED)
    no_charges = models.BooleanField(default=False)
    status_reason = models.TextField(blank=True)
    checked_in_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects = LiveAppointments()
    all_objects = models.Manager()  # noqa: DJ012 (both managers belong together)

    class Meta:
        base_manager_name = "all_objects"
        indexes = [
            models.Index(fields=["patient", "starts_at"]),
            models.Index(fields=["starts_at"]),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(ends_at__gt=models.F("starts_at")), name="appointment_ends_after_start"),
        ]

    def __str__(self) -> str:
        return f"{self.patient_id} {self.starts_at:%Y-%m-%d %H:%M}"


class TombstoneKind(models.TextChoices):
    APPOINTMENT = "appointment"
    INVOICE_LINE = "invoice_line"


class Tombstone(models.Model):
    """What remains of a permanently deleted appointment or a removed invoice line."""

    kind = models.CharField(max_length=20, choices=TombstoneKind.choices)
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="tombstones")
    appointment = models.ForeignKey(Appointment, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    invoice_line = models.ForeignKey(
        "clinic.InvoiceLine", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    content = models.JSONField()
    removed_at = models.DateTimeField()
    removed_by = models.ForeignKey("clinic.Staff", on_delete=models.PROTECT, null=True, related_name="+")
    reason = models.TextField(blank=True)

    class Meta:
        indexes = [models.Index(fields=["patient", "removed_at"])]

    def __str__(self) -> str:
        return f"{self.kind} removed {self.removed_at:%Y-%m-%d}"
