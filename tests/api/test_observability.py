"""The request middleware: route-template labels, request ids, connection gauges."""

from __future__ import annotations

import io
import json
import logging

import pytest
from fastapi import FastAPI, HTTPException, WebSocket
from fastapi.staticfiles import StaticFiles
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from stream_server import metrics
from stream_server.api.observability import UNMATCHED, RequestObservabilityMiddleware
from stream_server.config import Settings
from stream_server.logs import build_handler


def _count(method: str, endpoint: str, status: str) -> float:
    return metrics.API_REQUESTS.labels(method=method, endpoint=endpoint, status=status)._value.get()


def _observed(method: str, endpoint: str) -> float:
    for metric in metrics.API_DURATION.collect():
        for sample in metric.samples:
            if (
                sample.name.endswith("_count")
                and sample.labels.get("method") == method
                and sample.labels.get("endpoint") == endpoint
            ):
                return sample.value
    return 0.0


def _endpoint_labels() -> set[str]:
    out = set()
    for metric in metrics.API_REQUESTS.collect():
        for sample in metric.samples:
            out.add(sample.labels["endpoint"])
    return out


@pytest.fixture()
def small_app(tmp_path):
    """An app with path parameters, a failing route, a WebSocket and a static mount."""
    app = FastAPI()

    @app.get("/obs-items/{item_id}")
    async def item(item_id: int):
        if item_id == 0:
            raise HTTPException(404, "no such item")
        return {"id": item_id}

    @app.get("/obs-boom")
    async def boom():
        raise RuntimeError("boom")

    @app.websocket("/ws/obs-echo")
    async def echo(ws: WebSocket):
        await ws.accept()
        text = await ws.receive_text()
        await ws.send_text(text)
        await ws.close()

    @app.websocket("/ws/obs-refuse")
    async def refuse(ws: WebSocket):
        await ws.close(code=4401)

    (tmp_path / "index.html").write_text("<h1>hi</h1>")
    app.mount("/obs-static", StaticFiles(directory=tmp_path, html=True), name="static")
    app.add_middleware(RequestObservabilityMiddleware)
    return app


def test_requests_are_labelled_by_route_template_not_raw_path(small_app):
    client = TestClient(small_app, raise_server_exceptions=False)
    before_ok = _count("GET", "/obs-items/{item_id}", "200")
    before_404 = _count("GET", "/obs-items/{item_id}", "404")
    before_obs = _observed("GET", "/obs-items/{item_id}")
    for i in (1, 2, 3, 4):
        assert client.get(f"/obs-items/{i}").status_code == 200
    assert client.get("/obs-items/0").status_code == 404
    assert _count("GET", "/obs-items/{item_id}", "200") == before_ok + 4
    assert _count("GET", "/obs-items/{item_id}", "404") == before_404 + 1
    assert _observed("GET", "/obs-items/{item_id}") == before_obs + 5
    # Validation failures (422) and wrong methods (405) still name the route.
    before_422 = _count("GET", "/obs-items/{item_id}", "422")
    assert client.get("/obs-items/not-a-number").status_code == 422
    assert _count("GET", "/obs-items/{item_id}", "422") == before_422 + 1
    before_405 = _count("POST", "/obs-items/{item_id}", "405")
    assert client.post("/obs-items/5").status_code == 405
    assert _count("POST", "/obs-items/{item_id}", "405") == before_405 + 1
    labels = _endpoint_labels()
    assert not any(label.startswith("/obs-items/") and "{" not in label for label in labels)


def test_unmatched_paths_collapse_into_one_label(small_app):
    client = TestClient(small_app)
    before = _count("GET", UNMATCHED, "404")
    for i in range(20):
        assert client.get(f"/no-such-thing/{i}?x={i}").status_code == 404
    assert _count("GET", UNMATCHED, "404") == before + 20
    assert not any("no-such-thing" in label for label in _endpoint_labels())
    # Methods outside the standard set do not make new label values either.
    before_other = _count("OTHER", UNMATCHED, "404")
    client.request("FROB", "/nowhere")
    assert _count("OTHER", UNMATCHED, "404") == before_other + 1


