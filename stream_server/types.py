"""Immutable values that flow between the pipeline's stages."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np


@dataclass(frozen=True, slots=True)
class Box:
    """Axis-aligned box in pixels of the frame it was found in."""

    x: float
    y: float
    w: float
    h: float

    @property
    def x2(self) -> float:
        return self.x + self.w

    @property
    def y2(self) -> float:
        return self.y + self.h

    @property
    def area(self) -> float:
        return max(0.0, self.w) * max(0.0, self.h)

    @property
    def center(self) -> tuple[float, float]:
        return (self.x + self.w / 2.0, self.y + self.h / 2.0)

    def iou(self, other: Box) -> float:
        ix = max(0.0, min(self.x2, other.x2) - max(self.x, other.x))
        iy = max(0.0, min(self.y2, other.y2) - max(self.y, other.y))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def as_list(self) -> list[float]:
        return [round(self.x, 1), round(self.y, 1), round(self.w, 1), round(self.h, 1)]


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded picture (RGB, HxWx3 uint8) with the timing it arrived with.

    ``pts``/``time_base`` are the source's media timestamp; ``arrived_at`` is the
    wall clock (epoch seconds) and ``arrived_mono`` the monotonic clock when the
    frame reached the service, so latency can be measured to the event it causes.
    """

    source_id: str
    seq: int
    image: np.ndarray
    pts: int | None = None
    time_base: Fraction | None = None
    arrived_at: float = field(default_factory=time.time)
    arrived_mono: float = field(default_factory=time.monotonic)

    @property
    def pts_s(self) -> float:
        """Media time in seconds; falls back to arrival time for sources without pts."""
        if self.pts is not None and self.time_base is not None:
            return float(self.pts * self.time_base)
        return self.arrived_mono

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass(frozen=True, slots=True)
class Detection:
    """A face found by the detector: box, score and 6 keypoints in pixels.

    Keypoints, as MediaPipe orders them: right eye, left eye (the person's, so
    the right eye is on the image's left), nose tip, mouth centre, right ear
    tragion, left ear tragion.
    """

    box: Box
    score: float
    keypoints: np.ndarray  # (6, 2) float32, pixels


@dataclass(frozen=True, slots=True)
class TrackState:
    """What the tracker knows of one face in the current frame."""

    track_id: int
    detection: Detection
    age_frames: int
    hits: int
    first_seen_s: float
    resumed: bool = False  # found again after a gap: whoever it is should be checked again


@dataclass(frozen=True, slots=True)
class FaceCrop:
    """An aligned 112x112 RGB face chosen for embedding, with where it came from."""

    stream_id: str
    track_id: int
    seq: int
    pts_s: float
    arrived_mono: float
    arrived_at: float
    box: Box
    quality: float
    image: np.ndarray  # (112, 112, 3) uint8 RGB


@dataclass(frozen=True, slots=True)
class Candidate:
    identity_id: str
    name: str
    similarity: float


@dataclass(frozen=True, slots=True)
class Match:
    """The gallery's answer for one embedding: best and runner-up identities."""

    best: Candidate | None
    runner_up: Candidate | None

    def named(self, threshold: float, margin: float) -> Candidate | None:
        """The identity this embedding names: the best one, if it reaches the
        threshold and leads the runner-up by the margin (else nobody)."""
        if self.best is not None and self.best.similarity >= threshold and self.margin >= margin:
            return self.best
        return None

    @property
    def margin(self) -> float:
        if self.best is None:
            return 0.0
        if self.runner_up is None:
            return self.best.similarity
        return self.best.similarity - self.runner_up.similarity
