"""The edges of HTTP that clients and proxies send without thinking: HEAD, stray methods,
bodies that are JSON only nearly, repeated query parameters. Each gets a clear 4xx in the
error shape, or the answer RFC 9110 asks for, never a 500 and never a partial write."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from tally.clinic.models import Patient, Staff

from ..clinic.helpers import visit
from .conftest import assert_error

PASSWORD = "correct horse battery staple"


@pytest.mark.parametrize("path", ["/me", "/patients", "/patients/{patient_id}", "/staff"])
def test_head_on_a_get_endpoint_answers_like_get_without_a_body(desk_api, patient, path):
    path = path.format(patient_id=patient.pk)
    got = desk_api.get(path)
    head = desk_api._send("HEAD", path)
    assert head.status_code == 200, head.content
    assert head["Content-Type"] == got["Content-Type"]
    assert head["Content-Length"] == str(len(got.content))
    assert head.content == b""


def test_head_refuses_like_get_would(anonymous, desk_api):
    assert anonymous._send("HEAD", "/me").status_code == 401
    assert desk_api._send("HEAD", "/patients/9223372036854775807").status_code == 404


def test_head_on_an_endpoint_without_get_is_a_405_that_names_the_allowed_methods(anonymous):
    response = anonymous._send("HEAD", "/auth/token")
    assert response.status_code == 405
    assert response["Allow"] == "POST"


def test_a_405_lists_head_wherever_get_is_allowed(desk_api):
    response = desk_api.delete("/patients")
    assert_error(response, 405, "method_not_allowed")
    assert {method.strip() for method in response["Allow"].split(",")} == {"GET", "HEAD", "POST"}


@pytest.mark.parametrize("raw", [
    '{"first_name": "Ana", "last_name": "Silva", "first_name": "Eve"}',
    '{"first_name": "Ana", "last_name": "Silva", "last_name": "Silva"}',
])
def test_a_body_that_names_a_key_twice_is_refused_and_writes_nothing(desk_api, clinic, raw):
    """Which of the two values counts differs between parsers (a proxy, a WAF, this one):
    a request that means two things is refused, not read as the last one."""
    error = assert_error(desk_api.post("/patients", raw=raw), 422, "validation_error", "body")
    assert "twice" in error["message"]
    assert not Patient.objects.exists()


def test_a_nested_key_given_twice_is_refused_too(desk_api, patient):
    raw = '{"package_id": 1, "use_first_session": false, "payment": {"amount": "1.00", "amount": "900.00", "method": "card"}}'
    assert_error(desk_api.post(f"/patients/{patient.pk}/packages", raw=raw), 422, "validation_error", "body")


@pytest.mark.parametrize("query", ["limit=1&limit=2", "q=ana&q=eve", "cursor=a&cursor=b"])
def test_a_query_parameter_given_twice_is_refused(desk_api, patient, query):
    name = query.split("=", 1)[0]
    response = desk_api.client.get(f"/api/v1/patients?{query}", headers=desk_api.headers)
    error = assert_error(response, 422, "validation_error", name)
    assert "once" in error["fields"][name]


@pytest.mark.parametrize("path", ["/patients/{patient_id}/appointments?from=&to=&status=",
                                  "/patients/{patient_id}/invoices?from=&to=&status=",
                                  "/audit-log?patient_id=&from=&to=",
                                  "/patients?q=&limit=&cursor="])
def test_a_query_parameter_left_empty_is_as_if_not_given(owner_api, owner, patient, acu60, path):
    """API.md writes these lists as `?from=&to=&status=`: a filter form left blank (All Time,
    any status) sends every parameter empty, and means no filter, as `q=` always did."""
    visit(owner, patient, acu60, dt.datetime(2026, 1, 5, 15, tzinfo=dt.UTC))  # a visit, its invoice, audit events
    url = "/api/v1" + path.format(patient_id=patient.pk)
    unfiltered = [item["id"] for item in owner_api.client.get(url.split("?")[0], headers=owner_api.headers)
                  .json()["items"]]
    blank = owner_api.client.get(url, headers=owner_api.headers)
    assert blank.status_code == 200, blank.content
    assert unfiltered
    # The audit log has grown by the first read's own event since: the same list, from its start.
    assert [item["id"] for item in blank.json()["items"]][:len(unfiltered)] == unfiltered


def test_the_openapi_document_says_an_empty_optional_query_parameter_is_allowed(anonymous):
    """What a client (or a fuzzer judging answers) reads: `allowEmptyValue` on each optional
    query parameter, none on a required one (an empty `reason` is still "required")."""
    document = anonymous.get("/openapi.json").json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query":
                    expected = None if parameter.get("required") else True
                    assert parameter.get("allowEmptyValue") is expected, (method, path, parameter["name"])


def test_an_empty_required_query_parameter_is_still_required(owner_api, patient, acu60, owner):
    from tally.clinic.actions import visits

    appointment = visits.do_book(acting_user=owner, patient=patient, service=acu60,
                                 starts_at=dt.datetime(2026, 1, 5, 15, tzinfo=dt.UTC))
    error = assert_error(owner_api.delete(f"/appointments/{appointment.pk}", reason=""), 422, "validation_error",
                         "reason")
    assert error["fields"]["reason"] == "required"


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/merge-patch+json",
                                          "text/plain", "application/x-www-form-urlencoded", ""])
def test_a_json_body_is_read_whatever_its_content_type_says(desk_api, clinic, content_type):
    """API.md is "JSON in": clients that send JSON without the header (curl -d, a script's plain
    POST) were always answered, and the contract changes only by adding."""
    response = desk_api.client.post("/api/v1/patients", '{"first_name": "Ana", "last_name": "Silva"}',
                                    content_type=content_type, headers=desk_api.headers)
    assert response.status_code == 201, response.content


def test_sign_in_takes_the_user_name_however_its_accent_is_encoded(anonymous, clinic):
    Staff.objects.create_user("Jos\u00e9", password=PASSWORD, role="front_desk")
    response = anonymous.post("/auth/token", {"username": "Jose\u0301", "password": PASSWORD})
    assert response.status_code == 200, response.content


@pytest.mark.parametrize("search", ["Jos\u00e9 Nu\u00f1ez", "Jose\u0301 Nun\u0303ez"])
def test_a_patient_name_is_found_however_its_accents_were_encoded(desk_api, clinic, search):
    """A name sent decomposed (e + combining accent, as macOS input and some scanners send it)
    is stored composed, and a search is read the same way, so the front desk finds the patient."""
    made = desk_api.post("/patients", {"first_name": "Jose\u0301", "last_name": "Nun\u0303ez"})
    assert made.status_code == 201, made.content
    assert (made.json()["first_name"], made.json()["last_name"]) == ("Jos\u00e9", "Nu\u00f1ez")
    found = desk_api.get("/patients", q=search).json()["items"]
    assert [p["id"] for p in found] == [made.json()["id"]]


def test_a_name_that_composing_makes_longer_than_its_column_is_refused_not_a_500(owner_api, desk_api, clinic):
    """Some letters (U+0958, Devanagari qa) have no composed form: NFC writes them as two code
    points, so a name within the request's limit can outgrow its column once normalised."""
    qa = "\u0958"
    assert_error(desk_api.post("/patients", {"first_name": qa * 100, "last_name": "B"}), 422, "validation_error",
                 "first_name")
    assert_error(owner_api.post("/services", {"name": qa * 200, "duration_minutes": 30, "price": "10.00"}), 422,
                 "validation_error", "name")
    assert_error(owner_api.patch("/clinic", {"name": qa * 200}), 422, "validation_error", "name")
    assert not Patient.objects.exists()


