"""Recompute every stored embedding from the kept aligned crops (model change)."""

from __future__ import annotations

import logging

import cv2
import numpy as np

log = logging.getLogger(__name__)


def reembed_gallery(service, batch: int = 32) -> int:
    """Re-embed all faces with the service's current model; returns how many."""
    crops = service.store.all_crops()
    done = 0
    for start in range(0, len(crops), batch):
        chunk = crops[start : start + batch]
        images = []
        for _face_id, png in chunk:
            bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
            images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        embeddings = service.pool.embed_now(np.stack(images))
        service.store.replace_embeddings(
            service.model_id, {fid: emb for (fid, _), emb in zip(chunk, embeddings, strict=True)}
        )
        done += len(chunk)
    service.refresh_gallery()
    log.info("re-embedded %d faces with %s", done, service.model_id)
    return done
