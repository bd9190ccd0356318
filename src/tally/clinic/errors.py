"""ClinicError: the error codes the API, the staff pages and the CLI all use."""

from __future__ import annotations

HTTP_STATUS = {
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "idempotency_conflict": 409,
    "validation_error": 422,
    "rate_limited": 429,
    "unavailable": 503,  # the database cannot be reached: retry (tally.unavailable)
}


class ClinicError(Exception):
    """A refusal the caller can act on: a stable code, a sentence, optional per-field notes."""

    code = "conflict"

    def __init__(self, message: str, *, code: str | None = None, fields: dict[str, str] | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.fields = fields or {}

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 400)


class NotFound(ClinicError):
    code = "not_found"


class Forbidden(ClinicError):
    code = "forbidden"


class Invalid(ClinicError):
    code = "validation_error"


class Conflict(ClinicError):
    code = "conflict"
