"""Every read of patient data is audited (SPEC "Who uses it"; security issue item 5).

Walks every URL pattern of the API (/api/v1/) and of the staff app. Each one is classified
below, so a new URL fails `test_every_*_url_is_classified` until someone decides whether it
shows patient data. For each that does: anonymous is refused (401 / sign-in redirect), and
a signed-in staff member's GET writes audit events naming them, their role, their address,
the patient, and the time in UTC. Writes: every action's own event is asserted per action
in tests/clinic (helpers.writes_one_audit_event, e.g. test_actions_billing.py); here only
that a write through the API carries the caller's role and address.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tally.api.api import api
from tally.clinic.audit import verify_chain
from tally.clinic.models import AuditEvent, ClinicAuditSnapshot, Staff

from .conftest import IP, api_client, events_after, last_event_id, staff_client

pytestmark = pytest.mark.django_db

# ------------------------------------------------------------------ the API

# operation name -> query string; each returns patient data and must audit who read it.
API_PATIENT_READS = {
    "list_patients": "",
    "get_patient": "",
    "list_patient_packages": "",
    "get_patient_package": "",
    "get_ledger": "",
    "day_schedule": "",
    "get_appointment": "",
    "patient_appointments": "",
    "get_invoice": "",
    "patient_invoices": "",
    "package_investigation": "",
    "patient_investigation": "",
    "audit_packages": "?min_severity=info",
    "audit_log": "",
}
API_OWNER_ONLY = {"audit_log"}
# GETs without patient data: the caller, staff, clinic settings, the catalog.
API_OTHER_READS = {"me", "list_staff", "get_clinic", "list_services", "list_packages"}
# Not operations: the API's documentation.
API_DOCS = {"api-root", "openapi-json", "openapi-view"}


def api_operations() -> dict[str, tuple[str, set[str]]]:
    """operation name -> (path under /api/v1, its methods), from the routers themselves."""
    operations: dict[str, tuple[str, set[str]]] = {}
    for _, router in api._routers:
        for path, path_view in router.path_operations.items():
            for operation in path_view.operations:
                name = operation.view_func.__name__
                _, methods = operations.get(name, (path, set()))
                operations[name] = (path, methods | set(operation.methods))
    return operations


def api_pattern_names() -> set[str]:
    for entry in get_resolver().url_patterns:
        if isinstance(entry, URLResolver) and entry.namespace == "api-v1":
            return {p.name for p in entry.url_patterns if isinstance(p, URLPattern) and p.name}
    raise AssertionError("the API is not mounted")


def test_every_api_url_is_classified():
    operations = api_operations()
    assert api_pattern_names() - API_DOCS <= set(operations), "an API URL that is no operation"
    gets = {name for name, (_, methods) in operations.items() if "GET" in methods}
    assert gets == set(API_PATIENT_READS) | API_OTHER_READS, \
        "classify every GET of the API: API_PATIENT_READS (audited) or API_OTHER_READS"


# ------------------------------------------------------------------ the site's root

# The walks below cover the API and the staff app; the admin is kept free of patient data.
# Two-factor devices and groups are not there (tests/security/test_roles.py), axes' records read-only.
ADMIN_MODELS = {"axes.AccessAttempt", "axes.AccessFailureLog", "axes.AccessLog", "clinic.Package",
                "clinic.Service", "clinic.Staff"}


def test_every_url_of_the_site_is_in_a_walked_or_patient_free_part():
    """A URL mounted beside these three would escape both walks unclassified."""
    roots = {(str(entry.pattern), getattr(entry, "namespace", None)) for entry in get_resolver().url_patterns}
    assert roots == {("admin/", "admin"), ("api/v1/", "api-v1"), ("", "staff")}


def test_the_admin_shows_no_patient_data():
    """Its pages are not audited as reads: a patient, visit, invoice or package of a patient
    registered there would be read without a trace."""
    from django.contrib import admin

    assert {model._meta.label for model in admin.site._registry} == ADMIN_MODELS


def api_url(name: str, h) -> str:
    path, _ = api_operations()[name]
    ids = {"patient_id": h.patient.pk, "patient_package_id": h.package.pk, "appointment_id": h.visit.pk,
           "invoice_id": h.invoice.pk}
    return "/api/v1" + path.format(**ids) + API_PATIENT_READS[name]


def assert_audited(new: list[AuditEvent], user: Staff, patient_id: int, what: str) -> None:
    assert new, f"{what}: no audit event"
    for event in new:
        assert (event.actor_id, event.role, event.ip) == (user.pk, user.role, IP), what
        assert event.at.utcoffset() == dt.timedelta(0), what
    assert patient_id in {e.patient_id for e in new}, f"{what}: no event names the patient"


@pytest.mark.parametrize("name", sorted(API_PATIENT_READS))
def test_api_patient_reads_refuse_anonymous_and_audit_the_reader(name, history, desk, owner):
    url = api_url(name, history)
    before = last_event_id()
    response = api_client(None).get(url)
    assert response.status_code == 401, name
    assert events_after(before) == []
    reader = owner if name in API_OWNER_ONLY else desk
    before = last_event_id()
    response = api_client(reader).get(url)
    assert response.status_code == 200, (name, response.content[:300])
    assert_audited(events_after(before), reader, history.patient.pk, name)


@pytest.mark.parametrize("name", sorted(API_PATIENT_READS))
def test_a_head_of_an_api_patient_read_shows_nothing_and_writes_no_read(name, history, desk, owner):
    """HEAD answers as GET does (README, additions) but without the body: no patient data was
    shown, so there is no read to audit."""
    url = api_url(name, history)
    reader = owner if name in API_OWNER_ONLY else desk
    client = api_client(reader)
    before, snapshots = last_event_id(), ClinicAuditSnapshot.objects.count()
    response = client.head(url)
    assert response.status_code == 200, (name, response.content[:300])
    assert response.content == b"" and int(response["Content-Length"]) > 0
    assert [e.action for e in events_after(before)] == [], name
    assert ClinicAuditSnapshot.objects.count() == snapshots, f"{name}: a HEAD kept a clinic audit run"
    assert client.get(url).status_code == 200
    assert events_after(before), f"{name}: the GET after it is still audited"


@pytest.mark.parametrize("name", sorted(API_OTHER_READS))
def test_api_reads_without_patient_data_refuse_anonymous_and_write_nothing(name, history, desk):
    url = "/api/v1" + api_operations()[name][0]
    assert api_client(None).get(url).status_code == 401
    before = last_event_id()
    assert api_client(desk).get(url).status_code == 200
    assert events_after(before) == []


def test_a_refused_or_missing_read_writes_nothing(history, practitioner, desk):
    before = last_event_id()
    assert api_client(desk).get("/api/v1/patients/999999").status_code == 404
    assert api_client(desk).get("/api/v1/audit-log").status_code == 403
    assert events_after(before) == []


def test_a_list_writes_one_event_per_patient_in_one_insert(desk, clinic):
    from tally.clinic.actions.catalog import do_create_patient

    patients = [do_create_patient(acting_user=desk, first_name=f"P{i}", last_name="Lee") for i in range(3)]
    client = api_client(desk)
    before = last_event_id()
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/api/v1/patients", {"limit": 2}).status_code == 200
    inserts = [q for q in queries if q["sql"].startswith('INSERT INTO "clinic_auditevent"')]
    assert len(inserts) == 1
    new = events_after(before)
    assert [e.patient_id for e in new] == [p.pk for p in patients[:2]]  # the page, not the whole list
    assert {e.action for e in new} == {"patient.list"}


def test_a_search_with_no_result_still_leaves_a_trace(desk, clinic):
    before = last_event_id()
    assert api_client(desk).get("/api/v1/patients", {"q": "Nobody"}).json()["items"] == []
    (event,) = events_after(before)
    assert (event.action, event.patient_id, event.after) == ("patient.list", None, {"q": "Nobody"})


def test_the_day_schedule_names_each_patient_shown(history, desk, practitioner, other_practitioner):
    before = last_event_id()
    items = api_client(desk).get("/api/v1/appointments").json()["items"]
    new = events_after(before)
    assert [(e.object_type, e.object_id, e.patient_id) for e in new] == \
        [("appointment", str(i["id"]), i["patient_id"]) for i in items]
    before = last_event_id()  # a colleague sees none of Pat's visits: one event, no patient
    assert api_client(other_practitioner).get("/api/v1/appointments").json()["items"] == []
    (event,) = events_after(before)
    assert (event.patient_id, event.role) == (None, "practitioner")


def test_api_writes_carry_the_callers_role_and_address(desk, clinic):
    before = last_event_id()
    response = api_client(desk).post("/api/v1/patients", {"first_name": "Ana", "last_name": "Ruiz"},
                                     content_type="application/json")
    assert response.status_code == 201
    (event,) = events_after(before)
    assert (event.action, event.actor_id, event.role, event.ip, event.patient_id) == \
        ("patient.create", desk.pk, "front_desk", IP, response.json()["id"])


# ------------------------------------------------------------------ the staff pages

# url name -> (query string, HTMX headers); each shows patient data and must audit who saw it.
STAFF_PATIENT_PAGES = {
    "today": "",
    "book": "?patient={patient_id}",  # with a patient chosen; without one it shows none
    "reschedule": "",
    "check_in": "",
    "check_in_preview": "",
    "undo_check_in": "",
    "cancel": "",
    "no_show": "",
    "undo_no_show": "",
    "undo_cancel": "",
    "delete": "",
    "patients": "",
    "chart": "",
    "sell": "",
    "cancel_package": "",
    "package_expiry": "",
    "invoice_new": "",
    "invoice": "",
    "invoice_edit": "",
    "remove_line": "",
    "payment": "",
    "refund": "",
    "void": "",
    "invoice_print": "",
    "invoice_pdf": "",
    "investigation": "",
    "patient_investigation": "",
    "export_json": "",
    "export_print": "",
    "audit": "?severity=info",
}
STAFF_OWNER_ONLY = {"delete", "package_expiry"}
# A GET here redirects and shows nothing (the action is a POST).
STAFF_REDIRECTS = {"home", "add_line", "fix", "patient_fix"}
# No patient data: registration form, catalog, staff, one's own two-factor setup.
STAFF_OTHER_PAGES = {"patient_new", "catalog", "service_new", "service_edit", "package_new", "package_edit",
                     "staff_list", "two_factor"}
STAFF_PUBLIC = {"login", "logout", "login_code"}  # signing in: tests/security


def staff_patterns() -> list[URLPattern]:
    for entry in get_resolver().url_patterns:
        if isinstance(entry, URLResolver) and entry.namespace == "staff":
            return [p for p in entry.url_patterns if isinstance(p, URLPattern)]
    raise AssertionError("the staff app is not mounted")


def test_every_staff_url_is_classified():
    names = {p.name for p in staff_patterns()}
    classified = set(STAFF_PATIENT_PAGES) | STAFF_REDIRECTS | STAFF_OTHER_PAGES | STAFF_PUBLIC
    assert names == classified, "classify every staff URL: STAFF_PATIENT_PAGES (audited) or another set"


def staff_url(name: str, h, acu60, ten_pack) -> str:
    ids = {"appointment_id": h.visit.pk, "patient_id": h.patient.pk, "invoice_id": h.invoice.pk,
           "line_id": h.line.pk, "package_id": h.package.pk, "service_id": acu60.pk, "template_id": ten_pack.pk}
    pattern = next(p for p in staff_patterns() if p.name == name)
    url = reverse(f"staff:{name}", kwargs={k: ids[k] for k in pattern.pattern.converters})
    return url + STAFF_PATIENT_PAGES.get(name, "").format(**ids)


def test_anonymous_is_sent_to_sign_in_from_every_staff_page(history, acu60, ten_pack):
    from django.test import Client

    before = last_event_id()
    for name in {p.name for p in staff_patterns()} - STAFF_PUBLIC:
        response = Client(REMOTE_ADDR=IP).get(staff_url(name, history, acu60, ten_pack))
        assert response.status_code == 302 and response["Location"].startswith("/login/"), name
    assert events_after(before) == []


@pytest.mark.parametrize("name", sorted(STAFF_PATIENT_PAGES))
def test_staff_pages_with_patient_data_audit_the_reader(name, history, acu60, ten_pack, desk, owner):
    reader = owner if name in STAFF_OWNER_ONLY else desk
    before = last_event_id()
    response = staff_client(reader).get(staff_url(name, history, acu60, ten_pack))
    assert response.status_code == 200, name
    new = events_after(before)
    assert_audited(new, reader, history.patient.pk, name)
    assert all(e.after and e.after.get("page") == name for e in new)


@pytest.mark.parametrize("name", sorted(STAFF_PATIENT_PAGES))
def test_a_head_of_a_staff_page_with_patient_data_writes_no_read(name, history, acu60, ten_pack, desk, owner):
    reader = owner if name in STAFF_OWNER_ONLY else desk
    client = staff_client(reader)
    url = staff_url(name, history, acu60, ten_pack)
    before, snapshots = last_event_id(), ClinicAuditSnapshot.objects.count()
    response = client.head(url)
    assert response.status_code == 200, name
    assert response.content == b""
    assert [e.action for e in events_after(before)] == [], name
    assert ClinicAuditSnapshot.objects.count() == snapshots, f"{name}: a HEAD kept a clinic audit run"
    assert client.get(url).status_code == 200
    assert events_after(before), f"{name}: the GET after it is still audited"


@pytest.mark.parametrize("name", sorted(STAFF_REDIRECTS | STAFF_OTHER_PAGES))
def test_staff_pages_without_patient_data_write_nothing(name, history, acu60, ten_pack, owner):
    before = last_event_id()
    response = staff_client(owner).get(staff_url(name, history, acu60, ten_pack))
    assert response.status_code in (200, 302), name
    assert events_after(before) == []


def test_the_charts_htmx_tabs_are_audited_too(history, practitioner):
    client = staff_client(practitioner)
    url = reverse("staff:chart", args=[history.patient.pk]) + "?tab=invoices"
    before = last_event_id()
    response = client.get(url, headers={"HX-Request": "true", "HX-Target": "chart-tab"})
    assert response.status_code == 200
    (event,) = events_after(before)
    assert (event.action, event.role, event.patient_id, event.after["tab"]) == \
        ("patient.view_chart", "practitioner", history.patient.pk, "invoices")


def test_a_form_post_that_succeeds_records_the_write_not_a_read(history, desk):
    before = last_event_id()
    response = staff_client(desk).post(reverse("staff:cancel", args=[history.visit.pk]), {"reason": "flu"})
    assert response.status_code == 302
    assert [e.action for e in events_after(before)] == ["appointment.cancel"]
    assert verify_chain().intact
