"""IP cameras over RTSP, end to end: a real RTSP server on 127.0.0.1 serving the clip,
the service under uvicorn, the REST API and ``/ws/events`` as a client sees them."""

from __future__ import annotations

import http.server
import json
import logging
import os
import socket
import stat
import threading
import time

import httpx
import pytest

from tests.e2e.rtsp_support import (
    EventRecorder,
    RtspCamera,
    ServerThread,
    add,
    free_port,
    info,
    need_programs,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.real]

SECRET = "s3cret-Pa55word"
LMM = "lin_manuel_miranda"
# Fast supervision so faults show quickly; the defaults are for real networks.
FAST = {
    "camera_backoff_initial_s": 0.25,
    "camera_backoff_max_s": 1.0,
    "camera_stall_timeout_s": 2.0,
    "camera_open_timeout_s": 2.0,
}


@pytest.fixture(scope="module")
def clip(media_dir):
    return media_dir / "short_hamilton_clip.mp4"


@pytest.fixture(scope="module")
def rtsp_pair(clip, tmp_path_factory):
    """Two independent RTSP cameras (server + publisher each)."""
    need_programs("rtsp-server-perl", "ffmpeg")
    logs = tmp_path_factory.mktemp("rtsp-logs")
    a = RtspCamera(clip, logs, "stage")
    b = RtspCamera(clip, logs, "lobby")
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.kill()
        b.kill()


@pytest.fixture
def cams(rtsp_pair):
    """The two cameras, running (a test before may have killed one)."""
    for cam in rtsp_pair:
        if not cam.running():
            cam.kill()  # the server keeps a dead source's mount: restart both
            cam.start()
    return rtsp_pair


@pytest.fixture(scope="module")
def server(settings_factory, enrolled_service):
    from stream_server.app import create_app

    settings = settings_factory(**FAST)
    srv = ServerThread(create_app(settings, service=enrolled_service)).start()
    yield srv
    srv.stop()


@pytest.fixture
def api(server):
    with httpx.Client(base_url=server.base, timeout=10) as client:
        yield client
        # leave no camera running for the next test
        for s in client.get("/streams").json()["streams"]:
            if s["origin"] == "api":
                client.delete(f"/streams/{s['id']}")


