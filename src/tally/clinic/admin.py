"""Django admin for the catalog and staff (owner's back office). Counts are never edited here."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from .models import Package, Service, Staff


@admin.register(Service)
class ServiceAdmin(admin.ModelAdmin):
    list_display = ("name", "duration_minutes", "price", "active")
    list_filter = ("active",)
    search_fields = ("name",)


@admin.register(Package)
class PackageAdmin(admin.ModelAdmin):
    list_display = ("name", "price", "sessions", "valid_days", "active")
    list_filter = ("active",)
    filter_horizontal = ("services",)
    search_fields = ("name",)


@admin.register(Staff)
class StaffAdmin(UserAdmin):
    list_display = ("username", "first_name", "last_name", "role", "is_active")
    list_filter = ("role", "is_active")
    fieldsets = (*UserAdmin.fieldsets, ("Clinic", {"fields": ("role",)}))
    add_fieldsets = (*UserAdmin.add_fieldsets, ("Clinic", {"fields": ("role",)}))
