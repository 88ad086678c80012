"""Keep one id per face across frames.

Association is greedy on a score that prefers box overlap (IoU against the box
predicted from the track's velocity) and falls back to centre distance for faces
that moved fast or were missed for a few frames; a track survives
``max_missing_s`` of media time without a detection, so a face that turns away
briefly keeps its id when it comes back near where it left.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..types import Box, Detection, TrackState


@dataclass
class _Track:
    track_id: int
    box: Box
    detection: Detection
    first_seen_s: float
    last_seen_s: float
    hits: int = 1
    age_frames: int = 1
    vx: float = 0.0  # pixels per second, box centre
    vy: float = 0.0
    confirmed: bool = False

    def predicted(self, t: float) -> Box:
        dt = max(0.0, min(t - self.last_seen_s, 0.5))
        return Box(self.box.x + self.vx * dt, self.box.y + self.vy * dt, self.box.w, self.box.h)


@dataclass(frozen=True)
class TrackUpdate:
    """Result of one frame: tracks seen in it, and those that started or ended."""

    active: list[TrackState]
    started: list[TrackState]
    ended: list[int]


@dataclass
class FaceTracker:
    iou_min: float = 0.2
    max_missing_s: float = 1.0
    max_center_dist: float = 0.5  # in face sizes, for pairs that do not overlap enough
    max_size_ratio: float = 1.4
    resume_gap_s: float = 0.25
    confirm_hits: int = 2
    _tracks: dict[int, _Track] = field(default_factory=dict)
    _next_id: int = 1

    def _pair_score(self, track: _Track, det: Detection, t: float) -> float:
        pred = track.predicted(t)
        iou = pred.iou(det.box)
        if iou >= self.iou_min:
            return 1.0 + iou
        size = max(pred.w, pred.h, 1.0)
        ratio = det.box.w / max(pred.w, 1.0)
        if not 1.0 / self.max_size_ratio <= ratio <= self.max_size_ratio:
            return 0.0
        (px, py), (dx, dy) = pred.center, det.box.center
        dist = ((px - dx) ** 2 + (py - dy) ** 2) ** 0.5 / size
        if dist > self.max_center_dist:
            return 0.0
        return 1.0 - dist  # always below any IoU match

    def update(self, detections: list[Detection], t: float) -> TrackUpdate:
        pairs: list[tuple[float, int, int]] = []
        for tid, track in self._tracks.items():
            for di, det in enumerate(detections):
                score = self._pair_score(track, det, t)
                if score > 0.0:
                    pairs.append((score, tid, di))
        pairs.sort(reverse=True)
        used_tracks: set[int] = set()
        used_dets: set[int] = set()
        active: list[TrackState] = []
        started: list[TrackState] = []
        for _score, tid, di in pairs:
            if tid in used_tracks or di in used_dets:
                continue
            used_tracks.add(tid)
            used_dets.add(di)
            track = self._tracks[tid]
            det = detections[di]
            dt = t - track.last_seen_s
            resumed = dt > self.resume_gap_s
            if dt > 1e-6:
                (ox, oy), (nx, ny) = track.box.center, det.box.center
                alpha = 0.5
                track.vx = alpha * (nx - ox) / dt + (1 - alpha) * track.vx
                track.vy = alpha * (ny - oy) / dt + (1 - alpha) * track.vy
            track.box = det.box
            track.detection = det
            track.last_seen_s = t
            track.hits += 1
            track.age_frames += 1
            if not track.confirmed and track.hits >= self.confirm_hits:
                track.confirmed = True
                started.append(self._state(track))
            if track.confirmed:
                active.append(self._state(track, resumed))
        for di, det in enumerate(detections):
            if di in used_dets:
                continue
            track = _Track(self._next_id, det.box, det, t, t)
            self._next_id += 1
            self._tracks[track.track_id] = track
            if self.confirm_hits <= 1:
                track.confirmed = True
                started.append(self._state(track))
                active.append(self._state(track))
        ended: list[int] = []
        for tid in list(self._tracks):
            track = self._tracks[tid]
            if tid in used_tracks or track.last_seen_s == t:
                continue
            track.age_frames += 1
            if t - track.last_seen_s > self.max_missing_s:
                del self._tracks[tid]
                if track.confirmed:
                    ended.append(tid)
        return TrackUpdate(active, started, ended)

    def close_all(self) -> list[int]:
        """End every confirmed track (the stream stopped)."""
        ended = [tid for tid, tr in self._tracks.items() if tr.confirmed]
        self._tracks.clear()
        return ended

    @staticmethod
    def _state(track: _Track, resumed: bool = False) -> TrackState:
        return TrackState(
            track.track_id,
            track.detection,
            track.age_frames,
            track.hits,
            track.first_seen_s,
            resumed,
        )

    def __len__(self) -> int:
        return len(self._tracks)
