"""The parts every stream shares: models, the embed pool, the gallery, the bus.

``FaceService`` is built once per process (by the app's lifespan or a CLI
command) and hands each new stream its own detector, tracker and selector.
"""

from __future__ import annotations

import io
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import metrics
from .config import DetectorKind, Settings
from .events.bus import EventBus, MemoryEventBus
from .gallery.index import LiveGallery
from .gallery.sqlite import SQLiteGallery
from .gallery.store import GalleryStore, NewFace
from .ingest.slot import LatestFrameSlot
from .models import ResolvedModel, resolve_detector, resolve_embedder
from .pipeline.align import align_face
from .pipeline.detect import FaceDetector
from .pipeline.embed import ArcFaceEmbedder
from .pipeline.pool import EmbedPool
from .pipeline.runner import FrameCallback, StreamRunner, VoteConfig
from .pipeline.select import CropSelector, FaceQuality, detection_quality
from .pipeline.track import FaceTracker
from .types import Detection, Match

log = logging.getLogger(__name__)


class ImageError(ValueError):
    """An upload or frame that is not a usable image."""


@dataclass(frozen=True)
class StillFace:
    detection: Detection
    aligned: np.ndarray
    quality: FaceQuality
    embedding: np.ndarray

    def crop_png(self) -> bytes:
        return encode_png(self.aligned)


