"""Camera sources other than RTSP: MJPEG and HLS over HTTP, and recordings (file:)
when enabled. Real servers on 127.0.0.1 (ffmpeg, Python's http.server)."""

from __future__ import annotations

import functools
import http.server
import os
import signal
import subprocess
import threading
import time

import httpx
import pytest

from tests.e2e.rtsp_support import (
    EventRecorder,
    ServerThread,
    free_port,
    info,
    need_programs,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.real]

LMM = "lin_manuel_miranda"


@pytest.fixture(scope="module")
def clip(media_dir):
    return media_dir / "short_hamilton_clip.mp4"


@pytest.fixture(scope="module")
def server(settings_factory, enrolled_service):
    from stream_server.app import create_app

    need_programs("ffmpeg")
    settings = settings_factory(
        camera_allow_file=True,
        camera_backoff_initial_s=0.25,
        camera_backoff_max_s=1.0,
        camera_open_timeout_s=3.0,
        camera_stall_timeout_s=3.0,
    )
    srv = ServerThread(create_app(settings, service=enrolled_service)).start()
    yield srv
    srv.stop()


@pytest.fixture
def api(server):
    with httpx.Client(base_url=server.base, timeout=10) as client:
        yield client
        for s in client.get("/streams").json()["streams"]:
            client.delete(f"/streams/{s['id']}")


def _ffmpeg(args: list[str], log) -> subprocess.Popen:
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", *args]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_recording_replays_in_real_time_and_stops_at_its_end(server, api, clip, tmp_path):
    # 4 s of the clip, from the keyframe at 2 s: Lin-Manuel Miranda close to the camera
    part = tmp_path / "stage part.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-ss",
            "2.0",
            "-i",
            str(clip),
            "-t",
            "4",
            "-c",
            "copy",
            str(part),
        ],
        check=True,
    )
    events = EventRecorder(f"{server.ws_base}/ws/events?stream_id=recording")
    try:
        r = api.post("/streams", json={"url": part.as_uri(), "id": "recording"})
        assert r.status_code == 201, r.text
        t_live, live = events.wait(events.status("recording", "live"), 10, "live")
        events.wait(lambda e: e["type"] == "face.matched" and e["name"] == LMM, 10, "face.matched")
        t_end, end = events.wait(events.status("recording", "stopped"), 10, "stopped")
        assert end["detail"] == "end of the recording"
        # paced by its timestamps like a camera, not decoded as fast as possible
        assert 3.4 <= t_end - t_live <= 6.0, t_end - t_live
        body = info(api, "recording")
        assert body["state"] == "stopped" and body["last_error"] is None
        assert body["format"].startswith("mov")
        assert 110 <= body["frames_decoded"] <= 125
        assert body["frames_processed"] >= 0.9 * body["frames_decoded"], body
    finally:
        events.close()


def test_mjpeg_camera_over_http(server, api, clip, tmp_path):
    port = free_port()
    with open(tmp_path / "mjpeg.log", "wb") as log:
        proc = _ffmpeg(
            ["-re", "-stream_loop", "-1", "-i", str(clip), "-an", "-c:v", "mjpeg", "-q:v", "6"]
            + ["-f", "mpjpeg", "-listen", "1", f"http://127.0.0.1:{port}/video.mjpg"],
            log,
        )
    try:
        time.sleep(0.5)
        url = f"http://viewer:hunter2hunter@127.0.0.1:{port}/video.mjpg"
        r = api.post("/streams", json={"url": url, "id": "mjpeg", "fps_cap": 12})
        assert r.status_code == 201, r.text
        assert r.json()["url"] == f"http://viewer:***@127.0.0.1:{port}/video.mjpg"
        wait_for(lambda: info(api, "mjpeg")["state"] == "live", 10, what="mjpeg live")
        time.sleep(3.5)
        body = info(api, "mjpeg")
        assert (body["format"], body["codec"], body["width"]) == ("mpjpeg", "mjpeg", 640)
        assert 24 <= body["input_fps"] <= 36, body
        # MJPEG carries no real clock: the cap runs on arrival time, and holds
        assert 9.5 <= body["processed_fps"] <= 12.6, body
    finally:
        _stop(proc)


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_live_hls_over_http_is_paced_like_a_camera(server, api, clip, tmp_path):
    hls = tmp_path / "hls"
    hls.mkdir()
    with open(tmp_path / "hls.log", "wb") as log:
        proc = _ffmpeg(
            ["-re", "-stream_loop", "-1", "-i", str(clip), "-c", "copy", "-f", "hls"]
            + ["-hls_time", "1", "-hls_list_size", "4"]
            + ["-hls_flags", "delete_segments+omit_endlist", str(hls / "live.m3u8")],
            log,
        )
    web = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietFiles, directory=str(hls))
    )
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        wait_for(lambda: (hls / "live.m3u8").exists(), 10, what="the HLS playlist")
        url = f"http://127.0.0.1:{web.server_address[1]}/live.m3u8"
        r = api.post("/streams", json={"url": url, "id": "hls"})
        assert r.status_code == 201, r.text
        wait_for(lambda: info(api, "hls")["state"] == "live", 15, what="hls live")
        time.sleep(3.5)
        body = info(api, "hls")
        assert body["format"] == "hls" and body["codec"] == "h264"
        # segments arrive in bursts of 2 s; frames are released at 30 fps
        assert 24 <= body["input_fps"] <= 36, body
        assert body["processed_fps"] >= 20, body
        assert body["frames_dropped_busy"] <= 0.1 * body["frames_decoded"], body
    finally:
        web.shutdown()
        _stop(proc)


def test_http_source_not_found_reports_the_status(server, api, tmp_path):
    web = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietFiles, directory=str(tmp_path))
    )
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{web.server_address[1]}/no/such/camera.m3u8"
        assert api.post("/streams", json={"url": url, "id": "missing"}).status_code == 201
        body = wait_for(
            lambda: (b := info(api, "missing"))["last_error"] and b, 10, what="an error"
        )
        assert body["state"] == "retrying"
        assert "404 Not Found" in body["last_error"], body
    finally:
        web.shutdown()
