from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, people_folders, skip_or_fail
from tests.live_helpers import make_y4m

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
HIM = "lin_manuel_miranda"


def _needs_ffmpeg() -> None:
    if shutil.which("ffmpeg") is None:
        skip_or_fail("ffmpeg is not installed (scripts/setup --test installs it)")


def _chromium_args(camera: Path) -> list[str]:
    if not Path(CHROMIUM).exists():
        skip_or_fail(f"{CHROMIUM} is missing (Debian package chromium)")
    return [
        "--no-sandbox",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-gpu",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={camera}",
    ]


@pytest.fixture(scope="session")
def camera_y4m(media_dir, tmp_path_factory) -> Path:
    """Frames 60-220 of the clip (him on stage, close) as a fake webcam's video."""
    _needs_ffmpeg()
    return make_y4m(media_dir, tmp_path_factory.mktemp("camera") / "camera.y4m")


@pytest.fixture(scope="session")
def chromium_args(camera_y4m) -> list[str]:
    return _chromium_args(camera_y4m)


@pytest.fixture(scope="session")
def close_up_chromium_args(media_dir, tmp_path_factory) -> list[str]:
    """A fake webcam playing frames 140-200 of the clip: Lin-Manuel Miranda alone, close
    and facing the camera, as someone enrolling in front of their webcam would be.
    (Around frames 60-81 and 211-220 other performers share the frame or he turns
    away; the server rightly refuses such a frame for enrolment.)"""
    _needs_ffmpeg()
    out = tmp_path_factory.mktemp("camera") / "close-up.y4m"
    return _chromium_args(make_y4m(media_dir, out, first=140, last=200))


@pytest.fixture
def gallery_without_him(settings_factory, media_dir):
    """A FaceService of its own with everyone of the media enrolled except Lin-Manuel
    Miranda (the browser enrols him), closed after the test."""
    from stream_server.cli import enroll_images
    from stream_server.service import FaceService

    service = FaceService(settings_factory())
    try:
        for name, images in people_folders(media_dir).items():
            if name != HIM:
                _, count, problems = enroll_images(service, name, images)
                assert not problems and count == len(images), problems
        service.refresh_gallery()
        yield service
    finally:
        service.close()


@pytest.fixture
def empty_gallery(settings_factory):
    """A FaceService of its own with an empty gallery, closed after the test."""
    from stream_server.service import FaceService

    service = FaceService(settings_factory())
    try:
        yield service
    finally:
        service.close()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
