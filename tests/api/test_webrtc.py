"""``POST /webrtc/offer`` against a real server, with aiortc as the sending peer."""

from __future__ import annotations

import asyncio
import json
import re
import time

import av
import httpx
import pytest
import websockets
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

from tests.live_helpers import clip_frames, start_server

pytestmark = pytest.mark.real

FRAME_TIMEOUT = 1.5
SERVER_SETTINGS = {"webrtc_frame_timeout_s": FRAME_TIMEOUT}
HIM = "lin_manuel_miranda"


class ClipTrack(VideoStreamTrack):
    """A camera that shows the given frames at 30 fps, then goes silent (sends
    nothing more, without hanging up)."""

    def __init__(self, frames) -> None:
        super().__init__()
        self.frames = list(frames)
        self.sent = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        if self.sent >= len(self.frames):
            await asyncio.Event().wait()
        frame = av.VideoFrame.from_ndarray(self.frames[self.sent], format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        self.sent += 1
        return frame


async def _offer(pc: RTCPeerConnection) -> dict:
    await pc.setLocalDescription(await pc.createOffer())
    return {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}


async def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_webcam_stream_gets_results_and_events_then_times_out(live_server, media_dir):
    frames = clip_frames(media_dir)[82:172]  # three seconds of him, close
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    messages: list[dict] = []
    channel = pc.createDataChannel("results")
    channel.on("message", lambda text: messages.append(json.loads(text)))
    pc.addTrack(ClipTrack(frames))
    app = live_server.app
    try:
        async with httpx.AsyncClient(base_url=live_server.url) as http:
            body = await _offer(pc)
            resp = await http.post("/webrtc/offer", json={**body, "stream_id": "aiortc-cam"})
            assert resp.status_code == 200, resp.text
            answer = resp.json()
            assert answer["type"] == "answer" and answer["stream_id"] == "aiortc-cam"
            assert answer["detector"] == "short" and answer["data_channel"] is True
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))

            def matched():
                return [m for m in messages if m["type"] == "face.matched"]

            await _wait_for(lambda: matched(), 30, "face.matched on the data channel")
            assert {m["name"] for m in matched()} == {HIM}
            await _wait_for(
                lambda: any(
                    f["name"] == HIM
                    for m in messages
                    if m["type"] == "frame.result"
                    for f in m["faces"]
                ),
                10,
                "a frame result naming him",
            )
            results = [m for m in messages if m["type"] == "frame.result"]
            assert all(r["stream_id"] == "aiortc-cam" for r in results)
            # The browser's media clock is kept: pts start at 0 and grow ~1/30 s a frame.
            pts = [r["pts"] for r in results]
            assert pts == sorted(pts) and pts[0] < 1.0
            assert "aiortc-cam" in app.state.streams

            # The camera goes silent: the server hangs up after the frame timeout.
            await _wait_for(
                lambda: any(
                    m["type"] == "stream.status" and m["state"] == "stopped" for m in messages
                ),
                len(frames) / 30 + FRAME_TIMEOUT + 10,
                "the stream to stop",
            )
            stopped = next(m for m in messages if m.get("state") == "stopped")
            assert f"no video for {FRAME_TIMEOUT:g} s" in stopped["detail"]
            assert [m["state"] for m in messages if m["type"] == "stream.status"] == [
                "live",
                "stopped",
            ]
            # Its tracks were ended (and said so) before the stream went.
            assert any(m["type"] == "track.ended" and m["name"] == HIM for m in messages)
            assert "aiortc-cam" not in app.state.streams
            await _wait_for(lambda: len(app.state.webrtc) == 0, 5, "the session to go")
            await _wait_for(lambda: pc.connectionState == "closed", 10, "the peer to close")
    finally:
        await pc.close()


