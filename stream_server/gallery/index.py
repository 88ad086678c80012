"""Cosine search over the gallery's templates, as one matrix product."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np

from ..types import Candidate, Match
from .store import GalleryStore, TemplateRows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GalleryIndex:
    """An immutable snapshot: rows grouped by identity, unit-length embeddings."""

    matrix: np.ndarray  # (N, D) float32
    identity_ids: list[str]  # one per identity, in group order
    names: dict[str, str]
    group_starts: np.ndarray  # start row of each identity's group
    revision: int = -1

    @classmethod
    def build(cls, rows: TemplateRows, revision: int = -1) -> GalleryIndex:
        if not rows.identity_ids:
            return cls(np.zeros((0, 512), np.float32), [], {}, np.zeros(0, np.int64), revision)
        order = np.argsort(np.asarray(rows.identity_ids), kind="stable")
        ids_sorted = [rows.identity_ids[i] for i in order]
        matrix = rows.matrix[order].astype(np.float32)
        matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        starts: list[int] = []
        groups: list[str] = []
        for i, ident in enumerate(ids_sorted):
            if not groups or groups[-1] != ident:
                groups.append(ident)
                starts.append(i)
        return cls(matrix, groups, dict(rows.names), np.asarray(starts, np.int64), revision)

    @property
    def size(self) -> int:
        return len(self.identity_ids)

    def search_many(self, embeddings: np.ndarray) -> list[Match]:
        """Best and runner-up identity for each (D,) row of ``embeddings``."""
        emb = np.atleast_2d(np.asarray(embeddings, np.float32))
        if self.matrix.shape[0] == 0:
            return [Match(None, None) for _ in range(emb.shape[0])]
        sims = emb @ self.matrix.T  # (B, N)
        per_identity = np.maximum.reduceat(sims, self.group_starts, axis=1)  # (B, I)
        out: list[Match] = []
        for row in per_identity:
            order = np.argsort(row)[::-1][:2]
            cands = [
                Candidate(self.identity_ids[j], self.names[self.identity_ids[j]], float(row[j]))
                for j in order
            ]
            out.append(Match(cands[0], cands[1] if len(cands) > 1 else None))
        return out

    def search(self, embedding: np.ndarray) -> Match:
        return self.search_many(embedding)[0]

    def similarity_to(self, embedding: np.ndarray, identity_id: str) -> float | None:
        """Best similarity of ``embedding`` to one identity's templates (None if absent)."""
        try:
            g = self.identity_ids.index(identity_id)
        except ValueError:
            return None
        start = int(self.group_starts[g])
        end = int(self.group_starts[g + 1]) if g + 1 < len(self.group_starts) else None
        rows = self.matrix[start:end]
        return float((rows @ np.asarray(embedding, np.float32).ravel()).max())


class LiveGallery:
    """The store plus the current index for one embedding model.

    Mutations through this object refresh the index at once; ``refresh_if_changed``
    (called by a watcher about twice a second) picks up writes by other processes.
    """

    def __init__(self, store: GalleryStore, model_id: str) -> None:
        self.store = store
        self.model_id = model_id
        self._lock = threading.Lock()
        self._index = GalleryIndex.build(TemplateRows([], {}), -1)
        # Stored templates made by other embedding models: never matched against this one.
        self.foreign_models: dict[str, int] = {}
        self.refresh()

    @property
    def index(self) -> GalleryIndex:
        return self._index

    def refresh(self) -> GalleryIndex:
        with self._lock:
            revision = self.store.revision()
            index = GalleryIndex.build(self.store.templates(self.model_id), revision)
            self._index = index
        foreign = {m: n for m, n in self.store.model_counts().items() if m != self.model_id}
        changed = foreign != self.foreign_models
        self.foreign_models = foreign
        if foreign and changed:
            log.warning(
                "gallery holds embeddings of other models %s, not matched against %s; "
                "run `stream-server gallery reembed`",
                foreign,
                self.model_id,
            )
        return index

    def foreign_warning(self) -> str | None:
        """What to tell users when stored templates of other models are ignored."""
        if not self.foreign_models:
            return None
        parts = ", ".join(f"{n} of {m}" for m, n in sorted(self.foreign_models.items()))
        return (
            f"the gallery holds face templates made by another embedding model ({parts}); "
            f"they are not matched against the live model {self.model_id}. "
            "Run `stream-server gallery reembed` to recompute them."
        )

    def refresh_if_changed(self) -> bool:
        if self.store.revision() != self._index.revision:
            self.refresh()
            return True
        return False

    def search(self, embedding: np.ndarray) -> Match:
        return self._index.search(embedding)

    def search_many(self, embeddings: np.ndarray) -> list[Match]:
        return self._index.search_many(embeddings)
