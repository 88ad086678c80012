"""``POST /webrtc/offer``: a browser's SDP offer in, the server's answer out."""

from __future__ import annotations

import logging
import uuid

from aiortc import RTCSessionDescription
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ...config import DetectorKind
from ...ingest.webrtc import PeerSession, PeerSessions
from ...streams import StreamExists
from ..deps import client_ip

log = logging.getLogger(__name__)
router = APIRouter(tags=["live"])

STREAM_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
MAX_SDP_CHARS = 64 * 1024


class Offer(BaseModel):
    sdp: str = Field(..., max_length=MAX_SDP_CHARS, description="the browser's SDP offer")
    type: str = Field("offer", description='must be "offer"')
    stream_id: str | None = Field(
        None,
        pattern=STREAM_ID_PATTERN,
        description="name of the stream in events (default: a new webrtc-… id)",
    )
    detector: DetectorKind | None = Field(
        None, description="short (webcam, default) or full range detector"
    )

    model_config = {
        "json_schema_extra": {
            "examples": [{"sdp": "v=0\r\no=- 4611 2 IN IP4 127.0.0.1\r\n...", "type": "offer"}]
        }
    }


class Answer(BaseModel):
    sdp: str
    type: str = "answer"
    stream_id: str
    detector: DetectorKind
    data_channel: bool = Field(
        description="whether the offer opens a data channel for results and events"
    )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def sessions_of(app) -> PeerSessions:
    sessions = getattr(app.state, "webrtc", None)
    if sessions is None:
        sessions = PeerSessions(app.state.settings, app.state.streams, app.state.service.bus)
        app.state.webrtc = sessions
    return sessions


@router.get("/webrtc/config", summary="ICE servers a browser should use")
async def webrtc_config(request: Request) -> dict:
    settings = request.app.state.settings
    return {
        "iceServers": [s.model_dump(exclude_none=True) for s in settings.ice_servers],
        "frame_timeout_s": settings.webrtc_frame_timeout_s,
    }


@router.post(
    "/webrtc/offer",
    summary="Start streaming a webcam: SDP offer in, answer out",
    response_model=Answer,
    responses={
        400: {"description": "malformed SDP, or an offer without video"},
        409: {"description": "stream_id already in use"},
        503: {"description": "too many browser streams open"},
    },
)
async def webrtc_offer(offer: Offer, request: Request):
    """The offer's first video track feeds a new live stream. Open a data channel
    in the offer (any label, e.g. ``results``): per processed frame it receives a
    ``frame.result`` message (boxes, track ids, names) and every event of the
    stream, as JSON text. The stream ends when the browser leaves, the connection
    fails, or no video arrives for ``FACE_WEBRTC_FRAME_TIMEOUT_S`` seconds."""
    app = request.app
    settings = app.state.settings
    sessions = sessions_of(app)
    streams = app.state.streams
    if offer.type != "offer":
        return _error(400, f'expected an SDP of type "offer", got {offer.type!r}')
    if not offer.sdp.lstrip().startswith("v=0"):
        return _error(400, "malformed SDP: it must start with v=0")
    stream_id = offer.stream_id or f"webrtc-{uuid.uuid4().hex[:10]}"
    detector: DetectorKind = offer.detector or settings.webcam_detector
    if stream_id in streams:
        return _error(409, f"stream_id {stream_id!r} is already in use")
    if sessions.full:
        return _error(503, f"too many browser streams (limit {settings.webrtc_max_peers})")

    sessions.reserve()
    pc = sessions.new_peer_connection()
    session = PeerSession(sessions, pc, stream_id, client_ip(request))
    stream_opened = False
    try:
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        except Exception as exc:
            detail = str(exc) or f"a line could not be parsed ({type(exc).__name__})"
            log.info("[%s] refused an offer: %s", stream_id, detail)
            return _error(400, f"malformed SDP offer: {detail}")
        kinds = [t.kind for t in pc.getTransceivers()]
        if "video" not in kinds:
            return _error(400, "the offer has no video track")
        has_channel = pc.sctp is not None
        try:
            stream = await streams.open(stream_id, detector, "webrtc")
        except StreamExists:
            return _error(409, f"stream_id {stream_id!r} is already in use")
        stream_opened = True
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        await session.start(stream)
        sessions.add(session)
        log.info(
            "[%s] webrtc stream from %s (%s-range detector, data channel: %s)",
            stream_id,
            session.peer,
            detector,
            has_channel,
        )
        return Answer(
            sdp=pc.localDescription.sdp,
            type=pc.localDescription.type,
            stream_id=stream_id,
            detector=detector,
            data_channel=has_channel,
        )
    finally:
        sessions.release()
        if sessions.get(stream_id) is not session:
            # Refused or failed: nothing of this offer stays open.
            if stream_opened:
                await streams.close(stream_id)
            await pc.close()
