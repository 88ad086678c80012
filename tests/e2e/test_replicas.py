"""Issue 7: two server processes on one real redis-server behave as one service."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets

from tests.api.server import ServerProcess
from tests.live_helpers import clip_frames, encode
from tests.redis_server import RedisServer

HIM = "lin_manuel_miranda"


@pytest.fixture()
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def start_replicas(redis_server, model_dir, tmp_path, **extra):
    env = {
        "FACE_EVENT_BUS": "redis",
        "FACE_GALLERY": "redis",
        "FACE_REDIS_URL": redis_server.url,
        "FACE_RATE_LIMIT": "off",
        **extra,
    }
    procs = [
        ServerProcess(tmp_path / f"data-{n}", model_dir, tmp_path / f"{n}.log", **env)
        for n in ("a", "b")
    ]
    try:
        for proc in procs:
            proc.start()
    except BaseException:
        for proc in procs:
            proc.kill()
        raise
    return procs


@pytest.fixture()
def replicas(redis_server, model_dir, tmp_path):
    procs = start_replicas(redis_server, model_dir, tmp_path)
    yield procs
    for proc in procs:
        proc.kill()


def wait_until(cond, timeout: float, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"not within {timeout} s")


def enrol(base: str, name: str, path) -> str:
    r = httpx.post(f"{base}/identities", json={"name": name}, timeout=30)
    assert r.status_code == 201, r.text
    ident = r.json()["id"]
    with open(path, "rb") as fh:
        r = httpx.post(
            f"{base}/identities/{ident}/faces", files=[("files", (path.name, fh))], timeout=60
        )
    assert r.status_code == 201, r.text
    return ident


def recognised(base: str, path) -> list[str | None]:
    with open(path, "rb") as fh:
        r = httpx.post(f"{base}/recognize", files={"image": (path.name, fh)}, timeout=60)
    assert r.status_code == 200, r.text
    return [f["name"] if f["known"] else None for f in r.json()["faces"]]


async def stream_on(base_ws: str, frames, stream_id: str) -> None:
    async with websockets.connect(
        f"{base_ws}/ws/ingest?stream_id={stream_id}", max_size=None
    ) as ws:
        for frame in frames:
            await ws.send(encode(frame))
            await asyncio.sleep(1 / 30)
        await asyncio.sleep(1.0)


async def collect_events(base_ws: str, stream_id: str, until, timeout: float) -> list[dict]:
    got: list[dict] = []
    async with websockets.connect(f"{base_ws}/ws/events?stream_id={stream_id}") as ws:
        assert json.loads(await ws.recv())["type"] == "subscribed"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not until(got):
            try:
                got.append(json.loads(await asyncio.wait_for(ws.recv(), 1.0)))
            except TimeoutError:
                continue
    return got


def test_enrol_on_a_recognise_on_b_and_events_cross_replicas(replicas, media_dir):
    a, b = replicas
    probe = media_dir / "probes" / "obama1.jpg"
    assert recognised(b.url, probe) == [None]
    t0 = time.monotonic()
    enrol(a.url, "obama", media_dir / "people" / "obama" / "obama.jpg")
    wait_until(lambda: recognised(b.url, probe) == ["obama"], timeout=5, step=0.05)
    assert time.monotonic() - t0 < 5
    enrol(a.url, HIM, media_dir / "lin-manuel-miranda.png")

    frames = clip_frames(media_dir)[80:200]

    async def scenario():
        subscriber = asyncio.create_task(
            collect_events(
                a.ws_url, "cam-on-b", lambda got: any(e["type"] == "face.matched" for e in got), 30
            )
        )
        await asyncio.sleep(0.5)  # subscribed on A before B's stream starts
        await stream_on(b.ws_url, frames, "cam-on-b")
        return await subscriber

    events = asyncio.run(scenario())
    matched = [e for e in events if e["type"] == "face.matched"]
    assert matched and matched[0]["name"] == HIM and matched[0]["stream_id"] == "cam-on-b"


def test_redis_outage_makes_both_not_ready_then_both_recover(replicas, redis_server, media_dir):
    a, b = replicas
    ident = enrol(a.url, HIM, media_dir / "lin-manuel-miranda.png")
    for r in replicas:
        assert httpx.get(r.url + "/ready", timeout=5).status_code == 200
    redis_server.stop()
    for r in replicas:
        wait_until(lambda r=r: httpx.get(r.url + "/ready", timeout=10).status_code == 503, 15)
        assert httpx.get(r.url + "/health", timeout=5).status_code == 200  # still up
        assert r.proc.poll() is None
    # Streams keep being processed while Redis is away (the last loaded gallery).
    frames = clip_frames(media_dir)[80:140]
    asyncio.run(stream_on(b.ws_url, frames, "during-outage"))
    assert b.proc.poll() is None
    redis_server.start()
    t0 = time.monotonic()
    for r in replicas:
        wait_until(lambda r=r: httpx.get(r.url + "/ready", timeout=5).status_code == 200, 10)
    assert time.monotonic() - t0 < 5
    # Nothing enrolled before the outage was lost (Redis append-only file).
    r = httpx.get(f"{b.url}/identities/{ident}", timeout=5)
    assert r.status_code == 200 and r.json()["face_count"] == 1


@pytest.fixture()
def rtsp_camera(media_dir, tmp_path):
    from tests.e2e.rtsp_support import RtspCamera, need_programs

    need_programs("rtsp-server-perl", "ffmpeg")
    cam = RtspCamera(media_dir / "short_hamilton_clip.mp4", tmp_path, "stage").start()
    yield cam
    cam.kill()


@pytest.fixture()
def camera_replicas(redis_server, model_dir, tmp_path):
    procs = start_replicas(
        redis_server, model_dir, tmp_path, FACE_CAMERA_STORE="redis", FACE_CAMERA_OPEN_TIMEOUT_S="2"
    )
    yield procs
    for proc in procs:
        proc.kill()


def streams(base: str) -> dict[str, dict]:
    r = httpx.get(f"{base}/streams", timeout=10)
    assert r.status_code == 200, r.text
    return {s["id"]: s for s in r.json()["streams"]}


def runners_of(replicas, stream_id: str) -> list[str]:
    """Which replicas really run the camera: its frames counter moves in their /metrics."""
    running = []
    for r in replicas:
        text = httpx.get(f"{r.url}/metrics", timeout=10).text
        if f'face_frames_processed_total{{stream="{stream_id}"}}' in text:
            running.append(r.url)
    return running


def test_a_camera_runs_once_across_replicas_and_moves_when_its_owner_dies(
    camera_replicas, rtsp_camera
):
    a, b = camera_replicas
    r = httpx.post(f"{a.url}/streams", json={"id": "stage", "url": rtsp_camera.url()}, timeout=30)
    assert r.status_code == 201, r.text
    # Both replicas list it, with the same owner, and it goes live.
    live = wait_until(
        lambda: (s := streams(b.url).get("stage")) and s["state"] == "live" and s, timeout=30
    )
    owner = live["owner"]
    assert streams(a.url)["stage"]["owner"] == owner
    # Exactly one replica processes its frames, over several scheduler ticks.
    for _ in range(3):
        assert len(runners_of(camera_replicas, "stage")) == 1
        time.sleep(2)
    (runner_url,) = runners_of(camera_replicas, "stage")
    victim = a if runner_url == a.url else b
    survivor = b if victim is a else a
    # Its owner dies without a goodbye: the other replica takes it within 15 s.
    victim.proc.kill()
    victim.proc.wait(10)
    t0 = time.monotonic()
    taken = wait_until(
        lambda: (
            (s := streams(survivor.url).get("stage"))
            and s["state"] == "live"
            and s["owner"] != owner
            and s
        ),
        timeout=20,
        step=0.5,
    )
    took = time.monotonic() - t0
    assert took < 15, took
    assert taken["owner"] != owner
    assert runners_of([survivor], "stage") == [survivor.url]
    # A deletion on the survivor stops it everywhere.
    assert httpx.delete(f"{survivor.url}/streams/stage", timeout=10).status_code == 204
    wait_until(lambda: "stage" not in streams(survivor.url), timeout=5)
