"""Shot-boundary detection: a cut ends every track.

Edited video (and a PTZ camera jumping to a preset) replaces the whole picture
between two frames; a face in the new shot may sit where another one was, and
the tracker must not hand it the old face's id and name. A cut is a frame whose
64x36 grey thumbnail differs from the previous one by a large mean absolute
difference *and* whose colour histogram moved far (Bhattacharyya distance):
motion inside one shot changes one of them, rarely both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass
class SceneCutDetector:
    min_gray_diff: float = 20.0  # mean |difference|, 0-255
    min_hist_distance: float = 0.2  # Bhattacharyya, 0-1
    _prev_gray: np.ndarray | None = None
    _prev_hist: np.ndarray | None = None
    cuts: int = field(default=0)

    def update(self, image: np.ndarray) -> bool:
        """True when ``image`` starts a new shot."""
        small = cv2.resize(image, (64, 36), interpolation=cv2.INTER_AREA)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
        hist = cv2.calcHist([small], [0, 1, 2], None, [8, 8, 8], [0, 256] * 3)
        hist = cv2.normalize(hist, hist).flatten()
        cut = False
        if self._prev_gray is not None and self._prev_gray.shape == gray.shape:
            diff = float(np.abs(gray - self._prev_gray).mean())
            if diff >= self.min_gray_diff:
                dist = float(cv2.compareHist(hist, self._prev_hist, cv2.HISTCMP_BHATTACHARYYA))
                cut = dist >= self.min_hist_distance
        self._prev_gray, self._prev_hist = gray, hist
        if cut:
            self.cuts += 1
        return cut
