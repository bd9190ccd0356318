from __future__ import annotations

from decimal import Decimal

from django.db import models

from .catalog import Package, Service
from .patients import Patient

ZERO = Decimal("0.00")


class InvoiceStatus(models.TextChoices):
    UNPAID = "unpaid"
    PARTIALLY_PAID = "partially_paid"
    PAID = "paid"
    VOID = "void"


class Invoice(models.Model):
    """An invoice for one patient. Totals and status are derived from lines and payments."""

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="invoices")
    issued_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey("clinic.Staff", on_delete=models.PROTECT, null=True, related_name="+")
    voided_at = models.DateTimeField(null=True, blank=True)
    void_reason = models.TextField(blank=True)

    class Meta:
        indexes = [models.Index(fields=["patient", "issued_at"])]

    def __str__(self) -> str:
        return self.number

    @property
    def number(self) -> str:
        return f"INV-{self.pk:06d}"

    def live_lines(self) -> list[InvoiceLine]:
        return [line for line in self.lines.all() if line.removed_at is None]

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.live_lines()), ZERO)

    @property
    def paid(self) -> Decimal:
        return sum((p.amount for p in self.payments.all()), ZERO)

    @property
    def balance(self) -> Decimal:
        return self.total - self.paid

    @property
    def status(self) -> str:
        if self.voided_at is not None:
            return InvoiceStatus.VOID
        total, paid = self.total, self.paid
        if paid >= total:
            return InvoiceStatus.PAID
        if paid > ZERO:
            return InvoiceStatus.PARTIALLY_PAID
        return InvoiceStatus.UNPAID


class LineKind(models.TextChoices):
    SERVICE = "service"
    PACKAGE_SALE = "package_sale"
    FIRST_SESSION = "first_session"
    PACKAGE_REFUND = "package_refund"


class InvoiceLine(models.Model):
    """A line of an invoice. Removing it keeps the row (removed_at) and leaves a tombstone,
    so the ledger entries that point at it keep pointing at something."""

    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="lines")
    kind = models.CharField(max_length=20, choices=LineKind.choices)
    service = models.ForeignKey(Service, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    package = models.ForeignKey(Package, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    patient_package = models.ForeignKey(
        "clinic.PatientPackage", on_delete=models.PROTECT, null=True, blank=True, related_name="sale_lines"
    )
    appointment = models.ForeignKey(
        "clinic.Appointment", on_delete=models.PROTECT, null=True, blank=True, related_name="lines"
    )
    description = models.CharField(max_length=300)
    list_price = models.DecimalField(max_digits=10, decimal_places=2)
    amount = models.DecimalField(max_digits=10, decimal_places=2)
    covered_by = models.ForeignKey(
        "clinic.PatientPackage", on_delete=models.PROTECT, null=True, blank=True, related_name="covered_lines"
    )
    # Which session of the package the line used ("Session 3 of 10"), distinct among the
    # package's live covered lines (a removed line's session is taken by the next charge), and
    # the sessions left after the charge ("7 left"): with such a reuse, not total - number.
    session_number = models.PositiveIntegerField(null=True, blank=True)
    sessions_left = models.PositiveIntegerField(null=True, blank=True)
    not_covered_reason = models.CharField(max_length=40, null=True, blank=True)
    # What rules 1-6 decided when the line was charged (SPEC.md "Coverage decision").
    coverage_decision = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey("clinic.Staff", on_delete=models.PROTECT, null=True, related_name="+")
    removed_at = models.DateTimeField(null=True, blank=True)
    removal_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["appointment"])]

    def __str__(self) -> str:
        return self.description

    @property
    def is_live(self) -> bool:
        return self.removed_at is None and self.invoice.voided_at is None


class Payment(models.Model):
    """A payment; a refund is a negative payment with a reason."""

    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="payments")
    amount = models.DecimalField(max_digits=10, decimal_places=2)
    method = models.CharField(max_length=40)
    received_at = models.DateTimeField()
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey("clinic.Staff", on_delete=models.PROTECT, null=True, related_name="+")

    class Meta:
        ordering = ["received_at", "id"]
        constraints = [
            models.CheckConstraint(condition=~models.Q(amount=0), name="payment_amount_not_zero"),
        ]

    def __str__(self) -> str:
        return f"{self.amount} {self.method}"
