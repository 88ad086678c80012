"""Two replicas on one real redis-server: event fan-out and enrol-to-visible delay.

    FACE_MODEL_DIR=../shared/models FACE_TEST_MEDIA=../shared/media \
        .venv/bin/python benchmarks/redis_replicas.py [--seconds 5] [--subscribers 100]

Starts redis-server and two `stream-server serve` processes (FACE_EVENT_BUS=redis,
FACE_GALLERY=redis) on 127.0.0.1, then measures, in one run:

1. Fan-out: 100 `/ws/events` subscribers, half on each replica. A publisher puts
   events on the shared Redis channel as fast as Redis takes them for a bounded
   time (as a third replica would); we count what the subscribers receive and the
   publish-to-receive latency. Baseline, same run: the same events to 100 plain
   Redis pub/sub subscribers (what Redis alone delivers on this machine).
2. Enrol-to-visible: a person enrolled through replica A, then `/recognize` on
   replica B polled every 20 ms until it names them. Baseline, same run: the same
   poll on A itself.

Everything is loopback-only and bounded in time and count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import websockets

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stream_server.events.redis_bus import CHANNEL  # noqa: E402
from stream_server.events.schema import FaceMatched  # noqa: E402
from tests.api.server import ServerProcess  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))]


def payload(n: int) -> str:
    event = FaceMatched(
        stream_id="bench",
        track_id=n,
        identity_id="x",
        name="x",
        similarity=0.5,
        box=[0, 0, 1, 1],
        votes=2,
        attempts=2,
    )
    return json.dumps({"origin": "bench", "event": event.model_dump(mode="json")})


async def publish_for(url: str, seconds: float, rate: float) -> int:
    """Offer ``rate`` events/s for ``seconds``: a pipelined batch every 10 ms."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    sent = 0
    start = time.monotonic()
    try:
        while (now := time.monotonic()) - start < seconds:
            due = int((now - start) * rate) - sent
            if due > 0:
                pipe = client.pipeline(transaction=False)
                for n in range(sent, sent + due):
                    pipe.publish(CHANNEL, payload(n))
                await pipe.execute()
                sent += due
            await asyncio.sleep(0.01)
    finally:
        await client.aclose()
    return sent


async def fanout_replicas(redis_url, replicas, subscribers, seconds, rate):
    received = [0] * subscribers
    latencies: list[float] = []
    stop = asyncio.Event()

    async def subscriber(i: int, base: str) -> None:
        async with websockets.connect(f"{base}/ws/events?stream_id=bench", max_queue=None) as ws:
            await ws.recv()  # subscribed
            ready.append(i)
            while not stop.is_set():
                try:
                    msg = await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    continue
                received[i] += 1
                if i % 10 == 0:
                    latencies.append(time.time() - json.loads(msg)["emitted_at"])

    ready: list[int] = []
    tasks = [asyncio.create_task(subscriber(i, replicas[i % 2].ws_url)) for i in range(subscribers)]
    while len(ready) < subscribers:
        await asyncio.sleep(0.05)
    t0 = time.monotonic()
    sent = await publish_for(redis_url, seconds, rate)
    await asyncio.sleep(1.0)  # let the last events arrive
    elapsed = time.monotonic() - t0
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return sent, sum(received), elapsed, latencies, min(received)


async def fanout_raw_redis(redis_url, subscribers, seconds, rate):
    import redis.asyncio as aioredis

    received = [0] * subscribers
    latencies: list[float] = []
    stop = asyncio.Event()
    ready: list[int] = []

    async def subscriber(i: int) -> None:
        client = aioredis.from_url(redis_url)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(CHANNEL)
        ready.append(i)
        while not stop.is_set():
            msg = await pubsub.get_message(timeout=0.5)
            if msg is None:
                continue
            received[i] += 1
            if i % 10 == 0:
                latencies.append(time.time() - json.loads(msg["data"])["event"]["emitted_at"])
        await pubsub.aclose()
        await client.aclose()

    tasks = [asyncio.create_task(subscriber(i)) for i in range(subscribers)]
    while len(ready) < subscribers:
        await asyncio.sleep(0.05)
    t0 = time.monotonic()
    sent = await publish_for(redis_url, seconds, rate)
    await asyncio.sleep(1.0)
    elapsed = time.monotonic() - t0
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return sent, sum(received), elapsed, latencies, min(received)


