"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness: the process answers")
async def health() -> dict:
    return {"status": "ok"}


@router.get("/ready", summary="Readiness: models loaded, embed pool alive, gallery open")
async def ready(request: Request) -> JSONResponse:
    app = request.app
    checks: dict[str, bool | str] = {"started": bool(getattr(app.state, "ready", False))}
    service = getattr(app.state, "service", None)
    if service is not None:
        checks["models"] = True
        checks["pool"] = service.pool.alive
        try:
            await asyncio.to_thread(service.store.revision)  # may be a network round trip
            checks["gallery"] = True
        except Exception as exc:
            checks["gallery"] = f"error: {exc}"
        health = getattr(service.bus, "healthy", True)
        checks["event_bus"] = bool(health)
        cameras = getattr(app.state, "cameras", None)
        if cameras is not None and hasattr(cameras, "healthy"):  # shared through Redis
            checks["camera_scheduler"] = bool(cameras.healthy)
    ok = all(v is True for v in checks.values()) and service is not None
    body = {"status": "ready" if ok else "not ready", "checks": checks}
    if service is not None:
        body["model"] = service.model_id
        body["gallery_identities"] = service.gallery.index.size
        # Templates of another embedding model are never matched against the live one;
        # the service still works (those identities just go unmatched), so it stays ready.
        warning = service.gallery.foreign_warning()
        body["warnings"] = [warning] if warning else []
    return JSONResponse(body, status_code=200 if ok else 503)
