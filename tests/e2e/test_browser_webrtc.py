"""The web client in a real headless Chromium, its fake webcam playing the test clip,
streaming over WebRTC to a real server with Lin-Manuel Miranda enrolled.
(Enrolment from the page, and the page with API keys: test_browser_enrolment.py.)"""

from __future__ import annotations

import json
import threading
import time

import pytest
from websockets.sync.client import connect as ws_connect

from tests.e2e.conftest import HIM
from tests.live_helpers import start_server

pytestmark = [pytest.mark.real, pytest.mark.e2e]


class EventSubscriber(threading.Thread):
    """A separate /ws/events client, as an operator's dashboard would be."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.events: list[dict] = []
        self.subscribed = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        with ws_connect(self.url) as ws:
            first = json.loads(ws.recv(timeout=10))
            assert first["type"] == "subscribed", first
            self.subscribed.set()
            while not self.done.is_set():
                try:
                    self.events.append(json.loads(ws.recv(timeout=0.2)))
                except TimeoutError:
                    continue

    def __enter__(self) -> EventSubscriber:
        self.start()
        assert self.subscribed.wait(10), "could not subscribe to /ws/events"
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.join(5)

    def wait_for(self, predicate, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in list(self.events):
                if predicate(event):
                    return event
            time.sleep(0.05)
        raise AssertionError(f"no such event in {timeout} s; got {self.events}")


@pytest.fixture
def server(enrolled_service, settings_factory):
    # A frame timeout far longer than the test waits: a closed page must end the
    # stream by itself, not by silence.
    server = start_server(enrolled_service, settings_factory(webrtc_frame_timeout_s=60))
    yield server
    server.stop()


def test_browser_webcam_is_named_live(server, chromium_args, artifacts_dir):
    from playwright.sync_api import expect, sync_playwright

    subscriber = EventSubscriber(f"{server.ws_url}/ws/events?type=face.matched,stream.status")

    with subscriber, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=chromium_args)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(server.url + "/")
            # The people of the session's gallery, from the real GET /identities.
            expect(page.locator("#people .person", has_text=HIM).locator(".faces")).to_have_text(
                "1 face"
            )

            page.click("#start")
            # His name, drawn over the live video from the data channel.
            label = page.locator(".face-box.matched .face-label", has_text=HIM)
            expect(label.first).to_be_visible(timeout=30_000)
            stream_id = page.locator("#stream-id").inner_text().removeprefix("stream ")
            assert stream_id.startswith("webrtc-")
            # ... on his face: inside the video, where the server found it (one result
            # snapshot; the overlay is redrawn with every frame).
            placed = page.wait_for_function(
                """() => {
                    const box = document.querySelector('.face-box.matched');
                    if (!box) return null;
                    const b = box.getBoundingClientRect();
                    const v = document.getElementById('video').getBoundingClientRect();
                    return {b: [b.left, b.top, b.right, b.bottom],
                            v: [v.left, v.top, v.right, v.bottom]};
                }"""
            ).json_value()
            (bl, bt, br, bb), (vl, vt, vr, vb) = placed["b"], placed["v"]
            assert vl <= bl < br <= vr and vt <= bt < bb <= vb, placed
            assert br - bl > 0.05 * (vr - vl), placed  # a close face, not a speck
            expect(page.locator("#events .event.face-matched").first).to_contain_text(HIM)

            # The operator's separate subscriber saw the same decision.
            matched = subscriber.wait_for(
                lambda e: e["type"] == "face.matched" and e["stream_id"] == stream_id, 10
            )
            assert matched["name"] == HIM and matched["latency_ms"] >= 0
            page.screenshot(path=str(artifacts_dir / "webrtc-live.png"))

            # "all streams": the page subscribes to /ws/events itself (a relative ws: URL).
            page.check("#all-streams")
            expect(page.locator("#events .event .stream", has_text=stream_id).first).to_be_visible(
                timeout=15_000
            )

            # The browser leaves: the server closes the connection and its stream.
            page.close()
            stopped = subscriber.wait_for(
                lambda e: (
                    e["type"] == "stream.status"
                    and e["stream_id"] == stream_id
                    and e["state"] == "stopped"
                ),
                15,
            )
            assert "peer connection" in stopped["detail"] or "stopped sending" in stopped["detail"]
            assert stream_id not in server.app.state.streams
            assert len(server.app.state.webrtc) == 0
        finally:
            browser.close()
