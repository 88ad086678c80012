"""Managed camera streams: add, list, remove; persisted and restarted with the server.

Cameras come from two places: the API (``POST /streams``), persisted as JSON in
``FACE_DATA_DIR/cameras.json`` (written atomically, readable by the owner only:
it holds the URLs with their credentials, which the service needs to reconnect),
and the settings (``FACE_CAMERAS``), for deployments without an API client.
Each camera is a ``LiveStream`` of kind ``camera`` fed by a ``CameraSource``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import DeclaredCamera, DetectorKind, RtspTransport, Settings
from .ingest.rtsp import (
    CameraSource,
    CameraTimings,
    CameraUrlError,
    RateMeter,
    mask_url,
    scrub_text,
    validate_camera_url,
)
from .streams import LiveStream, StreamExists, StreamRegistry

log = logging.getLogger(__name__)

STREAM_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_STREAM_ID = re.compile(STREAM_ID_PATTERN)
FILE_VERSION = 1


class CameraError(Exception):
    """A refused request; ``status`` is the HTTP status that fits, the message is safe."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


class CameraSpec(BaseModel):
    """What defines a camera (persisted). ``url`` holds credentials: never shown."""

    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    url: str
    detector: DetectorKind = "full"
    fps_cap: float | None = None
    rtsp_transport: RtspTransport = "auto"
    origin: Literal["api", "settings"] = "api"
    created_at: float = Field(default_factory=time.time)


@dataclass(eq=False)
class Camera:
    spec: CameraSpec
    stream: LiveStream | None = None
    source: CameraSource | None = None
    processed: RateMeter = field(default_factory=RateMeter)
    problem: str | None = None  # why it could not be started at all

    def on_frame(self, frame, result) -> None:
        self.processed.tick()

    def info(self) -> dict:
        spec = self.spec
        out: dict = {
            "id": spec.id,
            "name": spec.name,
            "kind": "camera",
            "url": mask_url(spec.url),
            "origin": spec.origin,
            "detector": spec.detector,
            "fps_cap": spec.fps_cap,
            "rtsp_transport": spec.rtsp_transport,
            "created_at": spec.created_at,
        }
        if self.source is None:
            out.update(
                state="stopped",
                state_since=spec.created_at,
                last_error=self.problem,
                last_error_at=None,
                reconnects=0,
                connect_failures=0,
                transport=None,
                format=None,
                codec=None,
                width=None,
                height=None,
                input_fps=0.0,
                processed_fps=0.0,
                frames_decoded=0,
                frames_processed=0,
                frames_dropped=0,
                frames_dropped_busy=0,
                frames_dropped_cap=0,
                decode_errors=0,
                input_lag_ms=None,
                last_frame_age_s=None,
            )
            return out
        st = self.source.status()
        busy = self.stream.slot.dropped if self.stream else 0
        out.update(
            state=st.state,
            state_since=st.state_since,
            last_error=st.last_error,
            last_error_at=st.last_error_at,
            reconnects=st.reconnects,
            connect_failures=st.connect_failures,
            transport=st.transport,
            format=st.format,
            codec=st.codec,
            width=st.width,
            height=st.height,
            input_fps=st.input_fps,
            processed_fps=round(self.processed.rate(), 2),
            frames_decoded=st.frames_decoded,
            frames_processed=self.stream.stats.frames if self.stream else 0,
            frames_dropped=busy + st.frames_skipped,
            frames_dropped_busy=busy,
            frames_dropped_cap=st.frames_skipped,
            decode_errors=st.decode_errors,
            input_lag_ms=st.input_lag_ms,
            last_frame_age_s=st.last_frame_age_s,
        )
        return out


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", text.strip()).strip("-._")[:64]
    return slug if slug and _STREAM_ID.match(slug) else ""


