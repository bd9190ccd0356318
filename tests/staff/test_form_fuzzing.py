"""Hypothesis fills in every form of the staff app, with values a receptionist might type and
values nobody should (empty, huge, NUL bytes, invalid UTF-8, negative and huge numbers, dates
that do not exist, other patients' ids, unknown ids), and posts them with CSRF as a signed-in
member of each role that may use the page. Whatever it sends: never a 5xx, never a redirect
off the site, and afterwards every package replays from its ledger and no invoice is
half-written (tally.clinic.consistency, what `tally verify` runs).

Each example runs in a savepoint that is rolled back, so every example starts from the same
small clinic and a failure replays. `FORMS` must name every URL of the staff app (a new page
fails `test_every_staff_url_is_fuzzed`), and every field of every form the pages render must
be one the fuzzer fills in (`test_every_rendered_form_field_is_fuzzed`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import string
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from html.parser import HTMLParser
from urllib.parse import quote_from_bytes, urlsplit

import pytest
from django.db import transaction
from django.test import Client
from django.urls import resolve, reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tally.clinic.actions import billing, catalog, visits
from tally.clinic.actions.sales import do_sell_package
from tally.clinic.consistency import verify_database
from tally.clinic.investigator.service import FIX_ACTIONS
from tally.clinic.models import Tombstone

from .conftest import today_at
from .test_url_walk import PUBLIC, RULES, staff_patterns

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
EXAMPLES = 14 if IN_CI else 10  # about 40 s per database under CI (2 cores)
READ_ONLY_EXAMPLES = 4  # pages without a form of their own: junk fields must not matter
CSRF_TOKEN = "fuzz" * 8  # a 32-character CSRF secret, sent as the cookie and as the field
ROLES = ("owner", "front_desk", "practitioner")

Strategy = st.SearchStrategy


# --- Values ---------------------------------------------------------------------------------

HOSTILE_TEXT = st.sampled_from([
    "", " ", "\x00", "a\x00b", "x" * 5000, "é" * 1001, "<script>alert(1)</script>", "'; DROP TABLE x; --",
    "\u202eevil", "😀" * 50, "\r\n", "%00", "{{ 7*7 }}", "0", "-1", "null", "[]",
    b"\xff\xfe\xc3(",  # not UTF-8: sent as raw bytes
])
HOSTILE_NUMBER = st.sampled_from([
    "", "0", "-1", "-0", "1e9", "1e999", "NaN", "nan", "inf", "-Infinity", "sNaN", "0x10", "1.5", "1,5", "١٢",
    "9" * 40, "-" + "9" * 40, "2147483648", "9223372036854775808", " 7 ", "7\x00",
])
UNKNOWN_IDS = ["999999", "0", "-1", "99999999999999999999", "9223372036854775808", "abc", "", "1.0"]


def text(max_size: int = 60) -> Strategy:
    return st.one_of(st.text(max_size=max_size), HOSTILE_TEXT)


def integers(low: int, high: int) -> Strategy:
    return st.one_of(st.integers(low, high).map(str), st.integers().map(str), HOSTILE_NUMBER)


def money() -> Strategy:
    valid = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("2000"), places=2).map(str)
    return st.one_of(valid, st.sampled_from(["0.01", "95.00", "400", "800.00", "99999999.99", "100000000",
                                             "-5", "0.001", "1e3", "1,000"]), HOSTILE_NUMBER)


def dates() -> Strategy:
    today = timezone.localdate()
    near = st.integers(-400, 400).map(lambda days: (today + dt.timedelta(days=days)).isoformat())
    return st.one_of(near, st.dates().map(dt.date.isoformat), st.sampled_from([
        "0001-01-01", "9999-12-31", "2026-02-30", "10000-01-01", "2026-13-01", "yesterday", "04/03/2026", ""]))


def times() -> Strategy:
    return st.one_of(st.times().map(lambda t: t.isoformat(timespec="minutes")),
                     st.sampled_from(["00:00", "23:59", "24:00", "12:60", "noon", "9", "09:00:00.5", ""]))


def choice(values: list[str]) -> Strategy:
    return st.one_of(st.sampled_from(values), text(20))


def boolean() -> Strategy:
    return st.sampled_from(["on", "", "true", "false", "0", "1", "yes", "no"])


def next_url() -> Strategy:
    return st.sampled_from(["", "/today/", "/patients/", "https://evil.example/", "//evil.example/x",
                            "javascript:alert(1)", "/\\evil.example", "http://testserver/today/", "\x00"])


# --- The clinic every example starts from ---------------------------------------------------


@dataclass
class World:
    ids: dict[str, list[int]]
    patient_numbers: list[str]
    users: dict[str, object]

    def id_of(self, kind: str) -> Strategy:
        """A real id of this kind (often), of another kind, or none at all."""
        own = [str(i) for i in self.ids[kind]]
        others = sorted({str(i) for k, v in self.ids.items() if k != kind for i in v})
        return st.one_of(st.sampled_from(own), st.sampled_from(others or own), st.sampled_from(UNKNOWN_IDS), text(12))

    def json_id(self, kind: str) -> Strategy:
        return st.one_of(st.sampled_from(self.ids[kind]), st.sampled_from([0, -1, 10**30, 2**63, 999999]),
                         st.sampled_from(["1", "x", None, [], {}, 1.5, True]))

    def url_id(self, kind: str) -> Strategy:
        """Path segments are digits only (the URL pattern says so)."""
        return st.one_of(st.sampled_from(self.ids[kind]),
                         st.sampled_from(sorted({i for v in self.ids.values() for i in v})),
                         st.sampled_from([999999, 2**63, 10**20]))


@pytest.fixture
def world(owner, desk, practitioner, other_practitioner, clinic, patient, acu60, acu90, ten_pack, visit,
          sold_pack, charged_visit) -> World:
    """Two patients; a ten-pack in use and a pending one; visits booked, charged, someone else's
    and a deleted one; manual and sale invoices; an inactive service and template."""
    appointment, charged_invoice, charged_line = charged_visit
    other = catalog.do_create_patient(acting_user=desk, first_name="Sam", last_name="Okafor")
    massage = catalog.do_create_service(acting_user=owner, name="Massage 45 min", duration_minutes=45,
                                        price=Decimal("70.00"))
    retired = catalog.do_create_service(acting_user=owner, name="Retired service", duration_minutes=30,
                                        price=Decimal("10.00"))
    catalog.do_update_service(acting_user=owner, service=retired, changes={"active": False})
    three_pack = catalog.do_create_package(acting_user=owner, name="3 x Massage", price=Decimal("180.00"),
                                           sessions=3, service_ids=[massage.pk], valid_days=90)
    pending, pending_invoice = do_sell_package(acting_user=desk, patient=other, package=three_pack,
                                               use_first_session=True, payment=(Decimal("50.00"), "cash"))
    theirs = visits.do_book(acting_user=desk, patient=other, service=massage, starts_at=today_at(clinic, 11),
                            practitioner=other_practitioner)
    missed = visits.do_book(acting_user=desk, patient=other, service=massage,
                            starts_at=today_at(clinic, 9, days=-3), practitioner=practitioner)
    doomed = visits.do_book(acting_user=desk, patient=patient, service=acu90, starts_at=today_at(clinic, 9, days=-7))
    visits.do_delete_appointment(acting_user=owner, appointment=doomed, reason="booked twice")
    manual = billing.do_create_invoice(acting_user=desk, patient=other, lines=[(massage, None), (acu60, None)])
    sale_invoice = sold_pack.sale_invoice
    invoices = [charged_invoice, sale_invoice, pending_invoice, manual]
    return World(
        ids={
            "appointment": [visit.pk, appointment.pk, theirs.pk, missed.pk],
            "patient": [patient.pk, other.pk],
            "invoice": [i.pk for i in invoices],
            "line": [line.pk for i in invoices for line in i.lines.all()] + [charged_line.pk],
            "package": [sold_pack.pk, pending.pk],
            "service": [acu60.pk, acu90.pk, massage.pk, retired.pk],
            "template": [ten_pack.pk, three_pack.pk],
            "staff": [owner.pk, desk.pk, practitioner.pk, other_practitioner.pk],
            "tombstone": list(Tombstone.objects.values_list("pk", flat=True)),
        },
        patient_numbers=[patient.patient_number, other.patient_number],
        users={"owner": owner, "front_desk": desk, "practitioner": practitioner},
    )


# --- What each page takes --------------------------------------------------------------------

Fields = Callable[[World], dict[str, Strategy]]


@dataclass(frozen=True)
class Form:
    post: Fields = lambda w: {}
    get: Fields = lambda w: {}
    read_only: bool = False  # the page has no form: junk is posted anyway, a few times
    anonymous: bool = False  # signing in: posted without a session


def fix_params(w: World) -> Strategy:
    params = st.fixed_dictionaries({}, optional={
        "line_id": w.json_id("line"), "tombstone_id": w.json_id("tombstone"),
        "appointment_id": w.json_id("appointment"), "service_id": w.json_id("service"),
        "change": st.one_of(st.integers(-20, 20), st.sampled_from([10**30, "2", "x", None])),
        "reason": st.one_of(st.text(max_size=20), st.none()), "override": st.booleans(),
    }).map(json.dumps)
    return st.one_of(params, st.sampled_from(["", "{}", "[]", "null", "{", '"x"', "[" * 500, '{"line_id": {}}']),
                     text(30))


def fix_fields(w: World) -> dict[str, Strategy]:
    return {"action": choice(sorted(FIX_ACTIONS)), "params": fix_params(w), "override": boolean(),
            "reason": text(), "change": integers(-20, 20), "expected_used": integers(0, 20),
            "sessions_used": integers(-2, 20)}


def visit_fields(w: World) -> dict[str, Strategy]:
    return {"reason": text(), "next": next_url()}


def chart_filters(w: World) -> dict[str, Strategy]:
    return {"tab": choice(["appointments", "invoices"]),
            "status": choice(["booked", "attended", "cancelled", "no_show", "unpaid", "paid", "void"]),
            "service": w.id_of("service"), "practitioner": w.id_of("staff"),
            "range": choice(["all", "today", "30d", "90d", "year", "custom"]), "start": dates(), "end": dates(),
            "page": integers(1, 3)}


def package_fields(w: World) -> dict[str, Strategy]:
    return {"name": text(), "price": money(), "sessions": integers(1, 20),
            "services": st.lists(w.id_of("service"), max_size=4), "valid_days": integers(1, 400),
            "active": boolean()}


def service_fields(w: World) -> dict[str, Strategy]:
    return {"name": text(), "duration_minutes": integers(1, 240), "price": money(), "active": boolean()}


def read_only() -> Form:
    return Form(read_only=True)


FORMS: dict[str, Form] = {
    "home": read_only(),
    "login": Form(post=lambda w: {"username": st.one_of(st.sampled_from(["olivia", "frank", "pat"]), text(30)),
                                  "password": st.one_of(st.just("correct horse battery staple"), text(30)),
                                  "next": next_url()}, anonymous=True),
    "logout": read_only(),
    "login_code": Form(post=lambda w: {"code": integers(0, 999999), "next": next_url()}),
    "two_factor": Form(post=lambda w: {"code": integers(0, 999999), "next": next_url(), "start": choice(["1", ""])}),
    "today": Form(get=lambda w: {"day": dates()}, read_only=True),
    "book": Form(post=lambda w: {
        "patient": st.one_of(st.sampled_from(w.patient_numbers), st.sampled_from(
            ["P-999999", "P-99999999999999999999", "P-", "p-000001", "1", "-1", "P-0"]), text(20)),
        "service": w.id_of("service"), "practitioner": w.id_of("staff"), "day": dates(), "time": times(),
        "duration_minutes": integers(1, 600)}, get=lambda w: {"day": dates(), "patient": w.id_of("patient")}),
    "reschedule": Form(post=lambda w: {"practitioner": w.id_of("staff"), "day": dates(), "time": times(),
                                       "duration_minutes": integers(1, 600)}),
    "check_in": Form(post=lambda w: {
        "charge": choice(["booked", "other", "none"]), "service": w.id_of("service"),
        "confirmed": st.one_of(st.sampled_from(["booked:", "none:"]),
                               w.id_of("service").map(lambda s: f"other:{s}"), text(20))}),
    "check_in_preview": Form(get=lambda w: {"charge": choice(["booked", "other", "none"]),
                                            "service": w.id_of("service")}, read_only=True),
    "undo_check_in": Form(post=visit_fields),
    "cancel": Form(post=visit_fields),
    "no_show": Form(post=visit_fields),
    "undo_no_show": Form(post=visit_fields),
    "undo_cancel": Form(post=visit_fields),
    "delete": Form(post=visit_fields),
    "patients": Form(get=lambda w: {"q": text(), "page": integers(1, 3)}, read_only=True),
    "patient_new": Form(post=lambda w: {"first_name": text(), "last_name": text(), "date_of_birth": dates(),
                                        "email": st.one_of(st.emails(), text(30)), "phone": text(50)}),
    "chart": Form(get=chart_filters, read_only=True),
    "sell": Form(post=lambda w: {
        "package": w.id_of("template"), "use_first_session": choice(["yes", "no"]),
        "first_session_appointment": w.id_of("appointment"), "payment_amount": money(),
        "payment_method": choice(["card", "cash", "bank transfer", "other"])}),
    "cancel_package": Form(post=lambda w: {"reason": text(), "refund_amount": money(),
                                           "refund_method": choice(["card", "cash", "bank transfer", "other"])}),
    "package_expiry": Form(post=lambda w: {"expires_on": dates()}),
    "invoice_new": Form(post=lambda w: {"service": w.id_of("service"), "visit": w.id_of("appointment")}),
    "invoice": read_only(),
    "invoice_edit": read_only(),
    "add_line": Form(post=lambda w: {"service": w.id_of("service"), "visit": w.id_of("appointment")}),
    "remove_line": Form(post=lambda w: {"reason": text()}),
    "payment": Form(post=lambda w: {"amount": money(), "method": choice(["card", "cash", "bank transfer", "other"])}),
    "refund": Form(post=lambda w: {"amount": money(), "method": choice(["card", "cash"]), "reason": text()}),
    "void": Form(post=lambda w: {"reason": text()}),
    "invoice_print": read_only(),
    "invoice_pdf": Form(read_only=True),
    "investigation": Form(get=lambda w: {"expected_used": integers(0, 20)}, read_only=True),
    "fix": Form(post=fix_fields),
    "patient_investigation": read_only(),
    "patient_fix": Form(post=fix_fields),
    "export_json": Form(get=lambda w: {"anonymous": choice(["1", "0"])}, read_only=True),
    "export_print": Form(get=lambda w: {"anonymous": choice(["1", "0"])}, read_only=True),
    "audit": Form(get=lambda w: {"severity": choice(["error", "warning", "info"]),
                                 "code": choice(["NOT_CHECKED_IN", "LEDGER_MISMATCH"]), "page": integers(1, 3),
                                 "snapshot": st.one_of(integers(1, 5), st.sampled_from(UNKNOWN_IDS))},
                  read_only=True),
    "catalog": read_only(),
    "service_new": Form(post=service_fields),
    "service_edit": Form(post=service_fields),
    "package_new": Form(post=package_fields),
    "package_edit": Form(post=package_fields),
    "staff_list": read_only(),
}

URL_KIND = {"appointment_id": "appointment", "patient_id": "patient", "invoice_id": "invoice", "line_id": "line",
            "package_id": "package", "service_id": "service", "template_id": "template"}


def allowed_roles(name: str) -> tuple[str, ...]:
    if name in PUBLIC:
        return ROLES
    return tuple(RULES[name][0].split())


# --- Sending ---------------------------------------------------------------------------------


def form_body(fields: list[tuple[str, str | bytes]]) -> bytes:
    """application/x-www-form-urlencoded, byte for byte (so invalid UTF-8 reaches the server)."""
    def part(value: str | bytes) -> str:
        raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
        return quote_from_bytes(raw, safe="")

    return "&".join(f"{part(name)}={part(value)}" for name, value in fields).encode()


@st.composite
def filled_in(draw, spec: dict[str, Strategy]) -> list[tuple[str, str | bytes]]:
    """Each field filled in (or left out, or sent twice), and now and then a field nobody asked for."""
    fields: list[tuple[str, str | bytes]] = []
    for name, strategy in spec.items():
        how = draw(st.sampled_from(["once"] * 8 + ["missing", "twice"]))
        if how == "missing":
            continue
        values = draw(strategy)
        for value in values if isinstance(values, list) else [values]:
            fields.append((name, value))
        if how == "twice":
            fields.append((name, draw(strategy) if not isinstance(values, list) else ""))
    if draw(st.integers(0, 9)) == 0:
        fields.append((draw(st.sampled_from(["id", "pk", "acting_user", "patient_id", "sessions_used"])),
                       draw(text(10))))
    return fields


@contextmanager
def rolled_back() -> Iterator[None]:
    """A savepoint undone after the example. Marked like the test case's own atomic blocks, so
    the actions' `atomic(durable=True)` runs inside it as it does inside a test."""
    block = transaction.atomic()
    block._from_testcase = True  # type: ignore[attr-defined]
    with block:
        yield
        transaction.set_rollback(True)


