"""The core check: the real clip through the live pipeline names the right people."""

import asyncio

import pytest

from stream_server.replay import replay_video

LIN = "lin_manuel_miranda"


@pytest.mark.parametrize("detector", ["short", "full"])
def test_replay_names_lin_manuel_miranda_early_once_and_nobody_wrongly(
    enrolled_service, media_dir, detector
):
    events = []
    summary = asyncio.run(
        replay_video(
            enrolled_service,
            media_dir / "short_hamilton_clip.mp4",
            detector=detector,
            on_event=events.append,
        )
    )
    assert summary.frames == 275
    matched = [e for e in events if e.type == "face.matched"]
    lin = [e for e in matched if e.name == LIN]
    assert lin, f"{LIN} never named ({detector}); events: {summary.events}"
    assert lin[0].seq <= 100, f"first match at frame {lin[0].seq}"
    assert 82 <= lin[0].seq <= 210  # on his close-up
    assert len(lin) <= 3
    # Nobody else may be named, except Barack Obama in the audience (frames ~225-274).
    for e in matched:
        if e.name != LIN:
            assert e.name == "obama" and e.seq >= 215, e
    # Events carry their frame's timing and the latency to emission.
    for e in matched:
        assert e.pts is not None and e.arrived_at is not None
        assert e.latency_ms is not None and e.latency_ms >= 0
        assert e.emitted_at >= e.arrived_at
    # Every started track ends, and no face is embedded on every frame.
    assert summary.events.get("track.started") == summary.events.get("track.ended")
    assert summary.embeddings < summary.frames / 4


def test_probe_photos_are_recognised_as_their_person(enrolled_service, media_dir):
    from stream_server.service import read_image_file

    expected = {
        "alex_lacamoire1.jpg": ["alex_lacamoire"],
        "johnsnow_test1.jpg": ["kit_harington"],
        "obama1.jpg": ["obama"],
        "kit_with_rose.jpg": ["kit_harington", "rose_leslie"],
        "obama_and_biden.jpg": ["biden", "obama"],
    }
    assert sorted(p.name for p in (media_dir / "probes").iterdir()) == sorted(expected)
    threshold = enrolled_service.settings.match_threshold
    for name, people in expected.items():
        faces = enrolled_service.analyse_still(read_image_file(media_dir / "probes" / name))
        assert len(faces) == len(people), name
        named = []
        for f in faces:
            match = enrolled_service.match(f.embedding)
            assert match.best.similarity >= threshold, (name, match)
            assert match.margin >= enrolled_service.settings.match_margin, (name, match)
            named.append(match.best.name)
        assert sorted(named) == people, name


def test_stream_result_boxes_follow_the_face(enrolled_service, media_dir):
    """Per-frame results (what the live clients draw) carry the name once decided."""
    from stream_server.ingest.slot import LatestFrameSlot
    from stream_server.ingest.video import VideoFileSource

    async def run():
        loop = asyncio.get_running_loop()
        slot = LatestFrameSlot("results-test", loop, block=True)
        results = []
        runner = enrolled_service.new_runner(
            "results-test",
            slot,
            "short",
            on_frame=lambda f, r: results.append(r),
            embed_lag_s=0.25,
        )
        src = VideoFileSource(str(media_dir / "short_hamilton_clip.mp4"), slot)
        src.start()
        await runner.run()
        runner.detector.close()
        return results

    results = asyncio.run(run())
    assert len(results) == 275
    named = [(r.seq, f) for r in results for f in r.faces if f.status == "matched"]
    assert named and all(f.name == LIN for _, f in named)
    assert all(82 <= seq <= 215 for seq, _ in named)
    seq, f = named[0]
    assert 120 < f.box.x + f.box.w / 2 < 520 and f.box.w > 60
