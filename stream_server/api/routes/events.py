"""``WS /ws/events``: live events of every stream, filtered per subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect

from ... import metrics
from ...events.bus import EventFilter
from ...events.schema import EVENT_TYPES
from ..websocket_io import (
    CLOSE_BAD_REQUEST,
    CLOSE_TOO_SLOW,
    ClientTooSlow,
    close_quietly,
    send_text_within,
)

log = logging.getLogger(__name__)
router = APIRouter()


def _csv(values: list[str] | None) -> frozenset[str]:
    out: set[str] = set()
    for v in values or []:
        out.update(p.strip() for p in v.split(",") if p.strip())
    return frozenset(out)


@router.websocket("/ws/events")
async def ws_events(
    websocket: WebSocket,
    stream_id: list[str] | None = Query(None),
    type: list[str] | None = Query(None),  # noqa: A002 - the query parameter's public name
    identity_id: list[str] | None = Query(None),
) -> None:
    """Subscribe to events. Query filters (repeat or comma-separate): ``stream_id``,
    ``type`` (track.started, face.matched, face.unknown, track.ended, stream.status),
    ``identity_id``. A subscriber that falls behind is sent an error and closed (4008)."""
    await websocket.accept()
    types = _csv(type)
    unknown = types - set(EVENT_TYPES)
    if unknown:
        await websocket.send_json(
            {"type": "error", "error": f"unknown event types: {sorted(unknown)}"}
        )
        await websocket.close(CLOSE_BAD_REQUEST, "unknown event type")
        return
    service = websocket.app.state.service
    sub = service.bus.subscribe(
        EventFilter(_csv(stream_id), types, _csv(identity_id)),
        websocket.app.state.settings.subscriber_queue_size,
    )
    await websocket.send_json(
        {
            "type": "subscribed",
            "filter": {
                "stream_id": sorted(sub.filter.stream_ids),
                "type": sorted(sub.filter.types),
                "identity_id": sorted(sub.filter.identity_ids),
            },
        }
    )

    async def watch_client() -> None:
        # Reading lets us notice the client going away while no events flow.
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return

    send_timeout = websocket.app.state.settings.ws_send_timeout_s
    reader = asyncio.create_task(watch_client())
    connections = metrics.ACTIVE_CONNECTIONS.labels(kind="ws_events")
    connections.inc()
    try:
        while True:
            getter = asyncio.create_task(sub.get())
            done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if reader in done:
                getter.cancel()
                return
            event = getter.result()
            if event is None:
                reason = sub.closed_reason or "closed"
                with contextlib.suppress(Exception):
                    await send_text_within(
                        websocket, json.dumps({"type": "error", "error": reason}), 1.0
                    )
                await close_quietly(websocket, CLOSE_TOO_SLOW if "slow" in reason else 1001, reason)
                return
            # A client that stopped reading fills its socket buffers and the send
            # blocks: only this subscriber waits (its queue fills and the bus drops it),
            # and after the send timeout it is disconnected.
            await send_text_within(websocket, event.wire, send_timeout)
    except ClientTooSlow as exc:
        reason = sub.closed_reason or f"subscriber too slow: {exc}"
        if sub.closed_reason is None:  # else the bus already dropped it and counted that
            log.warning("closing an event subscriber: %s", reason)
            metrics.SUBSCRIBERS_DROPPED.inc()
            sub.close(reason)
        await close_quietly(websocket, CLOSE_TOO_SLOW, reason)
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        connections.dec()
        sub.close("client left")
        reader.cancel()
