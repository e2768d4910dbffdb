"""Gmail's error envelope, as an exception the handlers raise.

Every error the emulator answers has the shape Gmail uses (the legacy
``errors[]`` array next to ``status``), because googleapiclient's retry logic
reads ``error.errors[0].reason``::

    {"error": {"code": 404, "message": "Requested entity was not found.",
               "errors": [{"message": "...", "domain": "global", "reason": "notFound"}],
               "status": "NOT_FOUND"}}
"""

from __future__ import annotations

import json
from typing import Any

STATUS_BY_CODE = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
    404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 409: "ALREADY_EXISTS",
    413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
    501: "UNIMPLEMENTED", 503: "UNAVAILABLE",
}


class ApiError(Exception):
    """An answer in Gmail's error envelope; raised anywhere inside a handler."""

    def __init__(self, code: int, message: str, reason: str, *, domain: str = "global",
                 status: str | None = None, extra: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail or message  # errors[0].message, when it differs from message
        self.reason = reason
        self.domain = domain
        self.status = status or STATUS_BY_CODE.get(code, "UNKNOWN")
        self.extra = extra or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        item = {"message": self.detail, "domain": self.domain, "reason": self.reason,
                **self.extra}
        return {"error": {"code": self.code, "message": self.message, "errors": [item],
                          "status": self.status}}

    def encode(self) -> bytes:
        return json.dumps(self.body()).encode()


def invalid(message: str = "Invalid argument") -> ApiError:
    return ApiError(400, message, "invalidArgument")


def not_found() -> ApiError:
    return ApiError(404, "Requested entity was not found.", "notFound")


def unauthenticated(missing: bool = False) -> ApiError:
    """Google's 401: no Authorization header at all, or a token it does not accept."""
    see = ("Expected OAuth 2 access token, login cookie or other valid authentication "
           "credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.")
    if missing:
        return ApiError(401, f"Request is missing required authentication credential. {see}",
                        "required", detail="Login Required.",
                        extra={"location": "Authorization", "locationType": "header"},
                        headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'})
    return ApiError(401, f"Request had invalid authentication credentials. {see}", "authError",
                    detail="Invalid Credentials",
                    extra={"location": "Authorization", "locationType": "header"},
                    headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", '
                                                 'error="invalid_token"'})


def forbidden(message: str) -> ApiError:
    return ApiError(403, message, "forbidden")


def conflict(message: str = "Label name exists or conflicts") -> ApiError:
    return ApiError(409, message, "duplicate")


def internal() -> ApiError:
    return ApiError(500, "Internal error encountered.", "backendError")


def unavailable() -> ApiError:
    return ApiError(503, "The service is currently unavailable.", "backendError")


def rate_limited(message: str = "Rate Limit Exceeded", reason: str = "rateLimitExceeded",
                 code: int = 429, retry_after: int | None = None) -> ApiError:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return ApiError(code, message, reason, domain="usageLimits", headers=headers)


def error_for_code(code: int) -> ApiError:
    """A typical Gmail error body for an injected fault with this status."""
    if code == 500:
        return internal()
    if code == 503:
        return unavailable()
    if code == 429:
        return rate_limited("Too many concurrent requests for user")
    if code == 403:
        return rate_limited("User Rate Limit Exceeded", "userRateLimitExceeded", code=403)
    if code == 404:
        return not_found()
    if code == 400:
        return ApiError(400, "Precondition check failed.", "failedPrecondition",
                        status="FAILED_PRECONDITION")
    return ApiError(code, "Injected error", "backendError")
