"""Signing in, tokens, and the one error shape on every 4xx."""

import io
import json
from wsgiref.util import setup_testing_defaults

import pytest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections

from tally.clinic.models import ApiToken

from .conftest import assert_error

PASSWORD = "correct horse battery staple"


def test_it_issues_a_token_for_a_good_password(anonymous, desk, api_as):
    response = anonymous.post("/auth/token", {"username": "frank", "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert body["role"] == "front_desk"
    me = api_as(None).__class__(body["token"]).get("/me")
    assert me.status_code == 200 and me.json()["username"] == "frank"


@pytest.mark.parametrize("username, password", [("frank", "wrong"), ("nobody", PASSWORD)])
def test_it_refuses_bad_credentials_with_401(anonymous, desk, username, password):
    response = anonymous.post("/auth/token", {"username": username, "password": password})
    assert_error(response, 401, "unauthenticated")


def test_it_refuses_a_sign_in_without_a_password_with_422(anonymous, desk):
    assert_error(anonymous.post("/auth/token", {"username": "frank"}), 422, "validation_error", "password")


def test_it_refuses_an_inactive_user_at_sign_in(anonymous, desk):
    desk.is_active = False
    desk.save()
    response = anonymous.post("/auth/token", {"username": "frank", "password": PASSWORD})
    assert_error(response, 401, "unauthenticated")


def test_it_refuses_requests_without_a_token(anonymous):
    assert_error(anonymous.get("/me"), 401, "unauthenticated")


def test_it_refuses_a_bad_token(api_as):
    from .conftest import Api

    assert_error(Api("tly_not-a-real-token").get("/patients"), 401, "unauthenticated")


def test_it_refuses_a_revoked_token_on_the_next_request(desk, clinic):
    from django.utils import timezone

    from .conftest import Api

    token, raw = ApiToken.issue(desk)
    api = Api(raw)
    assert api.get("/me").status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
    assert_error(api.get("/me"), 401, "unauthenticated")


def test_it_refuses_a_deactivated_user_on_the_next_request(desk_api, desk):
    assert desk_api.get("/me").status_code == 200
    desk.is_active = False
    desk.save()
    assert_error(desk_api.get("/me"), 401, "unauthenticated")


def test_it_answers_malformed_json_with_the_error_shape(desk_api):
    assert_error(desk_api.post("/patients", raw="{not json"), 422, "validation_error", "body")


def test_it_answers_a_json_array_body_with_a_validation_error(desk_api):
    assert_error(desk_api.post("/patients", raw="[1, 2]"), 422, "validation_error")


def test_it_answers_a_body_too_large_with_the_error_shape(desk_api, anonymous, settings):
    """Django refuses a body over DATA_UPLOAD_MAX_MEMORY_SIZE; the answer is still the API's
    JSON error, not Django's HTML "Bad Request" page."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = '{"first_name": "Ann", "last_name": "%s"}' % ("x" * 2000)
    assert_error(desk_api.post("/patients", raw=body), 413, "validation_error", "body")
    assert_error(anonymous.post("/auth/token", raw='{"username": "%s", "password": "x"}' % ("x" * 2000)),
                 413, "validation_error", "body")


def post_chunked(token: str, body: bytes) -> tuple[str, dict]:
    """A POST through the WSGI application `tally serve` runs, its body sent chunked: no
    Content-Length, and the server (gunicorn) hands over the de-chunked body, saying so."""
    from tally.wsgi import application

    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/api/v1/patients", "CONTENT_TYPE": "application/json",
               "HTTP_AUTHORIZATION": f"Bearer {token}", "HTTP_TRANSFER_ENCODING": "chunked",
               "wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True}
    setup_testing_defaults(environ)
    started = {}
    # As Django's test client does: the request must not close the test's database connection.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        content = b"".join(application(environ, lambda status, headers: started.update(status=status)))
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    return started["status"], json.loads(content)


def test_a_body_sent_chunked_is_read(desk, clinic, settings):
    _, token = ApiToken.issue(desk)
    status, created = post_chunked(token, b'{"first_name": "Chunk", "last_name": "Sent"}')
    assert status.startswith("201"), created
    assert created["last_name"] == "Sent"
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    status, refused = post_chunked(token, b'{"first_name": "%s", "last_name": "Sent"}' % (b"x" * 2000))
    assert status.startswith("413") and refused["error"]["fields"] == {"body": "at most 1000 bytes"}


def test_it_answers_too_many_query_parameters_with_the_error_shape(desk_api, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    response = desk_api.get("/patients", **{f"p{i}": "x" for i in range(20)})
    assert_error(response, 422, "validation_error")


def test_it_answers_unknown_urls_with_a_json_404(desk_api):
    assert_error(desk_api.get("/no/such/thing"), 404, "not_found")


def test_it_answers_a_wrong_method_with_a_json_405(desk_api):
    response = desk_api.delete("/patients")
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response["Allow"]


@pytest.mark.parametrize("path", ["/patients/abc", "/patients/-1", "/patients/0",
                                  "/patients/99999999999999999999999999"])
def test_it_refuses_ids_that_are_not_ids_with_422(desk_api, path):
    assert_error(desk_api.get(path), 422, "validation_error", "patient_id")


def test_it_answers_an_unknown_id_with_404(desk_api):
    assert_error(desk_api.get("/patients/9223372036854775807"), 404, "not_found")


def test_it_refuses_unknown_fields_in_a_body(desk_api):
    response = desk_api.post("/patients", {"first_name": "A", "last_name": "B", "shoe_size": 9})
    assert_error(response, 422, "validation_error", "shoe_size")


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/services", {"name": "Cupping", "duration_minutes": True, "price": "40.00"}, "duration_minutes"),
    ("/patients/{patient}/packages", {"package_id": True, "use_first_session": False}, "package_id"),
    ("/patients/{patient}/packages", {"package_id": "{package}", "use_first_session": "no"}, "use_first_session"),
    ("/patients/{patient}/packages", {"package_id": "{package}", "use_first_session": 1}, "use_first_session"),
    ("/appointments", {"patient_id": "{patient}", "service_id": True, "starts_at": "2026-03-04"}, "service_id"),
])
def test_it_refuses_a_boolean_for_a_number_and_a_number_or_word_for_a_boolean(owner_api, patient, ten_pack, path,
                                                                                body, field):
    """JSON has booleans: `true` is no id (it chose the row with id 1) nor a duration, and an
    answer to "use the first session?" is true or false, not "no" or 1 (SPEC rule 5: no
    default, and no guess)."""
    ids = {"{patient}": patient.pk, "{package}": ten_pack.pk}
    body = {key: ids.get(value, value) if isinstance(value, str) else value for key, value in body.items()}
    response = owner_api.post(path.format(patient=patient.pk), body)
    assert_error(response, 422, "validation_error", field)


@pytest.mark.parametrize("text", ["nul\x00byte", "lone \ud800 surrogate"])
def test_it_refuses_text_the_database_cannot_store(desk_api, text):
    response = desk_api.post("/patients", {"first_name": text, "last_name": "B"})
    assert_error(response, 422, "validation_error", "first_name")


def test_the_openapi_document_is_public_and_lists_error_responses(anonymous):
    response = anonymous.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert "Error" in document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" in responses, (method, path)
            if path != "/api/v1/auth/token":
                assert {"401", "403", "404"} <= set(responses), (method, path)
            if method != "get" and path != "/api/v1/auth/token":
                assert "409" in responses, (method, path)
            for status in ("401", "403", "404", "409", "422"):
                if status in responses:
                    ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/Error")
    sell = document["paths"]["/api/v1/patients/{patient_id}/packages"]["post"]
    assert any(p["name"] == "Idempotency-Key" for p in sell["parameters"])


def test_the_openapi_document_lists_the_refusals_any_request_may_get(anonymous):
    """Every error the server sends is documented where it can come: 413 (a body over the
    upload limit) on every operation that reads a body, 414 (a request line over the server's
    limit: a long ?q= or ?reason= of non-ASCII text, which a valid value can be) and 503 (the
    database unavailable) on every one."""
    document = anonymous.get("/openapi.json").json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            statuses = {"414", "503"} | ({"413"} if method in {"post", "patch"} else set())
            for status in statuses:
                assert status in operation["responses"], (method, path, status)
                ref = operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/Error")


def test_the_docs_page_is_public(anonymous):
    assert anonymous.get("/docs").status_code == 200
