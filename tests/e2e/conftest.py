from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, skip_or_fail
from tests.live_helpers import make_y4m

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="session")
def camera_y4m(media_dir, tmp_path_factory) -> Path:
    """Frames 60-220 of the clip (him on stage, close) as a fake webcam's video."""
    if shutil.which("ffmpeg") is None:
        skip_or_fail("ffmpeg is not installed (scripts/setup --test installs it)")
    return make_y4m(media_dir, tmp_path_factory.mktemp("camera") / "camera.y4m")


@pytest.fixture(scope="session")
def chromium_args(camera_y4m) -> list[str]:
    if not Path(CHROMIUM).exists():
        skip_or_fail(f"{CHROMIUM} is missing (Debian package chromium)")
    return [
        "--no-sandbox",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-gpu",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={camera_y4m}",
    ]


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
