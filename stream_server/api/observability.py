"""Request metrics, connection gauges, request ids and access logs for every route.

``RequestObservabilityMiddleware`` is a pure ASGI middleware: it wraps the whole
app, so routes added anywhere (REST, WebSocket, WebRTC signalling, static files)
are counted without touching them, and requests that another middleware refuses
(auth, rate limits) are counted too when this one is the outermost.

Labels stay bounded: ``endpoint`` is the route template (``/identities/{id}``),
never the raw path; every path that matches no route is ``<unmatched>``; a
method outside the standard set is ``OTHER``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Iterable

from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import metrics
from ..logs import request_id_var

access_log = logging.getLogger("stream_server.access")

UNMATCHED = "<unmatched>"
WEBSOCKET_METHOD = "WEBSOCKET"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Probes and scrapes arrive every few seconds: logged at DEBUG so they do not bury the rest.
_QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")
REQUEST_ID_HEADER = b"x-request-id"


def incoming_request_id(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The caller's X-Request-ID when it is a sane token, else a new one.

    Anything longer than 64 characters or outside ``[A-Za-z0-9._:-]`` is replaced,
    so a header cannot inject text into log lines or grow a label.
    """
    for name, value in headers:
        if name.lower() == REQUEST_ID_HEADER:
            text = value.decode("latin-1").strip()
            if _REQUEST_ID_OK.match(text):
                return text
            break
    return uuid.uuid4().hex


def _flat_routes(routes: Iterable) -> list:
    """The app's routes with included routers' prefixes applied.

    Older FastAPI copies every included route into the app's list with its full
    path; newer FastAPI keeps included routers as one entry each and offers
    ``iter_route_contexts`` to see their routes with the prefix applied.
    """
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:
        return list(routes)
    return list(iter_route_contexts(list(routes)))


def _is_mount(route) -> bool:
    return isinstance(route, Mount) or isinstance(getattr(route, "original_route", None), Mount)


def route_template(routes: Iterable, scope: Scope, prefix: str = "") -> str | None:
    """The template of the route that serves ``scope`` (``/streams/{stream_id}``), or None.

    A partial match (right path, wrong method: a 405) still names the route. Mounted
    routers are searched with the mount's prefix; a mounted app that is not a router
    (static files) is named ``<mount>/{path:path}``.
    """
    partial: str | None = None
    fallback: str | None = None  # a catch-all mount (static files) only names what no route does
    for route in _flat_routes(routes):
        try:
            match, child = route.matches(scope)
        except Exception:  # a route that cannot judge this scope matches nothing
            continue
        if match is Match.NONE:
            continue
        if _is_mount(route):
            mount_path = getattr(route, "path", "")
            sub_routes = getattr(route, "routes", None) or []
            if sub_routes:
                child_scope = {**scope, **child}
                inner = route_template(sub_routes, child_scope, prefix + mount_path)
                if inner is not None:
                    return inner
                continue
            if fallback is None:
                fallback = f"{prefix}{mount_path}/{{path:path}}"
            continue
        else:
            name = prefix + (getattr(route, "path_format", None) or getattr(route, "path", ""))
        if match is Match.FULL:
            return name
        if partial is None:
            partial = name
    return partial or fallback


def _method_label(method: str) -> str:
    method = method.upper()
    return method if method in _METHODS else "OTHER"


class RequestObservabilityMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _endpoint(self, scope: Scope, status: int | None) -> str:
        app = scope.get("app")
        router = getattr(app, "router", None)
        routes = getattr(router, "routes", None)
        if not routes:
            return UNMATCHED
        name = route_template(routes, scope)
        if name is None:
            return UNMATCHED
        # A catch-all mount (the web client at "/") "matches" every path; what it
        # does not have is not a route either.
        if status == 404 and name.endswith("{path:path}"):
            return UNMATCHED
        return name

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        entry_scope = dict(scope)  # routing rewrites the scope in place (mounts change root_path)
        request_id = incoming_request_id(scope.get("headers", ()))
        token = request_id_var.set(request_id)
        status: int | None = None
        start = time.perf_counter()
        active = metrics.ACTIVE_CONNECTIONS.labels(kind="http")
        active.inc()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER
                ]
                headers.append((REQUEST_ID_HEADER, request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            if status is None:
                status = 499  # the client went away before an answer (nginx's code for it)
            raise
        except BaseException:
            if status is None:
                status = 500
            raise
        finally:
            elapsed = time.perf_counter() - start
            active.dec()
            method = _method_label(scope.get("method", ""))
            endpoint = self._endpoint(entry_scope, status)
            code = str(status if status is not None else 500)
            metrics.API_REQUESTS.labels(method=method, endpoint=endpoint, status=code).inc()
            metrics.API_DURATION.labels(method=method, endpoint=endpoint).observe(elapsed)
            path = scope.get("path", "")
            access_log.log(
                logging.DEBUG if path in _QUIET_PATHS and code == "200" else logging.INFO,
                "%s %s %s %.1fms",
                method,
                path,  # never the query string: it may carry an API key
                code,
                elapsed * 1000,
            )
            request_id_var.reset(token)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        entry_scope = dict(scope)
        request_id = incoming_request_id(scope.get("headers", ()))
        token = request_id_var.set(request_id)
        outcome: str | None = None  # "101" once accepted, else the refusal
        start = time.perf_counter()
        active = metrics.ACTIVE_CONNECTIONS.labels(kind="websocket")

        async def send_with_id(message: Message) -> None:
            nonlocal outcome
            kind = message["type"]
            if kind == "websocket.accept" and outcome is None:
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER
                ]
                headers.append((REQUEST_ID_HEADER, request_id.encode("latin-1")))
                message = {**message, "headers": headers}
                await send(message)
                outcome = "101"
                active.inc()
                return
            if outcome is None:
                if kind == "websocket.close":
                    outcome = "403"  # closed before the handshake: the client sees HTTP 403
                elif kind == "websocket.http.response.start":
                    outcome = str(message.get("status", 403))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            if outcome is None:
                outcome = "500"
            raise
        finally:
            if outcome == "101":
                active.dec()
            code = outcome or "500"
            endpoint = self._endpoint(entry_scope, None)
            metrics.API_REQUESTS.labels(
                method=WEBSOCKET_METHOD, endpoint=endpoint, status=code
            ).inc()
            access_log.info(
                "WS %s %s closed after %.1fs",
                scope.get("path", ""),
                code,
                time.perf_counter() - start,
            )
            request_id_var.reset(token)
