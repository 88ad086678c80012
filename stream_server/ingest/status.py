"""``stream.status`` events for sources that come and go (browsers, WebSocket clients)."""

from __future__ import annotations

from ..events.schema import StreamStatus


def publish_status(bus, stream_id: str, state: str, previous: str | None, detail: str) -> None:
    bus.publish(StreamStatus(stream_id=stream_id, state=state, previous=previous, detail=detail))
