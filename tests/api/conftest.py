from __future__ import annotations

import pytest

from tests.live_helpers import start_server


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