def test_static_mount_and_server_errors(small_app):
    client = TestClient(small_app, raise_server_exceptions=False)
    before = _count("GET", "/obs-static/{path:path}", "200")
    assert client.get("/obs-static/index.html").status_code == 200
    assert _count("GET", "/obs-static/{path:path}", "200") == before + 1
    before_missing = _count("GET", UNMATCHED, "404")
    assert client.get("/obs-static/missing.js").status_code == 404
    assert _count("GET", UNMATCHED, "404") == before_missing + 1
    before_500 = _count("GET", "/obs-boom", "500")
    assert client.get("/obs-boom").status_code == 500
    assert _count("GET", "/obs-boom", "500") == before_500 + 1
    assert metrics.ACTIVE_CONNECTIONS.labels(kind="http")._value.get() == 0


def test_request_id_is_echoed_generated_or_replaced(small_app):
    client = TestClient(small_app)
    given = client.get("/obs-items/1", headers={"X-Request-ID": "abc-123.x"})
    assert given.headers["x-request-id"] == "abc-123.x"
    fresh = client.get("/obs-items/1")
    assert len(fresh.headers["x-request-id"]) == 32
    assert fresh.headers["x-request-id"] != client.get("/obs-items/1").headers["x-request-id"]
    # A value that could forge log lines or grow without bound is replaced.
    for bad in ("a" * 65, "two words", "x\u00e9".encode("latin-1"), "id;drop"):
        got = client.get("/obs-items/1", headers={"X-Request-ID": bad}).headers["x-request-id"]
        assert got != bad and len(got) == 32


def test_websocket_connections_are_gauged_and_counted(small_app):
    client = TestClient(small_app)
    gauge = metrics.ACTIVE_CONNECTIONS.labels(kind="websocket")
    start = gauge._value.get()
    before = _count("WEBSOCKET", "/ws/obs-echo", "101")
    with client.websocket_connect("/ws/obs-echo", headers={"X-Request-ID": "ws-1"}) as ws:
        assert gauge._value.get() == start + 1
        ws.send_text("hello")
        assert ws.receive_text() == "hello"
    assert gauge._value.get() == start
    assert _count("WEBSOCKET", "/ws/obs-echo", "101") == before + 1
    # Refused before the handshake: counted as 403, never gauged as open.
    before_refused = _count("WEBSOCKET", "/ws/obs-refuse", "403")
    with pytest.raises(WebSocketDisconnect), client.websocket_connect("/ws/obs-refuse"):
        pass
    assert _count("WEBSOCKET", "/ws/obs-refuse", "403") == before_refused + 1
    assert gauge._value.get() == start


def test_access_log_lines_carry_the_request_id_and_no_query(small_app):
    out = io.StringIO()
    handler = build_handler(Settings(log_format="json"), stream=out)
    access = logging.getLogger("stream_server.access")
    access.addHandler(handler)
    old_level = access.level
    access.setLevel(logging.INFO)
    try:
        client = TestClient(small_app)
        client.get("/obs-items/7?api_key=very-secret-1", headers={"X-Request-ID": "req-77"})
    finally:
        access.removeHandler(handler)
        access.setLevel(old_level)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    mine = [line for line in lines if line.get("request_id") == "req-77"]
    assert mine, lines
    assert mine[0]["message"].startswith("GET /obs-items/7 200 ")
    assert "very-secret-1" not in out.getvalue()


def test_included_routers_are_named_with_their_prefix():
    from fastapi import APIRouter

    router = APIRouter()

    @router.get("/{thing_id}/parts/{part}")
    async def part(thing_id: str, part: int):
        return {"thing": thing_id, "part": part}

    @router.websocket("/live")
    async def live(ws: WebSocket):
        await ws.accept()
        await ws.close()

    app = FastAPI()
    app.include_router(router, prefix="/obs-things")
    app.add_middleware(RequestObservabilityMiddleware)
    client = TestClient(app)
    template = "/obs-things/{thing_id}/parts/{part}"
    before = _count("GET", template, "200")
    assert client.get("/obs-things/abc/parts/3").status_code == 200
    assert _count("GET", template, "200") == before + 1
    before_ws = _count("WEBSOCKET", "/obs-things/live", "101")
    with client.websocket_connect("/obs-things/live"):
        pass
    assert _count("WEBSOCKET", "/obs-things/live", "101") == before_ws + 1