class CameraManager:
    def __init__(self, settings: Settings, registry: StreamRegistry, bus) -> None:
        self.settings = settings
        self.registry = registry
        self.bus = bus
        self.timings = CameraTimings.from_settings(settings)
        self.path: Path = settings.cameras_path
        self._cameras: dict[str, Camera] = {}
        self._reserved: set[str] = set()
        self._write_lock = asyncio.Lock()
        self._watchdog: asyncio.Task | None = None

    # -- queries ---------------------------------------------------------------------
    def all(self) -> list[Camera]:
        return sorted(self._cameras.values(), key=lambda c: c.spec.created_at)

    def get(self, stream_id: str) -> Camera | None:
        return self._cameras.get(stream_id)

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Start the cameras declared in the settings, then the persisted ones.

        A declared camera with a bad URL or a duplicate id is a configuration error:
        the server refuses to start and says which. A persisted camera that can no
        longer start (say file: URLs were disabled since) is listed as stopped with
        the reason, and kept.
        """
        declared = self._declared_specs()
        persisted = await asyncio.to_thread(self._load)
        for spec in declared:
            await self._launch(spec)
        for spec in persisted:
            if spec.id in self._cameras:
                log.error(
                    "[%s] persisted camera ignored: FACE_CAMERAS declares the same id", spec.id
                )
                continue
            try:
                validate_camera_url(spec.url, self.settings.camera_allow_file)
            except CameraUrlError as exc:
                log.error("[%s] persisted camera not started: %s", spec.id, exc)
                self._cameras[spec.id] = Camera(spec, problem=f"not started: {exc}")
                continue
            try:
                await self._launch(spec)
            except StreamExists:
                log.error("[%s] persisted camera not started: stream id in use", spec.id)
                self._cameras[spec.id] = Camera(spec, problem="not started: stream id in use")
        if self._cameras:
            log.info("%d camera(s) started", len(self._cameras))
        self._watchdog = asyncio.create_task(self._watch(), name="camera-watchdog")

    async def close(self) -> None:
        """Stop every camera (server shutdown); persisted definitions stay."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        cameras = list(self._cameras.values())
        sources = [cam.source for cam in cameras if cam.source is not None]
        for source in sources:
            source.stop()
        # Threads reading a live stream end at once; one blocked on a dead network ends
        # by its own timeout later (a daemon thread that will not touch anything).
        await asyncio.to_thread(_join_all, sources, 2.0)
        for cam in cameras:
            if cam.stream is not None:
                await self.registry.close(cam.spec.id)
        self._cameras.clear()

    # -- commands --------------------------------------------------------------------
    async def add(
        self,
        url: str,
        name: str | None = None,
        stream_id: str | None = None,
        detector: DetectorKind | None = None,
        fps_cap: float | None = None,
        rtsp_transport: RtspTransport = "auto",
    ) -> Camera:
        spec = self._new_spec(url, name, stream_id, detector, fps_cap, rtsp_transport)
        stream_id = spec.id
        if len(self._cameras) + len(self._reserved) >= self.settings.camera_max_streams:
            raise CameraError(
                f"camera limit of {self.settings.camera_max_streams} reached", status=409
            )
        if stream_id in self._cameras or stream_id in self._reserved or stream_id in self.registry:
            raise CameraError(f"a stream with id {stream_id!r} already exists", status=409)
        self._reserved.add(stream_id)
        try:
            camera = await self._launch(spec, start=False)
            try:
                await self._persist()
            except Exception as exc:
                log.error("[%s] could not save the camera list: %s", stream_id, exc)
                self._cameras.pop(stream_id, None)
                await self._close_stream(camera)
                raise CameraError("could not save the camera list", status=500) from None
        except StreamExists:
            raise CameraError(
                f"a stream with id {stream_id!r} already exists", status=409
            ) from None
        finally:
            self._reserved.discard(stream_id)
        camera.source.start()
        log.info("[%s] camera added: %s", stream_id, mask_url(url))
        return camera

    async def remove(self, stream_id: str) -> None:
        camera = self._cameras.get(stream_id)
        if camera is None:
            raise CameraError(f"no camera stream {stream_id!r}", status=404)
        if camera.spec.origin == "settings":
            raise CameraError(
                f"camera {stream_id!r} is declared in the settings (FACE_CAMERAS); "
                "remove it there and restart the server",
                status=409,
            )
        self._cameras.pop(stream_id, None)
        try:
            await self._persist()
        except Exception as exc:
            self._cameras[stream_id] = camera
            log.error("[%s] could not save the camera list: %s", stream_id, exc)
            raise CameraError("could not save the camera list", status=500) from None
        if camera.source is not None:
            camera.source.stop()
        await self._close_stream(camera)
        log.info("[%s] camera removed", stream_id)

    # -- internals -------------------------------------------------------------------
    def _new_spec(
        self,
        url: str,
        name: str | None,
        stream_id: str | None,
        detector: DetectorKind | None,
        fps_cap: float | None,
        rtsp_transport: RtspTransport,
    ) -> CameraSpec:
        """Check a camera request (URL scheme, transport, id) and build its definition."""
        scheme = validate_camera_url(url, self.settings.camera_allow_file)
        if rtsp_transport != "auto" and scheme not in ("rtsp", "rtsps"):
            raise CameraError(f"rtsp_transport applies to rtsp URLs only, not {scheme}:")
        if rtsp_transport == "udp" and scheme == "rtsps":
            raise CameraError("rtsps carries its media over TCP only")
        if stream_id is not None and not _STREAM_ID.match(stream_id):
            raise CameraError("id must be 1-64 letters, digits, '.', '_' or '-'")
        stream_id = stream_id or f"cam-{uuid.uuid4().hex[:10]}"
        return CameraSpec(
            id=stream_id,
            name=(name or "").strip() or stream_id,
            url=url,
            detector=detector or self.settings.camera_detector,
            fps_cap=fps_cap,
            rtsp_transport=rtsp_transport,
            origin="api",
        )

    def _declared_specs(self) -> list[CameraSpec]:
        """The cameras of FACE_CAMERAS, checked: a bad URL or a duplicate id is a
        configuration error that stops the server with a message saying which."""
        declared = [self._declared_spec(i, d) for i, d in enumerate(self.settings.cameras)]
        ids = [s.id for s in declared]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"FACE_CAMERAS declares stream ids more than once: {duplicates}")
        for spec in declared:
            try:
                validate_camera_url(spec.url, self.settings.camera_allow_file)
            except CameraUrlError as exc:
                raise ValueError(f"FACE_CAMERAS camera {spec.id!r}: {exc}") from None
        return declared

    def _declared_spec(self, index: int, declared: DeclaredCamera) -> CameraSpec:
        stream_id = declared.id
        if stream_id is None:
            digest = hashlib.sha256(declared.url.encode()).hexdigest()[:10]
            stream_id = _slug(declared.name or "") or f"cam-{digest}"
        if not _STREAM_ID.match(stream_id):
            raise ValueError(f"FACE_CAMERAS[{index}]: invalid id {stream_id!r}")
        return CameraSpec(
            id=stream_id,
            name=declared.name or stream_id,
            url=declared.url,
            detector=declared.detector or self.settings.camera_detector,
            fps_cap=declared.fps_cap,
            rtsp_transport=declared.rtsp_transport,
            origin="settings",
            created_at=0.0,
        )

    async def _launch(self, spec: CameraSpec, start: bool = True) -> Camera:
        stream = await self.registry.open(spec.id, spec.detector, "camera")
        camera = Camera(spec, stream)
        stream.add_listener(camera.on_frame)
        camera.source = CameraSource(
            stream,
            spec.url,
            bus=self.bus,
            fps_cap=spec.fps_cap,
            rtsp_transport=spec.rtsp_transport,
            timings=self.timings,
        )
        self._cameras[spec.id] = camera
        if start:
            camera.source.start()
        return camera

    async def _close_stream(self, camera: Camera) -> None:
        if camera.stream is None:
            return
        if camera.source is not None:
            # Usually immediate; a thread blocked in a read ends by its own timeout.
            await asyncio.to_thread(camera.source.join, 1.0)
        await self.registry.close(camera.spec.id)

    async def _watch(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for camera in list(self._cameras.values()):
                if camera.source is not None:
                    try:
                        camera.source.check_stuck(now)
                    except Exception:
                        log.exception("[%s] camera watchdog failed", camera.spec.id)

    def _load(self) -> list[CameraSpec]:
        if not self.path.exists():
            return []
        try:
            data = json.loads(self.path.read_text())
            if data.get("version") != FILE_VERSION:
                raise ValueError(f"unknown version {data.get('version')!r}")
            return [CameraSpec.model_validate(item) for item in data["cameras"]]
        except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
            aside = self.path.with_name(f"{self.path.name}.unreadable-{int(time.time())}")
            with contextlib.suppress(OSError):
                self.path.rename(aside)
            log.error(
                "camera list %s unreadable (%s); moved to %s",
                self.path,
                scrub_text(str(exc)),  # a validation error quotes the values: URLs
                aside.name,
            )
            return []

    async def _persist(self) -> None:
        specs = [c.spec for c in self.all() if c.spec.origin == "api"]
        data = {
            "version": FILE_VERSION,
            "cameras": [s.model_dump(mode="json") for s in specs],
        }
        async with self._write_lock:
            await asyncio.to_thread(_write_private_json, self.path, data)


def make_camera_manager(settings: Settings, registry: StreamRegistry, bus) -> CameraManager:
    """Cameras of this process alone (default), or shared by replicas through Redis."""
    if settings.camera_store == "redis":
        from .cameras_shared import SharedCameraManager

        return SharedCameraManager(settings, registry, bus)
    return CameraManager(settings, registry, bus)


def _join_all(sources: list[CameraSource], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for source in sources:
        source.join(max(0.0, deadline - time.monotonic()))


def _write_private_json(path: Path, data: dict) -> None:
    """Write atomically (temp file + rename), readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