def enrol_to_visible(enrol_on: str, look_on: str, photo: Path, probe: Path, name: str) -> float:
    r = httpx.post(f"{enrol_on}/identities", json={"name": name}, timeout=30)
    ident = r.json()["id"]
    with open(photo, "rb") as fh:
        r = httpx.post(f"{enrol_on}/identities/{ident}/faces", files=[("files", fh)], timeout=60)
    assert r.status_code == 201, r.text
    acked = time.monotonic()
    probe_bytes = probe.read_bytes()
    while time.monotonic() - acked < 10:
        r = httpx.post(f"{look_on}/recognize", files={"image": probe_bytes}, timeout=30)
        if any(f["known"] and f["name"] == name for f in r.json()["faces"]):
            seen = time.monotonic()
            httpx.delete(f"{enrol_on}/identities/{ident}", timeout=30)
            time.sleep(1.5)  # let every replica forget before the next round
            return seen - acked
        time.sleep(0.02)
    raise RuntimeError("enrolment never became visible")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--subscribers", type=int, default=100)
    ap.add_argument("--rate", type=float, default=100.0, help="events/s offered")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    model_dir = Path(os.environ.get("FACE_MODEL_DIR", REPO.parent / "shared" / "models"))
    media = Path(os.environ.get("FACE_TEST_MEDIA", REPO.parent / "shared" / "media"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        redis = RedisServer(tmp / "redis").start()
        env = {
            "FACE_EVENT_BUS": "redis",
            "FACE_GALLERY": "redis",
            "FACE_REDIS_URL": redis.url,
            "FACE_RATE_LIMIT": "off",
            "FACE_LOG_LEVEL": "WARNING",
            "FACE_SUBSCRIBER_QUEUE_SIZE": "4096",
        }
        replicas = [ServerProcess(tmp / n, model_dir, tmp / f"{n}.log", **env) for n in "ab"]
        try:
            for r in replicas:
                r.start()
            base = asyncio.run(
                fanout_raw_redis(redis.url, args.subscribers, args.seconds, args.rate)
            )
            ours = asyncio.run(
                fanout_replicas(redis.url, replicas, args.subscribers, args.seconds, args.rate)
            )
            print(
                f"fan-out: {args.subscribers} subscribers, {args.rate:.0f} events/s offered "
                f"for {args.seconds:.0f} s"
            )
            print(
                f"{'path':34s} {'sent':>6s} {'delivered/s':>12s} {'min per sub':>12s} "
                f"{'p50 ms':>8s} {'p95 ms':>8s}"
            )
            rows = [("plain redis pub/sub (baseline)", base), ("two replicas /ws/events", ours)]
            for label, (sent, delivered, elapsed, lat, min_sub) in rows:
                print(
                    f"{label:34s} {sent:6d} {delivered / elapsed:12.0f} {min_sub:12d} "
                    f"{1000 * pct(lat, 0.5):8.1f} {1000 * pct(lat, 0.95):8.1f}"
                )
            ratio = (ours[1] / ours[2]) / (base[1] / base[2])
            print(f"replicas deliver {ratio:.2f}x of what plain Redis pub/sub delivers")

            photo = media / "people" / "obama" / "obama.jpg"
            probe = media / "probes" / "obama1.jpg"
            a, b = replicas
            local = [
                enrol_to_visible(a.url, a.url, photo, probe, f"l{i}") for i in range(args.rounds)
            ]
            remote = [
                enrol_to_visible(a.url, b.url, photo, probe, f"r{i}") for i in range(args.rounds)
            ]
            print(f"enrol-to-visible over {args.rounds} rounds (from the enrolment's 201):")
            print(
                f"  same replica (baseline): median {1000 * statistics.median(local):.0f} ms, "
                f"max {1000 * max(local):.0f} ms"
            )
            print(
                f"  other replica:           median {1000 * statistics.median(remote):.0f} ms, "
                f"max {1000 * max(remote):.0f} ms"
            )
        finally:
            for r in replicas:
                r.kill()
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
