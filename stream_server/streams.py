"""Running streams: each one a latest-frame slot feeding its own runner task."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from . import metrics
from .config import DetectorKind
from .ingest.slot import LatestFrameSlot
from .pipeline.detect import FaceDetector
from .pipeline.runner import FrameResult, RunnerStats, StreamRunner
from .types import Frame

log = logging.getLogger(__name__)

FrameListener = Callable[[Frame, FrameResult], None]


class StreamExists(RuntimeError):
    pass


class LiveStream:
    """One live stream. Sources call ``put`` (from any thread); listeners get each
    processed frame's result on the event loop."""

    def __init__(
        self,
        service,
        stream_id: str,
        detector: DetectorKind,
        kind: str,
        detector_obj: FaceDetector | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.detector_kind = detector
        self.kind = kind  # "webrtc" | "websocket" | "camera" | "replay"
        self._loop = asyncio.get_running_loop()
        self.slot = LatestFrameSlot(stream_id, self._loop, block=False)
        self._listeners: list[FrameListener] = []
        self.runner: StreamRunner = service.new_runner(
            stream_id, self.slot, detector, on_frame=self._fanout, detector_obj=detector_obj
        )
        self._task: asyncio.Task | None = None
        self._seq = 0

    def next_seq(self) -> int:
        seq = self._seq
        self._seq += 1
        return seq

    def start(self) -> None:
        self._task = asyncio.create_task(self.runner.run(), name=f"runner-{self.stream_id}")

    def put(self, frame: Frame) -> bool:
        return self.slot.put(frame)

    def add_listener(self, listener: FrameListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: FrameListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _fanout(self, frame: Frame, result: FrameResult) -> None:
        for listener in list(self._listeners):
            try:
                listener(frame, result)
            except Exception:
                log.exception("[%s] frame listener failed", self.stream_id)

    @property
    def stats(self) -> RunnerStats:
        return self.runner.stats

    async def stop(self) -> None:
        self.slot.close()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=10)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
            except Exception:
                log.exception("[%s] runner failed", self.stream_id)
        await asyncio.to_thread(self.runner.detector.close)


class StreamRegistry:
    def __init__(self, service) -> None:
        self.service = service
        self._streams: dict[str, LiveStream] = {}

    def __contains__(self, stream_id: str) -> bool:
        return stream_id in self._streams

    def get(self, stream_id: str) -> LiveStream | None:
        return self._streams.get(stream_id)

    def all(self) -> list[LiveStream]:
        return list(self._streams.values())

    async def open(self, stream_id: str, detector: DetectorKind, kind: str) -> LiveStream:
        if stream_id in self._streams:
            raise StreamExists(stream_id)
        # Creating the detector loads a TFLite graph: keep it off the event loop.
        detector_obj = await asyncio.to_thread(self.service.new_detector, detector)
        stream = LiveStream(self.service, stream_id, detector, kind, detector_obj)
        self._streams[stream_id] = stream
        # Cameras start "connecting" (their supervisor moves them on); pushed streams are live.
        metrics.stream_opened(stream_id, "connecting" if kind == "camera" else "live")
        stream.start()
        log.info("[%s] stream opened (%s, %s-range detector)", stream_id, kind, detector)
        return stream

    async def close(self, stream_id: str) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        await stream.stop()
        metrics.forget_stream(stream_id)
        log.info("[%s] stream closed after %d frames", stream_id, stream.stats.frames)

    async def close_all(self) -> None:
        for stream_id in list(self._streams):
            await self.close(stream_id)
