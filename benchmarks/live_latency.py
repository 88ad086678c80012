"""Live latency: frame arrival → result, frame arrival → event, and frames processed
per second, for the three ways live video reaches the pipeline, in one run.

    python benchmarks/live_latency.py [--seconds 12] [--json out.json]

1. in-process (the baseline): the test clip decoded and fed into a live stream at its
   frame rate, no network, no encoding;
2. WebSocket ingest: a client sends the clip's frames as JPEG over ``/ws/ingest`` at
   the clip's frame rate (like a camera: it never waits for answers);
3. WebRTC: the web client in headless Chromium, its fake webcam playing frames 60-220
   of the clip, over ``/webrtc/offer``.

Each is run paced (at the clip's frame rate, as a camera sends) and, for the first
two, flooded (frames as fast as they go: the pipeline's capacity; the rest is
dropped). The server is ``stream-server serve`` in its own process on 127.0.0.1
(free port) with Lin-Manuel Miranda enrolled, so clients and server do not share
an interpreter. Latencies are those the service reports: each frame result's
``latency_ms`` (arrival → result) and each event's ``latency_ms`` (arrival →
emission; events from a ``/ws/events`` subscriber); frame counts come from the
server's /metrics. Ratios are against the in-process run of the same pacing,
measured in the same run. Bounded: about a minute in all.

Needs FACE_MODEL_DIR and FACE_TEST_MEDIA (default: ../shared/{models,media} next to
the repository), ffmpeg and /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stream_server.cli import enroll_images  # noqa: E402
from stream_server.config import Settings  # noqa: E402
from stream_server.events.bus import EventFilter  # noqa: E402
from stream_server.ingest.video import VideoFileSource, iter_video_frames  # noqa: E402
from stream_server.service import FaceService  # noqa: E402
from stream_server.streams import StreamRegistry  # noqa: E402
from tests.live_helpers import encode, make_y4m  # noqa: E402

CLIP = "short_hamilton_clip.mp4"
FPS = 30000 / 1001
CLIP_FRAMES = 275
FLOOD_PASSES = 3
CHROMIUM = "/usr/bin/chromium"


@dataclass
class Run:
    name: str
    baseline: Run | None = None
    seconds: float = 0.0
    frames_in: int = 0
    processed: int = 0
    dropped: int = 0
    result_ms: list[float] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    note: str = ""

    @property
    def fps(self) -> float:
        return self.processed / self.seconds if self.seconds else 0.0

    def event_ms(self, types: tuple[str, ...] | None = None) -> list[float]:
        return [
            e["latency_ms"]
            for e in self.events
            if e.get("latency_ms") is not None and (types is None or e["type"] in types)
        ]

    def summary(self) -> dict:
        decisions = self.event_ms(("face.matched", "face.unknown"))
        return {
            "name": self.name,
            "seconds": round(self.seconds, 2),
            "frames_in": self.frames_in,
            "processed": self.processed,
            "dropped": self.dropped,
            "fps": round(self.fps, 2),
            "result_ms": _pcts(self.result_ms),
            "event_ms": _pcts(self.event_ms()),
            "decision_ms": _pcts(decisions),
            "matched": sorted({e["name"] for e in self.events if e["type"] == "face.matched"}),
            "note": self.note,
        }


def _pcts(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "p50": None, "p95": None}
    arr = np.asarray(values)
    return {
        "n": len(values),
        "p50": round(float(np.percentile(arr, 50)), 1),
        "p95": round(float(np.percentile(arr, 95)), 1),
    }


# -- 1. in-process baseline ---------------------------------------------------------
async def run_baseline(service: FaceService, clip: Path, realtime: bool = True) -> Run:
    run = Run("in-process" + ("" if realtime else ", flood"))
    registry = StreamRegistry(service)
    stream_id = "bench-inprocess" + ("" if realtime else "-flood")
    stream = await registry.open(stream_id, "short", "replay")
    stream.add_listener(lambda f, r: run.result_ms.append(r.latency_ms))
    sub = service.bus.subscribe(EventFilter(stream_ids=frozenset({stream.stream_id})), 100_000)
    # Flooding plays the clip FLOOD_PASSES times, for a measurable stretch.
    source = VideoFileSource(str(clip), stream.slot, realtime=realtime, loop_forever=not realtime)
    start = time.monotonic()
    source.start()
    if not realtime:
        while source.frames < FLOOD_PASSES * CLIP_FRAMES and source._thread.is_alive():
            await asyncio.sleep(0.001)
        source.stop()
    await asyncio.to_thread(source.join)
    await registry.close(stream.stream_id)
    run.seconds = time.monotonic() - start
    run.frames_in = source.frames
    run.processed = stream.stats.frames
    run.dropped = stream.slot.dropped
    sub.close("done")
    async for event in sub:
        run.events.append(event.model_dump())
    return run


# -- event subscriber ---------------------------------------------------------------------
class Subscriber(threading.Thread):
    """A /ws/events client in its own thread, collecting every event."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.events: list[dict] = []
        self._ready = threading.Event()
        self._done = threading.Event()

    def run(self) -> None:
        from websockets.sync.client import connect

        with connect(self.url, max_size=None) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"
            self._ready.set()
            while not self._done.is_set():
                try:
                    self.events.append(json.loads(ws.recv(timeout=0.2)))
                except TimeoutError:
                    continue

    def __enter__(self) -> Subscriber:
        self.start()
        if not self._ready.wait(10):
            raise RuntimeError("could not subscribe to /ws/events")
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self.join(5)

    def of(self, stream_id: str) -> list[dict]:
        return [e for e in self.events if e.get("stream_id") == stream_id]