def no_secret_in(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text


# -- check 1 -------------------------------------------------------------------------
def test_camera_added_through_api_names_lin_manuel_miranda(server, api, cams, caplog):
    caplog.set_level(logging.DEBUG)
    stage, _ = cams
    events = EventRecorder(f"{server.ws_base}/ws/events?stream_id=stage-cam")
    try:
        created = add(api, url=stage.url(f"operator:{SECRET}"), name="Stage", id="stage-cam")
        assert created["state"] == "connecting"
        assert created["kind"] == "camera"
        assert created["detector"] == "full"
        assert created["url"] == f"rtsp://operator:***@127.0.0.1:{stage.client_port}/stage"

        _, live = events.wait(events.status("stage-cam", "live"), 15, "stage-cam live")
        assert live["previous"] == "connecting"
        _, matched = events.wait(
            lambda e: e["type"] == "face.matched" and e["name"] == LMM,
            30,
            "face.matched for Lin-Manuel Miranda",
        )
        assert matched["stream_id"] == "stage-cam"
        assert matched["similarity"] >= 0.3
        assert matched["latency_ms"] is not None and matched["pts"] is not None

        body = wait_for(
            lambda: (b := info(api, "stage-cam"))["frames_processed"] >= 60 and b,
            10,
            what="two seconds of frames",
        )
        assert body["state"] == "live"
        # rtsp-server-perl refuses RTP over TCP: ``auto`` fell back to UDP
        assert body["transport"] == "udp"
        assert (body["codec"], body["width"], body["height"]) == ("h264", 640, 360)
        assert 24 <= body["input_fps"] <= 36, body
        assert body["processed_fps"] >= 20, body
        assert body["last_error"] is None
        listed = api.get("/streams").json()
        assert [s["id"] for s in listed["streams"]] == ["stage-cam"]

        assert api.delete("/streams/stage-cam").status_code == 204
        assert api.get("/streams/stage-cam").status_code == 404
        events.wait(events.status("stage-cam", "stopped"), 5, "stage-cam stopped")
        assert api.delete("/streams/stage-cam").status_code == 404
    finally:
        events.close()
    no_secret_in(json.dumps([e for _, e in events.events]), json.dumps(created))
    no_secret_in(*(r.getMessage() for r in caplog.records))


# -- check 2 -------------------------------------------------------------------------
def test_killed_server_retries_then_recovers_without_disturbing_others(server, api, cams):
    stage, lobby = cams
    events = EventRecorder(f"{server.ws_base}/ws/events?type=stream.status")
    try:
        add(api, url=stage.url(), id="cam-a")
        add(api, url=lobby.url(), id="cam-b", fps_cap=15)
        events.wait(events.status("cam-a", "live"), 15, "cam-a live")
        events.wait(events.status("cam-b", "live"), 15, "cam-b live")
        time.sleep(1.0)

        killed_at = time.time()
        stage.kill()
        events.wait(events.status("cam-a", "retrying", killed_at), 5, "cam-a retrying")
        b_before = info(api, "cam-b")["frames_processed"]
        # the API answers at once while a camera is down
        for _ in range(5):
            t0 = time.monotonic()
            assert api.get("/health").status_code == 200
            assert api.get("/streams").status_code == 200
            assert time.monotonic() - t0 < 0.5
        time.sleep(2.0)
        a = info(api, "cam-a")
        assert a["state"] == "retrying"
        assert a["last_error"], a
        b = info(api, "cam-b")
        assert b["state"] == "live" and b["reconnects"] == 0
        assert b["frames_processed"] - b_before >= 20, (b_before, b)
        assert events.find(lambda e: e["stream_id"] == "cam-b" and e["state"] == "retrying") is None

        restarted_at = time.time()
        stage.start()
        _, back = events.wait(events.status("cam-a", "live", restarted_at), 10, "cam-a live again")
        took = back["emitted_at"] - restarted_at
        assert took < 5.0, f"cam-a came back after {took:.2f} s"
        a = info(api, "cam-a")
        assert a["state"] == "live"
        assert a["reconnects"] == 1
        assert a["connect_failures"] >= 1
        metrics = api.get("/metrics").text
        assert 'face_stream_reconnects_total{stream="cam-a"} 1.0' in metrics
        assert 'face_stream_state{state="live",stream="cam-a"} 1.0' in metrics
        assert 'face_stream_state{state="retrying",stream="cam-a"} 0.0' in metrics
        print(f"cam-a back to live {took:.2f} s after its server restarted")
    finally:
        events.close()


def test_stalled_camera_is_restarted_by_the_watchdog(server, api, cams):
    """The server stays up but the picture stops (its source died): a silent session."""
    stage, _ = cams
    events = EventRecorder(f"{server.ws_base}/ws/events?stream_id=cam-stall")
    try:
        add(api, url=stage.url(), id="cam-stall")
        events.wait(events.status("cam-stall", "live"), 15, "live")
        stalled_at = time.time()
        stage.kill_publisher()
        _, retry = events.wait(events.status("cam-stall", "retrying"), 8, "retrying")
        assert retry["emitted_at"] - stalled_at < FAST["camera_stall_timeout_s"] + 2.5
        assert "no data from the camera for 2 s" in retry["detail"]
        assert info(api, "cam-stall")["state"] == "retrying"
        # rtsp-server-perl keeps the dead source's mount: restart the whole camera
        stage.kill()
        stage.start()
        events.wait(events.status("cam-stall", "live", stalled_at), 10, "live again")
        assert info(api, "cam-stall")["reconnects"] == 1
    finally:
        events.close()


def test_fps_cap_drops_frames_before_processing(server, api, cams):
    stage, _ = cams
    add(api, url=stage.url(), id="cam-capped", fps_cap=10, rtsp_transport="udp")
    wait_for(lambda: info(api, "cam-capped")["state"] == "live", 15, what="live")
    time.sleep(4.0)
    body = info(api, "cam-capped")
    assert body["transport"] == "udp"
    assert 24 <= body["input_fps"] <= 36, body
    assert 8 <= body["processed_fps"] <= 11, body
    # two frames of three are skipped by the cap and counted
    assert body["frames_dropped_cap"] >= 0.55 * body["frames_decoded"], body
    assert body["frames_dropped"] == body["frames_dropped_cap"] + body["frames_dropped_busy"]


# -- check 3 -------------------------------------------------------------------------
class _BlackHole:
    """A TCP server that accepts and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


class _HtmlHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        body = b"<!doctype html><html><body>not a camera</body></html>" * 20
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_unreachable_and_non_stream_urls_end_in_retrying_with_readable_errors(
    server, api, cams, caplog
):
    caplog.set_level(logging.DEBUG)
    hole = _BlackHole()
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HtmlHandler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    web_port = web.server_address[1]
    closed_port = free_port()
    creds = f"admin:{SECRET}"
    cases = {
        "refused": (f"rtsp://{creds}@127.0.0.1:{closed_port}/cam", "Connection refused"),
        "silent": (f"rtsp://{creds}@127.0.0.1:{hole.port}/cam", "timed out after 2 s"),
        "html": (f"http://{creds}@127.0.0.1:{web_port}/index.html", "not a video stream"),
        "rtsp-to-web": (f"rtsp://{creds}@127.0.0.1:{web_port}/cam?password={SECRET}", ""),
        # this server only offers RTP over UDP
        "tcp-only": (cams[0].url(creds), "tcp: Server returned 400 Bad Request"),
    }
    try:
        for sid, (url, _) in cases.items():
            extra = {"rtsp_transport": "tcp"} if sid == "tcp-only" else {}
            created = add(api, url=url, id=sid, **extra)
            no_secret_in(json.dumps(created))
        for sid, (_, expected) in cases.items():
            body = wait_for(
                lambda sid=sid: (b := info(api, sid))["last_error"] and b,
                12,
                what=f"{sid} to report an error",
            )
            assert body["state"] == "retrying", body
            assert expected in body["last_error"], body
            assert body["frames_decoded"] == 0 and body["connect_failures"] >= 1
            no_secret_in(json.dumps(body))
            assert "***" in body["url"]
        # every error is one readable line; the API and the service are unharmed
        errors = {sid: info(api, sid)["last_error"] for sid in cases}
        print(json.dumps(errors, indent=1))
        assert all(e.startswith("could not open the camera") for e in errors.values()), errors
        assert api.get("/health").status_code == 200
        assert api.get("/ready").status_code == 200
        no_secret_in(api.get("/streams").text, api.get("/metrics").text)
    finally:
        hole.close()
        web.shutdown()
    no_secret_in(*(r.getMessage() for r in caplog.records))
    for r in caplog.records:
        if r.exc_info:
            no_secret_in(str(r.exc_info[1]))


@pytest.mark.parametrize(
    "url",
    [
        f"ftp://user:{SECRET}@127.0.0.1/cam",
        f"rtmp://user:{SECRET}@127.0.0.1/live/cam",
        "file:///etc/passwd",
        "/etc/passwd",
        "javascript:alert(1)",
        f"rtsp://user:{SECRET}@/cam",
        "rtsp://127.0.0.1:99999/cam",
        "rtsp://127.0.0.1/cam with spaces",
        "",
    ],
)
def test_forbidden_or_malformed_urls_get_422(server, api, url):
    r = api.post("/streams", json={"url": url, "name": "x"})
    assert r.status_code == 422, r.text
    assert isinstance(r.json()["detail"], str) and r.json()["detail"]
    no_secret_in(r.text)
    assert api.get("/streams").json()["total"] == 0


def test_file_scheme_message_says_how_to_enable(server, api, clip):
    r = api.post("/streams", json={"url": f"file://{clip}"})
    assert r.status_code == 422
    assert "FACE_CAMERA_ALLOW_FILE" in r.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"url": f"rtsp://u:{SECRET}@127.0.0.1/cam", "fps_cap": -1},
        {"url": f"rtsp://u:{SECRET}@127.0.0.1/cam", "rtsp_transport": "sctp"},
        {"url": f"rtsp://u:{SECRET}@127.0.0.1/cam", "detector": "huge"},
        {"url": f"rtsp://u:{SECRET}@127.0.0.1/cam", "id": "../etc"},
        {"url": f"rtsp://u:{SECRET}@127.0.0.1/cam", "colour": "red"},
        {"url": f"http://u:{SECRET}@127.0.0.1/cam.mjpg", "rtsp_transport": "tcp"},
        {"name": "no url"},
        [f"rtsp://u:{SECRET}@127.0.0.1/cam"],
    ],
)
def test_bad_fields_get_422_without_echoing_the_url(server, api, body):
    r = api.post("/streams", json=body)
    assert r.status_code == 422, r.text
    no_secret_in(r.text)
    assert api.get("/streams").json()["total"] == 0


def test_duplicate_id_gets_409(server, api):
    url = f"rtsp://127.0.0.1:{free_port()}/cam"
    add(api, url=url, id="dup")
    r = api.post("/streams", json={"url": url, "id": "dup"})
    assert r.status_code == 409
    assert api.get("/streams").json()["total"] == 1


# -- persistence and declared cameras -------------------------------------------------
def test_cameras_persist_across_restarts_and_can_be_declared(
    settings_factory, enrolled_service, cams, tmp_path
):
    from stream_server.app import create_app
    from stream_server.config import DeclaredCamera

    stage, lobby = cams
    settings = settings_factory(
        data_dir=tmp_path,
        cameras=[DeclaredCamera(url=lobby.url(f"viewer:{SECRET}"), name="Lobby door")],
        **FAST,
    )
    first = ServerThread(create_app(settings, service=enrolled_service)).start()
    try:
        with httpx.Client(base_url=first.base, timeout=10) as api:
            add(api, url=stage.url(f"operator:{SECRET}"), id="kept", name="Stage", fps_cap=12)
            wait_for(lambda: info(api, "kept")["state"] == "live", 15, what="kept live")
            declared = info(api, "Lobby-door")
            assert declared["origin"] == "settings"
            assert declared["url"] == f"rtsp://viewer:***@127.0.0.1:{lobby.client_port}/lobby"
    finally:
        first.stop()
    saved = settings.cameras_path
    assert stat.S_IMODE(os.stat(saved).st_mode) == 0o600
    stored = json.loads(saved.read_text())
    assert [c["id"] for c in stored["cameras"]] == ["kept"]  # declared ones are not stored

    second = ServerThread(create_app(settings, service=enrolled_service)).start()
    try:
        with httpx.Client(base_url=second.base, timeout=10) as api:
            for sid in ("kept", "Lobby-door"):
                wait_for(lambda sid=sid: info(api, sid)["state"] == "live", 15, what=sid)
            kept = info(api, "kept")
            assert (kept["name"], kept["fps_cap"], kept["origin"]) == ("Stage", 12, "api")
            r = api.delete("/streams/Lobby-door")
            assert r.status_code == 409 and "FACE_CAMERAS" in r.json()["detail"]
            assert api.delete("/streams/kept").status_code == 204
            assert [s["id"] for s in api.get("/streams").json()["streams"]] == ["Lobby-door"]
    finally:
        second.stop()
    assert json.loads(saved.read_text())["cameras"] == []


def test_unreadable_camera_list_is_set_aside_and_the_server_starts(
    settings_factory, enrolled_service, tmp_path, caplog
):
    from stream_server.app import create_app

    caplog.set_level(logging.INFO)
    settings = settings_factory(data_dir=tmp_path)
    # a URL where a string belongs: the validation error quotes it
    bad = {"version": 1, "cameras": [{"id": "x", "name": "x", "url": [f"rtsp://u:{SECRET}@h/c"]}]}
    settings.cameras_path.write_text(json.dumps(bad))
    srv = ServerThread(create_app(settings, service=enrolled_service)).start()
    try:
        with httpx.Client(base_url=srv.base, timeout=10) as api:
            assert api.get("/streams").json() == {"streams": [], "total": 0}
    finally:
        srv.stop()
    assert not settings.cameras_path.exists()
    assert len(list(tmp_path.glob("cameras.json.unreadable-*"))) == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("unreadable" in m for m in messages)
    no_secret_in(*messages)
