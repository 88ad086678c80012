"""``WS /ws/ingest`` against a real server: the test clip's frames, bad frames, floods."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
import websockets

from tests.live_helpers import CLIP, CLIP_FPS, clip_frames, encode

pytestmark = pytest.mark.real

SERVER_SETTINGS = {"ingest_max_frame_bytes": 2_000_000}
HIM = "lin_manuel_miranda"
CUT_TO_AUDIENCE = 211  # the clip cuts from him on stage to the audience here


async def _recv_json(ws, timeout: float = 20.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def _until(ws, predicate, timeout: float = 20.0) -> tuple[dict, list[dict]]:
    """Read messages until one satisfies ``predicate``; returns it and those before it."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while True:
        msg = await _recv_json(ws, max(0.1, deadline - time.monotonic()))
        if predicate(msg):
            return msg, seen
        seen.append(msg)


async def _stream_clip(url: str, jpegs: list[bytes]) -> tuple[list[dict], list[dict]]:
    """Send the clip at its frame rate, as a camera would, reading every answer."""
    results: list[dict] = []
    events: list[dict] = []
    async with websockets.connect(url, max_size=None) as ws:
        ready = await _recv_json(ws)
        assert ready["type"] == "ingest.ready"
        start = time.monotonic()
        for i, data in enumerate(jpegs):
            delay = start + i / CLIP_FPS - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send(data)
            result, before = await _until(
                ws, lambda m, i=i: m["type"] == "frame.result" and m["seq"] == i
            )
            results.append(result)
            events.extend(m for m in before if m["type"] != "frame.result")
            results.extend(m for m in before if m["type"] == "frame.result")
        await asyncio.sleep(0.3)  # the last decisions
        with contextlib.suppress(TimeoutError):
            while True:
                msg = await _recv_json(ws, 0.3)
                (results if msg["type"] == "frame.result" else events).append(msg)
    return results, events


@pytest.fixture(scope="module")
def clip_run(live_server, enrolled_service, media_dir):
    """The clip through replay (the reference) and through /ws/ingest, once per module."""
    from stream_server.replay import replay_video

    summary = asyncio.run(
        replay_video(enrolled_service, media_dir / CLIP, detector="short", stream_id="replay-ref")
    )
    jpegs = [encode(img) for img in clip_frames(media_dir)]
    url = f"{live_server.ws_url}/ws/ingest?stream_id=clip-ingest&detector=short"
    results, events = asyncio.run(_stream_clip(url, jpegs))
    return summary, results, events, len(jpegs)


