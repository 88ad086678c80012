"""The service's one settings object, read from the environment (prefix ``FACE_``).

Nothing here is read at import time: ``Settings()`` is built once by the CLI or by
whoever creates the app, and passed down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DetectorKind = Literal["short", "full"]
RtspTransport = Literal["auto", "tcp", "udp"]


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
    vote_max_attempts: int = 6

    # Events
    event_bus: Literal["memory", "redis"] = "memory"
    subscriber_queue_size: int = 256
    redis_url: str = "redis://127.0.0.1:6379/0"

    # Gallery
    gallery: Literal["sqlite", "redis"] = "sqlite"

    # Logging
    log_level: str = "INFO"
    log_format: Literal["plain", "json"] = "plain"

    @field_validator("providers", mode="before")
    @classmethod
    def _providers_csv(cls, value: object) -> object:
        return _split_csv(value)

    @property
    def gallery_path(self) -> Path:
        return self.data_dir / "gallery.sqlite3"

    @property
    def cameras_path(self) -> Path:
        return self.data_dir / "cameras.json"

    @property
    def download_dir(self) -> Path:
        return self.data_dir / "models"
