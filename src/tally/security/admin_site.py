"""The Django admin is the owner's back office (SPEC: owner (admin)): it opens for active
staff with admin status (`is_staff`, which `tally createuser --role owner` gives) who hold
the owner role now. Django's own check is `is_staff` alone, which a change of role leaves as
it was: an owner demoted in the admin kept the whole admin, and could give the role back."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest


class OwnersAdminSite(admin.AdminSite):
    def has_permission(self, request: HttpRequest) -> bool:
        # Imported here, not at the top: the app registry imports this module before any model.
        from tally.clinic.models.staff import Role

        return super().has_permission(request) and getattr(request.user, "role", None) == Role.OWNER


class OwnersAdminConfig(AdminConfig):
    """django.contrib.admin, with OwnersAdminSite as `admin.site`."""

    default_site = "tally.security.admin_site.OwnersAdminSite"
