"""Django admin for the catalog and staff (owner's back office). Counts are never edited here.

Every change made here is a change like any other: it goes into the hash-chained audit log
(who, role, when, from where, before and after), in the admin's own transaction, beside
Django's LogEntry. The events are `admin.<model>.add|change`. Nothing is deleted here."""

from __future__ import annotations

import contextlib
from typing import Any, cast

from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin
from django.contrib.admin.exceptions import NotRegistered
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import Group
from django.db import models
from django.http import HttpRequest
from django_otp.plugins.otp_totp.models import TOTPDevice

from .audit import record, request_ip, snapshot
from .models import Package, Service, Staff

# Registered by their apps (loaded before this one), and taken out again. django-otp's devices:
# every staff member's two-factor secret (the key, a QR code of it) and adding, changing or
# deleting devices, none of it audited; two-factor is set up and turned off on the staff site
# with a code, and reset by `tally resettwofactor`, all audited. Groups: unused by Tally (the
# role decides), and granting permissions through one would not be audited either.
for _model in (TOTPDevice, Group):
    with contextlib.suppress(NotRegistered):
        admin.site.unregister(_model)


def read_only(registered: type[admin.ModelAdmin]) -> type[admin.ModelAdmin]:
    """An app's admin that shows its rows and changes none: no delete, no change, no actions."""

    class ReadOnly(registered):  # type: ignore[valid-type, misc]  # a class known only at run time
        actions: list = []

        def has_change_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
            return False

        def has_delete_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
            return False

    ReadOnly.__name__ = ReadOnly.__qualname__ = f"ReadOnly{registered.__name__}"
    return ReadOnly


# django-axes' records of sign-ins, failures and pauses: read-only. Deleting one (or its
# clean-up action) went unaudited, and erased the trace of someone's guessing or lifted the
# pause on another account so the guessing could go on.
for _model in (AccessAttempt, AccessLog, AccessFailureLog):
    if admin.site.is_registered(_model):
        _registered = type(admin.site.get_model_admin(_model))
        admin.site.unregister(_model)
        admin.site.register(_model, read_only(_registered))

_BEFORE = "_tally_audit_before"


class AuditedAdmin(admin.ModelAdmin):
    """Records each add and change in the audit log. Django calls log_addition and log_change
    after the object and its many-to-many fields are saved, so `after` is whole.

    Nothing is deleted here: a service or package is the row that sold packages and invoice
    lines point at (deleting a service would silently drop it from every package that covers
    it), and staff are deactivated. Untick "active" instead."""

    def has_delete_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Any:
        obj = super().get_object(request, object_id, from_field)
        if obj is not None and request.method == "POST":
            setattr(request, _BEFORE, snapshot(obj))  # before the form changes it
        return obj

    def log_addition(self, request: HttpRequest, obj: models.Model, message: Any) -> Any:
        self._record(request, "add", obj, after=snapshot(obj))
        return super().log_addition(request, obj, message)

    def log_change(self, request: HttpRequest, obj: models.Model, message: Any) -> Any:
        self._record(request, "change", obj, before=getattr(request, _BEFORE, None),
                     after=snapshot(obj) | {"changed": message} if message else snapshot(obj))
        return super().log_change(request, obj, message)

    def _record(self, request: HttpRequest, verb: str, obj: models.Model, **change: Any) -> None:
        with request_ip(request):
            record(f"admin.{self.model._meta.model_name}.{verb}", actor=cast(Staff, request.user), obj=obj, **change)


@admin.register(Service)
class ServiceAdmin(AuditedAdmin):
    list_display = ("name", "duration_minutes", "price", "active")
    list_filter = ("active",)
    search_fields = ("name",)


@admin.register(Package)
class PackageAdmin(AuditedAdmin):
    list_display = ("name", "price", "sessions", "valid_days", "active")
    list_filter = ("active",)
    filter_horizontal = ("services",)
    search_fields = ("name",)


@admin.register(Staff)
class StaffAdmin(AuditedAdmin, UserAdmin):
    list_display = ("username", "first_name", "last_name", "role", "is_active")
    list_filter = ("role", "is_active")
    fieldsets = (*(UserAdmin.fieldsets or ()), ("Clinic", {"fields": ("role",)}))
    add_fieldsets = (*UserAdmin.add_fieldsets, ("Clinic", {"fields": ("role",)}))
