"""The staff pages answer GET, HEAD and POST; any other method is a 405 that says so,
not the page rendered as if it were a GET."""

from __future__ import annotations

import pytest

PAGES = ["/today/", "/patients/", "/audit/", "/login/", "/admin/"]


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"])
@pytest.mark.parametrize("path", PAGES)
def test_a_method_a_page_does_not_take_is_a_405_naming_the_ones_it_does(desk_client, method, path):
    response = desk_client.generic(method, path)
    assert response.status_code == 405, (method, path, response.status_code)
    assert response["Allow"] == "GET, HEAD, POST"


@pytest.mark.parametrize("path", ["/today/", "/patients/"])
def test_head_on_a_page_answers_like_get_without_a_body(desk_client, path):
    got = desk_client.get(path)
    head = desk_client.head(path)
    assert head.status_code == got.status_code == 200
    assert head.content == b""


def test_the_api_keeps_its_own_json_405(desk_client):
    response = desk_client.generic("OPTIONS", "/api/v1/me")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
