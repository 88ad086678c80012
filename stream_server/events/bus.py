"""One bus for every output: publishers never wait, subscribers get bounded queues.

A subscriber that cannot keep up (its queue is full) is closed with a reason
instead of slowing the pipeline or any other subscriber.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .. import metrics
from .schema import EventBase

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EventFilter:
    stream_ids: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    identity_ids: frozenset[str] = frozenset()

    def accepts(self, event: EventBase) -> bool:
        if self.stream_ids and event.stream_id not in self.stream_ids:
            return False
        if self.types and event.type not in self.types:  # type: ignore[attr-defined]
            return False
        if self.identity_ids:
            ident = getattr(event, "identity_id", None)
            if ident not in self.identity_ids:
                return False
        return True


@dataclass(eq=False)
class Subscription:
    """A subscriber's bounded queue. Iterate it; it ends when closed."""

    filter: EventFilter
    queue: asyncio.Queue
    on_close: Callable[[Subscription], None]
    closed_reason: str | None = None
    delivered: int = 0
    _closed: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, event: EventBase) -> bool:
        if self.closed_reason is not None or not self.filter.accepts(event):
            return True
        try:
            self.queue.put_nowait(event)
            return True
        except asyncio.QueueFull:
            return False

    async def get(self) -> EventBase | None:
        """Next event, or None once the subscription is closed."""
        if not self.queue.empty():
            self.delivered += 1
            return self.queue.get_nowait()
        if self.closed_reason is not None:
            return None
        getter = asyncio.ensure_future(self.queue.get())
        closer = asyncio.ensure_future(self._closed.wait())
        try:
            done, _ = await asyncio.wait({getter, closer}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            # Cancelled (the reader went away): leave no queue.get() task pending.
            getter.cancel()
            raise
        finally:
            closer.cancel()
        if getter in done:
            self.delivered += 1
            return getter.result()
        getter.cancel()
        return None

    def __aiter__(self):
        return self

    async def __anext__(self) -> EventBase:
        event = await self.get()
        if event is None:
            raise StopAsyncIteration
        return event

    def close(self, reason: str = "closed") -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
            self._closed.set()
            self.on_close(self)


class EventBus(Protocol):
    def publish(self, event: EventBase) -> None: ...

    def subscribe(
        self, filter: EventFilter | None = None, queue_size: int = 256
    ) -> Subscription: ...

    @property
    def subscriber_count(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class MemoryEventBus:
    """In-process bus. ``publish`` must be called on the event loop's thread."""

    def __init__(self, default_queue_size: int = 256) -> None:
        self._subs: set[Subscription] = set()
        self._default_queue_size = default_queue_size
        self.published = 0

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    def subscribe(
        self, filter: EventFilter | None = None, queue_size: int | None = None
    ) -> Subscription:
        sub = Subscription(
            filter or EventFilter(),
            asyncio.Queue(maxsize=queue_size or self._default_queue_size),
            self._remove,
        )
        self._subs.add(sub)
        metrics.SUBSCRIBERS.set(len(self._subs))
        return sub

    def _remove(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        metrics.SUBSCRIBERS.set(len(self._subs))

    def publish(self, event: EventBase) -> None:
        self.published += 1
        metrics.EVENTS.labels(type=event.type).inc()  # type: ignore[attr-defined]
        if event.latency_ms is not None:
            metrics.FRAME_TO_EVENT.observe(event.latency_ms / 1000.0)
        self.deliver(event)

    def deliver(self, event: EventBase) -> None:
        for sub in list(self._subs):
            if not sub.offer(event):
                log.warning(
                    "event subscriber too slow (queue of %d full); closing it", sub.queue.maxsize
                )
                metrics.SUBSCRIBERS_DROPPED.inc()
                sub.close("subscriber too slow: event queue full")

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for sub in list(self._subs):
            sub.close("server shutting down")
