"""The latest-frame slot: a live stream never queues old frames."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from .. import metrics
from ..types import Frame


class SlotClosed(RuntimeError):
    pass


class LatestFrameSlot:
    """Holds at most one frame: the newest.

    ``put`` may be called from any thread. With ``block=False`` (live sources) a
    frame not yet taken is replaced and counted as dropped. With ``block=True``
    (files replayed as fast as possible) ``put`` waits until the consumer took the
    previous frame, so nothing is dropped. ``get`` is awaited on the event loop.
    """

    def __init__(
        self, stream_id: str, loop: asyncio.AbstractEventLoop, block: bool = False
    ) -> None:
        self.stream_id = stream_id
        self.block = block
        self._loop = loop
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self._ready = asyncio.Event()
        self.received = 0
        self.dropped = 0
        self._m_received = metrics.FRAMES_RECEIVED.labels(stream=stream_id)
        self._m_dropped = metrics.FRAMES_DROPPED.labels(stream=stream_id)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, frame: Frame, timeout: float | None = None) -> bool:
        """Offer a frame. Returns False if the slot is closed (the consumer is gone)."""
        with self._cond:
            if self._closed:
                return False
            if self.block:
                while self._frame is not None and not self._closed:
                    if not self._cond.wait(timeout=timeout):
                        return False
                if self._closed:
                    return False
            elif self._frame is not None:
                self.dropped += 1
                self._m_dropped.inc()
            self._frame = frame
            self.received += 1
            self._m_received.inc()
        self._wake()
        return True

    def count_dropped(self, n: int = 1) -> None:
        """Count frames a source dropped before they reached the slot (e.g. encoded
        frames superseded before decoding), so ``dropped`` tells the whole story."""
        with self._cond:
            self.dropped += n
        self._m_dropped.inc(n)

    def _wake(self) -> None:
        # A closed loop means nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._ready.set)

    async def get(self) -> Frame | None:
        """The newest frame; None once the slot is closed and empty."""
        while True:
            with self._cond:
                frame = self._frame
                if frame is not None:
                    self._frame = None
                    self._cond.notify_all()
                    return frame
                if self._closed:
                    return None
            self._ready.clear()
            await self._ready.wait()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._wake()
