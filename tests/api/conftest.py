"""Fixtures of the API tests: fresh services (own gallery) and clients for them."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.live_helpers import start_server

API_KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="session")
def service_factory(settings_factory):
    """Build a FaceService with its own empty gallery (closed at the session's end)."""
    from stream_server.service import FaceService

    made = []

    def make(**overrides):
        service = FaceService(settings_factory(**overrides))
        made.append(service)
        return service

    yield make
    for service in made:
        service.close()


@contextlib.contextmanager
def api_client(service, **overrides):
    """A TestClient (lifespan run) for an app around ``service``; API settings from
    ``overrides`` on top of the service's own settings (key required by default)."""
    from stream_server.app import create_app

    options = {"api_keys": [API_KEY]}
    options.update(overrides)
    settings = service.settings.model_copy(update=options)
    # model_copy skips validation: run the validators the way the environment would.
    settings = type(settings)(**settings.model_dump())
    with TestClient(create_app(settings, service=service)) as client:
        yield client


def jpeg(image: np.ndarray, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def load_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def files_field(name: str, *paths: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(name, (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]


def enrol(client, name: str, paths: list[Path], headers=AUTH, **params) -> dict:
    """Create an identity and enrol ``paths``; returns {"id", "response"}."""
    r = client.post("/identities", json={"name": name}, headers=headers)
    assert r.status_code == 201, r.text
    ident = r.json()["id"]
    r = client.post(
        f"/identities/{ident}/faces",
        files=files_field("files", *paths),
        params=params,
        headers=headers,
    )
    return {"id": ident, "response": r}


@pytest.fixture(scope="module")
def live_server(request, enrolled_service, settings_factory):
    """A real uvicorn server on 127.0.0.1 (free port) sharing the session's enrolled
    service. A test module may set ``SERVER_SETTINGS = {...}`` to override settings."""
    overrides = getattr(request.module, "SERVER_SETTINGS", {})
    server = start_server(enrolled_service, settings_factory(**overrides))
    yield server
    server.stop()
    # Nothing a test opened may outlive it.
    assert enrolled_service.bus.subscriber_count == 0
