"""Events shared by every replica through Redis pub/sub.

Pub/sub, not streams: events are live notifications for connected subscribers;
a subscriber that was not connected has no use for a backlog, and pub/sub adds
no storage to trim. Each replica delivers its own events locally at once (so a
Redis outage never silences the replica's own subscribers) and publishes them
to the channel; events arriving from the channel that another replica published
are delivered to the local subscribers. Publishing goes through a bounded
queue: while Redis is away the newest events are kept and older ones dropped
(counted), and the bus reconnects with capped backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid

from .. import metrics
from .bus import MemoryEventBus
from .schema import EventBase, parse_event

log = logging.getLogger(__name__)

CHANNEL = "face:events"


class RedisEventBus(MemoryEventBus):
    def __init__(
        self,
        redis_url: str,
        default_queue_size: int = 256,
        channel: str = CHANNEL,
        outbox_size: int = 1000,
    ) -> None:
        super().__init__(default_queue_size)
        self.redis_url = redis_url
        self.channel = channel
        self.origin = uuid.uuid4().hex
        self._outbox: asyncio.Queue[str] | None = None
        self._outbox_size = outbox_size
        self._tasks: list[asyncio.Task] = []
        self.healthy = False
        self.dropped_outgoing = 0
        self.received_remote = 0

    async def start(self) -> None:
        self._outbox = asyncio.Queue(maxsize=self._outbox_size)
        self._tasks = [
            asyncio.create_task(self._publisher(), name="redis-bus-publish"),
            asyncio.create_task(self._listener(), name="redis-bus-listen"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        await super().stop()

    def publish(self, event: EventBase) -> None:
        super().publish(event)
        if self._outbox is None:
            return
        payload = f'{{"origin": "{self.origin}", "event": {event.wire}}}'
        while True:
            try:
                self._outbox.put_nowait(payload)
                return
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    self._outbox.get_nowait()
                    self.dropped_outgoing += 1

    def _client(self):
        import redis.asyncio as aioredis

        return aioredis.from_url(
            self.redis_url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=10
        )

    async def _keep_connected(self, session) -> None:
        """Run ``session(client, connected)`` for ever on a fresh client, reconnecting
        with capped exponential backoff after each failure; ``connected()`` (called by
        the session once it works) resets the backoff."""
        backoff = 0.2

        def connected() -> None:
            nonlocal backoff
            backoff = 0.2

        while True:
            client = self._client()
            try:
                await session(client, connected)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._set_healthy(False, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()

    async def _publisher(self) -> None:
        assert self._outbox is not None
        outbox = self._outbox

        async def publish_all(client, connected) -> None:
            while True:
                payload = await outbox.get()
                try:
                    await client.publish(self.channel, payload)
                except Exception:
                    # Keep the event for the next connection (behind newer ones).
                    with contextlib.suppress(asyncio.QueueFull):
                        outbox.put_nowait(payload)
                    raise
                connected()

        await self._keep_connected(publish_all)

    async def _listener(self) -> None:
        async def listen(client, connected) -> None:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                await client.ping()
                self._set_healthy(True)
                connected()
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is None:
                        await client.ping()  # notice a dead server while the channel is quiet
                        continue
                    self._deliver_remote(msg.get("data"))
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

        await self._keep_connected(listen)

    def _deliver_remote(self, data: bytes | str | None) -> None:
        if data is None:
            return
        try:
            wrapper = json.loads(data)
            if wrapper.get("origin") == self.origin:
                return
            event = parse_event(wrapper["event"])
        except Exception as exc:
            log.warning("ignoring a malformed event from redis: %s", exc)
            return
        self.received_remote += 1
        metrics.EVENTS_REMOTE.inc()
        self.deliver(event)

    def _set_healthy(self, healthy: bool, exc: BaseException | None = None) -> None:
        if healthy != self.healthy:
            if healthy:
                log.info("event bus connected to redis")
            else:
                log.warning("event bus lost redis: %s; retrying", exc)
        self.healthy = healthy
