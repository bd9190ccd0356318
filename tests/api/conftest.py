"""An API client that speaks JSON with a bearer token for each role."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from tally.clinic.models import ApiToken, Staff

BASE = "/api/v1"


class Api:
    """Requests to /api/v1/ as one staff member (or nobody)."""

    def __init__(self, token: str | None = None) -> None:
        self.client = Client()
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def _send(self, method: str, path: str, body: Any = None, *, key: str | None = None,
              raw: str | bytes | None = None, params: dict | None = None):
        headers = dict(self.headers)
        if key is not None:
            headers["Idempotency-Key"] = key
        data = raw if raw is not None else (json.dumps(body) if body is not None else "")
        url = BASE + path
        if params:
            from urllib.parse import urlencode
            url += "?" + urlencode(params)
        return self.client.generic(method, url, data, content_type="application/json", headers=headers)

    def get(self, path: str, **params: Any):
        return self._send("GET", path, params=params or None)

    def post(self, path: str, body: Any = None, **kw: Any):
        return self._send("POST", path, body, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any):
        return self._send("PATCH", path, body, **kw)

    def delete(self, path: str, **params: Any):
        return self._send("DELETE", path, params=params or None)


@pytest.fixture
def api_as(db) -> Callable[[Staff | None], Api]:
    def make(staff: Staff | None) -> Api:
        if staff is None:
            return Api()
        _, raw = ApiToken.issue(staff)
        return Api(raw)

    return make


@pytest.fixture
def anonymous(api_as) -> Api:
    return api_as(None)


@pytest.fixture
def owner_api(api_as, owner, clinic) -> Api:
    return api_as(owner)


@pytest.fixture
def desk_api(api_as, desk, clinic) -> Api:
    return api_as(desk)


@pytest.fixture
def practitioner_api(api_as, practitioner, clinic) -> Api:
    return api_as(practitioner)


def assert_error(response, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "fields"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    if field is not None:
        assert field in body["error"]["fields"], body
    return body["error"]
