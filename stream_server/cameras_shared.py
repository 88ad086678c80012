"""Cameras shared by several replicas: each runs on exactly one of them at a time.

Camera definitions live in Redis (a hash, ``face:cams``), so a camera added on any
replica is known to all. Who runs a camera is decided by a lease per camera:
``SET face:cam:lease:<id> <replica> NX PX <ttl>``. Every replica runs a scheduler
tick every ``TICK_S`` seconds that

1. renews the leases of the cameras it runs (a Lua check-and-extend: only the
   holder can extend) and stops at once any camera whose lease it lost or whose
   definition was removed;
2. tries to take the lease of every camera nobody runs, and starts those it got;
3. publishes the status of its cameras (a short-lived key each), so ``GET
   /streams`` on any replica lists every camera of the cluster with its owner.

A replica that dies stops renewing; its leases expire after ``LEASE_S`` and the
next tick of another replica takes the cameras over (within ``LEASE_S + TICK_S``,
12 s). While Redis is unreachable a replica keeps running the cameras it has:
nobody else can take a lease meanwhile, so nothing runs twice, and the service
keeps processing. When Redis returns, a lease that expired meanwhile is taken
again by its previous holder first if it can; if another replica won it, the
previous holder stops its copy at its next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid

from .cameras import Camera, CameraError, CameraManager, CameraSpec
from .config import DetectorKind, RtspTransport, Settings
from .ingest.rtsp import validate_camera_url
from .streams import StreamRegistry

log = logging.getLogger(__name__)

SPECS_KEY = "face:cams"
LEASE_PREFIX = "face:cam:lease:"
STATUS_PREFIX = "face:cam:status:"

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RemoteCamera:
    """A camera another replica runs, as that replica last described it."""

    def __init__(self, spec: CameraSpec, status: dict | None) -> None:
        self.spec = spec
        self.status = status

    def info(self) -> dict:
        if self.status is not None:
            return self.status
        # Defined but not (yet) running anywhere: about to be taken by a replica.
        placeholder = Camera(self.spec, problem="waiting for a replica to take it")
        out = placeholder.info()
        out["state"] = "connecting"
        out["owner"] = None
        return out


class SharedCameraManager(CameraManager):
    LEASE_S = 10.0
    TICK_S = 2.0

    def __init__(self, settings: Settings, registry: StreamRegistry, bus) -> None:
        super().__init__(settings, registry, bus)
        import redis.asyncio as aioredis

        self.replica = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._redis = aioredis.from_url(
            settings.redis_url, socket_connect_timeout=2, socket_timeout=5
        )
        self._declared: dict[str, CameraSpec] = {}
        self._cluster: dict[str, CameraSpec] = {}
        self._remote_status: dict[str, dict] = {}
        self._tick_lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self.healthy = False

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        self._declared = {s.id: s for s in self._declared_specs()}
        self._cluster = dict(self._declared)
        self._task = asyncio.create_task(self._run(), name="camera-scheduler")
        self._watchdog = asyncio.create_task(self._watch(), name="camera-watchdog")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        owned = list(self._cameras)
        await super().close()
        # Hand the cameras over at once instead of letting the leases run out.
        with contextlib.suppress(Exception):
            for stream_id in owned:
                await self._redis.eval(_RELEASE, 1, LEASE_PREFIX + stream_id, self.replica)
                await self._redis.delete(STATUS_PREFIX + stream_id)
        with contextlib.suppress(Exception):
            await self._redis.aclose()

    # -- queries (cluster-wide) --------------------------------------------------------
    def all(self) -> list:
        out: list = []
        for stream_id, spec in self._cluster.items():
            out.append(self.get(stream_id) or RemoteCamera(spec, None))
        return sorted(out, key=lambda c: (c.spec.created_at, c.spec.id))

    def get(self, stream_id: str):
        local = self._cameras.get(stream_id)
        if local is not None:
            return _Owned(local, self.replica)
        spec = self._cluster.get(stream_id)
        if spec is None:
            return None
        return RemoteCamera(spec, self._remote_status.get(stream_id))

    # -- commands --------------------------------------------------------------------
    async def add(
        self,
        url: str,
        name: str | None = None,
        stream_id: str | None = None,
        detector: DetectorKind | None = None,
        fps_cap: float | None = None,
        rtsp_transport: RtspTransport = "auto",
    ):
        spec = self._new_spec(url, name, stream_id, detector, fps_cap, rtsp_transport)
        if spec.id in self._declared:
            raise CameraError(f"a stream with id {spec.id!r} already exists", status=409)
        if await self._redis.hlen(SPECS_KEY) + len(self._declared) >= (
            self.settings.camera_max_streams
        ):
            raise CameraError(
                f"camera limit of {self.settings.camera_max_streams} reached", status=409
            )
        if not await self._redis.hsetnx(SPECS_KEY, spec.id, spec.model_dump_json()):
            raise CameraError(f"a stream with id {spec.id!r} already exists", status=409)
        await self.tick()  # most likely this replica takes it right away
        return self.get(spec.id)

    async def remove(self, stream_id: str) -> None:
        if stream_id in self._declared:
            raise CameraError(
                f"camera {stream_id!r} is declared in the settings (FACE_CAMERAS); "
                "remove it there and restart the server",
                status=409,
            )
        if not await self._redis.hdel(SPECS_KEY, stream_id):
            raise CameraError(f"no camera stream {stream_id!r}", status=404)
        await self.tick()  # stops it here if it ran here; its owner stops it otherwise

    # -- the scheduler ------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
                if not self.healthy:
                    log.info("camera scheduler connected to redis (replica %s)", self.replica)
                self.healthy = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.healthy or self._task is not None:
                    log.warning(
                        "camera scheduler cannot reach redis (%s); keeping the %d camera(s) "
                        "running here",
                        type(exc).__name__,
                        len(self._cameras),
                    )
                self.healthy = False
            await asyncio.sleep(self.TICK_S)

    async def tick(self) -> None:
        async with self._tick_lock:
            raw = await self._redis.hgetall(SPECS_KEY)
            cluster = dict(self._declared)
            for key, value in raw.items():
                try:
                    spec = CameraSpec.model_validate_json(value)
                except ValueError:
                    log.error("ignoring an unreadable camera definition %r", key)
                    continue
                cluster[spec.id] = spec
            self._cluster = cluster
            ttl_ms = int(self.LEASE_S * 1000)
            # 1. Keep what is still ours and still wanted; stop the rest at once.
            for stream_id in list(self._cameras):
                lease = LEASE_PREFIX + stream_id
                keep = stream_id in cluster and (
                    await self._redis.eval(_RENEW, 1, lease, self.replica, ttl_ms)
                    or await self._redis.set(lease, self.replica, nx=True, px=ttl_ms)
                )
                if not keep:
                    reason = "removed" if stream_id not in cluster else "lease lost"
                    log.warning("[%s] camera stopped here: %s", stream_id, reason)
                    await self._stop_local(stream_id)
                    if stream_id not in cluster:
                        await self._redis.eval(_RELEASE, 1, lease, self.replica)
                        await self._redis.delete(STATUS_PREFIX + stream_id)
            # 2. Take what nobody runs.
            for stream_id, spec in cluster.items():
                if stream_id in self._cameras:
                    continue
                lease = LEASE_PREFIX + stream_id
                if not await self._redis.set(lease, self.replica, nx=True, px=ttl_ms):
                    continue
                try:
                    validate_camera_url(spec.url, self.settings.camera_allow_file)
                    await self._launch(spec)
                    log.info("[%s] camera taken by replica %s", stream_id, self.replica)
                except Exception as exc:
                    log.error("[%s] camera not started here: %s", stream_id, exc)
                    await self._redis.eval(_RELEASE, 1, lease, self.replica)
            # 3. Publish our cameras' status; read the others'.
            pipe = self._redis.pipeline(transaction=False)
            for stream_id, camera in self._cameras.items():
                info = camera.info() | {"owner": self.replica}
                pipe.set(STATUS_PREFIX + stream_id, json.dumps(info), px=ttl_ms)
            await pipe.execute()
            others = [s for s in cluster if s not in self._cameras]
            status: dict[str, dict] = {}
            if others:
                values = await self._redis.mget([STATUS_PREFIX + s for s in others])
                for stream_id, value in zip(others, values, strict=True):
                    if value:
                        status[stream_id] = json.loads(value)
            self._remote_status = status

    async def _stop_local(self, stream_id: str) -> None:
        camera = self._cameras.pop(stream_id, None)
        if camera is None:
            return
        if camera.source is not None:
            camera.source.stop()
        await self._close_stream(camera)

    async def _persist(self) -> None:  # definitions live in Redis, not in cameras.json
        return None


class _Owned:
    """A camera this replica runs, described with its owner."""

    def __init__(self, camera: Camera, owner: str) -> None:
        self.spec = camera.spec
        self._camera = camera
        self._owner = owner

    def info(self) -> dict:
        return self._camera.info() | {"owner": self._owner}
