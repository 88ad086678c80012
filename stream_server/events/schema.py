"""Versioned event schema: what subscribers receive, as JSON.

Every event carries the stream it belongs to and, where a frame caused it, that
frame's sequence number and media time, when it arrived, when the event left and
the difference in milliseconds.
"""

from __future__ import annotations

import time
import uuid
from functools import cached_property
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

SCHEMA_VERSION = 1


class EventBase(BaseModel):
    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    stream_id: str
    seq: int | None = Field(None, description="sequence number of the frame that caused it")
    pts: float | None = Field(None, description="media timestamp of that frame, seconds")
    arrived_at: float | None = Field(None, description="wall clock when the frame arrived")
    emitted_at: float = Field(default_factory=time.time, description="wall clock at emission")
    latency_ms: float | None = Field(None, description="frame arrival to event emission, ms")

    @cached_property
    def wire(self) -> str:
        """The event as JSON, serialised once however many subscribers receive it."""
        return self.model_dump_json()


class TrackStarted(EventBase):
    type: Literal["track.started"] = "track.started"
    track_id: int
    box: list[float]


class FaceMatched(EventBase):
    type: Literal["face.matched"] = "face.matched"
    track_id: int
    identity_id: str
    name: str
    similarity: float
    box: list[float]
    votes: int
    attempts: int


class FaceUnknown(EventBase):
    type: Literal["face.unknown"] = "face.unknown"
    track_id: int
    box: list[float]
    attempts: int
    best_similarity: float | None = None


class TrackEnded(EventBase):
    type: Literal["track.ended"] = "track.ended"
    track_id: int
    identity_id: str | None = None
    name: str | None = None


class StreamStatus(EventBase):
    type: Literal["stream.status"] = "stream.status"
    state: str
    previous: str | None = None
    detail: str | None = None


Event = Annotated[
    TrackStarted | FaceMatched | FaceUnknown | TrackEnded | StreamStatus,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
EVENT_TYPES = ("track.started", "face.matched", "face.unknown", "track.ended", "stream.status")


def parse_event(data: str | bytes | dict) -> EventBase:
    if isinstance(data, dict):
        return EVENT_ADAPTER.validate_python(data)
    return EVENT_ADAPTER.validate_json(data)
