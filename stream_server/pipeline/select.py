"""Choose which faces are worth an embedding, and when.

Embedding costs ~5-10x a detection, so a face is embedded only when it is big,
sharp and frontal enough, and only as often as its track's budget allows:
at most one embedding in flight per track; while a track is undecided, one
every ``interval_s`` of media time; once it is named, a re-check every
``reverify_s``; once declared unknown, a retry every ``unknown_retry_s`` (people
turn towards the camera); in both cases sooner when the face has grown by
``growth_ratio`` since its last embedding (it came closer: a better look).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ..types import Detection


@dataclass(frozen=True)
class FaceQuality:
    size_px: float
    score: float
    frontal: float
    sharpness: float

    @property
    def overall(self) -> float:
        size_term = min(1.0, self.size_px / 112.0)
        sharp_term = min(1.0, self.sharpness / 60.0)
        return float(
            self.score**0.5
            * (0.25 + 0.75 * self.frontal)
            * (0.5 + 0.5 * sharp_term)
            * (0.6 + 0.4 * size_term)
        )


def frontalness(keypoints: np.ndarray) -> float:
    """1.0 for a face looking at the camera, 0.0 for a profile (from the keypoints)."""
    right_eye, left_eye, nose = keypoints[0], keypoints[1], keypoints[2]
    eye_vec = left_eye - right_eye
    eye_dist = float(np.hypot(*eye_vec))
    if eye_dist < 1e-3:
        return 0.0
    axis = eye_vec / eye_dist
    mid = (left_eye + right_eye) / 2.0
    # Horizontal offset of the nose from the eyes' midpoint, in eye distances,
    # measured along the eye line so head roll does not count as yaw.
    yaw = abs(float(np.dot(nose - mid, axis))) / eye_dist
    # Ears: in a profile one tragion falls behind the eye on its side.
    ear_r = float(np.dot(keypoints[4] - right_eye, -axis))
    ear_l = float(np.dot(keypoints[5] - left_eye, axis))
    ear_balance = min(ear_r, ear_l) / max(ear_r, ear_l, 1e-3) if max(ear_r, ear_l) > 0 else 0.0
    ear_balance = float(np.clip(ear_balance, 0.0, 1.0))
    yaw_term = float(np.clip(1.0 - yaw / 0.5, 0.0, 1.0))
    return yaw_term * (0.5 + 0.5 * ear_balance)


def sharpness(aligned: np.ndarray) -> float:
    """Variance of the Laplacian of the aligned crop's centre (the face itself)."""
    gray = cv2.cvtColor(aligned, cv2.COLOR_RGB2GRAY)
    centre = gray[24:104, 24:88]
    return float(cv2.Laplacian(centre, cv2.CV_32F).var())


def detection_quality(det: Detection, aligned: np.ndarray | None = None) -> FaceQuality:
    size = float(min(det.box.w, det.box.h))
    sharp = sharpness(aligned) if aligned is not None else 60.0
    return FaceQuality(size, det.score, frontalness(det.keypoints), sharp)


@dataclass
class _Budget:
    first_seen_s: float
    last_submit_s: float | None = None
    size_at_submit: float = 0.0
    in_flight: bool = False
    recheck: bool = False
    held: object | None = None  # best poor crop seen since the last submission
    held_quality: float = -1.0
    slow: float = 1.0  # budget stretch for a face that looks like nobody enrolled