def stream_counts(base_url: str, stream_id: str) -> tuple[int, int]:
    """(processed, dropped) for a running stream, from the server's /metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    counts = {"face_frames_processed_total": 0.0, "face_frames_dropped_total": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in counts and sample.labels.get("stream") == stream_id:
                counts[sample.name] = sample.value
    return int(counts["face_frames_processed_total"]), int(counts["face_frames_dropped_total"])


# -- 2. WebSocket ingest --------------------------------------------------------------
async def run_websocket(base_url: str, jpegs: list[bytes], paced: bool = True) -> Run:
    """Paced: at the clip's frame rate, like a camera. Flood: as fast as the socket
    takes them (the pipeline's capacity; the rest is dropped)."""
    import websockets

    run = Run("websocket ingest" + ("" if paced else ", flood"))
    stream_id = "bench-websocket" + ("" if paced else "-flood")
    run.stream_id = stream_id  # type: ignore[attr-defined]
    last: dict = {}
    ws_base = base_url.replace("http://", "ws://")
    url = f"{ws_base}/ws/ingest?stream_id={stream_id}&detector=short"
    async with websockets.connect(url, max_size=None) as ws:
        await ws.recv()  # ingest.ready

        async def read() -> None:
            async for text in ws:
                msg = json.loads(text)
                if msg["type"] == "frame.result":
                    run.result_ms.append(msg["latency_ms"])
                    last.update(msg)

        reader = asyncio.create_task(read())
        if not paced:
            jpegs = jpegs * FLOOD_PASSES
        start = time.monotonic()
        for i, data in enumerate(jpegs):
            delay = start + i / FPS - time.monotonic()
            if paced and delay > 0:
                await asyncio.sleep(delay)
            await ws.send(data)
        while last.get("seq") != len(jpegs) - 1:  # the newest frame is always processed
            await asyncio.sleep(0.005)
        run.seconds = time.monotonic() - start
        run.frames_in = len(jpegs)
        run.processed, run.dropped = await asyncio.to_thread(stream_counts, base_url, stream_id)
        reader.cancel()
    return run


# -- 3. WebRTC from the browser ----------------------------------------------------------
def run_webrtc(base_url: str, y4m: Path, seconds: float) -> Run:
    from playwright.sync_api import sync_playwright

    run = Run("webrtc (chromium)")
    args = [
        "--no-sandbox",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-gpu",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={y4m}",
    ]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(base_url + "/")
            page.click("#start")
            page.wait_for_selector("#stream-id:has-text('webrtc-')", timeout=20_000)
            stream_id = page.inner_text("#stream-id").removeprefix("stream ")
            run.stream_id = stream_id  # type: ignore[attr-defined]
            page.wait_for_function("document.getElementById('stat-fps').textContent !== '–'")
            # Results the page receives on its data channel, from now on.
            page.evaluate(
                """() => { window.benchLatencies = [];
                addEventListener('stream-server:result',
                                 (e) => window.benchLatencies.push(e.detail.latency_ms)); }"""
            )
            processed0, dropped0 = stream_counts(base_url, stream_id)
            start = time.monotonic()
            time.sleep(seconds)
            processed, dropped = stream_counts(base_url, stream_id)
            run.seconds = time.monotonic() - start
            run.result_ms = page.evaluate("window.benchLatencies")
            run.processed = processed - processed0
            run.dropped = dropped - dropped0
            run.frames_in = run.processed + run.dropped
            width = page.evaluate("document.getElementById('video').videoWidth")
            run.note = f"camera {width}px wide, frames counted by the server"
            page.click("#stop")
        finally:
            browser.close()
    return run


class ServeProcess:
    """``stream-server serve`` in its own process, as deployed."""

    def __init__(self, env: dict, log_path: Path) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream_server.cli", "serve", "--port", str(self.port)],
            cwd=REPO,
            env={**os.environ, **env, "PYTHONPATH": str(REPO)},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError("the server did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def print_table(runs: list[Run]) -> None:
    head = (
        f"{'path':24s} {'frames':>6s} {'proc':>5s} {'drop':>5s} {'fps':>6s} "
        f"{'result p50/p95 ms':>18s} {'event p50/p95 ms (n)':>22s} "
        f"{'decision p50/p95 (n)':>21s} {'fps×':>5s} {'result p50×':>11s}"
    )
    print(head)
    print("-" * len(head))
    for run in runs:
        s = run.summary()
        base = (run.baseline or run).summary()
        r, e, d = s["result_ms"], s["event_ms"], s["decision_ms"]
        fps_ratio = s["fps"] / base["fps"] if base["fps"] else float("nan")
        res_ratio = (
            r["p50"] / base["result_ms"]["p50"]
            if r["p50"] is not None and base["result_ms"]["p50"]
            else float("nan")
        )
        ev_col = f"{_fmt(e)} ({e['n']})"
        dec_col = f"{_fmt(d)} ({d['n']})"
        print(
            f"{s['name']:24s} {s['frames_in']:6d} {s['processed']:5d} {s['dropped']:5d} "
            f"{s['fps']:6.1f} {_fmt(r):>18s} {ev_col:>22s} {dec_col:>21s} "
            f"{fps_ratio:5.2f} {res_ratio:11.2f}"
        )
    print()
    print("ratios: against the in-process run of the same pacing (paced rows: in-process;")
    print("flood rows: in-process, flood), measured in this run.")
    for run in runs:
        s = run.summary()
        print(f"{s['name']}: named {s['matched'] or 'nobody'}; {s['note']}".rstrip("; "))


def _fmt(p: dict) -> str:
    if p["p50"] is None:
        return "–"
    return f"{p['p50']:.1f}/{p['p95']:.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=12.0, help="WebRTC measuring time")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    models = Path(os.environ.get("FACE_MODEL_DIR", REPO.parent / "shared" / "models"))
    media = Path(os.environ.get("FACE_TEST_MEDIA", REPO.parent / "shared" / "media"))
    clip = media / CLIP
    if not clip.exists() or not models.is_dir():
        print(f"need models in {models} and {CLIP} in {media}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="live-latency-") as tmp:
        data = Path(tmp) / "data"
        settings = Settings(model_dir=models, data_dir=data, allow_download=False)
        frames = [img for img, _, _ in iter_video_frames(str(clip))]
        jpegs = [encode(img) for img in frames]
        y4m = make_y4m(media, Path(tmp) / "camera.y4m")

        service = FaceService(settings)
        try:
            _, n, problems = enroll_images(
                service, "lin_manuel_miranda", [media / "lin-manuel-miranda.png"]
            )
            assert n == 1 and not problems, problems
            service.refresh_gallery()
            base = asyncio.run(run_baseline(service, clip, realtime=True))
            base_flood = asyncio.run(run_baseline(service, clip, realtime=False))
        finally:
            service.close()

        # The same gallery, now served by its own process.
        server = ServeProcess(
            {"FACE_MODEL_DIR": str(models), "FACE_DATA_DIR": str(data)}, Path(tmp) / "serve.log"
        )
        try:
            server.wait_ready()
            with Subscriber(server.url.replace("http://", "ws://") + "/ws/events") as sub:
                ws_run = asyncio.run(run_websocket(server.url, jpegs, paced=True))
                ws_flood = asyncio.run(run_websocket(server.url, jpegs, paced=False))
                rtc_run = run_webrtc(server.url, y4m, args.seconds)
                time.sleep(1.0)  # the last events
            for run in (ws_run, ws_flood, rtc_run):
                run.events = sub.of(run.stream_id)  # type: ignore[attr-defined]
        finally:
            server.stop()
        ws_run.baseline = rtc_run.baseline = base
        ws_flood.baseline = base_flood
        runs = [base, ws_run, rtc_run, base_flood, ws_flood]

    print_table(runs)
    if args.json:
        Path(args.json).write_text(json.dumps([r.summary() for r in runs], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
