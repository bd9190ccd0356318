"""Every URL of the staff app, as anonymous, practitioner, front desk and owner: the right
status for each role and never a 500."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tally.clinic.consistency import verify_database
from tally.clinic.models import (
    Appointment,
    Invoice,
    InvoiceLine,
    Package,
    PackageLedgerEntry,
    PatientPackage,
    Service,
)

from .conftest import signed_in

ANY = "owner front_desk practitioner"
DESK = "owner front_desk"
OWNER = "owner"

# url name -> (roles allowed, status they get on GET)
RULES = {
    "home": (ANY, 302),
    "today": (ANY, 200),
    "book": (DESK, 200),
    "reschedule": (DESK, 200),
    "check_in": (ANY, 200),
    "check_in_preview": (ANY, 200),
    "undo_check_in": (ANY, 200),
    "cancel": (DESK, 200),
    "no_show": (ANY, 200),
    "undo_no_show": (ANY, 200),
    "undo_cancel": (DESK, 200),
    "delete": (OWNER, 200),
    "patients": (ANY, 200),
    "patient_new": (DESK, 200),
    "chart": (ANY, 200),
    "sell": (DESK, 200),
    "cancel_package": (DESK, 200),
    "package_expiry": (OWNER, 200),
    "invoice_new": (DESK, 200),
    "invoice": (ANY, 200),
    "invoice_edit": (DESK, 200),
    "add_line": (DESK, 302),
    "remove_line": (DESK, 200),
    "payment": (DESK, 200),
    "refund": (DESK, 200),
    "void": (DESK, 200),
    "invoice_print": (ANY, 200),
    "invoice_pdf": (ANY, 200),
    "investigation": (DESK, 200),
    "audit": (DESK, 200),
    "fix": (DESK, 302),
    "patient_investigation": (DESK, 200),
    "patient_fix": (DESK, 302),
    "export_json": (DESK, 200),
    "export_print": (DESK, 200),
    "catalog": (OWNER, 200),
    "service_new": (OWNER, 200),
    "service_edit": (OWNER, 200),
    "package_new": (OWNER, 200),
    "package_edit": (OWNER, 200),
    "staff_list": (OWNER, 200),
    "two_factor": (ANY, 200),
}
PUBLIC = {"login", "logout", "login_code"}  # tested in test_auth.py and tests/security


def staff_patterns() -> list[URLPattern]:
    resolver = get_resolver()
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver) and entry.namespace == "staff":
            return [p for p in entry.url_patterns if isinstance(p, URLPattern)]
    raise AssertionError("the staff app is not mounted")


def test_every_pattern_has_a_rule():
    names = {p.name for p in staff_patterns()}
    assert names - PUBLIC == set(RULES), "classify every new staff URL in RULES"


@pytest.fixture
def ids(visit, charged_visit, sold_pack, ten_pack, acu60, patient):
    _, invoice, line = charged_visit
    return {
        "appointment_id": visit.pk,
        "patient_id": patient.pk,
        "invoice_id": invoice.pk,
        "line_id": line.pk,
        "package_id": sold_pack.pk,
        "service_id": acu60.pk,
        "template_id": Package.objects.get(pk=ten_pack.pk).pk,
    }


def urls_to_walk(ids: dict[str, int]) -> list[tuple[str, str]]:
    walked = []
    for pattern in staff_patterns():
        if pattern.name in PUBLIC:
            continue
        kwargs = {name: ids[name] for name in pattern.pattern.converters}
        walked.append((pattern.name, reverse(f"staff:{pattern.name}", kwargs=kwargs)))
    return walked


def test_anonymous_is_sent_to_sign_in_everywhere(ids):
    client = Client()
    for name, url in urls_to_walk(ids):
        response = client.get(url)
        assert response.status_code == 302, name
        assert response["Location"].startswith("/login/"), name


@pytest.mark.parametrize("role", ["practitioner", "front_desk", "owner"])
def test_each_role_gets_its_pages_and_a_403_elsewhere(role, ids, owner, desk, practitioner, clinic):
    user = {"owner": owner, "front_desk": desk, "practitioner": practitioner}[role]
    client = signed_in(user)
    for name, url in urls_to_walk(ids):
        allowed, status = RULES[name]
        response = client.get(url)
        expected = status if role in allowed.split() else 403
        assert response.status_code == expected, f"{role} {name} {url}: {response.status_code}"


def test_unknown_ids_are_404_pages_not_500(desk_client, ids):
    bad = dict.fromkeys(ids, 999_999)
    for name, url in urls_to_walk(bad):
        if "<" not in str(next(p for p in staff_patterns() if p.name == name).pattern):
            continue
        response = desk_client.get(url)
        assert response.status_code in (403, 404), f"{name}: {response.status_code}"


@pytest.mark.parametrize("role", ["practitioner", "front_desk"])
def test_a_crafted_post_to_a_page_of_another_role_is_refused_and_changes_nothing(role, ids, owner, desk,
                                                                                 practitioner, clinic):
    """The pages a role does not see are not reachable by POST either (a form copied from
    another role's page, or a script): 403, and no row of the clinic changes."""
    def state():
        return [list(model.objects.order_by("pk").values()) for model in
                (Appointment, Invoice, InvoiceLine, PackageLedgerEntry, PatientPackage, Package, Service)]

    user = {"front_desk": desk, "practitioner": practitioner}[role]
    client = signed_in(user)
    before = state()
    refused = 0
    for name, url in urls_to_walk(ids):
        allowed, _ = RULES[name]
        if role in allowed.split():
            continue
        body = {"reason": "crafted", "action": "adjust", "params": "{}", "change": "5", "expires_on": "2030-01-01",
                "name": "X", "price": "1.00", "duration_minutes": "30", "sessions": "3", "services": [ids["service_id"]],
                "amount": "10.00", "method": "cash", "service": ids["service_id"], "charge": "booked"}
        response = client.post(url, body)
        assert response.status_code == 403, f"{role} POST {name}: {response.status_code}"
        refused += 1
    assert refused > 0
    assert state() == before
    assert verify_database() == []
