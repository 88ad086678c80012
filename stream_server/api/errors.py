"""Every error the API sends is JSON: ``{"error": <code>, "detail": <what went wrong>}``.

``ApiError`` is what routes raise; the handlers installed here turn it, Starlette's
and FastAPI's own exceptions (404 of an unknown path, 405, validation errors, a
malformed multipart body) and anything unexpected (500) into that shape.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """The body of every 4xx/5xx response."""

    error: str = Field(description="A stable, machine-readable code.")
    detail: Any = Field(description="What went wrong, for a person to read.")

    model_config = {
        "json_schema_extra": {
            "examples": [{"error": "not_found", "detail": "no identity with id '3f2c…'"}]
        }
    }


class ApiError(Exception):
    """An expected refusal: status, code, message, and optional extra body fields."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: Any,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers
        self.extra = extra

    def response(self) -> JSONResponse:
        body = {"error": self.code, "detail": self.detail, **self.extra}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def error_response(
    status: int, code: str, detail: Any, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    503: "unavailable",
}


def _code_for(status: int) -> str:
    if status in _CODES:
        return _CODES[status]
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def _describe_body_error(exc: StarletteHTTPException) -> str | None:
    """FastAPI answers any body it cannot parse with a vague 400; say what it was."""
    cause = exc.__cause__
    if cause is None:
        return None
    from starlette.formparsers import MultiPartException

    if isinstance(cause, MultiPartException):
        return f"malformed multipart/form-data body: {cause.message}"
    name = type(cause).__name__
    if name == "ClientDisconnect":
        return "the request body ended early (client disconnected)"
    return f"could not parse the request body ({name})"


async def _http_exception(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail: Any = exc.detail
    if exc.status_code == 400:
        detail = _describe_body_error(exc) or detail
        content_type = request.headers.get("content-type", "")
        if (
            content_type.startswith("multipart/")
            and isinstance(detail, str)
            and not detail.startswith("malformed")
        ):
            detail = f"malformed multipart/form-data body: {detail}"
    elif exc.status_code == 404 and detail == "Not Found":
        detail = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        detail = f"method {request.method} not allowed on {request.url.path}"
    return error_response(exc.status_code, _code_for(exc.status_code), detail, exc.headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = []
    for err in exc.errors():
        # Inputs can be bytes (uploads) or huge: name the field and the problem only.
        item = {k: v for k, v in err.items() if k in ("type", "loc", "msg")}
        item["loc"] = [str(p) for p in item.get("loc", ())]
        errors.append(item)
    return JSONResponse({"error": "invalid_request", "detail": errors}, status_code=422)


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return exc.response()


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "internal server error (logged)")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for the error statuses a route can answer."""
    descriptions = {
        400: "Malformed request body (e.g. a broken multipart body)",
        401: "Missing or wrong API key",
        404: "No such identity or face",
        413: "Request body larger than the upload limit",
        422: "Invalid input: not an image, no usable face, a field out of range",
        429: "Rate limit reached; retry after the Retry-After header's seconds",
    }
    return {s: {"model": ErrorBody, "description": descriptions.get(s, "Error")} for s in statuses}