def signed_in_client(user) -> Client:
    client = Client(enforce_csrf_checks=True, raise_request_exception=False)
    if user is not None:
        client.force_login(user)
    client.cookies["csrftoken"] = CSRF_TOKEN
    return client


def check(response, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code}\n{response.content[:3000]!r}"
    if 300 <= response.status_code < 400:
        location = response["Location"]
        assert url_has_allowed_host_and_scheme(location, allowed_hosts={"testserver"}), \
            f"{what}: redirects off the site, to {location!r}"
    problems = verify_database()
    assert not problems, f"{what} left the database inconsistent:\n" + "\n".join(map(str, problems))


@dataclass
class Example:
    role: str
    url: str
    method: str
    fields: list[tuple[str, str | bytes]] = field(default_factory=list)
    htmx: bool = False


def examples_of(name: str, form: Form, world: World) -> Strategy:
    pattern = next(p for p in staff_patterns() if p.name == name)
    kwargs = st.fixed_dictionaries({arg: world.url_id(URL_KIND[arg]) for arg in pattern.pattern.converters})
    methods = ["POST"] + (["GET"] if form.get(world) else [])
    return st.builds(
        lambda role, kw, method, post, get, htmx: Example(
            role, reverse(f"staff:{name}", kwargs=kw), method, post if method == "POST" else get, htmx),
        st.sampled_from(allowed_roles(name)), kwargs, st.sampled_from(methods),
        filled_in(form.post(world) or {"junk": text(20), "reason": text(20)}), filled_in(form.get(world)),
        st.booleans(),
    )


