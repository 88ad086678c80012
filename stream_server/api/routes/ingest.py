"""``WS /ws/ingest``: a program pushes encoded frames; results and events come back.

Protocol: after the server's ``{"type": "ingest.ready", ...}`` message, each
binary message is one JPEG, PNG or WebP frame, numbered from 0 in the order
sent (``seq``). The server answers each frame it processes with a
``frame.result`` message, pushes every event of the stream on the same socket,
and answers a frame it cannot use with ``{"type": "error", "seq": n, ...}``.
A client that sends faster than the pipeline runs has its older frames dropped;
``dropped`` in each result counts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect

from ... import metrics
from ...events.bus import EventFilter
from ...ingest.status import publish_status
from ...service import ImageError, decode_image
from ...streams import LiveStream, StreamExists
from ...types import Frame
from ..websocket_io import (
    CLOSE_BAD_REQUEST,
    CLOSE_CONFLICT,
    CLOSE_TOO_SLOW,
    ClientTooSlow,
    close_quietly,
    send_text_within,
)
from .webrtc import STREAM_ID_PATTERN

log = logging.getLogger(__name__)
router = APIRouter(tags=["live"])

_STREAM_ID = re.compile(STREAM_ID_PATTERN)


class _LatestEncoded:
    """The newest encoded frame not yet decoded; an older one it replaces is dropped."""

    def __init__(self, stream: LiveStream) -> None:
        self._stream = stream
        self._item: tuple[int, bytes, float, float] | None = None
        self._ready = asyncio.Event()

    def put(self, seq: int, data: bytes) -> None:
        if self._item is not None:
            self._stream.slot.count_dropped()
        self._item = (seq, data, time.time(), time.monotonic())
        self._ready.set()

    async def get(self) -> tuple[int, bytes, float, float]:
        while self._item is None:
            self._ready.clear()
            await self._ready.wait()
        item, self._item = self._item, None
        return item


class _IngestSession:
    def __init__(self, websocket: WebSocket, stream: LiveStream) -> None:
        self.websocket = websocket
        self.stream = stream
        self.stream_id = stream.stream_id
        self.settings = websocket.app.state.settings
        self.service = websocket.app.state.service
        self.outbox: asyncio.Queue[str] = asyncio.Queue(maxsize=self.settings.subscriber_queue_size)
        self.too_slow = asyncio.Event()
        self.pending = _LatestEncoded(stream)
        self.received = 0
        self.errors = 0
        # Subscribed before the first frame can arrive, so no event of the stream is missed.
        self.sub = self.service.bus.subscribe(
            EventFilter(stream_ids=frozenset({self.stream_id})),
            self.settings.subscriber_queue_size,
        )

    def push(self, message: str) -> None:
        try:
            self.outbox.put_nowait(message)
        except asyncio.QueueFull:
            self.too_slow.set()

    def error(self, seq: int | None, message: str) -> None:
        self.errors += 1
        self.push(json.dumps({"type": "error", "seq": seq, "error": message}))

    def on_result(self, frame: Frame, result) -> None:
        self.push(json.dumps(result.as_dict()))

    async def read(self) -> str:
        """Take messages as fast as they come; returns why the client is gone."""
        limit = self.settings.ingest_max_frame_bytes
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return "client left"
            data = message.get("bytes")
            if data is None:
                self.error(None, "send frames as binary messages (JPEG, PNG or WebP)")
                continue
            seq = self.received
            self.received += 1
            if len(data) > limit:
                self.error(seq, f"frame of {len(data)} bytes exceeds the limit of {limit}")
                continue
            self.pending.put(seq, data)

    async def decode(self) -> None:
        max_pixels = self.settings.ingest_max_pixels
        while True:
            seq, data, arrived_at, arrived_mono = await self.pending.get()
            try:
                image = await asyncio.to_thread(decode_image, data, max_pixels)
            except ImageError as exc:
                self.error(seq, str(exc))
                continue
            frame = Frame(
                self.stream_id, seq, image, arrived_at=arrived_at, arrived_mono=arrived_mono
            )
            if not self.stream.put(frame):
                return

    async def forward_events(self) -> str:
        async for event in self.sub:
            self.push(event.wire)
        return self.sub.closed_reason or "event subscription closed"

    async def send(self) -> None:
        timeout = self.settings.ws_send_timeout_s
        while True:
            text = await self.outbox.get()
            await send_text_within(self.websocket, text, timeout)


@router.websocket("/ws/ingest")
async def ws_ingest(
    websocket: WebSocket,
    stream_id: str | None = Query(None, description="the stream's name in events"),
    detector: str | None = Query(None, description="short (default) or full range detector"),
) -> None:
    """Push frames, get results: see the module's protocol. Close codes: 4400 bad
    query, 4409 stream_id already in use, 4008 the client does not read its results."""
    await websocket.accept()
    app = websocket.app
    settings = app.state.settings
    detector = detector or settings.webcam_detector
    if detector not in ("short", "full"):
        await _refuse(websocket, CLOSE_BAD_REQUEST, "detector must be short or full")
        return
    if stream_id is not None and not _STREAM_ID.match(stream_id):
        await _refuse(websocket, CLOSE_BAD_REQUEST, "stream_id: 1-64 of A-Z a-z 0-9 . _ : -")
        return
    stream_id = stream_id or f"ws-{uuid.uuid4().hex[:10]}"
    streams = app.state.streams
    try:
        stream = await streams.open(stream_id, detector, "websocket")
    except StreamExists:
        await _refuse(websocket, CLOSE_CONFLICT, f"stream_id {stream_id} is already in use")
        return

    session = _IngestSession(websocket, stream)
    stream.add_listener(session.on_result)
    bus = app.state.service.bus
    peer = f"{websocket.client.host}:{websocket.client.port}" if websocket.client else "?"
    publish_status(bus, stream_id, "live", None, f"websocket from {peer}")
    connections = metrics.ACTIVE_CONNECTIONS.labels(kind="ws_ingest")
    connections.inc()
    reader = asyncio.create_task(session.read())
    sender = asyncio.create_task(session.send())
    slow = asyncio.create_task(session.too_slow.wait())
    events = asyncio.create_task(session.forward_events())
    decoder = asyncio.create_task(session.decode())
    reason = "closed"
    code = 1000
    try:
        await websocket.send_json(
            {
                "type": "ingest.ready",
                "stream_id": stream_id,
                "detector": detector,
                "max_frame_bytes": settings.ingest_max_frame_bytes,
            }
        )
        done, _ = await asyncio.wait(
            {reader, sender, slow, events, decoder}, return_when=asyncio.FIRST_COMPLETED
        )
        finished = done.pop()
        if finished is slow:
            reason, code = "client too slow: it does not read its results", CLOSE_TOO_SLOW
        elif finished is events:
            reason, code = events.result(), 1001
            if "slow" in reason:
                code = CLOSE_TOO_SLOW
        elif finished is sender and isinstance(sender.exception(), ClientTooSlow):
            reason, code = f"client too slow: {sender.exception()}", CLOSE_TOO_SLOW
        elif finished is reader and reader.exception() is None:
            reason = reader.result()
        elif finished.exception() is not None and not isinstance(
            finished.exception(), WebSocketDisconnect | RuntimeError
        ):
            reason, code = "internal error", 1011
            log.error("[%s] ingest failed", stream_id, exc_info=finished.exception())
        else:
            reason = "client left"
    except (WebSocketDisconnect, RuntimeError):
        reason = "client left"
    finally:
        connections.dec()
        session.sub.close(reason)
        for task in (reader, sender, slow, events, decoder):
            task.cancel()
        for task in (reader, sender, slow, events, decoder):
            with contextlib.suppress(BaseException):
                await task
        stream.remove_listener(session.on_result)
        await streams.close(stream_id)
        publish_status(bus, stream_id, "stopped", "live", reason)
        log.info(
            "[%s] websocket ingest ended: %s (%d frames received, %d errors, %d dropped)",
            stream_id,
            reason,
            session.received,
            session.errors,
            stream.slot.dropped,
        )
        if reason != "client left":
            await close_quietly(websocket, code, reason)


async def _refuse(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):
        await websocket.send_json({"type": "error", "error": reason})
    await close_quietly(websocket, code, reason)
