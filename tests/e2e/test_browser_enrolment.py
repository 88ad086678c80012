"""Enrolment from the web client in a real headless Chromium, against the real gallery
API of a running server: the fake webcam plays Lin-Manuel Miranda close up, the user
types his name and captures the frame, and the live overlay names him at once.
Then the same page on a server that requires API keys and limits enrolment."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import people_folders
from tests.e2e.conftest import CHROMIUM, HIM
from tests.live_helpers import start_server

pytestmark = [pytest.mark.real, pytest.mark.e2e]

NAME = "Lin-Manuel Miranda"  # what the user types
API_KEY = "browser-test-key-0123456789abcdef"
KEY_STORAGE = "stream-server.api-key"

# Every frame result the page receives, kept by the page for the test to read.
RECORD_RESULTS = """
window.frameResults = [];
window.addEventListener("stream-server:result", (e) => window.frameResults.push(e.detail));
"""
THUMBNAIL_LOADED = """(name) => {
    const row = [...document.querySelectorAll('#people .person')]
        .find((li) => li.querySelector('.name').textContent === name);
    const img = row && row.querySelector('img.thumb');
    return !!img && img.complete && img.naturalWidth === 112 && img.naturalHeight === 112;
}"""


def _launch(pw, args):
    return pw.chromium.launch(executable_path=CHROMIUM, args=args)


def _assert_is_him(service, media_dir, identity_id: str) -> None:
    """The face the page stored is his: his reference photo now matches that identity."""
    from stream_server.service import read_image_file

    [face] = service.analyse_still(read_image_file(media_dir / "lin-manuel-miranda.png"))
    match = service.match(face.embedding)
    assert match.best is not None and match.best.identity_id == identity_id, match
    assert match.best.similarity >= service.settings.match_threshold, match


def test_enrolment_from_the_camera_is_stored_and_named_live(
    gallery_without_him, close_up_chromium_args, settings_factory, media_dir, artifacts_dir
):
    from playwright.sync_api import expect, sync_playwright

    service = gallery_without_him
    others = [name for name in people_folders(media_dir) if name != HIM]
    server = start_server(service, settings_factory(webrtc_frame_timeout_s=60))
    try:
        with sync_playwright() as pw:
            browser = _launch(pw, close_up_chromium_args)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.add_init_script(RECORD_RESULTS)
                page.goto(server.url + "/")
                people = page.locator("#people .person")
                expect(people.locator(".name")).to_have_text(others)
                expect(page.locator("#people-total")).to_have_text(f"({len(others)})")

                # Before he is enrolled, his face is drawn as unknown (and never as
                # one of the others).
                page.click("#start")
                unknown = page.locator(".face-box.unknown .face-label", has_text="unknown")
                expect(unknown.first).to_be_visible(timeout=30_000)
                before = page.evaluate("window.frameResults")
                assert before, "no frame result reached the page"
                named = [f for r in before for f in r["faces"] if f["status"] == "matched"]
                assert named == [], named

                # The user types his name and captures the frame on screen.
                page.fill("#enrol-name", NAME)
                page.click("#enrol-button")
                expect(page.locator("#enrol-message")).to_have_text(
                    f"Enrolled {NAME}.", timeout=15_000
                )
                expect(page.locator("#enrol-name")).to_have_value("")
                him = people.filter(has_text=NAME)
                expect(people.locator(".name")).to_have_text([*others, NAME])
                expect(him.locator(".faces")).to_have_text("1 face")
                expect(him).to_have_class("person changed")  # marked, and scrolled to
                expect(him).to_be_in_viewport()
                expect(page.locator("#people-total")).to_have_text(f"({len(others) + 1})")
                page.wait_for_function(THUMBNAIL_LOADED, arg=NAME)

                # Stored through the real API: one identity of that name, one face
                # from the camera's frame, and that face is his.
                listing = httpx.get(f"{server.url}/identities", params={"limit": 100}).json()
                [created] = [i for i in listing["items"] if i["name"] == NAME]
                assert created["face_count"] == 1 and listing["total"] == len(others) + 1
                faces = httpx.get(f"{server.url}/identities/{created['id']}/faces").json()
                [face] = faces["items"]
                assert face["source"] == "webcam.jpg" and face["matchable"], face
                box = face["box"]
                # Found in the camera's full 640x360 frame, not in the small preview.
                assert box["x"] + box["w"] <= 640 and box["y"] + box["h"] <= 360, box
                assert box["w"] >= 60, box
                _assert_is_him(service, media_dir, created["id"])

                # The live matcher took the enrolment at once: the overlay names him
                # on the running stream, with the new identity.
                label = page.locator(".face-box.matched .face-label", has_text=NAME)
                expect(label.first).to_be_visible(timeout=15_000)
                results = page.evaluate("window.frameResults")
                named = {
                    (f["identity_id"], f["name"])
                    for r in results
                    for f in r["faces"]
                    if f["status"] == "matched"
                }
                assert named == {(created["id"], NAME)}, named
                expect(page.locator("#events .event.face-matched").first).to_contain_text(NAME)
                page.screenshot(path=str(artifacts_dir / "webrtc-enrolled.png"))
            finally:
                browser.close()
    finally:
        server.stop()


def test_page_with_api_keys_and_a_rate_limited_enrolment(
    empty_gallery, close_up_chromium_args, settings_factory, media_dir, artifacts_dir
):
    from playwright.sync_api import expect, sync_playwright

    service = empty_gallery
    settings = settings_factory(
        api_keys=[API_KEY], rate_limit="1/minute", webrtc_frame_timeout_s=60
    )
    server = start_server(service, settings)
    requests = []
    sockets = []
    try:
        with sync_playwright() as pw:
            browser = _launch(pw, close_up_chromium_args)
            try:
                context = browser.new_context(viewport={"width": 1280, "height": 800})
                page = context.new_page()
                page.on("request", lambda r: requests.append(r))
                page.on("websocket", lambda ws: sockets.append(ws.url))

                # The page loads without a key (its static files are open) and says
                # what it needs when its first call gets a 401.
                response = page.goto(server.url + "/")
                assert response is not None and response.status == 200
                key_message = page.locator("#key-message")
                expect(key_message).to_have_text(
                    "This server requires an API key. Enter it here and press Save."
                )
                expect(page.locator("#people-message")).to_have_text(
                    "Could not list people: this server requires an API key: "
                    "enter it at the top of the page"
                )
                page.click("#start")
                expect(page.locator("#status")).to_have_text(
                    "could not connect: this server requires an API key: "
                    "enter it at the top of the page",
                    timeout=15_000,
                )
                page.check("#all-streams")  # its WebSocket is closed with 4401
                expect(page.locator("#events .event.error .what").first).to_have_text(
                    "event feed refused: the API key is missing or wrong"
                )

                # A wrong key is refused, and the page says so.
                page.fill("#api-key", "not-the-key")
                page.click("#key-form button")
                expect(key_message).to_have_text(
                    "The API key was refused. Enter a valid key and press Save."
                )
                expect(page.locator("#people-message")).to_have_text(
                    "Could not list people: the API key was refused: check it and save it again"
                )

                # The right key: kept in localStorage, and every call works.
                saved_at, sockets_at = len(requests), len(sockets)
                page.fill("#api-key", API_KEY)
                page.click("#key-form button")
                expect(key_message).to_be_hidden()
                expect(page.locator("#people-message")).to_have_text("Nobody enrolled yet.")
                assert page.evaluate(f"localStorage.getItem('{KEY_STORAGE}')") == API_KEY
                page.click("#start")
                expect(page.locator("#status")).to_have_text("live", timeout=15_000)
                expect(page.locator(".face-box").first).to_be_visible(timeout=30_000)
                stream_id = page.locator("#stream-id").inner_text().removeprefix("stream ")
                # The page's own /ws/events subscription, reconnected with the key.
                expect(
                    page.locator("#events .event .stream", has_text=stream_id).first
                ).to_be_visible(timeout=15_000)

                page.fill("#enrol-name", NAME)
                page.click("#enrol-button")
                expect(page.locator("#enrol-message")).to_have_text(
                    f"Enrolled {NAME}.", timeout=15_000
                )
                people = page.locator("#people .person")
                expect(people.locator(".name")).to_have_text([NAME])
                expect(people.locator(".faces")).to_have_text(["1 face"])
                page.wait_for_function(THUMBNAIL_LOADED, arg=NAME)  # an <img> with ?api_key=
                label = page.locator(".face-box.matched .face-label", has_text=NAME)
                expect(label.first).to_be_visible(timeout=15_000)
                [identity] = service.store.list_identities(0, 10)[0]
                _assert_is_him(service, media_dir, identity.id)

                # Enrolment is limited to 1 a minute here: the next one gets a 429, and
                # the page tells the user how long to wait, from Retry-After.
                page.fill("#enrol-name", "Someone Else")
                page.click("#enrol-button")
                message = page.locator("#enrol-message")
                expect(message).to_contain_text("Not enrolled: too many requests: wait ")
                text = message.inner_text()
                wait_s = int(text.split("wait ")[1].split(" s")[0])
                assert 1 <= wait_s <= 60, text
                # ... with the API's own words, not a generic failure.
                assert "rate limit of 1 per 1 minute for enrol reached" in text, text
                button = page.locator("#enrol-button")
                expect(button).to_be_disabled()
                expect(button).to_have_text(f"Wait {wait_s} s")
                expect(page.locator("#people .add-face")).to_be_disabled()
                # The identity made for the refused enrolment was removed again.
                page.click("#people-refresh")
                expect(people.locator(".name")).to_have_text([NAME])
                assert service.store.list_identities(0, 10)[1] == 1
                page.screenshot(path=str(artifacts_dir / "webrtc-api-key.png"))

                # Every call after the key was saved carried it: fetches as a Bearer
                # header; the offer, the WebSocket and the <img> as ?api_key=.
                after = [r for r in requests[saved_at:] if r.url.startswith(server.url)]
                api_calls = [r for r in after if r.resource_type == "fetch"]
                assert {urlsplit(r.url).path for r in api_calls} >= {
                    "/identities",
                    f"/identities/{identity.id}/faces",
                    "/webrtc/config",
                    "/webrtc/offer",
                }
                for r in api_calls:
                    assert r.all_headers().get("authorization") == f"Bearer {API_KEY}", r.url
                offer = next(r for r in api_calls if urlsplit(r.url).path == "/webrtc/offer")
                assert parse_qs(urlsplit(offer.url).query)["api_key"] == [API_KEY]
                thumbs = [r for r in after if r.url.split("?")[0].endswith("/thumbnail")]
                assert thumbs and all(
                    parse_qs(urlsplit(r.url).query)["api_key"] == [API_KEY] for r in thumbs
                )
                assert sockets[sockets_at:] and all(
                    parse_qs(urlsplit(u).query).get("api_key") == [API_KEY]
                    for u in sockets[sockets_at:]
                ), sockets

                # The key survives a reload: the page works without typing it again.
                page.reload()
                expect(page.locator("#api-key")).to_have_value(API_KEY)
                expect(people.locator(".name")).to_have_text([NAME])
                expect(key_message).to_be_hidden()
            finally:
                browser.close()
    finally:
        server.stop()


def test_refused_enrolment_shows_the_api_reason_and_leaves_nothing_behind(
    empty_gallery, close_up_chromium_args, settings_factory
):
    from playwright.sync_api import expect, sync_playwright

    service = empty_gallery
    # Faces of at least 400 px: his face in the 640x360 camera frame is about 100 px.
    server = start_server(service, settings_factory(enrol_min_face_px=400))
    try:
        with sync_playwright() as pw:
            browser = _launch(pw, close_up_chromium_args)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(server.url + "/")
                expect(page.locator("#people-message")).to_have_text("Nobody enrolled yet.")
                page.click("#start")
                expect(page.locator(".face-box").first).to_be_visible(timeout=30_000)
                page.fill("#enrol-name", NAME)
                page.click("#enrol-button")
                # The server's own reason for this image (its JSON error), not a generic
                # failure.
                expect(page.locator("#enrol-message")).to_have_text(
                    re.compile(r"^Not enrolled: face too small: \d+ px, at least 400 needed$"),
                    timeout=15_000,
                )
                expect(page.locator("#enrol-message")).to_have_class("message error")
                expect(page.locator("#enrol-button")).to_be_enabled()
                expect(page.locator("#enrol-name")).to_have_value(NAME)  # to try again
                # The identity created for it was deleted again: nothing half-written.
                page.click("#people-refresh")
                expect(page.locator("#people-message")).to_have_text("Nobody enrolled yet.")
                assert service.store.list_identities(0, 10) == ([], 0)
            finally:
                browser.close()
    finally:
        server.stop()
