from __future__ import annotations

from django.db import models

from .ledger import AppendOnlyModel


class AuditEvent(AppendOnlyModel):
    """Append-only, hash-chained record of every change and every read of patient data:
    who (actor, role), when (UTC), what (action, object, patient), before/after, from where (ip).
    Written only through `tally.clinic.audit` (record, record_read, record_reads)."""

    at = models.DateTimeField(db_index=True)
    actor = models.ForeignKey("clinic.Staff", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    role = models.CharField(max_length=20, blank=True)
    action = models.CharField(max_length=80)
    object_type = models.CharField(max_length=40)
    object_id = models.CharField(max_length=40, blank=True)
    patient = models.ForeignKey("clinic.Patient", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    # The hash chain (tally.clinic.audit): hash = HMAC-SHA256(a key derived from the server's secret,
    # prev_hash + the row's canonical JSON),
    # appended under one lock, so `id` order is chain order; `tally verify-audit` walks it.
    # prev_hash is unique: two rows can never both follow the same one (no fork, even by a bug).
    prev_hash = models.CharField(max_length=64, unique=True)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["patient", "at"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.action}"


class IdempotencyRecord(models.Model):
    """The first answer to a POST with an Idempotency-Key, replayed for the same key and body."""

    staff = models.ForeignKey("clinic.Staff", on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=200)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=500)
    body_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField()
    response_body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["staff", "key"], name="idempotency_unique_key")]

    def __str__(self) -> str:
        return f"{self.staff_id}:{self.key}"


class ClinicAuditSnapshot(models.Model):
    """One run of the clinic audit (`investigator.service.take_audit_snapshot`), kept so that
    its pages and filters are all read from the same run. A cache of derived data, not a
    record: deleted after TALLY_AUDIT_SNAPSHOT_TTL_HOURS; `scan` is `AuditScan.as_dict()`."""

    created_at = models.DateTimeField(db_index=True)
    created_by = models.ForeignKey("clinic.Staff", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    scan = models.JSONField()

    def __str__(self) -> str:
        return f"clinic audit of {self.created_at:%Y-%m-%d %H:%M}"
