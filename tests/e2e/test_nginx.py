"""Check 1 of the operations issue: the real nginx (Debian package) runs the shipped
nginx/nginx.conf in front of a real server: HTTPS works with the security headers,
HTTP redirects, a WebSocket to /ws/events works through it, a burst beyond the rate
limit is refused while /health and /ready never are."""

from __future__ import annotations

import asyncio
import json
import ssl

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from stream_server.app import create_app
from stream_server.events.schema import StreamStatus
from tests.conftest import skip_or_fail
from tests.deploy_files import NGINX_BIN, NginxProcess, prepare_nginx
from tests.live_server import LiveServer


@pytest.fixture(scope="module")
def backend(enrolled_service, settings_factory):
    app = create_app(settings_factory(), service=enrolled_service)
    with LiveServer(app) as server:
        yield server


@pytest.fixture()
def nginx(backend):
    import os

    if not os.access(NGINX_BIN, os.X_OK):
        skip_or_fail("nginx is not installed (Debian package nginx; scripts/setup --test)")
    rendered = prepare_nginx(f"127.0.0.1:{backend.port}")
    proc = NginxProcess(rendered)
    try:
        yield rendered
    finally:
        proc.stop()
        rendered.cleanup()


def tls_context(cert, minimum=None, maximum=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cert))
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    return ctx


def test_https_serves_the_app_with_security_headers(nginx, backend):
    base = f"https://127.0.0.1:{nginx.https_port}"
    with httpx.Client(base_url=base, verify=tls_context(nginx.cert), timeout=10) as client:
        r = client.get("/health", headers={"X-Request-ID": "through-nginx-1"})
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        assert r.headers["x-request-id"] == "through-nginx-1"
        assert r.headers["strict-transport-security"].startswith("max-age=")
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "strict-origin-when-cross-origin"
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "connect-src 'self' wss://127.0.0.1" in csp
        assert "camera=(self)" in r.headers["permissions-policy"]
        assert "server" not in r.headers or "nginx/" not in r.headers["server"]
        # nginx makes a request id when the client sends none, and the service uses it.
        made = client.get("/ready")
        assert made.status_code == 200 and len(made.headers["x-request-id"]) == 32
        # The service's own errors come through, with the headers too.
        missing = client.get("/no/such/route")
        assert missing.status_code == 404 and "detail" in missing.json()
        assert missing.headers["x-frame-options"] == "DENY"
        # Metrics are for Prometheus on the inside, not the public side.
        assert client.get("/metrics").status_code == 404
        assert httpx.get(f"{backend.url}/metrics").status_code == 200
        # Uploads above client_max_body_size are refused by nginx.
        big = client.post("/no/such/route", content=b"\0" * (13 * 1024 * 1024))
        assert big.status_code == 413


def test_only_tls_1_2_and_1_3(nginx):
    url = f"https://127.0.0.1:{nginx.https_port}/health"
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = tls_context(nginx.cert, minimum=version, maximum=version)
        assert httpx.get(url, verify=ctx).status_code == 200
    old = tls_context(nginx.cert, maximum=ssl.TLSVersion.TLSv1_1)
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, verify=old)


def test_http_redirects_to_https(nginx):
    r = httpx.get(f"http://127.0.0.1:{nginx.http_port}/ready?x=1", follow_redirects=False)
    assert r.status_code == 301
    assert r.headers["location"] == "https://127.0.0.1/ready?x=1"


def test_websocket_events_through_nginx(nginx, backend):
    # The asyncio client: websockets' threaded client stalls now and then on TLS 1.3
    # handshakes (seen here about once in 300 connections, with any server).
    url = f"wss://127.0.0.1:{nginx.https_port}/ws/events?type=stream.status"

    async def publish() -> None:
        backend.app.state.service.bus.publish(
            StreamStatus(stream_id="nginx-check", state="live", previous="connecting")
        )

    async def scenario() -> dict:
        async with ws_connect(url, ssl=tls_context(nginx.cert), open_timeout=10) as ws:
            hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert hello["type"] == "subscribed"
            assert hello["filter"]["type"] == ["stream.status"]
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(publish(), backend.loop))
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))
            # Still open and answering after a pause: the upgrade held end to end.
            await asyncio.sleep(1.0)
            pong = await ws.ping()
            await asyncio.wait_for(pong, 5)
            return event

    event = asyncio.run(scenario())
    assert event["type"] == "stream.status" and event["stream_id"] == "nginx-check"


def test_burst_is_refused_while_health_never_is(nginx):
    base = f"https://127.0.0.1:{nginx.https_port}"

    # One concurrent burst (so the result does not depend on how fast this machine
    # sends): 120 API requests, and /health and /ready interleaved with them.
    async def burst():
        limits = httpx.Limits(max_connections=40)
        async with httpx.AsyncClient(
            base_url=base, verify=tls_context(nginx.cert), timeout=30, limits=limits
        ) as client:
            loop = asyncio.get_running_loop()
            start = loop.time()
            api = [client.get("/openapi.json") for _ in range(120)]
            probes = [client.get(path) for path in ("/health", "/ready") for _ in range(75)]
            responses = await asyncio.gather(*api, *probes)
            return responses[:120], responses[120:], loop.time() - start

    api, probes, elapsed = asyncio.run(burst())
    codes = [r.status_code for r in api]
    ok, limited = codes.count(200), codes.count(429)
    assert ok + limited == len(codes), set(codes)
    assert ok >= 40, ok  # the burst allowance of 40 is served
    assert ok <= 40 + 20 * elapsed + 5, (ok, elapsed)  # then 20/s; the rest is refused
    assert limited >= 20, (limited, elapsed)
    refused = next(r for r in api if r.status_code == 429)
    assert refused.json()["detail"].startswith("rate limit")
    assert refused.headers["strict-transport-security"]
    # While the limit was exhausted, the probes were never refused.
    assert {r.status_code for r in probes} == {200}, {r.status_code for r in probes}
    # WebSocket handshakes have their own, smaller budget.
    url = f"wss://127.0.0.1:{nginx.https_port}/ws/events"

    async def handshakes() -> list[int]:
        results = []
        for _ in range(40):
            try:
                async with ws_connect(url, ssl=tls_context(nginx.cert), open_timeout=10) as ws:
                    await asyncio.wait_for(ws.recv(), 10)
                    results.append(101)
            except InvalidStatus as exc:
                results.append(exc.response.status_code)
        return results

    results = asyncio.run(handshakes())
    assert set(results) <= {101, 429}
    assert results.count(101) >= 20 and results.count(429) >= 5, results
