"""The service's one settings object, read from the environment (prefix ``FACE_``).

Nothing here is read at import time: ``Settings()`` is built once by the CLI or by
whoever creates the app, and passed down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DetectorKind = Literal["short", "full"]
RtspTransport = Literal["auto", "tcp", "udp"]
RATE_LIMIT_OFF = frozenset({"off", "none", "disabled", "0", ""})


class ConfigurationError(RuntimeError):
    """The settings describe a service that must not start (e.g. open in production)."""


class DeclaredCamera(BaseModel):
    """A camera declared in the settings (``FACE_CAMERAS``, a JSON list of these)."""

    model_config = ConfigDict(extra="forbid")

    url: str
    name: str | None = None
    id: str | None = Field(None, description="stream id; derived from the name when absent")
    detector: DetectorKind | None = None
    fps_cap: float | None = Field(None, gt=0, le=240)
    rtsp_transport: RtspTransport = "auto"


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class IceServer(BaseModel):
    """A STUN or TURN server, as WebRTC's ``RTCIceServer`` describes it."""

    urls: str | list[str]
    username: str | None = None
    credential: str | None = None


def _ice_servers(value: object) -> object:
    """JSON (``[{"urls": "turn:host", "username": ..., "credential": ...}]``) or a
    comma-separated list of plain STUN/TURN URLs."""
    if isinstance(value, str):
        parsed = _split_csv(value)
        if isinstance(parsed, list):
            return [{"urls": item} if isinstance(item, str) else item for item in parsed]
        return parsed
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACE_", extra="ignore")

    # Where state lives: the SQLite gallery, persisted streams, downloaded models.
    data_dir: Path = Path("./data")
    environment: Literal["development", "production", "test"] = "development"

    # HTTP server
    host: str = "127.0.0.1"
    port: int = 8000

    # Models: an explicit file wins, then FACE_MODEL_DIR, then the official download.
    model_dir: Path | None = None
    detector_short_model: Path | None = None
    detector_full_model: Path | None = None
    embedder_model: str = Field(
        default="buffalo_s",
        description="Path to an ArcFace .onnx file, or an InsightFace pack name "
        "(buffalo_l, buffalo_s, buffalo_sc).",
    )
    allow_download: bool = True
    providers: Annotated[list[str], NoDecode] = ["CPUExecutionProvider"]

    # Detection
    detector_min_confidence: float = 0.5
    webcam_detector: DetectorKind = "short"
    camera_detector: DetectorKind = "full"

    # IP cameras (RTSP, and HTTP MJPEG/HLS): see stream_server/cameras.py
    cameras: list[DeclaredCamera] = Field(
        default_factory=list,
        description="Cameras started with the server, as JSON: "
        '[{"url": "rtsp://...", "name": "door", "fps_cap": 10}]',
    )
    camera_allow_file: bool = Field(
        False, description="accept file: URLs as camera sources (replaying recordings)"
    )
    camera_max_streams: int = 64
    camera_open_timeout_s: float = 10.0
    camera_stall_timeout_s: float = 5.0
    camera_backoff_initial_s: float = 0.5
    camera_backoff_max_s: float = 3.0
    camera_decode_threads: int = 1

    # Tracking (times are media seconds so replays and live streams behave alike)
    track_iou_min: float = 0.2
    track_max_missing_s: float = 1.0

    # Crop selection
    select_min_face_px: int = 40
    select_min_quality: float = 0.35
    select_interval_s: float = 0.15
    select_reverify_s: float = 3.0
    select_growth_ratio: float = 1.5
    select_unknown_retry_s: float = 1.0
    select_starve_s: float = 0.5
    select_floor_quality: float = 0.08

    # Embedding pool
    embed_workers: int = 1
    embed_threads: int = 1
    embed_max_batch: int = 8
    embed_batch_wait_ms: float = 4.0
    embed_queue_size: int = 64

    # Matching and voting
    match_threshold: float = 0.30
    match_margin: float = 0.05
    vote_min_agree: int = 2
    vote_max_attempts: int = 8

    # Live ingest: browser webcams over WebRTC, frames over a WebSocket.
    # No STUN/TURN by default (works on a LAN and through the nginx proxy); set
    # FACE_ICE_SERVERS for browsers behind NAT, e.g.
    # '[{"urls": "turn:turn.example.org:3478", "username": "u", "credential": "p"}]'.
    ice_servers: Annotated[list[IceServer], NoDecode] = []
    webrtc_frame_timeout_s: float = Field(
        10.0, gt=0, description="close a peer connection that sent no video for this long"
    )
    webrtc_max_peers: int = Field(16, ge=1, description="browser streams open at once")
    webrtc_channel_max_buffer: int = Field(
        1_000_000, description="bytes queued on a data channel past which frame results are skipped"
    )
    ingest_max_frame_bytes: int = Field(8 * 1024 * 1024, description="largest /ws/ingest frame")
    ingest_max_pixels: int = Field(4096 * 4096, description="largest decoded frame, in pixels")
    ws_send_timeout_s: float = Field(
        5.0, gt=0, description="a WebSocket client that takes no data for this long is dropped"
    )

    # Events
    event_bus: Literal["memory", "redis"] = "memory"
    subscriber_queue_size: int = 256
    redis_url: str = "redis://127.0.0.1:6379/0"

    # Gallery
    gallery: Literal["sqlite", "redis"] = "sqlite"
    # Camera definitions and who runs them: this process alone (cameras.json), or
    # shared by replicas through Redis leases (each camera runs on exactly one).
    camera_store: Literal["local", "redis"] = "local"

    # API security and limits (see README "Security")
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default=[],
        description="Accepted API keys, comma-separated (Authorization: Bearer <key>). "
        "Empty: the service runs open (refused when environment is production).",
    )
    metrics_require_key: bool = False
    docs_require_key: bool = False
    rate_limit: str = Field(
        default="10/minute",
        description="Per-client limit of /compare-faces, /recognize and enrolment, e.g. "
        "'10/minute' or '10/minute;200/hour'; 'off' disables it.",
    )
    rate_limit_storage: str = "memory://"
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(default=40_000_000, ge=10_000)
    still_concurrency: int = Field(default=2, ge=1)
    enrol_max_images: int = Field(default=20, ge=1)
    enrol_min_face_px: int = 40
    enrol_min_quality: float = 0.30
    recognize_max_faces: int = Field(default=50, ge=1)

    # Logging
    log_level: Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"] = "INFO"
    log_format: Literal["plain", "json"] = "plain"

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level_upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("providers", mode="before")
    @classmethod
    def _providers_csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys_csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit_valid(cls, value: str) -> str:
        text = value.strip()
        if text.lower() in RATE_LIMIT_OFF:
            return "off"
        from limits import parse_many

        try:
            parse_many(text)
        except ValueError as exc:
            raise ValueError(
                f"FACE_RATE_LIMIT {text!r} is not a limit like '10/minute' (or 'off')"
            ) from exc
        return text

    @property
    def rate_limit_enabled(self) -> bool:
        return self.rate_limit != "off"

    @field_validator("ice_servers", mode="before")
    @classmethod
    def _ice_servers_env(cls, value: object) -> object:
        return _ice_servers(value)

    @property
    def gallery_path(self) -> Path:
        return self.data_dir / "gallery.sqlite3"

    @property
    def cameras_path(self) -> Path:
        return self.data_dir / "cameras.json"

    @property
    def download_dir(self) -> Path:
        return self.data_dir / "models"