def test_every_frame_gets_a_result_in_order(clip_run):
    _summary, results, _events, n = clip_run
    assert [r["seq"] for r in results] == list(range(n))
    assert all(r["stream_id"] == "clip-ingest" for r in results)
    assert all((r["width"], r["height"]) == (640, 360) for r in results)
    # A client that waits for each answer loses nothing.
    assert results[-1]["dropped"] == 0
    with_faces = [r for r in results if r["faces"]]
    assert len(with_faces) > n // 2
    face = with_faces[len(with_faces) // 2]["faces"][0]
    assert set(face) >= {"track_id", "box", "status", "name", "similarity"}
    assert all(r["latency_ms"] >= 0 for r in results)


def test_same_identity_decisions_as_replay(clip_run):
    summary, results, events, _n = clip_run
    replay_names = sorted(m["name"] for m in summary.matched)
    live_matched = [e for e in events if e["type"] == "face.matched"]
    assert replay_names == [HIM]
    assert sorted(e["name"] for e in live_matched) == replay_names
    # Both decide while he is close to the camera (frames ~82-210). The exact frame
    # varies from run to run in both (embeddings finish asynchronously).
    live_seq, replay_seq = live_matched[0]["seq"], summary.matched[0]["seq"]
    assert 82 <= live_seq < CUT_TO_AUDIENCE and 82 <= replay_seq < CUT_TO_AUDIENCE
    # The results name exactly the track the event named.
    named_tracks = {f["track_id"] for r in results for f in r["faces"] if f["name"] == HIM}
    assert named_tracks == {live_matched[0]["track_id"]}
    # Per-frame results never name anybody else, and name him from the decision on.
    names = {f["name"] for r in results for f in r["faces"] if f["name"]}
    assert names == {HIM}
    named = [r["seq"] for r in results if any(f["name"] == HIM for f in r["faces"])]
    assert min(named) >= live_seq, (min(named), live_seq)
    assert len([s for s in named if s < CUT_TO_AUDIENCE]) > 80, named
    # Events carry the frame-to-event latency.
    assert all(e["latency_ms"] is not None and e["latency_ms"] >= 0 for e in live_matched)
    statuses = [e for e in events if e["type"] == "stream.status"]
    assert statuses and statuses[0]["state"] == "live"


def test_his_name_does_not_follow_the_track_across_the_cut(clip_run):
    _summary, results, _events, _n = clip_run
    after_cut = [
        r["seq"]
        for r in results
        if r["seq"] >= CUT_TO_AUDIENCE + 5 and any(f["name"] == HIM for f in r["faces"])
    ]
    assert after_cut == []


async def test_bad_frames_get_an_error_and_the_socket_keeps_working(live_server, media_dir):
    frame = clip_frames(media_dir)[150]  # him, close
    jpeg = encode(frame)
    async with websockets.connect(f"{live_server.ws_url}/ws/ingest", max_size=None) as ws:
        ready = await _recv_json(ws)
        assert ready["type"] == "ingest.ready" and ready["detector"] == "short"

        async def answer_to(payload, seq):
            await ws.send(payload)
            msg, _ = await _until(
                ws, lambda m: m["type"] in ("frame.result", "error") and m["seq"] == seq
            )
            return msg

        cases = [
            (b"this is not an image at all", "not an image"),
            (jpeg[: len(jpeg) // 2], "truncated"),
            (b"", "empty"),
            (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "image"),
            (b"\xff" * 2_000_001, "exceeds the limit"),
        ]
        # A face is reported from its second frame on (the tracker confirms it first).
        first = await answer_to(jpeg, 0)
        assert first["type"] == "frame.result" and first["faces"] == []
        seq = 1
        for payload, words in cases:
            msg = await answer_to(payload, seq)
            assert msg["type"] == "error", (words, msg)
            assert words in msg["error"], msg
            seq += 1
            # ... and the next good frame is processed as if nothing happened.
            good = await answer_to(jpeg, seq)
            assert good["type"] == "frame.result" and len(good["faces"]) == 1, good
            seq += 1
        # PNG and WebP frames are as good as JPEG.
        for ext in (".png", ".webp"):
            msg = await answer_to(encode(frame, ext), seq)
            assert msg["type"] == "frame.result" and len(msg["faces"]) == 1, (ext, msg)
            seq += 1
        # A text message is not a frame: told so, and it takes no frame number.
        await ws.send("hello")
        msg, _ = await _until(ws, lambda m: m["type"] == "error")
        assert msg["seq"] is None and "binary" in msg["error"]
        good = await answer_to(jpeg, seq)
        assert good["type"] == "frame.result" and good["dropped"] == 0


async def test_stream_id_in_use_or_bad_query_is_refused_with_a_close_code(live_server, media_dir):
    jpeg = encode(clip_frames(media_dir)[150])
    base = f"{live_server.ws_url}/ws/ingest"
    async with websockets.connect(f"{base}?stream_id=cam-1") as first:
        assert (await _recv_json(first))["type"] == "ingest.ready"
        async with websockets.connect(f"{base}?stream_id=cam-1") as second:
            msg = await _recv_json(second)
            assert msg["type"] == "error" and "already in use" in msg["error"]
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await _recv_json(second)
            assert closed.value.rcvd.code == 4409
            assert "already in use" in closed.value.rcvd.reason
        # The first stream is untouched (a face shows from its second frame on).
        for seq in range(2):
            await first.send(jpeg)
            msg, _ = await _until(
                first, lambda m, s=seq: m["type"] == "frame.result" and m["seq"] == s
            )
        assert msg["stream_id"] == "cam-1" and msg["faces"]
    for query, words in (("detector=medium", "detector"), ("stream_id=a%20b", "stream_id")):
        async with websockets.connect(f"{base}?{query}") as ws:
            assert words in (await _recv_json(ws))["error"]
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await _recv_json(ws)
            assert closed.value.rcvd.code == 4400


async def test_a_client_faster_than_the_pipeline_has_old_frames_dropped_and_counted(
    live_server, media_dir
):
    jpegs = [encode(img) for img in clip_frames(media_dir)[82:162]]
    n = len(jpegs)
    async with websockets.connect(f"{live_server.ws_url}/ws/ingest", max_size=None) as ws:
        await _recv_json(ws)
        for data in jpegs:  # all at once, reading nothing
            await ws.send(data)
        last, before = await _until(
            ws, lambda m: m["type"] == "frame.result" and m["seq"] == n - 1, timeout=30
        )
        results = [m for m in before if m["type"] == "frame.result"] + [last]
    assert not [m for m in before if m["type"] == "error"]
    seqs = [r["seq"] for r in results]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # No backlog: most frames were superseded before they could be processed, and
    # every frame was either processed or counted as dropped.
    assert last["dropped"] > 0 and len(results) < n
    assert len(results) + last["dropped"] == n
