from __future__ import annotations

from django.core.validators import MinValueValidator
from django.db import models


class Service(models.Model):
    """What the clinic sells per visit. Identity is the row: a rename breaks no package."""

    name = models.CharField(max_length=200)
    duration_minutes = models.PositiveIntegerField(default=60)
    price = models.DecimalField(max_digits=10, decimal_places=2, validators=[MinValueValidator(0)])
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=models.Q(price__gte=0), name="service_price_not_negative"),
            models.CheckConstraint(condition=models.Q(duration_minutes__gt=0), name="service_duration_positive"),
        ]

    def __str__(self) -> str:
        return self.name


class Package(models.Model):
    """A package template. Selling it snapshots it, so later edits change no sold package."""

    name = models.CharField(max_length=200)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    sessions = models.PositiveIntegerField()
    services = models.ManyToManyField(Service, related_name="packages")
    valid_days = models.PositiveIntegerField(null=True, blank=True)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=models.Q(price__gte=0), name="package_price_not_negative"),
            models.CheckConstraint(condition=models.Q(sessions__gt=0), name="package_sessions_positive"),
        ]

    def __str__(self) -> str:
        return self.name
