"""Request and response bodies of the gallery and recognition endpoints.

Each carries an example, so ``/docs`` shows what a call looks like.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..gallery.store import FaceRecord, Identity
from ..types import Box

MAX_METADATA_BYTES = 16 * 1024
_EXAMPLE_ID = "6f1c2d8e9a0b4c3d8e7f6a5b4c3d2e1f"
_EXAMPLE_FACE = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"


def _ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC)


# -- identities -----------------------------------------------------------------
def _check_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return value
    size = len(json.dumps(value, ensure_ascii=False).encode())
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is {size} bytes as JSON; at most {MAX_METADATA_BYTES}")
    return value


def _check_name(value: str | None) -> str | None:
    if value is None:
        return value
    text = value.strip()
    if not text:
        raise ValueError("name must not be blank")
    if any(ord(c) < 32 for c in text):
        raise ValueError("name must not contain control characters")
    return text


class IdentityCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "Rose Leslie", "external_id": "staff-0042", "metadata": {"team": "a"}}
            ]
        },
    )

    name: str = Field(min_length=1, max_length=200, description="The person's display name.")
    external_id: str | None = Field(
        default=None, max_length=200, description="Your own id for the person (optional)."
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Free JSON object, at most 16 KB."
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str | None) -> str | None:
        return _check_name(value)

    @field_validator("metadata")
    @classmethod
    def _valid_metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _check_metadata(value)


class IdentityUpdate(BaseModel):
    """Only the fields given change; ``external_id: null`` clears it; ``metadata``
    replaces the whole object."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "Rose Leslie", "metadata": {"team": "b"}}]},
    )

    name: str | None = Field(default=None, min_length=1, max_length=200)
    external_id: str | None = Field(default=None, max_length=200)
    metadata: dict[str, Any] | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str | None) -> str | None:
        return _check_name(value)

    @field_validator("metadata")
    @classmethod
    def _valid_metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _check_metadata(value)


class IdentityOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": _EXAMPLE_ID,
                    "name": "Rose Leslie",
                    "external_id": "staff-0042",
                    "metadata": {"team": "a"},
                    "created_at": "2025-01-31T09:30:00Z",
                    "face_count": 2,
                }
            ]
        }
    )

    id: str
    name: str
    external_id: str | None
    metadata: dict[str, Any]
    created_at: datetime
    face_count: int = Field(description="Faces stored for this identity.")

    @classmethod
    def of(cls, ident: Identity) -> IdentityOut:
        return cls(
            id=ident.id,
            name=ident.name,
            external_id=ident.external_id,
            metadata=ident.metadata,
            created_at=_ts(ident.created_at),
            face_count=ident.face_count,
        )


class IdentityPage(BaseModel):
    items: list[IdentityOut]
    total: int = Field(description="Identities in the gallery.")
    offset: int
    limit: int


