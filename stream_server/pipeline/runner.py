"""The per-stream runner: takes the newest frame, detects and tracks on every
frame it takes, sends selected crops to the shared embed pool without waiting,
and turns embedding results into votes and events.

Blocking work (detection, tracking, alignment) runs in a worker thread, one
frame at a time per stream; the event loop only orchestrates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .. import metrics
from ..events.bus import EventBus
from ..events.schema import EventBase, FaceMatched, FaceUnknown, TrackEnded, TrackStarted
from ..gallery.index import LiveGallery
from ..gallery.vote import Decision, TrackVote
from ..ingest.slot import LatestFrameSlot
from ..types import Box, FaceCrop, Frame, TrackState
from .align import align_face
from .cut import SceneCutDetector
from .detect import FaceDetector
from .pool import EmbedPool, PoolClosed, PoolFull
from .select import CropSelector, detection_quality
from .track import FaceTracker, TrackUpdate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VoteConfig:
    threshold: float = 0.30
    margin: float = 0.05
    min_agree: int = 2
    max_attempts: int = 8

    def new_vote(self) -> TrackVote:
        return TrackVote(self.threshold, self.margin, self.min_agree, self.max_attempts)


@dataclass(frozen=True)
class FaceResult:
    track_id: int
    box: Box
    score: float
    status: str  # "pending" | "matched" | "unknown"
    identity_id: str | None = None
    name: str | None = None
    similarity: float | None = None

    def as_dict(self) -> dict:
        return {
            "track_id": self.track_id,
            "box": self.box.as_list(),
            "score": round(self.score, 3),
            "status": self.status,
            "identity_id": self.identity_id,
            "name": self.name,
            "similarity": None if self.similarity is None else round(self.similarity, 4),
        }


@dataclass(frozen=True)
class FrameResult:
    """What one processed frame showed: sent back to the client that sent it."""

    stream_id: str
    seq: int
    pts: float | None
    width: int
    height: int
    faces: list[FaceResult]
    arrived_at: float
    processed_at: float
    latency_ms: float
    dropped: int

    def as_dict(self) -> dict:
        return {
            "type": "frame.result",
            "stream_id": self.stream_id,
            "seq": self.seq,
            "pts": self.pts,
            "width": self.width,
            "height": self.height,
            "faces": [f.as_dict() for f in self.faces],
            "arrived_at": self.arrived_at,
            "processed_at": self.processed_at,
            "latency_ms": round(self.latency_ms, 2),
            "dropped": self.dropped,
        }


@dataclass
class _Analysis:
    update: TrackUpdate
    crops: list[FaceCrop]
    detect_s: float


@dataclass
class RunnerStats:
    frames: int = 0
    embeddings_submitted: int = 0
    embeddings_done: int = 0
    embeddings_refused: int = 0
    events: dict[str, int] = field(default_factory=dict)
    detect_seconds: float = 0.0


FrameCallback = Callable[[Frame, FrameResult], None]


class StreamRunner:
    def __init__(
        self,
        stream_id: str,
        slot: LatestFrameSlot,
        detector: FaceDetector,
        pool: EmbedPool,
        gallery: LiveGallery,
        bus: EventBus,
        selector: CropSelector,
        tracker: FaceTracker,
        votes: VoteConfig,
        on_frame: FrameCallback | None = None,
        embed_lag_s: float | None = None,
    ) -> None:
        """``embed_lag_s``: for files processed faster than real time, wait before
        each frame for embeddings of frames more than this much media time older,
        so results do not depend on how fast the machine is (a live stream leaves
        it None: it never waits)."""
        self.stream_id = stream_id
        self.embed_lag_s = embed_lag_s
        self.slot = slot
        self.detector = detector
        self.pool = pool
        self.gallery = gallery
        self.bus = bus
        self.selector = selector
        self.tracker = tracker
        self.vote_config = votes
        self.on_frame = on_frame
        self.cuts = SceneCutDetector()
        self._gallery_revision: int | None = None
        self.stats = RunnerStats()
        self._votes: dict[int, TrackVote] = {}
        self._last_state: dict[int, TrackState] = {}
        self._pending: dict[asyncio.Future, FaceCrop] = {}
        self._m_processed = metrics.FRAMES_PROCESSED.labels(stream=stream_id)
        self._m_tracks = metrics.ACTIVE_TRACKS.labels(stream=stream_id)
        self.last_frame_at: float | None = None

    # -- the loop ------------------------------------------------------------
    async def run(self) -> RunnerStats:
        try:
            while True:
                frame = await self.slot.get()
                if frame is None:
                    break
                await self.process(frame)
        finally:
            await self.drain()
            for tid in self.tracker.close_all():
                self._end_track(tid, None)
            self._m_tracks.set(0)
        return self.stats

    async def drain(self) -> None:
        """Wait for embeddings still in flight (the stream ended)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def _wait_for_old_embeddings(self, t: float) -> None:
        old = [f for f, c in self._pending.items() if c.pts_s <= t - self.embed_lag_s]
        if old:
            await asyncio.wait(old)

    async def process(self, frame: Frame) -> FrameResult:
        if self.embed_lag_s is not None and self._pending:
            await self._wait_for_old_embeddings(frame.pts_s)
        settled = {tid: v.decision.kind for tid, v in self._votes.items() if v.decision}
        analysis = await asyncio.to_thread(self._analyse, frame, settled)
        self.stats.frames += 1
        self.stats.detect_seconds += analysis.detect_s
        self._m_processed.inc()
        self.last_frame_at = time.monotonic()
        for state in analysis.update.started:
            self._votes[state.track_id] = self.vote_config.new_vote()
            self._emit(
                TrackStarted,
                track_id=state.track_id,
                box=state.detection.box.as_list(),
                **self._timing(frame),
            )
        for state in analysis.update.active:
            self._last_state[state.track_id] = state
        for tid in analysis.update.ended:
            self._end_track(tid, frame)
        self._m_tracks.set(len(analysis.update.active))
        for crop in analysis.crops:
            self._submit(crop)
        result = self._frame_result(frame, analysis.update)
        if self.on_frame is not None:
            try:
                self.on_frame(frame, result)
            except Exception:
                log.exception("[%s] frame callback failed", self.stream_id)
        return result

    # -- worker-thread part ----------------------------------------------------
    def _analyse(self, frame: Frame, settled: dict[int, str]) -> _Analysis:
        revision = self.gallery.index.revision
        if revision != self._gallery_revision:
            if self._gallery_revision is not None:
                self.selector.gallery_changed()
            self._gallery_revision = revision
        start = time.perf_counter()
        detections = self.detector.detect(frame.image)
        detect_s = time.perf_counter() - start
        metrics.DETECT_SECONDS.observe(detect_s)
        t = frame.pts_s
        cut_ended = self.tracker.close_all() if self.cuts.update(frame.image) else []
        update = self.tracker.update(detections, t)
        if cut_ended:
            update = TrackUpdate(update.active, update.started, cut_ended + update.ended)
        crops: list[FaceCrop] = []
        for state in update.active:
            det = state.detection
            if state.resumed and state.track_id in settled:
                self.selector.recheck(state.track_id, t)
            if not self.selector.due(state.track_id, det, t, settled.get(state.track_id)):
                continue
            bound = detection_quality(det)  # before alignment: an upper bound
            crop: FaceCrop | None = None
            if self.selector.worth_aligning(state.track_id, bound, t):
                aligned = align_face(frame.image, det.keypoints)
                quality = detection_quality(det, aligned)
                crop = FaceCrop(
                    self.stream_id,
                    state.track_id,
                    frame.seq,
                    t,
                    frame.arrived_mono,
                    frame.arrived_at,
                    det.box,
                    quality.overall,
                    aligned,
                )
                if not self.selector.accept(state.track_id, quality, t):
                    crop = self.selector.hold(state.track_id, quality, crop, t)
            else:
                crop = self.selector.release_if_starved(state.track_id, t)
            if crop is None:
                continue
            self.selector.submitted(state.track_id, t, min(crop.box.w, crop.box.h))
            crops.append(crop)
        return _Analysis(update, crops, detect_s)

    # -- embeddings and votes --------------------------------------------------
    def _submit(self, crop: FaceCrop) -> None:
        cfut = self.pool.submit(crop.image)
        fut = asyncio.wrap_future(cfut)
        self._pending[fut] = crop
        self.stats.embeddings_submitted += 1
        fut.add_done_callback(lambda f, c=crop: self._embedded(c, f))

    def _embedded(self, crop: FaceCrop, fut: asyncio.Future) -> None:
        self._pending.pop(fut, None)
        self.selector.finished(crop.track_id)
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            if isinstance(exc, PoolFull):
                self.stats.embeddings_refused += 1
            elif not isinstance(exc, PoolClosed):
                log.warning("[%s] embedding failed: %s", self.stream_id, exc)
            return
        self.stats.embeddings_done += 1
        vote = self._votes.get(crop.track_id)
        if vote is None:  # the track ended meanwhile
            return
        start = time.perf_counter()
        embedding = np.asarray(fut.result())
        index = self.gallery.index
        match = index.search(embedding)
        named = vote.identity
        current = index.similarity_to(embedding, named.identity_id) if named else None
        metrics.MATCH_SECONDS.observe(time.perf_counter() - start)
        withdrawn_before = vote.withdrawn
        decision = vote.add(match, current)
        if vote.decision is None or vote.decision.kind == "unknown":
            self.selector.evidence(crop.track_id, vote.resembles_someone(match), crop.pts_s)
        if vote.withdrawn != withdrawn_before:
            log.info(
                "[%s] track %d no longer looks like %s; voting again",
                self.stream_id,
                crop.track_id,
                named.identity_id if named else "?",
            )
        # Look again soon when the evidence changed: a doubt about the name, a name
        # withdrawn, or an "unknown" face that now resembles someone (just enrolled).
        settled_unknown = vote.decision is not None and vote.decision.kind == "unknown"
        if (
            vote.doubtful
            or vote.withdrawn != withdrawn_before
            or (settled_unknown and vote.agrees(match))
        ):
            self.selector.recheck(crop.track_id, crop.pts_s)
        if decision is not None:
            self._decided(crop, decision)

    def _decided(self, crop: FaceCrop, decision: Decision) -> None:
        timing = {
            "seq": crop.seq,
            "pts": crop.pts_s,
            "arrived_at": crop.arrived_at,
            "latency_ms": (time.monotonic() - crop.arrived_mono) * 1000.0,
        }
        box = self._last_state.get(crop.track_id)
        box_list = (box.detection.box if box else crop.box).as_list()
        if decision.kind == "matched" and decision.candidate is not None:
            cand = decision.candidate
            log.info(
                "[%s] track %d matched %s (%.3f)",
                self.stream_id,
                crop.track_id,
                cand.identity_id,
                cand.similarity,
            )
            self._emit(
                FaceMatched,
                track_id=crop.track_id,
                identity_id=cand.identity_id,
                name=cand.name,
                similarity=round(cand.similarity, 4),
                box=box_list,
                votes=decision.votes,
                attempts=decision.attempts,
                **timing,
            )
        else:
            best = decision.candidate.similarity if decision.candidate else None
            self._emit(
                FaceUnknown,
                track_id=crop.track_id,
                box=box_list,
                attempts=decision.attempts,
                best_similarity=None if best is None else round(best, 4),
                **timing,
            )

    def _end_track(self, track_id: int, frame: Frame | None) -> None:
        vote = self._votes.pop(track_id, None)
        self._last_state.pop(track_id, None)
        self.selector.forget(track_id)
        ident = vote.identity if vote else None
        timing = self._timing(frame) if frame is not None else {}
        self._emit(
            TrackEnded,
            track_id=track_id,
            identity_id=ident.identity_id if ident else None,
            name=ident.name if ident else None,
            **timing,
        )

    # -- output ----------------------------------------------------------------
    @staticmethod
    def _timing(frame: Frame) -> dict:
        return {
            "seq": frame.seq,
            "pts": frame.pts_s if frame.pts is not None else None,
            "arrived_at": frame.arrived_at,
            "latency_ms": (time.monotonic() - frame.arrived_mono) * 1000.0,
        }

    def _emit(self, event_type: type[EventBase], **fields) -> None:
        event = event_type(stream_id=self.stream_id, **fields)
        kind = event.type  # type: ignore[attr-defined]
        self.stats.events[kind] = self.stats.events.get(kind, 0) + 1
        self.bus.publish(event)

    def _frame_result(self, frame: Frame, update: TrackUpdate) -> FrameResult:
        faces: list[FaceResult] = []
        for state in update.active:
            vote = self._votes.get(state.track_id)
            ident = vote.identity if vote else None
            if ident is not None:
                faces.append(
                    FaceResult(
                        state.track_id,
                        state.detection.box,
                        state.detection.score,
                        "matched",
                        ident.identity_id,
                        ident.name,
                        ident.similarity,
                    )
                )
            elif vote is not None and vote.settled:
                faces.append(
                    FaceResult(
                        state.track_id, state.detection.box, state.detection.score, "unknown"
                    )
                )
            else:
                faces.append(
                    FaceResult(
                        state.track_id, state.detection.box, state.detection.score, "pending"
                    )
                )
        now = time.monotonic()
        return FrameResult(
            self.stream_id,
            frame.seq,
            frame.pts_s if frame.pts is not None else None,
            frame.width,
            frame.height,
            faces,
            frame.arrived_at,
            time.time(),
            (now - frame.arrived_mono) * 1000.0,
            self.slot.dropped,
        )
