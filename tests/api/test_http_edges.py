"""The edges of HTTP that clients and proxies send without thinking: HEAD, stray methods,
bodies that are JSON only nearly, repeated query parameters. Each gets a clear 4xx in the
error shape, or the answer RFC 9110 asks for, never a 500 and never a partial write."""

from __future__ import annotations

import pytest

from .conftest import assert_error


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
