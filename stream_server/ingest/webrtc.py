"""Browser webcams over WebRTC (aiortc).

One ``PeerSession`` per browser: its video track feeds a ``LiveStream``; per
processed frame the result, and every event of that stream, go back to the
browser on the data channel the browser opened. The session ends, and its
stream is released, when the browser leaves, the connection fails, or no video
arrives for ``webrtc_frame_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from fractions import Fraction

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
)
from aiortc.mediastreams import MediaStreamError

from .. import metrics
from ..config import IceServer, Settings
from ..events.bus import EventFilter
from ..pipeline.runner import FrameResult
from ..streams import LiveStream, StreamRegistry
from ..types import Frame
from .status import publish_status

log = logging.getLogger(__name__)

_RTP_WRAP = 1 << 32


def rtc_configuration(servers: list[IceServer]) -> RTCConfiguration:
    # An explicit empty list: aiortc would otherwise reach out to a public STUN server.
    return RTCConfiguration(
        iceServers=[RTCIceServer(s.urls, s.username, s.credential) for s in servers]
    )


class _PtsUnwrapper:
    """RTP timestamps are 32-bit and start anywhere: make them start at 0 and never wrap."""

    def __init__(self) -> None:
        self._first: int | None = None
        self._last: int | None = None
        self._offset = 0

    def __call__(self, pts: int) -> int:
        if self._last is not None and pts < self._last and self._last - pts > _RTP_WRAP // 2:
            self._offset += _RTP_WRAP
        self._last = pts
        value = pts + self._offset
        if self._first is None:
            self._first = value
        return value - self._first


class PeerSession:
    """One browser's peer connection and the live stream it feeds."""

    def __init__(
        self,
        sessions: PeerSessions,
        pc: RTCPeerConnection,
        stream_id: str,
        peer: str,
    ) -> None:
        self.sessions = sessions
        self.settings = sessions.settings
        self.pc = pc
        self.stream_id = stream_id
        self.peer = peer
        self.stream: LiveStream | None = None
        self.channel: RTCDataChannel | None = None
        self.video: MediaStreamTrack | None = None
        self.frames = 0
        self.results_skipped = 0
        self.close_reason: str | None = None
        self._pump_task: asyncio.Task | None = None
        self._forward_task: asyncio.Task | None = None
        self._sinks: list[asyncio.Task] = []  # tracks consumed only to be discarded
        self._backlog: list[str] = []  # events produced before the data channel opened
        self._sub = None
        self._closed = asyncio.Event()
        self._closing = False
        self._counted = False
        self._closer: asyncio.Task | None = None
        self._pts = _PtsUnwrapper()

        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)

    # -- aiortc callbacks ------------------------------------------------------
    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video" and self.video is None:
            self.video = track
        else:
            # Nothing to do with audio or a second camera, but its frames must be
            # consumed or aiortc queues them without bound.
            self._sinks.append(asyncio.create_task(self._discard(track)))

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if self.channel is not None:
            return
        self.channel = channel
        log.info("[%s] data channel %r open", self.stream_id, channel.label)
        backlog, self._backlog = self._backlog, []
        for text in backlog:
            self._send(text, is_event=True)

    async def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        log.info("[%s] peer connection %s", self.stream_id, state)
        if state in ("failed", "closed"):
            await self.close(f"peer connection {state}")

    # -- running -----------------------------------------------------------------
    async def start(self, stream: LiveStream) -> None:
        """Called once the stream exists: pump the video into it, forward its events."""
        self.stream = stream
        stream.add_listener(self._on_result)
        self._sub = self.sessions.bus.subscribe(
            EventFilter(stream_ids=frozenset({self.stream_id})), self.settings.subscriber_queue_size
        )
        metrics.ACTIVE_CONNECTIONS.labels(kind="webrtc").inc()
        self._counted = True
        self._forward_task = asyncio.create_task(self._forward_events())
        self._pump_task = asyncio.create_task(self._pump(), name=f"webrtc-{self.stream_id}")
        publish_status(self.sessions.bus, self.stream_id, "live", None, f"webrtc from {self.peer}")

    async def _pump(self) -> None:
        timeout = self.settings.webrtc_frame_timeout_s
        reason = "video ended"
        try:
            if self.video is None:  # the offer was checked to hold video; belt and braces
                reason = "no video track"
                return
            while True:
                try:
                    vf = await asyncio.wait_for(self.video.recv(), timeout)
                except TimeoutError:
                    reason = f"no video for {timeout:g} s"
                    return
                except MediaStreamError:
                    reason = "the browser stopped sending video"
                    return
                arrived_at, arrived_mono = time.time(), time.monotonic()
                image = await asyncio.to_thread(vf.to_ndarray, format="rgb24")
                pts = None if vf.pts is None else self._pts(int(vf.pts))
                time_base = vf.time_base if vf.time_base is not None else Fraction(1, 90000)
                assert self.stream is not None
                frame = Frame(
                    self.stream_id,
                    self.stream.next_seq(),
                    image,
                    pts=pts,
                    time_base=time_base if pts is not None else None,
                    arrived_at=arrived_at,
                    arrived_mono=arrived_mono,
                )
                self.frames += 1
                if not self.stream.put(frame):
                    reason = "stream closed"
                    return
        finally:
            # Not awaited here: closing cancels the pump, which is this task.
            self._close_soon(reason)

    @staticmethod
    async def _discard(track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                await track.recv()

    async def _forward_events(self) -> None:
        assert self._sub is not None
        async for event in self._sub:
            self._send(event.wire, is_event=True)

    def _on_result(self, frame: Frame, result: FrameResult) -> None:
        self._send(json.dumps(result.as_dict()), is_event=False)

    def _send(self, text: str, is_event: bool) -> None:
        channel = self.channel
        if channel is None or channel.readyState != "open":
            if channel is None and is_event and len(self._backlog) < 256:
                self._backlog.append(text)
            return
        # A browser that reads its channel slowly gets fewer frame results, never a
        # growing buffer; events are few and always sent, unless it stopped reading.
        limit = self.settings.webrtc_channel_max_buffer
        if channel.bufferedAmount > limit:
            if not is_event:
                self.results_skipped += 1
                return
            if channel.bufferedAmount > 4 * limit:
                self._close_soon("the browser does not read its data channel")
                return
        try:
            channel.send(text)
        except Exception as exc:  # the channel closed under us
            log.debug("[%s] data channel send failed: %s", self.stream_id, exc)

    # -- ending ------------------------------------------------------------------
    def _close_soon(self, reason: str) -> None:
        if not self._closing and self._closer is None:
            self._closer = asyncio.get_running_loop().create_task(self.close(reason))

    async def close(self, reason: str) -> None:
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        self.close_reason = reason
        log.info("[%s] closing webrtc session: %s (%d frames)", self.stream_id, reason, self.frames)
        try:
            stopping = [t for t in (self._pump_task, *self._sinks) if t and not t.done()]
            for task in stopping:
                task.cancel()
            for task in stopping:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if self.stream is not None:
                self.stream.remove_listener(self._on_result)
                # Closing the stream ends its tracks: those events still reach the browser.
                await self.sessions.streams.close(self.stream_id)
                publish_status(self.sessions.bus, self.stream_id, "stopped", "live", reason)
            if self._sub is not None:
                await asyncio.sleep(0)
                self._sub.close(reason)
            if self._forward_task is not None:
                # Let the last events (track.ended, stream.status) reach the browser.
                try:
                    await asyncio.wait_for(self._forward_task, 2.0)
                except (TimeoutError, asyncio.CancelledError, Exception):
                    self._forward_task.cancel()
            await self.pc.close()
        finally:
            if self._counted:
                metrics.ACTIVE_CONNECTIONS.labels(kind="webrtc").dec()
            self.sessions._forget(self)
            self._closed.set()


class PeerSessions:
    """Every open peer connection, so the app's shutdown can close them all."""

    def __init__(self, settings: Settings, streams: StreamRegistry, bus) -> None:
        self.settings = settings
        self.streams = streams
        self.bus = bus
        self._sessions: dict[str, PeerSession] = {}
        self._pending = 0  # offers being answered

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, stream_id: str) -> PeerSession | None:
        return self._sessions.get(stream_id)

    def all(self) -> list[PeerSession]:
        return list(self._sessions.values())

    @property
    def full(self) -> bool:
        return len(self._sessions) + self._pending >= self.settings.webrtc_max_peers

    def new_peer_connection(self) -> RTCPeerConnection:
        return RTCPeerConnection(rtc_configuration(self.settings.ice_servers))

    def reserve(self) -> None:
        self._pending += 1

    def release(self) -> None:
        self._pending -= 1

    def add(self, session: PeerSession) -> None:
        self._sessions[session.stream_id] = session

    def _forget(self, session: PeerSession) -> None:
        if self._sessions.get(session.stream_id) is session:
            del self._sessions[session.stream_id]

    async def close_all(self, reason: str = "server shutting down") -> None:
        await asyncio.gather(
            *(s.close(reason) for s in list(self._sessions.values())), return_exceptions=True
        )
