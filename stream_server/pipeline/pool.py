"""One embedding pool shared by every stream, with dynamic batching.

Crops are submitted from any thread and answered through a
``concurrent.futures.Future``. Worker threads each own an embedder; a worker takes
the oldest crop, then waits up to ``batch_wait_ms`` for more (up to
``max_batch``) and embeds them in one onnxruntime call. The queue is bounded:
when it is full a submission is refused at once (``PoolFull``) and counted, so a
slow pool never builds a backlog of stale faces.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from .. import metrics

log = logging.getLogger(__name__)


class PoolFull(RuntimeError):
    """The embed queue is full; the crop was not accepted."""


class PoolClosed(RuntimeError):
    """The pool has been shut down."""


@dataclass
class _Job:
    image: np.ndarray
    future: Future
    submitted: float


class EmbedPool:
    def __init__(
        self,
        embedder_factory: Callable[[], object],
        workers: int = 1,
        max_batch: int = 8,
        batch_wait_ms: float = 4.0,
        queue_size: int = 64,
    ) -> None:
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self._max_batch = max(1, max_batch)
        self._wait_s = max(0.0, batch_wait_ms) / 1000.0
        self._closed = False
        self._threads: list[threading.Thread] = []
        self.embeddings_computed = 0
        self.batches = 0
        self.refused = 0
        self._count_lock = threading.Lock()
        embedders = [embedder_factory() for _ in range(max(1, workers))]
        self.embedder = embedders[0]
        for i, emb in enumerate(embedders):
            t = threading.Thread(target=self._work, args=(emb,), name=f"embed-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    @property
    def alive(self) -> bool:
        return not self._closed and all(t.is_alive() for t in self._threads)

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def submit(self, image: np.ndarray) -> Future:
        fut: Future = Future()
        if self._closed:
            fut.set_exception(PoolClosed("embed pool is closed"))
            return fut
        try:
            self._queue.put_nowait(_Job(image, fut, time.monotonic()))
        except queue.Full:
            with self._count_lock:
                self.refused += 1
            metrics.EMBED_REFUSED.inc()
            fut.set_exception(PoolFull("embed queue full"))
        metrics.EMBED_QUEUE_DEPTH.set(self._queue.qsize())
        return fut

    def embed_now(self, images: np.ndarray) -> np.ndarray:
        """Embed a batch through the pool and wait (for still images and enrolment)."""
        futures = [self._submit_blocking(img) for img in images]
        return (
            np.stack([f.result() for f in futures]) if futures else np.zeros((0, 512), np.float32)
        )

    def _submit_blocking(self, image: np.ndarray) -> Future:
        fut: Future = Future()
        if self._closed:
            raise PoolClosed("embed pool is closed")
        self._queue.put(_Job(image, fut, time.monotonic()))
        return fut

    def _work(self, embedder) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            deadline = time.monotonic() + self._wait_s
            while len(jobs) < self._max_batch:
                remaining = deadline - time.monotonic()
                try:
                    nxt = (
                        self._queue.get(timeout=remaining)
                        if remaining > 0
                        else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # let the other workers see the stop too
                    break
                jobs.append(nxt)
            jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]
            if not jobs:
                continue
            metrics.EMBED_QUEUE_DEPTH.set(self._queue.qsize())
            start = time.perf_counter()
            try:
                out = embedder.embed(np.stack([j.image for j in jobs]))
            except Exception as exc:  # a broken batch must not kill the worker
                log.exception("embedding batch of %d failed", len(jobs))
                for j in jobs:
                    j.future.set_exception(exc)
                continue
            elapsed = time.perf_counter() - start
            metrics.EMBED_SECONDS.observe(elapsed)
            metrics.EMBED_BATCH_SIZE.observe(len(jobs))
            metrics.EMBEDDINGS_TOTAL.inc(len(jobs))
            with self._count_lock:
                self.embeddings_computed += len(jobs)
                self.batches += 1
            for j, vec in zip(jobs, out, strict=True):
                j.future.set_result(vec)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Fail what is still queued, then stop the workers.
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(PoolClosed("embed pool is closed"))
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout=5)