def encode_png(rgb: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode PNG")
    return buf.tobytes()


def decode_image(data: bytes, max_pixels: int = 40_000_000) -> np.ndarray:
    """Decode JPEG/PNG/WebP/... bytes to RGB, refusing decompression bombs.

    The header is read first (Pillow) so a huge declared size is refused before
    any pixel is decoded; the content, not a file name, decides the format.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageError("empty image")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            fmt = probe.format
    except UnidentifiedImageError as exc:
        raise ImageError("not an image (JPEG, PNG, WebP or BMP expected)") from exc
    except Image.DecompressionBombError as exc:  # Pillow's own ceiling, far above ours
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{declared.group(1)} pixels" if declared else "its size"
        raise ImageError(f"image of {size} exceeds the limit of {max_pixels} pixels") from exc
    except Exception as exc:
        raise ImageError(f"unreadable image: {exc}") from exc
    if width * height > max_pixels:
        raise ImageError(
            f"image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels"
        )
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise ImageError(f"could not decode {fmt or 'image'} data (truncated or corrupt)")
    if fmt == "JPEG" and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise ImageError("truncated JPEG (no end-of-image marker)")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def read_image_file(path: Path | str, max_pixels: int = 40_000_000) -> np.ndarray:
    return decode_image(Path(path).read_bytes(), max_pixels)


def make_gallery_store(settings: Settings) -> GalleryStore:
    if settings.gallery == "redis":
        from .gallery.redis import RedisGallery

        return RedisGallery(settings.redis_url)
    return SQLiteGallery(settings.gallery_path)


def make_event_bus(settings: Settings) -> EventBus:
    if settings.event_bus == "redis":
        from .events.redis_bus import RedisEventBus

        return RedisEventBus(settings.redis_url, settings.subscriber_queue_size)
    return MemoryEventBus(settings.subscriber_queue_size)


class FaceService:
    def __init__(
        self,
        settings: Settings,
        store: GalleryStore | None = None,
        bus: EventBus | None = None,
    ) -> None:
        self.settings = settings
        self.detector_models: dict[str, ResolvedModel] = {}
        self.embedder_model = resolve_embedder(settings)
        for kind in ("short", "full"):
            self.detector_models[kind] = resolve_detector(settings, kind)  # type: ignore[arg-type]
        self.pool = EmbedPool(
            lambda: ArcFaceEmbedder(
                self.embedder_model.path, settings.providers, settings.embed_threads
            ),
            workers=settings.embed_workers,
            max_batch=settings.embed_max_batch,
            batch_wait_ms=settings.embed_batch_wait_ms,
            queue_size=settings.embed_queue_size,
        )
        self.store: GalleryStore = store or make_gallery_store(settings)
        self.gallery = LiveGallery(self.store, self.embedder_model.model_id)
        self.bus: EventBus = bus or make_event_bus(settings)
        self.votes = VoteConfig(
            settings.match_threshold,
            settings.match_margin,
            settings.vote_min_agree,
            settings.vote_max_attempts,
        )
        self._still_detectors: list[FaceDetector] = []
        self._still_lock = threading.Lock()
        self.refresh_gallery_metrics()

    @property
    def model_id(self) -> str:
        return self.embedder_model.model_id

    def refresh_gallery_metrics(self) -> None:
        index = self.gallery.index
        metrics.GALLERY_IDENTITIES.set(index.size)
        metrics.GALLERY_TEMPLATES.set(index.matrix.shape[0])

    def refresh_gallery(self) -> None:
        self.gallery.refresh()
        self.refresh_gallery_metrics()

    # -- per-stream parts -------------------------------------------------------
    def new_detector(self, kind: DetectorKind) -> FaceDetector:
        return FaceDetector(self.detector_models[kind].path, self.settings.detector_min_confidence)

    def new_runner(
        self,
        stream_id: str,
        slot: LatestFrameSlot,
        detector: DetectorKind,
        on_frame: FrameCallback | None = None,
        detector_obj: FaceDetector | None = None,
        embed_lag_s: float | None = None,
    ) -> StreamRunner:
        """A runner for one stream; ``detector_obj`` hands over a detector loaded earlier."""
        s = self.settings
        return StreamRunner(
            stream_id,
            slot,
            detector_obj or self.new_detector(detector),
            self.pool,
            self.gallery,
            self.bus,
            CropSelector(
                s.select_min_face_px,
                s.select_min_quality,
                s.select_interval_s,
                s.select_reverify_s,
                s.select_growth_ratio,
            ),
            FaceTracker(s.track_iou_min, s.track_max_missing_s),
            self.votes,
            on_frame,
            embed_lag_s,
        )

    # -- still images -----------------------------------------------------------
    def _detectors_for_stills(self) -> list[FaceDetector]:
        with self._still_lock:
            if not self._still_detectors:
                # Full range first: photos hold faces of every size; short range as a fallback.
                self._still_detectors = [self.new_detector("full"), self.new_detector("short")]
            return self._still_detectors

    def detect_still(self, image: np.ndarray) -> list[Detection]:
        """Faces in a still photo, largest first."""
        for det in self._detectors_for_stills():
            faces = det.detect(image)
            if faces:
                return sorted(faces, key=lambda d: d.box.area, reverse=True)
        return []

    def analyse_still(
        self,
        image: np.ndarray,
        max_faces: int | None = None,
        detections: list[Detection] | None = None,
    ) -> list[StillFace]:
        """Detect, align and embed every face of a still image (blocking), largest first.

        ``detections`` (from ``detect_still``) skips the detection when already done."""
        if detections is None:
            detections = self.detect_still(image)
        if max_faces is not None:
            detections = detections[:max_faces]
        if not detections:
            return []
        aligned = [align_face(image, d.keypoints) for d in detections]
        embeddings = self.pool.embed_now(np.stack(aligned))
        return [
            StillFace(d, a, detection_quality(d, a), e)
            for d, a, e in zip(detections, aligned, embeddings, strict=True)
        ]

    def match(self, embedding: np.ndarray) -> Match:
        return self.gallery.search(embedding)

    def new_face(self, face: StillFace, source: str = "") -> NewFace:
        return NewFace(
            embedding=face.embedding,
            model_id=self.model_id,
            crop_png=face.crop_png(),
            quality=face.quality.overall,
            box=face.detection.box.as_list(),
            source=source,
        )

    def close(self) -> None:
        self.pool.close()
        for det in self._still_detectors:
            det.close()
        self._still_detectors = []
        self.store.close()
