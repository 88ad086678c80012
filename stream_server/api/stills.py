"""Uploaded still images: read, decode (pixel limit), detect, align, embed.

All of it runs in a worker thread, never on the event loop, and at most
``FACE_STILL_CONCURRENCY`` uploads are analysed at once (each decoded image can
take up to ``max_image_pixels * 3`` bytes of memory).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
from fastapi import UploadFile

from .. import metrics
from ..pipeline.pool import PoolClosed
from ..service import FaceService, ImageError, StillFace, decode_image
from .errors import ApiError


@dataclass(frozen=True)
class AnalysedImage:
    width: int
    height: int
    faces: list[StillFace]  # largest first
    faces_found: int


class StillAnalyser:
    def __init__(self, service: FaceService, max_pixels: int, concurrency: int) -> None:
        self.service = service
        self.max_pixels = max_pixels
        self._slots = asyncio.Semaphore(max(1, concurrency))

    def _analyse(self, data: bytes, max_faces: int | None) -> AnalysedImage:
        image = decode_image(data, self.max_pixels)
        height, width = image.shape[:2]
        detections = self.service.detect_still(image)
        faces = self.service.analyse_still(image, max_faces=max_faces, detections=detections)
        return AnalysedImage(width, height, faces, len(detections))

    async def analyse(self, data: bytes, field: str, max_faces: int | None = None) -> AnalysedImage:
        """Faces of one upload; an unusable image raises ApiError(422) naming ``field``."""
        async with self._slots:
            try:
                return await asyncio.to_thread(self._analyse, data, max_faces)
            except ImageError as exc:
                metrics.UPLOADS_REFUSED.labels(reason="not_an_image").inc()
                raise ApiError(422, "invalid_image", f"{field}: {exc}") from exc
            except PoolClosed as exc:
                raise ApiError(503, "unavailable", "the service is shutting down") from exc

    async def analyse_many(
        self, uploads: list[bytes], max_faces: int | None = None
    ) -> list[AnalysedImage | ImageError]:
        """Several uploads (enrolment); an unusable image is returned as its ImageError."""
        out: list[AnalysedImage | ImageError] = []
        for data in uploads:
            async with self._slots:
                try:
                    out.append(await asyncio.to_thread(self._analyse, data, max_faces))
                except ImageError as exc:
                    metrics.UPLOADS_REFUSED.labels(reason="not_an_image").inc()
                    out.append(exc)
                except PoolClosed as exc:
                    raise ApiError(503, "unavailable", "the service is shutting down") from exc
        return out


async def read_upload(upload: UploadFile) -> bytes:
    """The whole file (the body limit has already bounded its size)."""
    data = await upload.read()
    await upload.close()
    return data


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float32).ravel()
    b = np.asarray(b, np.float32).ravel()
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / denom) if denom > 0 else 0.0
