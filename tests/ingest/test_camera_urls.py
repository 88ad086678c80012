"""Camera URL rules, credential masking, the fps cap and the declared-camera setting."""

from __future__ import annotations

import pytest

from stream_server.config import Settings
from stream_server.ingest.rtsp import (
    CameraUrlError,
    FpsCap,
    RateMeter,
    mask_url,
    scrub_text,
    url_secrets,
    validate_camera_url,
)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("rtsp://admin:hunter22@10.0.0.5:554/stream1", "rtsp://admin:***@10.0.0.5:554/stream1"),
        ("rtsp://admin:p@ss:w0rd@cam.local/live", "rtsp://admin:***@cam.local/live"),
        ("rtsps://viewer@cam.local/live", "rtsps://viewer@cam.local/live"),
        ("rtsp://cam.local/live", "rtsp://cam.local/live"),
        (
            "http://cam.local/video.cgi?user=admin&password=hunter22&res=hd",
            "http://cam.local/video.cgi?user=admin&password=***&res=hd",
        ),
        ("https://cdn.local/live.m3u8?token=abcdef123", "https://cdn.local/live.m3u8?token=***"),
    ],
)
def test_mask_url_hides_passwords_and_secret_query_values(url, masked):
    assert mask_url(url) == masked


def test_scrub_text_removes_credentials_from_ffmpeg_messages():
    url = "rtsp://admin:hunter22@10.0.0.5/s1?auth=tok3n"
    message = f"[Errno 111] Connection refused: '{url}' (while opening {url})"
    clean = scrub_text(message, url_secrets(url))
    assert "hunter22" not in clean and "tok3n" not in clean
    assert "rtsp://admin:***@10.0.0.5/s1?auth=***" in clean
    # unknown URLs in free text are masked too
    assert scrub_text("see rtsp://u:secretpw@h/x") == "see rtsp://u:***@h/x"


def test_url_secrets_covers_encoded_passwords():
    secrets = url_secrets("rtsp://admin:p%40ssword@cam/live")
    assert "p%40ssword" in secrets and "p@ssword" in secrets


@pytest.mark.parametrize(
    "url",
    [
        "rtsp://cam.local/live",
        "rtsps://user:pw@cam.local:322/live",
        "http://cam.local/mjpeg",
        "https://cdn.local/live.m3u8",
        "RTSP://CAM.LOCAL/live",
    ],
)
def test_allowed_urls(url):
    assert validate_camera_url(url) in ("rtsp", "rtsps", "http", "https")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://cam.local/x", "scheme ftp: is not allowed"),
        ("rtmp://cam.local/x", "scheme rtmp: is not allowed"),
        ("file:///etc/passwd", "FACE_CAMERA_ALLOW_FILE"),
        ("/etc/passwd", "no scheme is not allowed"),
        ("rtsp:///live", "has no host"),
        ("rtsp://cam.local:70000/live", "malformed url"),
        ("rtsp://cam.local/a b", "spaces or control characters"),
        ("", "url is required"),
        ("rtsp://cam.local/" + "x" * 3000, "longer than"),
    ],
)
def test_refused_urls_say_why(url, message):
    with pytest.raises(CameraUrlError, match=message):
        validate_camera_url(url)


def test_file_urls_only_when_enabled(tmp_path):
    video = tmp_path / "rec.mp4"
    video.write_bytes(b"\0")
    with pytest.raises(CameraUrlError):
        validate_camera_url(f"file://{video}")
    assert validate_camera_url(f"file://{video}", allow_file=True) == "file"
    with pytest.raises(CameraUrlError, match="no such file"):
        validate_camera_url(f"file://{tmp_path}/missing.mp4", allow_file=True)
    with pytest.raises(CameraUrlError, match="local path"):
        validate_camera_url("file://otherhost/rec.mp4", allow_file=True)


def test_refusal_messages_never_show_the_password():
    with pytest.raises(CameraUrlError) as info:
        validate_camera_url("rtsp://admin:hunter22@cam.local:99999/x")
    assert "hunter22" not in str(info.value)


def _admitted(cap: FpsCap, fps: float, seconds: float) -> int:
    n = int(fps * seconds)
    return sum(cap.admit(i / fps) for i in range(n))


@pytest.mark.parametrize(
    ("input_fps", "cap_fps", "expected"),
    [(30000 / 1001, 10, 100), (25, 10, 100), (30, 15, 150), (30, 7.5, 75), (5, 10, 50)],
)
def test_fps_cap_admits_evenly_at_the_cap(input_fps, cap_fps, expected):
    assert abs(_admitted(FpsCap(cap_fps), input_fps, 10.0) - expected) <= 1


def test_fps_cap_restarts_after_a_clock_jump():
    cap = FpsCap(10)
    assert cap.admit(100.0)
    assert not cap.admit(100.03)
    assert cap.admit(5.0)  # went back: admitted at once, then paced from there
    assert not cap.admit(5.03)
    assert cap.admit(5.1)


def test_rate_meter_measures_recent_rate():
    meter = RateMeter(window_s=2.0)
    for i in range(61):
        meter.tick(10.0 + i / 30)
    assert meter.rate(12.0) == pytest.approx(30.0, rel=0.05)
    assert meter.rate(20.0) == 0.0  # nothing recent


def test_cameras_declared_in_the_environment(monkeypatch):
    monkeypatch.setenv(
        "FACE_CAMERAS",
        '[{"url": "rtsp://u:p@cam1/live", "name": "Door", "fps_cap": 10},'
        ' {"url": "rtsp://cam2/live", "id": "yard", "rtsp_transport": "tcp"}]',
    )
    settings = Settings()
    assert [c.name for c in settings.cameras] == ["Door", None]
    assert settings.cameras[0].fps_cap == 10
    assert settings.cameras[1].id == "yard" and settings.cameras[1].rtsp_transport == "tcp"


def test_declared_cameras_reject_unknown_fields(monkeypatch):
    monkeypatch.setenv("FACE_CAMERAS", '[{"url": "rtsp://cam/live", "fps": 10}]')
    with pytest.raises(ValueError):
        Settings()
