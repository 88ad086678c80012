"""Run a video file through exactly the pipeline a live stream uses."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np

from .config import DetectorKind
from .events.bus import EventFilter
from .events.schema import EventBase
from .ingest.slot import LatestFrameSlot
from .ingest.video import VideoFileSource
from .pipeline.runner import FrameResult
from .service import FaceService
from .types import Frame

log = logging.getLogger(__name__)

REPLAY_EMBED_LAG_S = 0.25

_COLOURS = {"matched": (40, 200, 60), "unknown": (220, 60, 60), "pending": (230, 200, 40)}


class VideoAnnotator:
    """Writes each processed frame with its boxes, track ids and names."""

    def __init__(self, path: Path, fps: float = 30.0) -> None:
        import av

        self._av = av
        self.path = Path(path)
        self._container = av.open(str(self.path), mode="w")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._stream = self._container.add_stream(codec, rate=int(round(fps)))
        self._stream.pix_fmt = "yuv420p"
        self._opened = False

    def write(self, frame: Frame, result: FrameResult) -> None:
        img = np.ascontiguousarray(frame.image.copy())
        if not self._opened:
            self._stream.width = img.shape[1] - img.shape[1] % 2
            self._stream.height = img.shape[0] - img.shape[0] % 2
            self._opened = True
        for face in result.faces:
            b = face.box
            colour = _COLOURS.get(face.status, (255, 255, 255))
            p1, p2 = (int(b.x), int(b.y)), (int(b.x2), int(b.y2))
            cv2.rectangle(img, p1, p2, colour, 2)
            label = f"#{face.track_id} {face.name or face.status}"
            if face.similarity is not None:
                label += f" {face.similarity:.2f}"
            cv2.putText(
                img,
                label,
                (p1[0], max(12, p1[1] - 6)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.5,
                colour,
                1,
                cv2.LINE_AA,
            )
        img = img[: self._stream.height, : self._stream.width]
        vf = self._av.VideoFrame.from_ndarray(img, format="rgb24")
        for packet in self._stream.encode(vf):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()


@dataclass
class ReplaySummary:
    path: str
    detector: str
    frames: int
    wall_seconds: float
    cpu_seconds: float
    embeddings: int
    events: dict[str, int]
    dropped: int
    matched: list[dict] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "detector": self.detector,
            "frames": self.frames,
            "wall_seconds": round(self.wall_seconds, 3),
            "fps": round(self.fps, 1),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "embeddings": self.embeddings,
            "events": self.events,
            "dropped": self.dropped,
            "matched": self.matched,
        }


async def replay_video(
    service: FaceService,
    path: str | Path,
    detector: DetectorKind = "full",
    realtime: bool = False,
    events_out: TextIO | None = None,
    annotate: Path | None = None,
    on_event=None,
    stream_id: str | None = None,
) -> ReplaySummary:
    loop = asyncio.get_running_loop()
    stream_id = stream_id or f"replay:{Path(path).name}"
    slot = LatestFrameSlot(stream_id, loop, block=not realtime)
    annotator = VideoAnnotator(annotate) if annotate else None
    runner = service.new_runner(
        stream_id,
        slot,
        detector,
        on_frame=annotator.write if annotator else None,
        # Faster than real time: embeddings may lag at most ~8 frames of media
        # time, as they would live, so the result does not depend on machine speed.
        embed_lag_s=None if realtime else REPLAY_EMBED_LAG_S,
    )
    sub = service.bus.subscribe(EventFilter(stream_ids=frozenset({stream_id})), queue_size=100_000)
    counts: Counter[str] = Counter()
    matched: list[dict] = []

    async def consume() -> None:
        async for event in sub:
            counts[event.type] += 1  # type: ignore[attr-defined]
            if event.type == "face.matched":  # type: ignore[attr-defined]
                matched.append(event.model_dump())
            if events_out is not None:
                events_out.write(event.model_dump_json() + "\n")
            if on_event is not None:
                on_event(event)

    consumer = asyncio.create_task(consume())
    source = VideoFileSource(str(path), slot, realtime=realtime)
    embeds_before = service.pool.embeddings_computed
    cpu0, wall0 = time.process_time(), time.perf_counter()
    source.start()
    try:
        stats = await runner.run()
    finally:
        source.stop()
        slot.close()
        await asyncio.to_thread(source.join, 10)
        runner.detector.close()
        if annotator is not None:
            annotator.close()
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    await asyncio.sleep(0)
    sub.close("replay finished")
    await consumer
    if source.error is not None and stats.frames == 0:
        raise RuntimeError(f"could not read {path}: {source.error}")
    return ReplaySummary(
        str(path),
        detector,
        stats.frames,
        wall,
        cpu,
        service.pool.embeddings_computed - embeds_before,
        dict(counts),
        slot.dropped,
        matched,
    )


def format_event(event: EventBase) -> str:
    data = event.model_dump()
    kind = data["type"]
    parts = [f"{kind:14s}", f"frame={data.get('seq')}", f"track={data.get('track_id')}"]
    if kind == "face.matched":
        parts.append(f"name={data['name']!r} sim={data['similarity']:.3f}")
    if kind == "face.unknown":
        parts.append(f"best={data.get('best_similarity')}")
    if data.get("latency_ms") is not None:
        parts.append(f"latency={data['latency_ms']:.1f}ms")
    return " ".join(parts)


def summary_text(summary: ReplaySummary) -> str:
    return json.dumps(summary.as_dict(), indent=2)
