"""The camera source's supervision, on a recording (no server needed): pacing, the
watchdog replacing a stuck decoder thread, and stopping."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from stream_server.ingest import rtsp
from stream_server.ingest.rtsp import CameraSource, CameraTimings


class _Slot:
    def __init__(self) -> None:
        self.closed = False
        self.dropped = 0

    def close(self) -> None:
        self.closed = True


class _Stream:
    """What a CameraSource needs of a LiveStream: records the frames it is given."""

    def __init__(self, loop) -> None:
        self.stream_id = "unit-cam"
        self._loop = loop
        self.slot = _Slot()
        self.frames = []
        self._seq = 0

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def put(self, frame) -> bool:
        self.frames.append(frame)
        return True


class _Bus:
    def __init__(self) -> None:
        self.events = []

    def publish(self, event) -> None:
        self.events.append(event)


async def _until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


async def test_watchdog_replaces_a_stuck_decoder_thread(media_dir, monkeypatch):
    import av

    real_open = av.open
    release = threading.Event()
    calls = []

    def open_that_hangs_once(*args, **kwargs):
        calls.append(time.monotonic())
        if len(calls) == 1:
            release.wait(30)  # stuck where no timeout reaches
        return real_open(*args, **kwargs)

    monkeypatch.setattr(av, "open", open_that_hangs_once)
    monkeypatch.setattr(rtsp, "_STUCK_GRACE_S", 0.2)
    stream, bus = _Stream(asyncio.get_running_loop()), _Bus()
    source = CameraSource(
        stream,
        (media_dir / "short_hamilton_clip.mp4").as_uri(),
        bus=bus,
        timings=CameraTimings(open_timeout_s=0.3, stall_timeout_s=0.5),
    )
    source.start()
    try:
        await _until(lambda: calls, 5, "the first open")
        stuck = source._thread
        assert not source.check_stuck()  # still within the open's own time budget
        await asyncio.sleep(1.6)  # 0.3 s open + 1 s margin + 0.2 s grace
        assert source.check_stuck()
        status = source.status()
        assert status.state == "retrying"
        assert "watchdog" in status.last_error
        await _until(lambda: source.state == "live", 5, "live again")
        await _until(lambda: len(stream.frames) >= 15, 5, "frames")
        assert source.status().reconnects == 1
        # the abandoned thread, once unblocked, leaves without touching the stream
        release.set()
        stuck.join(5)
        assert not stuck.is_alive()
        seqs = [f.seq for f in stream.frames]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        pts = [f.pts_s for f in stream.frames]
        assert all(b > a for a, b in zip(pts, pts[1:], strict=False))
    finally:
        release.set()
        source.stop()
        assert source.join(5)
    await asyncio.sleep(0.05)
    states = [e.state for e in bus.events]
    assert states == ["connecting", "retrying", "live", "stopped"]


async def test_stop_ends_a_live_source_at_once(media_dir):
    stream, bus = _Stream(asyncio.get_running_loop()), _Bus()
    source = CameraSource(
        stream, (media_dir / "short_hamilton_clip.mp4").as_uri(), bus=bus, fps_cap=10
    )
    source.start()
    await _until(lambda: len(stream.frames) >= 5, 10, "frames")
    t0 = time.monotonic()
    source.stop()
    assert source.join(2)
    assert time.monotonic() - t0 < 1.0
    assert source.state == "stopped"
    status = source.status()
    # the cap keeps one frame of three
    assert status.frames_skipped >= 1.5 * len(stream.frames) - 3
