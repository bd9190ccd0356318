from __future__ import annotations

import zoneinfo

from django.db import models


class ClinicSettings(models.Model):
    """The one row of clinic-wide settings. Read per request: nothing is cached."""

    name = models.CharField(max_length=200, default="My Clinic")
    time_zone = models.CharField(max_length=64, default="UTC")
    currency = models.CharField(max_length=3, default="USD")
    no_show_uses_session = models.BooleanField(default=False)

    class Meta:
        verbose_name = "clinic settings"
        verbose_name_plural = "clinic settings"

    def __str__(self) -> str:
        return self.name

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone)

    @classmethod
    def load(cls) -> ClinicSettings:
        obj = cls.objects.order_by("pk").first()
        if obj is None:
            obj, _ = cls.objects.get_or_create(pk=1)
        return obj
