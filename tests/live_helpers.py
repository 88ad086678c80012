"""Helpers for tests that talk to a real running server (uvicorn on 127.0.0.1)."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import cv2
import numpy as np

CLIP = "short_hamilton_clip.mp4"
CLIP_FPS = 30000 / 1001


def start_server(service, settings):
    from stream_server.app import create_app
    from stream_server.server_thread import ServerThread

    return ServerThread(create_app(settings, service=service), host="127.0.0.1", port=0).start()


@functools.lru_cache(maxsize=2)
def clip_frames(media_dir: Path) -> tuple[np.ndarray, ...]:
    """Every frame of the test clip, RGB."""
    from stream_server.ingest.video import iter_video_frames

    return tuple(img for img, _pts, _tb in iter_video_frames(str(media_dir / CLIP)))


def encode(rgb: np.ndarray, ext: str = ".jpg", quality: int = 90) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    assert ok
    return buf.tobytes()


def make_y4m(media_dir: Path, out: Path, first: int = 60, last: int = 220) -> Path:
    """Frames ``first``..``last`` of the clip as a Y4M file Chromium can use as a camera."""
    if not out.exists():
        subprocess.run(
            [
                "ffmpeg",
                "-loglevel",
                "error",
                "-y",
                "-i",
                str(media_dir / CLIP),
                "-vf",
                f"select='between(n,{first},{last})',setpts=N/FRAME_RATE/TB,scale=640:360",
                "-pix_fmt",
                "yuv420p",
                "-f",
                "yuv4mpegpipe",
                str(out),
            ],
            check=True,
            timeout=60,
        )
    return out
