import asyncio

from stream_server.events.bus import EventFilter, MemoryEventBus
from stream_server.events.schema import FaceMatched, TrackStarted, parse_event


def matched(stream="s1", ident="a", track=1):
    return FaceMatched(
        stream_id=stream,
        track_id=track,
        identity_id=ident,
        name=ident,
        similarity=0.5,
        box=[0, 0, 1, 1],
        votes=2,
        attempts=2,
    )


async def test_filters_by_stream_type_and_identity():
    bus = MemoryEventBus()
    only_s2 = bus.subscribe(EventFilter(stream_ids=frozenset({"s2"})))
    only_matches = bus.subscribe(EventFilter(types=frozenset({"face.matched"})))
    only_b = bus.subscribe(EventFilter(identity_ids=frozenset({"b"})))
    bus.publish(TrackStarted(stream_id="s1", track_id=1, box=[0, 0, 1, 1]))
    bus.publish(matched("s2", "a"))
    bus.publish(matched("s1", "b"))
    assert only_s2.queue.qsize() == 1
    assert only_matches.queue.qsize() == 2
    assert only_b.queue.qsize() == 1 and (await only_b.get()).identity_id == "b"


async def test_a_slow_subscriber_is_closed_and_others_get_everything():
    bus = MemoryEventBus()
    slow = bus.subscribe(queue_size=5)
    fast = [bus.subscribe(queue_size=5) for _ in range(10)]
    received = {id(s): 0 for s in fast}

    async def reader(sub):
        async for _ in sub:
            received[id(sub)] += 1

    tasks = [asyncio.create_task(reader(s)) for s in fast]
    for i in range(200):
        bus.publish(matched(track=i))
        await asyncio.sleep(0.001)  # readers run between publications; the slow one never reads
    assert slow.closed_reason and "too slow" in slow.closed_reason
    assert bus.subscriber_count == 10
    await bus.stop()
    await asyncio.gather(*tasks)
    assert set(received.values()) == {200}


def test_events_round_trip_as_versioned_json():
    e = matched()
    back = parse_event(e.model_dump_json())
    assert back == e and back.schema_version == 1 and back.type == "face.matched"
