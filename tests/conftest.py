"""Shared fixtures: real models and media from ../shared, located through the
environment (FACE_MODEL_DIR, FACE_TEST_MEDIA). Tests that need them skip with a
reason when absent, and fail instead when FACE_REQUIRE_REAL=1 (CI)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REQUIRE_REAL = os.environ.get("FACE_REQUIRE_REAL") == "1"

MODEL_FILES = (
    "face_detection_short_range.tflite",
    "face_detection_full_range_sparse.tflite",
    "w600k_mbf.onnx",
)


def _real_dir(var: str, must_have: tuple[str, ...]) -> Path | None:
    value = os.environ.get(var)
    if not value:
        return None
    path = Path(value).resolve()
    if not all((path / name).exists() for name in must_have):
        return None
    return path


def skip_or_fail(reason: str) -> None:
    if REQUIRE_REAL:
        pytest.fail(f"FACE_REQUIRE_REAL=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def model_dir() -> Path:
    path = _real_dir("FACE_MODEL_DIR", MODEL_FILES)
    if path is None:
        skip_or_fail("real models not found: set FACE_MODEL_DIR to ../shared/models")
    return path


@pytest.fixture(scope="session")
def media_dir() -> Path:
    path = _real_dir("FACE_TEST_MEDIA", ("short_hamilton_clip.mp4", "people", "probes"))
    if path is None:
        skip_or_fail("real media not found: set FACE_TEST_MEDIA to ../shared/media")
    return path


def people_folders(media_dir: Path) -> dict[str, list[Path]]:
    """Enrolment photos: folder name -> images (people/<name>/*) plus the performers."""
    out: dict[str, list[Path]] = {}
    for sub in sorted((media_dir / "people").iterdir()):
        if sub.is_dir():
            out[sub.name] = sorted(p for p in sub.iterdir() if p.is_file())
    out["lin_manuel_miranda"] = [media_dir / "lin-manuel-miranda.png"]
    return out


@pytest.fixture(scope="session")
def settings_factory(model_dir, tmp_path_factory):
    from stream_server.config import Settings

    def make(**overrides) -> Settings:
        data = tmp_path_factory.mktemp("data")
        base = {"model_dir": model_dir, "data_dir": data, "allow_download": False}
        base.update(overrides)
        return Settings(**base)

    return make


@pytest.fixture(scope="session")
def enrolled_service(settings_factory, media_dir):
    """One FaceService for the session with every person of the media enrolled."""
    from stream_server.cli import enroll_images
    from stream_server.service import FaceService

    service = FaceService(settings_factory())
    for name, images in people_folders(media_dir).items():
        _, count, problems = enroll_images(service, name, images)
        assert not problems, problems
        assert count == len(images)
    service.refresh_gallery()
    yield service
    service.close()