# -- faces ----------------------------------------------------------------------
class BoxOut(BaseModel):
    """A face's box in pixels of the uploaded image: top-left corner, width, height."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"x": 602.0, "y": 108.0, "w": 283.0, "h": 283.0}]}
    )

    x: float
    y: float
    w: float
    h: float

    @classmethod
    def of(cls, box: Box | list[float]) -> BoxOut:
        x, y, w, h = box.as_list() if isinstance(box, Box) else box
        return cls(x=x, y=y, w=w, h=h)


class FaceOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": _EXAMPLE_FACE,
                    "identity_id": _EXAMPLE_ID,
                    "model_id": "w600k_mbf:bf6d8364fc64",
                    "matchable": True,
                    "quality": 0.87,
                    "box": {"x": 602.0, "y": 108.0, "w": 283.0, "h": 283.0},
                    "source": "img1.jpg",
                    "created_at": "2025-01-31T09:31:00Z",
                    "thumbnail_url": f"/identities/{_EXAMPLE_ID}/faces/{_EXAMPLE_FACE}/thumbnail",
                }
            ]
        }
    )

    id: str
    identity_id: str
    model_id: str = Field(description="The embedding model that made this face's template.")
    matchable: bool = Field(
        description="False when the template was made by another model than the live one "
        "(run `stream-server gallery reembed`)."
    )
    quality: float
    box: BoxOut
    source: str = Field(description="The uploaded file's name, as the client sent it.")
    created_at: datetime
    thumbnail_url: str

    @classmethod
    def of(cls, face: FaceRecord, live_model: str) -> FaceOut:
        return cls(
            id=face.id,
            identity_id=face.identity_id,
            model_id=face.model_id,
            matchable=face.model_id == live_model,
            quality=round(float(face.quality), 4),
            box=BoxOut.of(face.box),
            source=face.source,
            created_at=_ts(face.created_at),
            thumbnail_url=f"/identities/{face.identity_id}/faces/{face.id}/thumbnail",
        )


class FaceList(BaseModel):
    identity_id: str
    items: list[FaceOut]


class ImageResult(BaseModel):
    """What became of one uploaded image."""

    index: int = Field(description="Position of the file in the upload (0-based).")
    filename: str | None
    status: Literal["stored", "refused", "not_stored"] = Field(
        description="stored; refused (see error); not_stored: the face was good but "
        "nothing was stored because another image was refused (all-or-nothing)."
    )
    faces_found: int = 0
    face_id: str | None = None
    box: BoxOut | None = None
    quality: float | None = None
    error: str | None = Field(default=None, description="Why the image was refused.")


_ENROL_EXAMPLE = {
    "identity_id": _EXAMPLE_ID,
    "stored": 1,
    "refused": 1,
    "results": [
        {
            "index": 0,
            "filename": "img1.jpg",
            "status": "stored",
            "faces_found": 1,
            "face_id": _EXAMPLE_FACE,
            "box": {"x": 602.0, "y": 108.0, "w": 283.0, "h": 283.0},
            "quality": 0.87,
            "error": None,
        },
        {
            "index": 1,
            "filename": "group.jpg",
            "status": "refused",
            "faces_found": 3,
            "face_id": None,
            "box": None,
            "quality": None,
            "error": "3 faces found: send one face per image, or largest_face=true",
        },
    ],
}


class EnrolResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_ENROL_EXAMPLE]})

    identity_id: str
    stored: int
    refused: int
    results: list[ImageResult]


class EnrolRefused(BaseModel):
    """422 body when images were refused and nothing was stored."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": "images_refused",
                    "detail": "1 of 2 images refused; nothing stored "
                    "(keep_good=true stores the good ones)",
                    "identity_id": _EXAMPLE_ID,
                    "stored": 0,
                    "refused": 1,
                    "results": [],
                }
            ]
        }
    )

    error: str
    detail: Any
    identity_id: str | None = None
    stored: int | None = None
    refused: int | None = None
    results: list[ImageResult] | None = None


# -- compare and recognise ------------------------------------------------------
class ComparedFace(BaseModel):
    box: BoxOut
    quality: float
    faces_found: int = Field(description="Faces detected in that image.")


class CompareResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "similarity": 0.6361,
                    "same_person": True,
                    "threshold": 0.3,
                    "model_id": "w600k_mbf:bf6d8364fc64",
                    "face_a": {
                        "box": {"x": 602.0, "y": 108.0, "w": 283.0, "h": 283.0},
                        "quality": 0.87,
                        "faces_found": 1,
                    },
                    "face_b": {
                        "box": {"x": 153.0, "y": 153.0, "w": 299.0, "h": 299.0},
                        "quality": 0.85,
                        "faces_found": 1,
                    },
                }
            ]
        }
    )

    similarity: float = Field(description="Cosine similarity of the two faces, -1..1.")
    same_person: bool = Field(description="similarity >= threshold")
    threshold: float
    model_id: str
    face_a: ComparedFace
    face_b: ComparedFace


class RecognizedFace(BaseModel):
    box: BoxOut
    quality: float
    known: bool = Field(description="True when the face was matched to an identity.")
    identity_id: str | None = Field(description="The matched identity, null when unknown.")
    name: str | None
    similarity: float | None = Field(
        description="Similarity to the best identity in the gallery (also when below the "
        "threshold); null when the gallery is empty."
    )


class RecognizeResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "faces": [
                        {
                            "box": {"x": 245.0, "y": 95.0, "w": 106.0, "h": 106.0},
                            "quality": 0.6,
                            "known": True,
                            "identity_id": _EXAMPLE_ID,
                            "name": "kit_harington",
                            "similarity": 0.58,
                        },
                        {
                            "box": {"x": 76.0, "y": 125.0, "w": 88.0, "h": 88.0},
                            "quality": 0.73,
                            "known": False,
                            "identity_id": None,
                            "name": None,
                            "similarity": 0.12,
                        },
                    ],
                    "faces_found": 2,
                    "threshold": 0.3,
                    "margin": 0.05,
                    "model_id": "w600k_mbf:bf6d8364fc64",
                    "gallery_identities": 5,
                    "image": {"width": 501, "height": 700},
                    "warnings": [],
                }
            ]
        }
    )

    faces: list[RecognizedFace] = Field(description="Largest face first.")
    faces_found: int = Field(description="Faces detected (more than listed if over max_faces).")
    threshold: float
    margin: float = Field(
        description="A face is named only when its best identity is ahead of the "
        "runner-up by at least this much."
    )
    model_id: str
    gallery_identities: int
    image: dict[str, int]
    warnings: list[str] = Field(
        default_factory=list,
        description="E.g. gallery templates of another model that were not matched.",
    )
