"""The NinjaAPI instance and the one error shape (API.md "Errors").

Every 4xx, whoever raises it (an action's ClinicError, ninja's validation, a bad token,
an unknown URL, a wrong method), is `{"error": {"code", "message", "fields"}}`.
"""

from __future__ import annotations

import functools
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.urls import URLPattern, re_path
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from tally.clinic.errors import HTTP_STATUS, ClinicError
from tally.unavailable import unavailable_api_response

from .auth import BearerToken, TokenExpired
from .idempotency import HEADER
from .links import add_links
from .parser import DuplicateKey, StrictParser

CODE_FOR_STATUS = {status: code for code, status in reversed(HTTP_STATUS.items())}
PARAM_SOURCES = {"body", "query", "path", "header", "cookie", "form", "file"}
BODY_PARAM = "payload"


def error_body(code: str, message: str, fields: dict[str, str] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def error_response(status: int, code: str, message: str, fields: dict[str, str] | None = None) -> JsonResponse:
    return JsonResponse(error_body(code, message, fields), status=status)


class TallyAPI(NinjaAPI):
    def get_openapi_schema(self, *, path_prefix: str | None = None, path_params: dict[str, Any] | None = None) -> Any:
        """Document the Idempotency-Key header that every POST accepts, and the links between
        operations (which answer's id feeds which operation: links.py)."""
        if path_prefix is None:
            path_prefix = self.get_root_path(path_params or {})
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        add_links(schema, path_prefix.rstrip("/"))
        for operations in schema.get("paths", {}).values():
            for method, operation in operations.items():
                add_server_refusals(method, operation)
                for parameter in operation.get("parameters", []):
                    if parameter.get("in") == "query" and not parameter.get("required"):
                        parameter["allowEmptyValue"] = True  # as if not given (parser.StrictParser)
            post = operations.get("post")
            if post is not None and post.get("security"):
                post.setdefault("parameters", []).append({
                    "in": "header", "name": HEADER, "required": False,
                    "description": "Replays the first answer for the same key and body (kept at least 24 hours).",
                    "schema": {"type": "string", "maxLength": 200},
                })
        return schema


# Refusals that come from the server around the views, so no view declares them: a body over
# DATA_UPLOAD_MAX_MEMORY_SIZE (413, api.body_too_large) where a body is read; a request line
# over the server's limit (414, tally.server: a long ?q= or ?reason= of non-ASCII text, which
# a valid value can be, percent-encoded); the database unreachable (503, tally.unavailable).
SERVER_REFUSALS = {413: "Content Too Large", 414: "URI Too Long", 503: "Service Unavailable"}
BODY_METHODS = {"post", "patch", "put"}


def add_server_refusals(method: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    for status, description in SERVER_REFUSALS.items():
        if status == 413 and method not in BODY_METHODS:
            continue
        if status not in responses and str(status) not in responses:
            responses[status] = {"description": description, "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


api = TallyAPI(
    title="Tally",
    version="1",
    description="Clinic package tracking. Contract: API.md.",
    auth=BearerToken(),
    parser=StrictParser(),
    urls_namespace="api-v1",
    docs_url="/docs",
    openapi_url="/openapi.json",
)


def validation_fields(errors: list[dict[str, Any]]) -> dict[str, str]:
    """ninja's error locations (`body.payload.price`) become field names (`price`)."""
    fields: dict[str, str] = {}
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        if loc and loc[0] in PARAM_SOURCES:
            loc = loc[1:]
        if loc and loc[0] == BODY_PARAM:
            loc = loc[1:]
        name = ".".join(loc) or "body"
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if error.get("type") == "missing":
            message = "required"
        fields.setdefault(name, message)
    return fields


@api.exception_handler(ClinicError)
def clinic_error(request: HttpRequest, exc: ClinicError) -> HttpResponse:
    response = error_response(exc.http_status, exc.code, exc.message, exc.fields)
    retry_after = getattr(exc, "retry_after", None)  # rate_limited: when to try again
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


@api.exception_handler(ValidationError)
def validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    fields = validation_fields(exc.errors)
    names = ", ".join(sorted(fields))
    return error_response(422, "validation_error", f"Please correct: {names}.", fields)


@api.exception_handler(AuthenticationError)
def unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    response = error_response(401, "unauthenticated", "Sign in first: send `Authorization: Bearer <token>`.")
    response["WWW-Authenticate"] = "Bearer"
    return response


@api.exception_handler(TokenExpired)
def token_expired(request: HttpRequest, exc: TokenExpired) -> HttpResponse:
    """401 `unauthenticated` like any refused token (API.md lists the codes clients handle);
    the message and WWW-Authenticate's error_description tell "sign in again" from a token
    that was never good (README, additions)."""
    response = error_response(401, "unauthenticated", "This token has expired: sign in again "
                              "(POST /api/v1/auth/token) for a new one.")
    response["WWW-Authenticate"] = 'Bearer error="invalid_token", error_description="The token has expired"'
    return response


@api.exception_handler(HttpError)
def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if exc.status_code == 400:  # ninja could not parse the body
        if isinstance(exc.__cause__, DuplicateKey):
            return error_response(422, "validation_error", f"The request body gives {exc.__cause__.key!r} twice.",
                                  {"body": str(exc.__cause__)})
        return error_response(422, "validation_error", "The request body is not valid JSON.",
                              {"body": "not valid JSON"})
    code = CODE_FOR_STATUS.get(exc.status_code, "validation_error")
    return error_response(exc.status_code, code, str(exc))


@api.exception_handler(RequestDataTooBig)
def body_too_large(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    """Django refuses a body over DATA_UPLOAD_MAX_MEMORY_SIZE; without this, its HTML 400 page."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return error_response(413, "validation_error", f"The request body is larger than {limit} bytes.",
                          {"body": f"at most {limit} bytes"})


@api.exception_handler(TooManyFieldsSent)
def too_many_fields(request: HttpRequest, exc: TooManyFieldsSent) -> HttpResponse:
    limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    return error_response(422, "validation_error", f"At most {limit} query parameters.",
                          {"query": f"at most {limit} parameters"})


# The database cannot be reached: 503 `unavailable` (declared on every endpoint, see
# schemas.READ_ERRORS); any other OperationalError is re-raised, a 500 as before.
api.add_exception_handler(OperationalError, unavailable_api_response)  # type: ignore[arg-type]
api.add_exception_handler(InterfaceError, unavailable_api_response)  # type: ignore[arg-type]


@api.exception_handler(Http404)
def not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return error_response(404, "not_found", "No such resource.")


def unknown_url(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return error_response(404, "not_found", f"No such endpoint: {request.path}.")


def head_as_get(view: Any, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """HEAD is GET without the body (RFC 9110 9.3.2): same status and headers, and the
    Content-Length the GET would have. ninja routes HEAD nowhere, so run the GET, marked
    `head_only`: it shows no patient data, so it writes no read event (reads.audit_read)."""
    request.method = "GET"
    request.head_only = True  # type: ignore[attr-defined]
    try:
        response = view(request, *args, **kwargs)
    finally:
        request.method = "HEAD"
    if not response.streaming:
        response["Content-Length"] = str(len(response.content))
        response.content = b""
    return response


def json_method_errors(view: Any) -> Any:
    """ninja answers a wrong method with a bare 405; give it the error shape, and answer
    HEAD wherever GET is allowed."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        response = view(request, *args, **kwargs)
        if isinstance(response, HttpResponseNotAllowed):
            methods = sorted(method.strip() for method in response["Allow"].split(","))
            if "GET" in methods:
                if request.method == "HEAD":
                    return head_as_get(view, request, *args, **kwargs)
                methods.insert(methods.index("GET") + 1, "HEAD")
            allowed = ", ".join(methods)
            response = error_response(405, "method_not_allowed", f"Use {allowed} here.")
            response["Allow"] = allowed
        return response

    return wrapper


def urls() -> tuple[list[Any], str, str]:
    """The API's URL patterns, with JSON 405s and a JSON 404 for anything unknown under it."""
    patterns, app_name, namespace = api.urls
    for pattern in patterns:
        if isinstance(pattern, URLPattern):
            pattern.callback = json_method_errors(pattern.callback)
    return [*patterns, re_path(r"^.*$", unknown_url)], app_name, namespace


def _register_routers() -> None:
    from .routers import (
        appointments,
        auth,
        catalog,
        investigation,
        invoices,
        packages,
        patients,
        staff,
    )

    for module in (auth, staff, catalog, patients, packages, appointments, invoices, investigation):
        api.add_router("/", module.router)


_register_routers()
