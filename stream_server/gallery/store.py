"""What a gallery store is, whatever keeps it (SQLite by default)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


class IdentityNotFound(KeyError):
    """No identity (or face) with that id."""


class FaceNotFound(IdentityNotFound):
    """No face with that id under that identity."""


class _Unset:
    """Marks an argument that was not given (as opposed to an explicit None)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True)
class Identity:
    id: str
    name: str
    external_id: str | None
    metadata: dict[str, Any]
    created_at: float
    face_count: int = 0


@dataclass(frozen=True)
class NewFace:
    """A face to store: its embedding, the model that made it, and the aligned crop."""

    embedding: np.ndarray
    model_id: str
    crop_png: bytes
    quality: float
    box: list[float]
    source: str = ""


@dataclass(frozen=True)
class FaceRecord:
    id: str
    identity_id: str
    model_id: str
    quality: float
    box: list[float]
    source: str
    created_at: float


@dataclass(frozen=True)
class TemplateRows:
    """Every stored embedding of one model, as the matcher needs them."""

    identity_ids: list[str]
    names: dict[str, str]
    matrix: np.ndarray = field(default_factory=lambda: np.zeros((0, 512), np.float32))


class GalleryStore(Protocol):
    """Identities and their face templates. Every method is safe from any thread."""

    def revision(self) -> int: ...

    def create_identity(
        self, name: str, external_id: str | None = None, metadata: dict | None = None
    ) -> Identity: ...

    def get_identity(self, identity_id: str) -> Identity: ...

    def find_by_name(self, name: str) -> Identity | None: ...

    def list_identities(self, offset: int = 0, limit: int = 100) -> tuple[list[Identity], int]: ...

    def update_identity(
        self,
        identity_id: str,
        name: str | None = None,
        external_id: str | None = UNSET,
        metadata: dict | None = None,
    ) -> Identity:
        """Change the fields given; ``external_id=None`` clears it, leaving it out keeps it."""
        ...

    def delete_identity(self, identity_id: str) -> None: ...

    def add_faces(self, identity_id: str, faces: list[NewFace]) -> list[FaceRecord]: ...

    def list_faces(self, identity_id: str) -> list[FaceRecord]: ...

    def face_crop(self, identity_id: str, face_id: str) -> bytes: ...

    def delete_face(self, identity_id: str, face_id: str) -> None: ...

    def templates(self, model_id: str) -> TemplateRows: ...

    def model_counts(self) -> dict[str, int]: ...

    def all_crops(self) -> list[tuple[str, bytes]]: ...

    def replace_embeddings(self, model_id: str, embeddings: dict[str, np.ndarray]) -> None: ...

    def close(self) -> None: ...