@dataclass
class CropSelector:
    min_face_px: float = 40.0
    min_quality: float = 0.35
    interval_s: float = 0.15
    reverify_s: float = 3.0
    growth_ratio: float = 1.5
    unknown_retry_s: float = 1.0
    starve_s: float = 0.5
    floor_quality: float = 0.08
    max_slow: float = 8.0
    _budgets: dict[int, _Budget] = field(default_factory=dict)

    def due(self, track_id: int, det: Detection, t: float, settled: str | None) -> bool:
        """Cheap pre-check before aligning: is this track allowed an embedding now?

        ``settled`` is None while the track is undecided, else "matched" or "unknown".
        """
        b = self._budget(track_id, t)
        if b.in_flight:
            return False
        size = min(det.box.w, det.box.h)
        if size < self.min_face_px:
            return False
        if b.last_submit_s is None:
            return True
        since = t - b.last_submit_s
        if since < 0:  # media clock went back (a looped file): start over
            return True
        if b.recheck:
            return since >= self.interval_s
        if settled is None:
            return since >= self.interval_s * b.slow
        grown = b.size_at_submit > 0 and size >= self.growth_ratio * b.size_at_submit
        wait = self.reverify_s if settled == "matched" else self.unknown_retry_s * b.slow
        return since >= wait or (grown and since >= self.interval_s)

    def accept(self, track_id: int, quality: FaceQuality, t: float) -> bool:
        """A good crop (``min_quality``) is embedded at once."""
        return quality.size_px >= self.min_face_px and quality.overall >= self.min_quality

    def worth_aligning(self, track_id: int, bound: FaceQuality, t: float) -> bool:
        """Could this face's crop be used? ``bound`` is its quality before alignment
        (sharpness not yet known, so an upper bound): a crop that cannot be good and
        cannot beat the poor crop already held is not worth aligning."""
        if bound.size_px < self.min_face_px or bound.overall < self.floor_quality:
            return False
        if bound.overall >= self.min_quality:
            return True
        return bound.overall > self._budget(track_id, t).held_quality

    def hold(self, track_id: int, quality: FaceQuality, crop: object, t: float) -> object | None:
        """Offer a poor crop (a profile, a blurred face).

        The best one of each ``starve_s`` window is kept, and handed back for
        embedding once the track has gone that long without one, so a face that
        never shows a good crop is still checked, at a bounded rate, with its best
        look. Crops under ``floor_quality`` are never used.
        """
        if quality.size_px < self.min_face_px or quality.overall < self.floor_quality:
            return None
        b = self._budget(track_id, t)
        if quality.overall > b.held_quality:
            b.held, b.held_quality = crop, quality.overall
        return self.release_if_starved(track_id, t)

    def release_if_starved(self, track_id: int, t: float) -> object | None:
        """The held poor crop, once the track has waited its window for a good one."""
        b = self._budget(track_id, t)
        if b.held is None:
            return None
        last = b.last_submit_s if b.last_submit_s is not None else b.first_seen_s
        if t - last >= self.starve_s * b.slow:
            best, b.held, b.held_quality = b.held, None, -1.0
            return best
        return None

    def gallery_changed(self) -> None:
        """People were enrolled or removed: check every face again at the full rate."""
        for b in self._budgets.values():
            b.slow = 1.0
            b.recheck = True

    def evidence(self, track_id: int, looks_like_someone: bool, t: float) -> None:
        """A face that looks like nobody enrolled (far below the threshold, again
        and again) is checked less and less often, down to 1/``max_slow`` of the
        normal rate; one look that resembles someone restores the full rate."""
        b = self._budget(track_id, t)
        b.slow = 1.0 if looks_like_someone else min(b.slow * 2.0, self.max_slow)

    def _budget(self, track_id: int, t: float) -> _Budget:
        b = self._budgets.get(track_id)
        if b is None:
            b = self._budgets[track_id] = _Budget(first_seen_s=t)
        return b

    def submitted(self, track_id: int, t: float, size_px: float) -> None:
        b = self._budget(track_id, t)
        b.last_submit_s = t
        b.size_at_submit = size_px
        b.in_flight = True
        b.recheck = False

    def recheck(self, track_id: int, t: float) -> None:
        """Check this track again at the undecided rate (it may be someone else now)."""
        self._budget(track_id, t).recheck = True

    def finished(self, track_id: int) -> None:
        b = self._budgets.get(track_id)
        if b is not None:
            b.in_flight = False

    def forget(self, track_id: int) -> None:
        self._budgets.pop(track_id, None)
