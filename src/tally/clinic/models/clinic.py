from __future__ import annotations

import contextvars
import zoneinfo
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import models

from ..compiled import Compiled

# What `ClinicSettings.load()` read in the current request, when a front end asked for one
# read per request (`ClinicSettings.read_once()`); None outside such a request.
_read_in_request: contextvars.ContextVar[list[ClinicSettings] | None] = contextvars.ContextVar(
    "tally_clinic_settings_read", default=None)


class ClinicSettings(models.Model):
    """The one row of clinic-wide settings. Read per request (at most once, see `read_once`):
    nothing is cached between requests."""

    name = models.CharField(max_length=200, default="My Clinic")
    time_zone = models.CharField(max_length=64, default="UTC")
    currency = models.CharField(max_length=3, default="USD")
    no_show_uses_session = models.BooleanField(default=False)

    class Meta:
        verbose_name = "clinic settings"
        verbose_name_plural = "clinic settings"

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        super().save(*args, **kwargs)
        read = _read_in_request.get()
        if read is not None:  # the request's own change is what it reads from now on
            read[:] = [self]

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone)

    @classmethod
    def load(cls) -> ClinicSettings:
        read = _read_in_request.get()
        if read:
            return read[0]
        obj = _FIRST.first()
        if obj is None:
            obj, _ = cls.objects.get_or_create(pk=1)
        if read is not None:
            read.append(obj)
        return obj

    @classmethod
    @contextmanager
    def read_once(cls) -> Iterator[None]:
        """Within this block (one request) the settings are read once, on first use, and the
        same object is given to every caller: a view and its action agree on the time zone,
        and nothing outlives the request (a change by a command is seen by the next one)."""
        token = _read_in_request.set([])
        try:
            yield
        finally:
            _read_in_request.reset(token)


# Read by every request that needs the time zone: compiled once per connection (compiled.py).
_FIRST = Compiled(lambda: ClinicSettings.objects.order_by("pk")[:1])
