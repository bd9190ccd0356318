"""Changes made in the Django admin (catalog and staff) are in the audit log like any other."""

from __future__ import annotations

import pytest
from django.test import Client

from tally.clinic.audit import verify_chain
from tally.clinic.models import AuditEvent, Service

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(owner, clinic, settings) -> Client:
    settings.TALLY_OWNER_2FA_REQUIRED = False  # the admin's two-factor gate is tested in tests/security
    owner.is_staff = owner.is_superuser = True  # as `tally createuser --role owner` makes them
    owner.save()
    client = Client(REMOTE_ADDR="203.0.113.9")
    client.force_login(owner)
    return client


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def test_adding_and_changing_in_the_admin_is_audited(admin_client, owner, acu60):
    response = admin_client.post("/admin/clinic/service/add/", {
        "name": "Cupping 30 min", "duration_minutes": "30", "price": "45.00", "active": "on"})
    assert response.status_code == 302, response.content
    cupping = Service.objects.get(name="Cupping 30 min")
    [added] = events("admin.service.add")
    assert (added.actor_id, added.role, added.object_id, added.ip) == (owner.pk, "owner", str(cupping.pk), "203.0.113.9")
    assert added.after["price"] == "45.00"

    response = admin_client.post(f"/admin/clinic/service/{acu60.pk}/change/", {
        "name": acu60.name, "duration_minutes": str(acu60.duration_minutes), "price": "99.00", "active": "on"})
    assert response.status_code == 302, response.content
    [changed] = events("admin.service.change")
    assert changed.before["price"] == "95.00" and changed.after["price"] == "99.00"
    assert changed.object_id == str(acu60.pk)

    assert verify_chain().intact


def test_nothing_is_deleted_in_the_admin(admin_client, owner, acu60, ten_pack, desk):
    """A service is the row packages cover: deleting it would silently drop it from every
    package (the many-to-many rows go with it). Services, packages and staff are deactivated."""
    for path in (f"/admin/clinic/service/{acu60.pk}/delete/", f"/admin/clinic/package/{ten_pack.pk}/delete/",
                 f"/admin/clinic/staff/{desk.pk}/delete/"):
        assert admin_client.post(path, {"post": "yes"}).status_code == 403, path
    admin_client.post("/admin/clinic/service/", {"action": "delete_selected", "_selected_action": [acu60.pk],
                                                 "post": "yes"})
    assert Service.objects.filter(pk=acu60.pk).exists()
    assert list(ten_pack.services.all()) == [acu60]


def test_a_role_changed_in_the_admin_is_audited_with_before_and_after(admin_client, desk):
    page = admin_client.get(f"/admin/clinic/staff/{desk.pk}/change/")
    form = page.context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None and name != "password"}
    data.update({"role": "owner", "date_joined_0": "2026-01-01", "date_joined_1": "09:00:00",
                 "last_login_0": "", "last_login_1": "", "groups": [], "user_permissions": [], "is_active": "on"})
    response = admin_client.post(f"/admin/clinic/staff/{desk.pk}/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    [changed] = events("admin.staff.change")
    assert (changed.before["role"], changed.after["role"]) == ("front_desk", "owner")
    assert "password" not in changed.before and "password" not in changed.after