# --- The tests -------------------------------------------------------------------------------


def test_every_staff_url_is_fuzzed():
    names = {p.name for p in staff_patterns()}
    assert names == set(FORMS), "give every staff URL an entry in FORMS (its fields, or read_only())"


@pytest.mark.parametrize("name", sorted(FORMS))
def test_no_form_input_makes_a_5xx_or_an_inconsistent_package(name, world):
    form = FORMS[name]
    users = world.users

    @settings(max_examples=READ_ONLY_EXAMPLES if form.read_only and not form.get(world) else EXAMPLES,
              deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large])
    @given(example=examples_of(name, form, world))
    def post_it(example: Example) -> None:
        with rolled_back():
            client = signed_in_client(None if form.anonymous else users[example.role])
            headers = {"HX-Request": "true"} if example.htmx else {}
            what = f"{example.role} {example.method} {example.url}"
            if example.method == "GET":
                response = client.get(example.url + "?" + form_body(example.fields).decode(), headers=headers)
            else:
                body = form_body([("csrfmiddlewaretoken", CSRF_TOKEN), *example.fields])
                response = client.post(example.url, body, content_type="application/x-www-form-urlencoded",
                                       headers=headers)
            check(response, what)

    post_it()


# --- Nothing rendered escapes the fuzzer ----------------------------------------------------


