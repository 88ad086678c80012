import asyncio
import threading

import numpy as np

from stream_server.ingest.slot import LatestFrameSlot
from stream_server.types import Frame

IMG = np.zeros((4, 4, 3), np.uint8)


async def test_live_slot_keeps_only_the_newest_and_counts_drops():
    slot = LatestFrameSlot("s", asyncio.get_running_loop())
    for i in range(5):
        assert slot.put(Frame("s", i, IMG))
    frame = await slot.get()
    assert frame.seq == 4 and slot.dropped == 4 and slot.received == 5
    slot.close()
    assert await slot.get() is None
    assert not slot.put(Frame("s", 9, IMG))


async def test_blocking_slot_loses_nothing_from_a_producer_thread():
    slot = LatestFrameSlot("s", asyncio.get_running_loop(), block=True)

    def produce():
        for i in range(50):
            slot.put(Frame("s", i, IMG))
        slot.close()

    t = threading.Thread(target=produce)
    t.start()
    seqs = []
    while (f := await slot.get()) is not None:
        seqs.append(f.seq)
        await asyncio.sleep(0)
    t.join()
    assert seqs == list(range(50)) and slot.dropped == 0
