"""The Redis event bus and gallery against a real redis-server."""

import asyncio

import numpy as np
import pytest

from stream_server.events.bus import EventFilter
from stream_server.events.redis_bus import RedisEventBus
from stream_server.events.schema import FaceMatched
from stream_server.gallery.index import LiveGallery
from stream_server.gallery.redis import RedisGallery
from stream_server.gallery.store import IdentityNotFound, NewFace
from tests.redis_server import RedisServer


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def unit(seed):
    v = np.random.default_rng(seed).standard_normal(512).astype(np.float32)
    return v / np.linalg.norm(v)


def event(stream, n):
    return FaceMatched(
        stream_id=stream,
        track_id=n,
        identity_id="x",
        name="x",
        similarity=0.5,
        box=[0, 0, 1, 1],
        votes=2,
        attempts=2,
    )


async def wait_for(cond, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_events_of_one_replica_reach_subscribers_of_the_other(redis_server):
    a, b = RedisEventBus(redis_server.url), RedisEventBus(redis_server.url)
    await a.start()
    await b.start()
    await wait_for(lambda: a.healthy and b.healthy)
    on_b = b.subscribe(EventFilter(stream_ids=frozenset({"cam-a"})))
    on_a = a.subscribe()
    for n in range(20):
        a.publish(event("cam-a", n))
    got = [await asyncio.wait_for(on_b.get(), 5) for _ in range(20)]
    assert [e.track_id for e in got] == list(range(20))
    assert on_a.queue.qsize() == 20  # local delivery, and no echo of its own events
    await a.stop()
    await b.stop()


async def test_bus_survives_redis_going_away_and_recovers(redis_server):
    a, b = RedisEventBus(redis_server.url), RedisEventBus(redis_server.url)
    await a.start()
    await b.start()
    await wait_for(lambda: a.healthy and b.healthy)
    local = a.subscribe()
    redis_server.stop()
    a.publish(event("cam", 1))  # the replica's own subscribers still get it
    assert (await asyncio.wait_for(local.get(), 1)).track_id == 1
    await wait_for(lambda: not a.healthy and not b.healthy, timeout=10)
    redis_server.start()
    await wait_for(lambda: a.healthy and b.healthy, timeout=10)
    remote = b.subscribe()
    a.publish(event("cam", 2))
    assert (await asyncio.wait_for(remote.get(), 5)).track_id == 2
    await a.stop()
    await b.stop()


def test_redis_gallery_is_shared_and_atomic(redis_server):
    g1, g2 = RedisGallery(redis_server.url), RedisGallery(redis_server.url)
    live2 = LiveGallery(g2, "m1")
    ident = g1.create_identity("ann", metadata={"team": "a"})
    faces = g1.add_faces(ident.id, [NewFace(unit(1), "m1", b"png", 0.9, [1, 2, 3, 4])])
    assert live2.refresh_if_changed()
    assert live2.search(unit(1)).best.name == "ann"
    assert g2.get_identity(ident.id).face_count == 1
    assert g2.face_crop(ident.id, faces[0].id) == b"png"
    # A batch with a bad face stores nothing.
    with pytest.raises(ValueError):
        g1.add_faces(
            ident.id,
            [
                NewFace(unit(2), "m1", b"p", 0.9, [0, 0, 1, 1]),
                NewFace(unit(3), "m1", None, 0.9, [0, 0, 1, 1]),
            ],
        )
    assert g2.get_identity(ident.id).face_count == 1
    g2.delete_identity(ident.id)
    with pytest.raises(IdentityNotFound):
        g1.get_identity(ident.id)
    assert live2.refresh_if_changed() and live2.search(unit(1)).best is None
    g1.close()
    g2.close()
