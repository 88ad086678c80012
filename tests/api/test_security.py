"""Check 4: API keys and rate limits (in-process; the real-server side is in
test_server_process.py)."""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from stream_server.api.errors import install_error_handlers
from stream_server.api.security import install_security
from stream_server.config import ConfigurationError, Settings

from .conftest import API_KEY, AUTH, api_client

OTHER_KEY = "second-key-abcdef0123456789"


@pytest.fixture(scope="module")
def service(service_factory):
    return service_factory()


@pytest.fixture(scope="module")
def photos(media_dir):
    small = (media_dir / "obama_small.jpg").read_bytes()
    return {"image_a": ("a.jpg", small), "image_b": ("b.jpg", small)}


@pytest.fixture()
def client(service):
    with api_client(service, api_keys=[API_KEY, OTHER_KEY]) as c:
        yield c


PROTECTED = [
    ("GET", "/identities"),
    ("POST", "/identities"),
    ("GET", "/identities/abc"),
    ("DELETE", "/identities/abc"),
    ("POST", "/recognize"),
    ("POST", "/compare-faces"),
    # Routes other parts of the service add (or that do not exist): covered all the same.
    ("POST", "/webrtc/offer"),
    ("GET", "/streams"),
    ("GET", "/no/such/thing"),
]


@pytest.mark.parametrize("method,path", PROTECTED)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key-0123456789abcdef"},
        {"Authorization": f"Basic {API_KEY}"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Bearer {API_KEY}x"},
        {"Authorization": f"Bearer {API_KEY[:-1]}"},
    ],
    ids=["none", "wrong", "basic", "empty", "longer", "shorter"],
)
def test_without_the_right_key_401(client, method, path, headers):
    r = client.request(method, path, headers=headers)
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "unauthorized"
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_the_right_keys_200(client, photos):
    for key in (API_KEY, OTHER_KEY):
        headers = {"Authorization": f"Bearer {key}"}
        assert client.get("/identities", headers=headers).status_code == 200
        r = client.post("/compare-faces", files=photos, headers=headers)
        assert r.status_code == 200 and r.json()["same_person"] is True
    # The scheme name is case-insensitive (RFC 7235).
    assert (
        client.get("/identities", headers={"Authorization": f"bearer {API_KEY}"}).status_code == 200
    )
    # A client that cannot set headers may pass ?api_key=.
    assert client.get("/identities", params={"api_key": API_KEY}).status_code == 200
    assert client.get("/identities", params={"api_key": "nope"}).status_code == 401


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics", "/docs", "/openapi.json"])
def test_public_paths(client, path):
    assert client.get(path).status_code == 200


def test_metrics_and_docs_can_require_the_key(service):
    with api_client(service, metrics_require_key=True, docs_require_key=True) as c:
        for path in ("/metrics", "/docs", "/openapi.json"):
            assert c.get(path).status_code == 401
            assert c.get(path, headers=AUTH).status_code == 200
        assert c.get("/health").status_code == 200


def test_openapi_declares_the_bearer_scheme(client):
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    assert schema["security"] == [{"ApiKey": []}]
    assert schema["paths"]["/health"]["get"]["security"] == []
    assert "security" not in schema["paths"]["/recognize"]["post"]


def test_websocket_without_key_closed_4401(client):
    for path in ("/ws/events", "/ws/events?api_key=wrong", "/ws/ingest/cam1"):
        with pytest.raises(WebSocketDisconnect) as info, client.websocket_connect(path) as ws:
            ws.receive_json()
        assert info.value.code == 4401, path
        assert "API key" in info.value.reason


def test_websocket_with_key_header_or_query(client):
    with client.websocket_connect("/ws/events", headers=AUTH) as ws:
        assert ws.receive_json()["type"] == "subscribed"
    with client.websocket_connect(f"/ws/events?api_key={API_KEY}&type=face.matched") as ws:
        msg = ws.receive_json()
        # The key is taken out of the query; the other parameters reach the route.
        assert msg["type"] == "subscribed" and msg["filter"]["type"] == ["face.matched"]


