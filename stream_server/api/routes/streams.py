"""Camera streams: ``POST /streams``, ``GET /streams``, ``GET/DELETE /streams/{id}``.

Camera URLs are returned masked (``rtsp://user:***@host/...``); a refused request
never echoes the URL it was given in clear.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...cameras import STREAM_ID_PATTERN, CameraError
from ...config import DetectorKind, RtspTransport
from ...ingest.rtsp import CameraUrlError, scrub_text
from ..errors import ErrorBody, error_response, responses

router = APIRouter(tags=["streams"])


class StreamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        description="rtsp:// or rtsps:// camera URL (credentials allowed: they are never "
        "shown), http(s):// for MJPEG or HLS, or file: when FACE_CAMERA_ALLOW_FILE is set",
        examples=["rtsp://user:password@192.168.1.20:554/stream1"],
        # Documented (and used by schema-driven clients); the route checks it itself so
        # that a refusal says why in words and never quotes the URL back.
        json_schema_extra={"pattern": r"^(rtsp|rtsps|http|https|file)://\S+$"},
    )
    name: str | None = Field(None, max_length=100, description="a name for people")
    id: str | None = Field(
        None, pattern=STREAM_ID_PATTERN, description="stream id (generated when absent)"
    )
    detector: DetectorKind | None = Field(
        None, description="face detector: full range (default for cameras) or short range"
    )
    fps_cap: float | None = Field(
        None, gt=0, le=240, description="process at most this many frames a second"
    )
    rtsp_transport: RtspTransport = Field(
        "auto", description="auto: TCP first, then UDP; or force one"
    )


class StreamInfo(BaseModel):
    id: str
    name: str
    kind: str
    url: str = Field(description="the URL with its credentials masked")
    origin: str = Field(description="api, or settings (FACE_CAMERAS)")
    detector: str
    fps_cap: float | None
    rtsp_transport: str
    created_at: float
    state: str = Field(description="connecting | live | retrying | stopped")
    owner: str | None = Field(
        None,
        description="the replica that runs it (FACE_CAMERA_STORE=redis); null otherwise",
    )
    state_since: float
    last_error: str | None
    last_error_at: float | None
    reconnects: int = Field(description="times the camera came back after a failure")
    connect_failures: int
    transport: str | None = Field(description="tcp or udp for RTSP, once connected")
    format: str | None
    codec: str | None
    width: int | None
    height: int | None
    input_fps: float = Field(description="frames decoded per second (last 3 s)")
    processed_fps: float = Field(description="frames through detection per second (last 3 s)")
    frames_decoded: int
    frames_processed: int
    frames_dropped: int = Field(description="decoded but never processed (busy + fps cap)")
    frames_dropped_busy: int = Field(description="replaced in the slot by a newer frame")
    frames_dropped_cap: int = Field(description="skipped by the fps cap")
    decode_errors: int
    input_lag_ms: float | None = Field(
        description="how much later than its earliest the live input arrives now"
    )
    last_frame_age_s: float | None


class StreamList(BaseModel):
    streams: list[StreamInfo]
    total: int


_CODES = {400: "bad_request", 404: "not_found", 409: "conflict", 422: "invalid_request"}


def _error(status: int, message: str) -> JSONResponse:
    """The API's error shape: ``{"error": <code>, "detail": <what went wrong>}``."""
    return error_response(status, _CODES.get(status, "internal_error"), message)


def _manager(request: Request):
    return request.app.state.cameras


@router.post(
    "/streams",
    status_code=201,
    response_model=StreamInfo,
    summary="Add a camera stream",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": StreamCreate.model_json_schema()}},
        }
    },
    responses={
        **responses(400, 401, 422),
        409: {"model": ErrorBody, "description": "id in use, or camera limit reached"},
    },
)
async def create_stream(request: Request):
    """Start pulling a camera. It starts in ``connecting`` and turns ``live`` with the
    first decoded picture; failures turn it ``retrying`` (see ``last_error``)."""
    try:
        payload = json.loads(await request.body() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, "the body must be JSON")
    if not isinstance(payload, dict):
        return _error(422, "the body must be a JSON object")
    try:
        body = StreamCreate.model_validate(payload)
    except ValidationError as exc:
        # Never echo what was sent: the URL may carry credentials.
        errors = [
            {"loc": list(e["loc"]), "msg": scrub_text(e["msg"]), "type": e["type"]}
            for e in exc.errors(include_input=False, include_url=False, include_context=False)
        ]
        return error_response(422, "invalid_request", errors)
    try:
        camera = await _manager(request).add(
            body.url,
            name=body.name,
            stream_id=body.id,
            detector=body.detector,
            fps_cap=body.fps_cap,
            rtsp_transport=body.rtsp_transport,
        )
    except CameraUrlError as exc:
        return _error(422, str(exc))
    except CameraError as exc:
        return _error(exc.status, str(exc))
    return JSONResponse(
        camera.info(), status_code=201, headers={"Location": f"/streams/{camera.spec.id}"}
    )


@router.get("/streams", response_model=StreamList, summary="List camera streams")
async def list_streams(request: Request) -> dict:
    cameras = _manager(request).all()
    return {"streams": [c.info() for c in cameras], "total": len(cameras)}


@router.get(
    "/streams/{stream_id}",
    response_model=StreamInfo,
    summary="One camera stream: state, fps, drops, reconnects, last error",
    responses={
        **responses(401),
        404: {"model": ErrorBody, "description": "no such camera stream"},
    },
)
async def get_stream(stream_id: str, request: Request):
    camera = _manager(request).get(stream_id)
    if camera is None:
        return _error(404, f"no camera stream {stream_id!r}")
    return camera.info()


@router.delete(
    "/streams/{stream_id}",
    status_code=204,
    summary="Stop and remove a camera stream",
    responses={
        **responses(401),
        404: {"model": ErrorBody, "description": "no such camera stream"},
        409: {"model": ErrorBody, "description": "declared in the settings"},
    },
)
async def delete_stream(stream_id: str, request: Request):
    try:
        await _manager(request).remove(stream_id)
    except CameraError as exc:
        return _error(exc.status, str(exc))
    return Response(status_code=204)
