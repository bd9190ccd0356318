from __future__ import annotations

import re

from django.db import models

PATIENT_NUMBER_RE = re.compile(r"^\s*P-?0*(\d+)\s*$", re.IGNORECASE)


class Patient(models.Model):
    """A patient. Archived, never deleted. `patient_number` is what staff quote to support."""

    first_name = models.CharField(max_length=100)
    last_name = models.CharField(max_length=100)
    date_of_birth = models.DateField(null=True, blank=True)
    email = models.EmailField(blank=True)
    phone = models.CharField(max_length=40, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["last_name", "first_name"])]

    def __str__(self) -> str:
        return f"{self.patient_number} {self.full_name}"

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    @property
    def patient_number(self) -> str:
        return format_patient_number(self.pk)


def format_patient_number(pk: int) -> str:
    return f"P-{pk:06d}"


def parse_patient_number(text: str) -> int | None:
    match = PATIENT_NUMBER_RE.match(text or "")
    return int(match.group(1)) if match else None
