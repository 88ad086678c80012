"""``WS /ws/events`` under load: one subscriber that never reads must not cost the
others a single event, and is itself disconnected."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time

import pytest
import websockets

pytestmark = pytest.mark.real

QUEUE = 64
SERVER_SETTINGS = {"subscriber_queue_size": QUEUE, "ws_send_timeout_s": 2.0}
READERS = 49
# Loopback sockets absorb ~3 MB before a sender blocks: events with a 16 KB detail
# (a camera's error text can be long) reach that in a few hundred events.
DETAIL = "x" * 16_000
MAX_EVENTS = 2000
AFTER_DROP = 128  # events still published once the stuck one is gone
BATCH = QUEUE // 2


def _never_reading_subscriber(port: int) -> socket.socket:
    """A WebSocket client that subscribes and then never reads a byte, with a tiny
    receive buffer so the server feels it soon."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET /ws/events HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # the handshake only; after it, nothing is ever read
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def test_fifty_subscribers_one_never_reads(live_server, enrolled_service):
    from stream_server import metrics
    from stream_server.events.schema import StreamStatus

    bus = enrolled_service.bus
    dropped_before = metrics.SUBSCRIBERS_DROPPED._value.get()
    received: list[list[int]] = [[] for _ in range(READERS)]
    url = f"{live_server.ws_url}/ws/events?stream_id=load"

    async def reader(i: int, ws) -> None:
        async for text in ws:
            msg = json.loads(text)
            if msg["type"] == "stream.status":
                received[i].append(msg["seq"])

    readers = []
    for _ in range(READERS):
        ws = await websockets.connect(url)
        assert json.loads(await ws.recv())["type"] == "subscribed"
        readers.append(ws)
    stuck = await asyncio.to_thread(_never_reading_subscriber, live_server.port)
    deadline = time.monotonic() + 10
    while bus.subscriber_count < READERS + 1:
        assert time.monotonic() < deadline, bus.subscriber_count
        await asyncio.sleep(0.02)
    tasks = [asyncio.create_task(reader(i, ws)) for i, ws in enumerate(readers)]

    def publish(first: int, n: int) -> None:
        for seq in range(first, first + n):
            bus.publish(StreamStatus(stream_id="load", seq=seq, state="retrying", detail=DETAIL))

    try:
        start = time.monotonic()
        stuck_dropped_at = None
        published = 0
        while published < MAX_EVENTS:
            if stuck_dropped_at is not None and published >= stuck_dropped_at + AFTER_DROP:
                break
            # The publisher (the pipeline) never waits for subscribers; the test only
            # paces itself to what the readers can take, so a reader never overflows.
            await asyncio.to_thread(live_server.call, lambda f=published: publish(f, BATCH))
            published += BATCH
            while min(len(r) for r in received) < published - BATCH:
                assert time.monotonic() - start < 60, "readers fell behind"
                await asyncio.sleep(0.005)
            if stuck_dropped_at is None and bus.subscriber_count == READERS:
                stuck_dropped_at = published
        while min(len(r) for r in received) < published:
            assert time.monotonic() - start < 60, "readers fell behind"
            await asyncio.sleep(0.01)
        for ws in readers:
            await ws.close()
        # The server gave up on the stuck client too: no handler is left waiting on it,
        # although it is still connected and still not reading.
        tasks_left = live_server.server.server_state.tasks
        while tasks_left:
            assert time.monotonic() - start < 60, f"{len(tasks_left)} handler(s) still running"
            await asyncio.sleep(0.05)
        print(
            f"stuck subscriber dropped after {stuck_dropped_at} events; "
            f"{READERS} readers got {published} events each in {time.monotonic() - start:.1f} s"
        )
    finally:
        for task in tasks:
            task.cancel()
        for ws in readers:
            await ws.close()
        stuck.close()

    # Every reader got every event, in order.
    for got in received:
        assert got == list(range(published))
    # The one that never read was dropped (once) while the others went on.
    assert stuck_dropped_at is not None, f"still subscribed after {published} events"
    assert metrics.SUBSCRIBERS_DROPPED._value.get() - dropped_before == 1
    deadline = time.monotonic() + 10
    while bus.subscriber_count:
        assert time.monotonic() < deadline, bus.subscriber_count
        await asyncio.sleep(0.05)