async def test_malformed_offers_get_400_with_a_reason(live_server, media_dir):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(ClipTrack(clip_frames(media_dir)[:1]))
    good = await _offer(pc)
    await pc.close()
    data_only = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    data_only.createDataChannel("results")
    no_video = await _offer(data_only)
    await data_only.close()

    broken_mline = re.sub(r"m=video \d+ ", "m=video nine ", good["sdp"], count=1)
    assert broken_mline != good["sdp"]
    cases = [
        ({"sdp": "hello", "type": "offer"}, "v=0"),
        ({"sdp": broken_mline, "type": "offer"}, "malformed SDP offer: a line could not be parsed"),
        ({"sdp": good["sdp"][: len(good["sdp"]) // 3], "type": "offer"}, "malformed SDP offer"),
        ({"sdp": good["sdp"], "type": "answer"}, "offer"),
        (no_video, "no video"),
    ]
    async with httpx.AsyncClient(base_url=live_server.url) as http:
        for body, words in cases:
            resp = await http.post("/webrtc/offer", json=body)
            assert resp.status_code == 400, (body["sdp"][:40], resp.text)
            assert words in resp.json()["error"], resp.json()
        resp = await http.post("/webrtc/offer", json={"type": "offer"})
        assert resp.status_code == 422 and "sdp" in resp.text
        resp = await http.post(
            "/webrtc/offer", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert resp.status_code == 422
        # Nothing of the refused offers stays open, and the service still serves.
        assert live_server.app.state.streams.all() == []
        assert len(live_server.app.state.webrtc) == 0
        assert (await http.get("/health")).status_code == 200


async def test_stream_id_in_use_gets_409(live_server, media_dir):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(ClipTrack(clip_frames(media_dir)[:1]))
    try:
        body = await _offer(pc)
        async with websockets.connect(f"{live_server.ws_url}/ws/ingest?stream_id=taken") as ws:
            assert json.loads(await ws.recv())["type"] == "ingest.ready"
            async with httpx.AsyncClient(base_url=live_server.url) as http:
                resp = await http.post("/webrtc/offer", json={**body, "stream_id": "taken"})
        assert resp.status_code == 409 and "already in use" in resp.json()["error"]
    finally:
        await pc.close()


async def test_peer_limit_and_shutdown_closing_open_peer_connections(
    enrolled_service, settings_factory, media_dir
):
    from stream_server import metrics

    open_peers = metrics.ACTIVE_CONNECTIONS.labels(kind="webrtc")
    before = open_peers._value.get()
    server = start_server(enrolled_service, settings_factory(webrtc_max_peers=1))
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    messages: list[dict] = []
    channel = pc.createDataChannel("results")
    channel.on("message", lambda text: messages.append(json.loads(text)))
    pc.addTrack(ClipTrack(clip_frames(media_dir)[82:]))
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            resp = await http.post("/webrtc/offer", json=await _offer(pc))
        answer = resp.json()
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        await _wait_for(lambda: any(m["type"] == "frame.result" for m in messages), 20, "results")
        app = server.app
        assert len(app.state.webrtc) == 1 and open_peers._value.get() == before + 1
        # One browser is the limit here: the next is told so, and nothing is opened for it.
        other = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        other.addTrack(ClipTrack(clip_frames(media_dir)[:1]))
        async with httpx.AsyncClient(base_url=server.url) as http:
            resp = await http.post("/webrtc/offer", json=await _offer(other))
        await other.close()
        assert resp.status_code == 503 and "too many" in resp.json()["error"]
        assert len(app.state.webrtc) == 1 and len(app.state.streams.all()) == 1

        await asyncio.to_thread(server.stop)
        assert len(app.state.webrtc) == 0 and app.state.streams.all() == []
        assert open_peers._value.get() == before
        stopped = [m for m in messages if m["type"] == "stream.status" and m["state"] == "stopped"]
        assert stopped and stopped[0]["detail"] == "server shutting down"
        await _wait_for(lambda: pc.connectionState == "closed", 10, "the peer to close")
    finally:
        await pc.close()
        server.stop()