def test_a_payment_method_longer_than_its_column_is_refused_not_a_500(desk_api, desk, patient, acu60, ten_pack):
    """The API takes up to 100 characters of text for a method; the column holds 40."""
    from tally.clinic.actions import billing
    from tally.clinic.models import Payment

    invoice = billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(acu60, None)])
    method = "bank transfer from the patient's employer"  # 41 characters
    assert_error(desk_api.post(f"/invoices/{invoice.pk}/payments", {"amount": "10.00", "method": method}), 422,
                 "validation_error", "method")
    sale = {"package_id": ten_pack.pk, "use_first_session": False, "payment": {"amount": "10.00", "method": method}}
    assert_error(desk_api.post(f"/patients/{patient.pk}/packages", sale), 422, "validation_error", "payment.method")
    assert not Payment.objects.exists()


@pytest.mark.parametrize(("status", "reason", "mesg"), [
    (414, "URI Too Long", "Request Line is too large (8192 > 4094)"),
    (431, "Request Header Fields Too Large", "Error parsing headers: 'limit request headers fields size'"),
    (400, "Bad Request", "Invalid HTTP Header: 'Bad Header'"),
])
def test_a_request_the_server_cannot_parse_is_answered_in_the_whole_error_shape(monkeypatch, status, reason, mesg):
    """gunicorn refuses these before Django sees them (tally.server writes its answer); a
    client reads `error.fields` on every 4xx, as on the API's own."""
    from gunicorn import util as gunicorn_util

    from tally import server

    sent: list[bytes] = []
    monkeypatch.setattr(gunicorn_util, "write_nonblock", lambda sock, data: sent.append(data))
    server.write_error_as_json(None, status, reason, mesg)
    head, body = sent[0].split(b"\r\n\r\n", 1)
    assert head.startswith(f"HTTP/1.1 {status} ".encode())
    error = json.loads(body)
    assert set(error) == {"error"}
    assert set(error["error"]) == {"code", "message", "fields"}, error
    assert error["error"]["code"] == "validation_error" and error["error"]["message"]
    assert isinstance(error["error"]["fields"], dict)
