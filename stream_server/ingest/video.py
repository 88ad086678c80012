"""Decode a video file or URL with PyAV in its own thread, into a frame slot."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from fractions import Fraction

import av

from ..types import Frame
from .slot import LatestFrameSlot

log = logging.getLogger(__name__)

_TB_90K = Fraction(1, 90000)  # pts are rewritten on a 90 kHz clock (loops stay monotonic)


def iter_video_frames(url: str, options: dict | None = None, timeout: float | None = None):
    """Yield (rgb ndarray, pts, time_base) for each decoded frame of the first video stream."""
    kwargs = {"options": options or {}}
    if timeout is not None:
        kwargs["timeout"] = timeout
    with av.open(url, **kwargs) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24"), frame.pts, frame.time_base


class VideoFileSource:
    """Feeds a file's frames into a slot: as fast as they are taken, or in real time.

    In real-time mode frames are paced by their pts against the wall clock and the
    slot drops what the pipeline could not take, exactly as for a live camera.
    """

    def __init__(
        self,
        path: str,
        slot: LatestFrameSlot,
        realtime: bool = False,
        loop_forever: bool = False,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self.slot = slot
        self.realtime = realtime
        self.loop_forever = loop_forever
        self.on_end = on_end
        self.frames = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"decode-{slot.stream_id}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        seq = 0
        offset = 0.0
        try:
            while not self._stop.is_set():
                start_wall = None
                last_pts_s = 0.0
                for image, pts, time_base in iter_video_frames(self.path):
                    if self._stop.is_set():
                        break
                    pts_s = float(pts * time_base) if pts is not None and time_base else seq / 30.0
                    if self.realtime:
                        if start_wall is None:
                            start_wall = time.monotonic() - pts_s
                        delay = start_wall + pts_s - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                    frame = Frame(
                        self.slot.stream_id,
                        seq,
                        image,
                        pts=None if pts is None else int(round((pts_s + offset) * 90000)),
                        time_base=None if pts is None else _TB_90K,
                    )
                    if not self.slot.put(frame):
                        return
                    seq += 1
                    self.frames += 1
                    last_pts_s = pts_s
                if not self.loop_forever:
                    break
                offset += last_pts_s + 1 / 30.0
        except Exception as exc:  # decode errors end the source; the caller reads .error
            log.error("[%s] decoding %s failed: %s", self.slot.stream_id, self.path, exc)
            self.error = exc
        finally:
            self.slot.close()
            if self.on_end is not None:
                self.on_end()