def test_eleventh_compare_in_a_minute_429(client, photos):
    other = {"Authorization": f"Bearer {OTHER_KEY}"}
    for i in range(10):
        r = client.post("/compare-faces", files=photos, headers=AUTH)
        assert r.status_code == 200, (i, r.text)
    r = client.post("/compare-faces", files=photos, headers=AUTH)
    assert r.status_code == 429
    assert r.json()["error"] == "rate_limited" and "10 per 1 minute" in r.json()["detail"]
    retry = int(r.headers["Retry-After"])
    assert 1 <= retry <= 60
    assert r.headers["X-RateLimit-Remaining"] == "0"
    # Per client and per endpoint: another key, or /recognize, still has its budget.
    assert client.post("/compare-faces", files=photos, headers=other).status_code == 200
    r = client.post("/recognize", files={"image": photos["image_a"]}, headers=AUTH)
    assert r.status_code == 200
    # Refused requests do not extend the window, and the service keeps serving.
    assert client.post("/compare-faces", files=photos, headers=AUTH).status_code == 429
    assert client.get("/identities", headers=AUTH).status_code == 200


def test_enrolment_is_limited_too(service, photos):
    with api_client(service, rate_limit="3/minute") as c:
        ident = c.post("/identities", json={"name": "limited"}, headers=AUTH).json()["id"]
        codes = [
            c.post(
                f"/identities/{ident}/faces",
                files={"files": photos["image_a"]},
                headers=AUTH,
            ).status_code
            for _ in range(4)
        ]
        assert codes == [201, 201, 201, 429]


def test_rate_limit_off(service, photos):
    with api_client(service, rate_limit="off") as c:
        codes = {
            c.post("/compare-faces", files=photos, headers=AUTH).status_code for _ in range(12)
        }
        assert codes == {200}


def test_bad_rate_limit_setting_refused():
    with pytest.raises(ValueError, match="FACE_RATE_LIMIT"):
        Settings(rate_limit="lots")
    assert Settings(rate_limit="OFF").rate_limit_enabled is False
    assert Settings(rate_limit="5/second;100/hour").rate_limit_enabled is True


def test_open_mode_warns_loudly(service, caplog):
    caplog.set_level(logging.WARNING)
    with api_client(service, api_keys=[]) as c:
        assert c.get("/identities").status_code == 200
    assert "NO API KEY CONFIGURED" in caplog.text


def test_production_refuses_to_start_open(service):
    from stream_server.app import create_app

    with pytest.raises(ConfigurationError, match="FACE_API_KEYS"):
        create_app(Settings(environment="production", api_keys=""), service=service)
    create_app(Settings(environment="production", api_keys=API_KEY), service=service)


def test_keys_never_logged(client, photos, caplog):
    caplog.set_level(logging.DEBUG)
    client.get("/identities", headers=AUTH)
    client.get("/identities", headers={"Authorization": "Bearer wrong-secret-value-42"})
    client.get("/identities", params={"api_key": API_KEY})
    with (
        pytest.raises(WebSocketDisconnect),
        client.websocket_connect("/ws/events?api_key=wrong-secret-value-42") as ws,
    ):
        ws.receive_json()
    # What the service logs (httpx, the test's own client, logs the URLs it requests).
    text = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))
    assert "refused" in text  # refusals are logged, without the key
    assert API_KEY not in text and "wrong-secret-value-42" not in text
    assert repr(client.app.state.settings).count(API_KEY) == 0


def test_web_client_files_are_public(tmp_path):
    """The page must load so the user can type a key; nothing else is opened by it."""
    (tmp_path / "index.html").write_text("<h1>face</h1>")
    (tmp_path / "app.js").write_text("console.log(1)")
    (tmp_path / "identities").write_text("a file named like an API route")
    settings = Settings(api_keys=API_KEY)
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/identities")
    async def identities():
        return {"secret": True}

    app.mount("/", StaticFiles(directory=tmp_path, html=True))
    install_security(app, settings, tmp_path)
    with TestClient(app) as c:
        assert c.get("/").status_code == 200
        assert c.get("/index.html").text == "<h1>face</h1>"
        assert c.head("/app.js").status_code == 200
        assert c.get("/identities").status_code == 401  # the API route wins
        assert c.get("/missing.js").status_code == 401
        assert c.get("/../../etc/passwd").status_code in (401, 404)
        assert c.post("/app.js").status_code == 401
