"""Sending on a WebSocket without letting one client stall the server."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import WebSocket

log = logging.getLogger(__name__)

CLOSE_TOO_SLOW = 4008
CLOSE_BAD_REQUEST = 4400
CLOSE_CONFLICT = 4409


class ClientTooSlow(RuntimeError):
    """The client did not take a message within the send timeout."""


async def send_text_within(websocket: WebSocket, text: str, timeout: float) -> None:
    """Send, or raise ``ClientTooSlow`` when the client has not taken data for
    ``timeout`` seconds (its socket buffers are full: it stopped reading)."""
    try:
        await asyncio.wait_for(websocket.send_text(text), timeout)
    except TimeoutError as exc:
        raise ClientTooSlow(f"client took no data for {timeout:g} s") from exc


async def close_quietly(websocket: WebSocket, code: int, reason: str, timeout: float = 1.0) -> None:
    """Close with a code and reason; never blocks longer than ``timeout``."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(websocket.close(code, reason[:120]), timeout)
