"""Face detection with MediaPipe's BlazeFace models through the Tasks API."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from ..types import Box, Detection

log = logging.getLogger(__name__)


class FaceDetector:
    """Finds faces and their 6 keypoints in RGB images.

    One instance is used by one thread at a time (MediaPipe task objects are not
    re-entrant); each stream owns its own. ``detect`` releases the GIL while the
    TFLite graph runs.
    """

    def __init__(self, model_path: Path, min_confidence: float = 0.5) -> None:
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        self._mp = mp
        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(model_path)),
            running_mode=vision.RunningMode.IMAGE,
            min_detection_confidence=min_confidence,
        )
        self._task = vision.FaceDetector.create_from_options(options)
        self._lock = threading.Lock()
        self.model_path = Path(model_path)

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in an HxWx3 uint8 RGB image, best score first."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.shape} {image.dtype}")
        height, width = image.shape[:2]
        mp_image = self._mp.Image(
            image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)
        )
        with self._lock:
            result = self._task.detect(mp_image)
        faces: list[Detection] = []
        for det in result.detections:
            bb = det.bounding_box
            x0 = max(0.0, float(bb.origin_x))
            y0 = max(0.0, float(bb.origin_y))
            x1 = min(float(width), float(bb.origin_x + bb.width))
            y1 = min(float(height), float(bb.origin_y + bb.height))
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            kps = np.array(
                [[kp.x * width, kp.y * height] for kp in det.keypoints[:6]], dtype=np.float32
            )
            if kps.shape != (6, 2):
                continue
            score = float(det.categories[0].score) if det.categories else 0.0
            faces.append(Detection(Box(x0, y0, x1 - x0, y1 - y0), score, kps))
        faces.sort(key=lambda d: d.score, reverse=True)
        return faces

    def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            try:
                task.close()
            except Exception:  # pragma: no cover - shutdown noise from the C layer
                log.debug("detector close failed", exc_info=True)

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