class FormFields(HTMLParser):
    """(method, action, field names) of every <form> in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, str, set[str]]] = []
        self._current: tuple[str, str, set[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "form":
            self._current = ((attributes.get("method") or "get").lower(), attributes.get("action") or "", set())
            self.forms.append(self._current)
        elif tag in {"input", "select", "textarea", "button"} and self._current and attributes.get("name"):
            self._current[2].add(attributes["name"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def test_every_rendered_form_field_is_fuzzed(world, owner_client):
    """Every page (as the owner, who sees every button), every form on it: its target is in
    FORMS and each of its fields is one the fuzzer fills in."""
    seen = 0
    ids = {kind: values[0] for kind, values in world.ids.items()}
    for pattern in staff_patterns():
        if pattern.name in {"logout", "invoice_pdf", "export_json"}:
            continue
        kwargs = {arg: ids[URL_KIND[arg]] for arg in pattern.pattern.converters}
        url = reverse(f"staff:{pattern.name}", kwargs=kwargs)
        client = Client() if pattern.name in {"login", "login_code"} else owner_client
        response = client.get(url, follow=True)
        page = FormFields()
        page.feed(response.content.decode())
        for method, action, names in page.forms:
            target = resolve(urlsplit(action).path or response.request["PATH_INFO"]).url_name
            form = FORMS[target]
            known = set(form.post(world) if method == "post" else form.get(world)) | {"csrfmiddlewaretoken"}
            assert names <= known, f"{pattern.name}: the {method} form to {target} has unfuzzed {names - known}"
            seen += 1
    assert seen >= 15, "the walk found too few forms to be checking anything"


def test_the_fuzzer_sends_bytes_that_are_not_utf8():
    assert form_body([("a", b"\xff"), ("b", "é\x00")]) == b"a=%FF&b=%C3%A9%00"
    assert set(CSRF_TOKEN) <= set(string.ascii_letters + string.digits) and len(CSRF_TOKEN) == 32


# --- What the fuzzer found (each was a 500, or worse) ----------------------------------------


def test_a_visit_action_never_redirects_off_the_site(desk_client, visit):
    response = desk_client.post(reverse("staff:cancel", args=[visit.pk]), {"next": "https://evil.example/"})
    assert response.status_code == 302
    assert response["Location"].startswith("/today/?day=")


def test_a_schedule_day_far_from_any_clinic_shows_today(desk_client):
    for day in ["9999-12-31", "0001-01-01"]:
        assert desk_client.get(reverse("staff:today"), {"day": day}).status_code == 200


def test_chart_filters_with_dates_no_clinic_has_are_refused_not_a_500(desk_client, patient):
    response = desk_client.get(reverse("staff:chart", args=[patient.pk]),
                               {"range": "custom", "start": "0001-01-01", "end": "9999-12-31"})
    assert response.status_code == 200


def test_a_package_template_with_an_impossible_service_id_is_a_form_error(owner_client, ten_pack):
    response = owner_client.post(reverse("staff:package_edit", args=[ten_pack.pk]), {
        "name": "10 x", "price": "800", "sessions": "10", "services": ["99999999999999999999"]})
    assert response.status_code == 422
    assert "services" in response.context["form"].errors
