"""The FastAPI application, built by a factory so tests can use any settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from .api.errors import install_error_handlers
from .api.observability import RequestObservabilityMiddleware
from .api.ratelimit import RateLimiter
from .api.routes import events as events_routes
from .api.routes import health as health_routes
from .api.routes import identities as identities_routes
from .api.routes import ingest as ingest_routes
from .api.routes import metrics as metrics_routes
from .api.routes import recognize as recognize_routes
from .api.routes import streams as streams_routes
from .api.routes import webrtc as webrtc_routes
from .api.security import install_security, warn_if_open
from .api.stills import StillAnalyser
from .cameras import make_camera_manager
from .config import Settings
from .ingest.webrtc import PeerSessions
from .streams import StreamRegistry

log = logging.getLogger(__name__)

WEB_CLIENT_DIR = Path(__file__).resolve().parent.parent / "web_client"


async def _watch_gallery(service, interval: float = 0.5) -> None:
    """Pick up gallery writes made elsewhere (CLI, another replica) within a second."""
    failing = False
    while True:
        await asyncio.sleep(interval)
        try:
            changed = await asyncio.to_thread(service.gallery.refresh_if_changed)
            if changed:
                service.refresh_gallery_metrics()
            if failing:
                log.info("gallery reachable again")
                failing = False
        except Exception as exc:
            # Keep matching with the last index loaded and keep watching; /ready
            # reports the gallery as unreachable meanwhile. Logged once per outage.
            if not failing:
                log.warning("gallery unreachable, matching with the last loaded index: %s", exc)
                failing = True


def create_app(settings: Settings | None = None, service=None) -> FastAPI:
    """Build the app. ``service`` may be given (tests share one across apps)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        owns_service = service is None
        if owns_service:
            from .service import FaceService

            svc = await asyncio.to_thread(FaceService, settings)
        else:
            svc = service
        app.state.service = svc
        app.state.streams = StreamRegistry(svc)
        app.state.stills = StillAnalyser(svc, settings.max_image_pixels, settings.still_concurrency)
        warn_if_open(settings)
        app.state.webrtc = PeerSessions(settings, app.state.streams, svc.bus)
        svc.refresh_gallery_metrics()
        await svc.bus.start()
        app.state.cameras = make_camera_manager(settings, app.state.streams, svc.bus)
        await app.state.cameras.start()
        watcher = asyncio.create_task(_watch_gallery(svc))
        app.state.ready = True
        log.info("service ready on %s:%d (model %s)", settings.host, settings.port, svc.model_id)
        try:
            yield
        finally:
            app.state.ready = False
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await app.state.cameras.close()
            await app.state.webrtc.close_all()
            await app.state.streams.close_all()
            await svc.bus.stop()
            if owns_service:
                await asyncio.to_thread(svc.close)

    app = FastAPI(
        title="stream-server",
        version="0.1.0",
        description="Real-time face recognition for live video.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.ready = False
    app.state.rate_limiter = RateLimiter(settings)
    install_error_handlers(app)
    app.include_router(health_routes.router)
    app.include_router(metrics_routes.router)
    app.include_router(events_routes.router)
    app.include_router(identities_routes.router)
    app.include_router(recognize_routes.router)
    app.include_router(webrtc_routes.router)
    app.include_router(ingest_routes.router)
    app.include_router(streams_routes.router)
    if WEB_CLIENT_DIR.is_dir() and (WEB_CLIENT_DIR / "index.html").exists():
        from fastapi.staticfiles import StaticFiles

        app.mount("/", StaticFiles(directory=WEB_CLIENT_DIR, html=True), name="web_client")
    # Last, so the key check and the upload limit wrap every route, including later ones.
    install_security(app, settings, WEB_CLIENT_DIR)
    # Keep this the last add_middleware: the last added is the outermost, so requests
    # that other middleware (auth, limits) refuse are counted and logged too.
    app.add_middleware(RequestObservabilityMiddleware)
    return app
