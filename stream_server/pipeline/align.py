"""Warp a face onto the ArcFace 112x112 template from the detector's keypoints."""

from __future__ import annotations

import cv2
import numpy as np

ARCFACE_SIZE = 112

# InsightFace's 5-point ArcFace template (image-left eye, image-right eye, nose,
# mouth corners) for a 112x112 crop. MediaPipe gives a mouth centre, not corners,
# so the two mouth points are merged into their midpoint.
_TEMPLATE_5 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
TEMPLATE_4 = np.vstack([_TEMPLATE_5[:3], _TEMPLATE_5[3:].mean(axis=0, keepdims=True)])


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation), 2x3 matrix.

    Umeyama's closed form, as used for ArcFace alignment.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n = src.shape[0]
    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    src_c = src - src_mean
    dst_c = dst - dst_mean
    cov = dst_c.T @ src_c / n
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    src_var = (src_c**2).sum() / n
    scale = (s * d).sum() / src_var if src_var > 0 else 1.0
    mat = np.zeros((2, 3))
    mat[:, :2] = scale * rot
    mat[:, 2] = dst_mean - scale * rot @ src_mean
    return mat


def align_face(image: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """The 112x112 aligned crop for a face with MediaPipe's 6 keypoints."""
    mat = similarity_transform(keypoints[:4], TEMPLATE_4)
    return cv2.warpAffine(
        image, mat, (ARCFACE_SIZE, ARCFACE_SIZE), flags=cv2.INTER_LINEAR, borderValue=0.0
    )
