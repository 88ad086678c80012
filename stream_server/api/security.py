"""API keys and the upload limit, as plain ASGI middleware.

Being ASGI middleware (not per-route dependencies), both cover every route of the
app, including routes added later (WebRTC offers, ingest WebSockets, streams),
without those routes doing anything.

Public without a key: ``/health``, ``/ready``, ``/metrics`` (unless
``FACE_METRICS_REQUIRE_KEY``), the API docs ``/docs``, ``/redoc`` and
``/openapi.json`` (unless ``FACE_DOCS_REQUIRE_KEY``; they describe the API and hold
no data), and the static web client's files (GET/HEAD of ``/`` or of a file that
exists in ``web_client/`` and that no API route answers): the page must load so
the user can type a key; every call it then makes carries the key.

The key: ``Authorization: Bearer <key>``, or the ``api_key`` query parameter for
clients that cannot set headers (a browser's WebSocket or ``<img>``). HTTP without
a valid key → 401 JSON with ``WWW-Authenticate: Bearer``; a WebSocket → accepted
and closed at once with code 4401 and a reason. The ``api_key`` parameter is
removed from the request's query string before anything else (routes, access
logs) sees it. Keys are compared with ``hmac.compare_digest``
and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import metrics
from ..config import ConfigurationError, Settings
from .errors import error_response

log = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4401
CLIENT_SCOPE_KEY = "stream_server.client"  # who is calling, for rate limits
HEALTH_PATHS = frozenset({"/health", "/ready"})
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def key_fingerprint(key: str) -> str:
    """A short, non-reversible name for a key (rate-limit buckets, never logs of keys)."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class KeyChecker:
    """Constant-time check of a presented key against every configured key."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = [k.encode() for k in keys if k]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def valid(self, presented: str | None) -> bool:
        if not presented:
            return False
        candidate = presented.encode()
        ok = False
        for key in self._keys:  # check all, so timing says nothing of which matched
            ok |= hmac.compare_digest(candidate, key)
        return ok


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _bearer(scope: Scope) -> str | None:
    value = _header(scope, b"authorization")
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _take_query_key(scope: Scope) -> str | None:
    """Remove ``api_key`` from the query string (in place) and return its value."""
    raw = scope.get("query_string") or b""
    if b"api_key" not in raw:
        return None
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    found = None
    kept = []
    for name, value in pairs:
        if name == "api_key":
            found = found or value
        else:
            kept.append((name, value))
    scope["query_string"] = urlencode(kept).encode("latin-1")
    return found


class PublicPaths:
    """Decides which requests need no key (see the module docstring)."""

    def __init__(self, settings: Settings, web_dir: Path | None, router=None) -> None:
        self.exact = set(HEALTH_PATHS)
        if not settings.metrics_require_key:
            self.exact.add("/metrics")
        if not settings.docs_require_key:
            self.exact |= DOCS_PATHS
        self.web_dir = web_dir.resolve() if web_dir and web_dir.is_dir() else None
        self.router = router

    def _api_route_matches(self, scope: Scope) -> bool:
        if self.router is None:
            return False
        for route in self.router.routes:
            if isinstance(route, Mount) and route.path in ("", "/"):
                continue  # the static mount itself
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                return True
        return False

    def _static_file(self, path: str) -> bool:
        if self.web_dir is None:
            return False
        rel = path.lstrip("/") or "index.html"
        if rel.endswith("/"):
            rel += "index.html"
        if "\x00" in rel or ".." in rel.split("/"):
            return False
        target = (self.web_dir / rel).resolve()
        return target.is_relative_to(self.web_dir) and target.is_file()

    def __call__(self, scope: Scope) -> bool:
        path = scope.get("path", "")
        if path in self.exact:
            return True
        if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD"):
            return False
        return self._static_file(path) and not self._api_route_matches(scope)


class ApiKeyMiddleware:
    def __init__(
        self, app: ASGIApp, checker: KeyChecker, is_public: Callable[[Scope], bool]
    ) -> None:
        self.app = app
        self.checker = checker
        self.is_public = is_public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        query_key = _take_query_key(scope)
        presented = _bearer(scope) or query_key
        client = scope.get("client")
        if presented and self.checker.valid(presented):
            scope[CLIENT_SCOPE_KEY] = "key:" + key_fingerprint(presented)
            await self.app(scope, receive, send)
            return
        scope[CLIENT_SCOPE_KEY] = "ip:" + (client[0] if client else "unknown")
        if not self.checker.enabled or self.is_public(scope):
            await self.app(scope, receive, send)
            return
        reason = "invalid API key" if presented else "missing API key"
        metrics.AUTH_FAILURES.labels(kind=kind, reason=reason.split()[0]).inc()
        log.info(
            "refused %s %s from %s: %s",
            kind,
            scope.get("path"),
            client[0] if client else "?",
            reason,
        )
        if kind == "websocket":
            await self._close_websocket(receive, send, reason)
            return
        hint = (
            "send the header 'Authorization: Bearer <key>'"
            if not presented
            else "the key given is not one of the configured keys"
        )
        response = error_response(
            401,
            "unauthorized",
            f"{reason}: {hint}",
            headers={"WWW-Authenticate": 'Bearer realm="stream-server"'},
        )
        await response(scope, receive, send)

    @staticmethod
    async def _close_websocket(receive: Receive, send: Send, reason: str) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        await send(
            {
                "type": "websocket.close",
                "code": CLOSE_UNAUTHORIZED,
                "reason": f"{reason}: send 'Authorization: Bearer <key>' or ?api_key=<key>",
            }
        )


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413, counting while reading.

    A declared ``Content-Length`` over the limit is refused before any byte is
    read; otherwise bytes are counted as the app reads them (chunked uploads, or a
    lying Content-Length), and at the first byte over the limit the 413 is sent
    and the app sees the client as gone, so nothing it would still answer is sent.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, what: str):
        mb = self.max_bytes / (1024 * 1024)
        return error_response(
            413,
            "payload_too_large",
            f"request body {what} exceeds the upload limit of {self.max_bytes} bytes ({mb:.1f} MB)",
            headers={"Connection": "close"},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await error_response(400, "bad_request", "invalid Content-Length header")(
                    scope, receive, send
                )
                return
            if length > self.max_bytes:
                metrics.UPLOADS_REFUSED.labels(reason="too_large").inc()
                await self._too_large(f"of {length} bytes (Content-Length)")(scope, receive, send)
                return

        received = 0
        refused = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    metrics.UPLOADS_REFUSED.labels(reason="too_large").inc()
                    if not started:
                        await self._too_large(f"of more than {self.max_bytes} bytes")(
                            scope, receive, send
                        )
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 has been sent; drop whatever the app answers
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)


def check_startup_security(settings: Settings) -> None:
    """Refuse to run open in production; otherwise say loudly that it is open."""
    if settings.api_keys:
        short = [i for i, k in enumerate(settings.api_keys) if len(k.get_secret_value()) < 16]
        if short:
            log.warning(
                "%d API key(s) shorter than 16 characters; use long random keys "
                "(e.g. `openssl rand -hex 32`)",
                len(short),
            )
        return
    if settings.environment == "production":
        raise ConfigurationError(
            "FACE_ENVIRONMENT=production but FACE_API_KEYS is empty: refusing to start an "
            "open service. Set FACE_API_KEYS to one or more comma-separated keys."
        )


def warn_if_open(settings: Settings) -> None:
    if not settings.api_keys:
        log.warning(
            "\n%s\n  NO API KEY CONFIGURED: every endpoint is open to anyone who can reach "
            "%s:%d.\n  Set FACE_API_KEYS=<key>[,<key>...] to require "
            "'Authorization: Bearer <key>'.\n%s",
            "!" * 78,
            settings.host,
            settings.port,
            "!" * 78,
        )
    else:
        log.info("API keys required (%d configured)", len(settings.api_keys))


def install_security(app: FastAPI, settings: Settings, web_dir: Path | None) -> None:
    """Add the upload limit and the key check (outermost) to ``app``, and document both."""
    check_startup_security(settings)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    checker = KeyChecker(k.get_secret_value() for k in settings.api_keys)
    public = PublicPaths(settings, web_dir, app.router)
    app.add_middleware(ApiKeyMiddleware, checker=checker, is_public=public)
    _document_security(app, public, enabled=checker.enabled)


def _document_security(app: FastAPI, public: PublicPaths, enabled: bool) -> None:
    """Declare the bearer scheme in the OpenAPI schema (Swagger's Authorize button)."""

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
        )
        schema.setdefault("components", {})["securitySchemes"] = {
            "ApiKey": {
                "type": "http",
                "scheme": "bearer",
                "description": "One of FACE_API_KEYS"
                + ("" if enabled else " (none configured: this server is open)"),
            }
        }
        schema["security"] = [{"ApiKey": []}]
        for path, ops in schema.get("paths", {}).items():
            if path in public.exact:
                for op in ops.values():
                    if isinstance(op, dict):
                        op["security"] = []
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
