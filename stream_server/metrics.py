"""Every Prometheus object of the service, in one place.

Labels stay bounded: stream ids (streams are created by operators, and their
series are removed when a stream is removed), stage names, event types, HTTP
method / route template / status. Never identity names or track ids.
"""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

_LAT_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.035,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
)

# HTTP
API_REQUESTS = Counter("face_api_requests_total", "HTTP requests", ["method", "endpoint", "status"])
API_DURATION = Histogram(
    "face_api_request_duration_seconds",
    "HTTP request duration",
    ["method", "endpoint"],
    buckets=_LAT_BUCKETS,
)
AUTH_FAILURES = Counter(
    "face_api_auth_failures_total",
    "Requests refused for a missing or wrong API key",
    ["kind", "reason"],
)
RATE_LIMITED = Counter("face_api_rate_limited_total", "Requests refused with 429", ["scope"])
UPLOADS_REFUSED = Counter(
    "face_api_uploads_refused_total", "Uploads refused (too large, not an image, ...)", ["reason"]
)
ACTIVE_CONNECTIONS = Gauge(
    "face_api_active_connections",
    "Open connections by kind: http (requests in flight), websocket, webrtc (peer connections)",
    ["kind"],
)
CONNECTION_KINDS = ("http", "websocket", "webrtc")
for _kind in CONNECTION_KINDS:  # every kind exported from the start, at 0
    ACTIVE_CONNECTIONS.labels(kind=_kind)

# Frames, per stream
FRAMES_RECEIVED = Counter("face_frames_received_total", "Frames received", ["stream"])
FRAMES_PROCESSED = Counter("face_frames_processed_total", "Frames processed", ["stream"])
FRAMES_DROPPED = Counter(
    "face_frames_dropped_total", "Frames dropped before processing (newest frame wins)", ["stream"]
)

# Stages
STAGE_SECONDS = Histogram(
    "face_stage_duration_seconds",
    "Time spent in a pipeline stage",
    ["stage"],
    buckets=_LAT_BUCKETS,
)
DETECT_SECONDS = STAGE_SECONDS.labels(stage="detect")
MATCH_SECONDS = STAGE_SECONDS.labels(stage="match")
EMBED_SECONDS = STAGE_SECONDS.labels(stage="embed_batch")
EMBED_BATCH_SIZE = Histogram(
    "face_embed_batch_size", "Crops per embedding batch", buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32)
)
EMBED_QUEUE_DEPTH = Gauge("face_embed_queue_depth", "Crops waiting for the embed pool")
EMBEDDINGS_TOTAL = Counter("face_embeddings_total", "Embeddings computed")
EMBED_REFUSED = Counter(
    "face_embed_refused_total", "Crops refused because the embed queue was full"
)

# Events
FRAME_TO_EVENT = Histogram(
    "face_frame_to_event_seconds", "Frame arrival to event emission", buckets=_LAT_BUCKETS
)
EVENTS = Counter("face_events_total", "Events emitted", ["type"])
EVENTS_REMOTE = Counter(
    "face_events_remote_total", "Events received from other replicas over the shared bus"
)
SUBSCRIBERS = Gauge("face_event_subscribers", "Connected event subscribers")
SUBSCRIBERS_DROPPED = Counter(
    "face_event_subscribers_dropped_total", "Subscribers closed for being too slow"
)

# Gallery
GALLERY_IDENTITIES = Gauge("face_gallery_identities", "Identities matched against")
GALLERY_TEMPLATES = Gauge("face_gallery_templates", "Face templates matched against")

# Streams
STREAM_STATES = ("connecting", "live", "retrying", "stopped")
STREAM_STATE = Gauge("face_stream_state", "1 for the state a stream is in", ["stream", "state"])
STREAM_RECONNECTS = Counter("face_stream_reconnects_total", "Camera reconnects", ["stream"])
ACTIVE_TRACKS = Gauge("face_active_tracks", "Tracks alive", ["stream"])
CAMERA_FRAMES_DECODED = Counter(
    "face_camera_frames_decoded_total", "Frames decoded from a camera", ["stream"]
)
CAMERA_FRAMES_SKIPPED = Counter(
    "face_camera_frames_skipped_total",
    "Camera frames skipped before the slot by the stream's processing fps cap",
    ["stream"],
)


def set_stream_state(stream_id: str, state: str) -> None:
    """Mark ``state`` as the one a stream is in (1) and every other state 0."""
    if state not in STREAM_STATES:
        raise ValueError(f"unknown stream state {state!r}; one of {STREAM_STATES}")
    for name in STREAM_STATES:
        STREAM_STATE.labels(stream=stream_id, state=name).set(1 if name == state else 0)


def stream_opened(stream_id: str, state: str) -> None:
    """Export a new stream's series at once: its state, and counters at 0."""
    set_stream_state(stream_id, state)
    for metric in (FRAMES_RECEIVED, FRAMES_PROCESSED, FRAMES_DROPPED, STREAM_RECONNECTS):
        metric.labels(stream=stream_id)
    ACTIVE_TRACKS.labels(stream=stream_id)


def forget_stream(stream_id: str) -> None:
    """Drop a removed stream's series so labels stay bounded."""
    for metric in (
        FRAMES_RECEIVED,
        FRAMES_PROCESSED,
        FRAMES_DROPPED,
        STREAM_RECONNECTS,
        ACTIVE_TRACKS,
        CAMERA_FRAMES_DECODED,
        CAMERA_FRAMES_SKIPPED,
    ):
        with contextlib.suppress(KeyError):
            metric.remove(stream_id)
    for state in STREAM_STATES:
        with contextlib.suppress(KeyError):
            STREAM_STATE.remove(stream_id, state)
