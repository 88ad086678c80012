"""The embedded gallery: one SQLite file under FACE_DATA_DIR.

Every write is one transaction (WAL journal, synchronous=FULL), so a crash or a
``kill -9`` leaves either all of an enrolment or none of it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from .store import (
    UNSET,
    FaceNotFound,
    FaceRecord,
    Identity,
    IdentityNotFound,
    NewFace,
    TemplateRows,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS identities (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    external_id TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS faces (
    id TEXT PRIMARY KEY,
    identity_id TEXT NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    model_id TEXT NOT NULL,
    embedding BLOB NOT NULL,
    crop_png BLOB NOT NULL,
    quality REAL NOT NULL,
    box TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS faces_identity ON faces(identity_id);
CREATE INDEX IF NOT EXISTS faces_model ON faces(model_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta(key, value) VALUES ('revision', 0);
"""


class SQLiteGallery:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=30
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._db.executescript(_SCHEMA)

    # -- helpers -----------------------------------------------------------
    def _tx(self):
        return _Transaction(self._db, self._lock)

    @staticmethod
    def _bump(db: sqlite3.Connection) -> None:
        db.execute("UPDATE meta SET value = value + 1 WHERE key = 'revision'")

    def _identity_row(self, row) -> Identity:
        return Identity(
            id=row[0],
            name=row[1],
            external_id=row[2],
            metadata=json.loads(row[3] or "{}"),
            created_at=row[4],
            face_count=row[5],
        )

    _SELECT_IDENTITY = (
        "SELECT i.id, i.name, i.external_id, i.metadata, i.created_at, "
        "(SELECT COUNT(*) FROM faces f WHERE f.identity_id = i.id) FROM identities i"
    )

    # -- identities --------------------------------------------------------
    def revision(self) -> int:
        with self._lock:
            return int(
                self._db.execute("SELECT value FROM meta WHERE key='revision'").fetchone()[0]
            )

    def create_identity(
        self, name: str, external_id: str | None = None, metadata: dict | None = None
    ) -> Identity:
        ident_id = uuid.uuid4().hex
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO identities(id, name, external_id, metadata, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (ident_id, name, external_id, json.dumps(metadata or {}), now),
            )
            self._bump(db)
        return Identity(ident_id, name, external_id, dict(metadata or {}), now, 0)

    def get_identity(self, identity_id: str) -> Identity:
        with self._lock:
            row = self._db.execute(
                self._SELECT_IDENTITY + " WHERE i.id = ?", (identity_id,)
            ).fetchone()
        if row is None:
            raise IdentityNotFound(identity_id)
        return self._identity_row(row)

    def find_by_name(self, name: str) -> Identity | None:
        with self._lock:
            row = self._db.execute(
                self._SELECT_IDENTITY + " WHERE i.name = ? ORDER BY i.created_at LIMIT 1", (name,)
            ).fetchone()
        return self._identity_row(row) if row else None

    def list_identities(self, offset: int = 0, limit: int = 100) -> tuple[list[Identity], int]:
        with self._lock:
            total = int(self._db.execute("SELECT COUNT(*) FROM identities").fetchone()[0])
            rows = self._db.execute(
                self._SELECT_IDENTITY + " ORDER BY i.created_at, i.id LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
        return [self._identity_row(r) for r in rows], total

    def update_identity(
        self,
        identity_id: str,
        name: str | None = None,
        external_id: str | None = UNSET,
        metadata: dict | None = None,
    ) -> Identity:
        """Change the fields given; ``external_id=None`` clears it, leaving it out keeps it."""
        with self._tx() as db:
            if db.execute("SELECT 1 FROM identities WHERE id=?", (identity_id,)).fetchone() is None:
                raise IdentityNotFound(identity_id)
            if name is not None:
                db.execute("UPDATE identities SET name=? WHERE id=?", (name, identity_id))
            if external_id is not UNSET:
                db.execute(
                    "UPDATE identities SET external_id=? WHERE id=?", (external_id, identity_id)
                )
            if metadata is not None:
                db.execute(
                    "UPDATE identities SET metadata=? WHERE id=?",
                    (json.dumps(metadata), identity_id),
                )
            self._bump(db)
        return self.get_identity(identity_id)

    def delete_identity(self, identity_id: str) -> None:
        with self._tx() as db:
            cur = db.execute("DELETE FROM identities WHERE id=?", (identity_id,))
            if cur.rowcount == 0:
                raise IdentityNotFound(identity_id)
            self._bump(db)

    # -- faces -------------------------------------------------------------
    def add_faces(self, identity_id: str, faces: list[NewFace]) -> list[FaceRecord]:
        now = time.time()
        records: list[FaceRecord] = []
        with self._tx() as db:
            if db.execute("SELECT 1 FROM identities WHERE id=?", (identity_id,)).fetchone() is None:
                raise IdentityNotFound(identity_id)
            for face in faces:
                face_id = uuid.uuid4().hex
                emb = np.asarray(face.embedding, dtype=np.float32).ravel()
                db.execute(
                    "INSERT INTO faces(id, identity_id, model_id, embedding, crop_png, quality, "
                    "box, source, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        face_id,
                        identity_id,
                        face.model_id,
                        emb.tobytes(),
                        face.crop_png,
                        float(face.quality),
                        json.dumps(face.box),
                        face.source,
                        now,
                    ),
                )
                records.append(
                    FaceRecord(
                        face_id,
                        identity_id,
                        face.model_id,
                        face.quality,
                        face.box,
                        face.source,
                        now,
                    )
                )
            self._bump(db)
        return records

    def list_faces(self, identity_id: str) -> list[FaceRecord]:
        self.get_identity(identity_id)
        with self._lock:
            rows = self._db.execute(
                "SELECT id, identity_id, model_id, quality, box, source, created_at FROM faces "
                "WHERE identity_id=? ORDER BY created_at, id",
                (identity_id,),
            ).fetchall()
        return [FaceRecord(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]

    def face_crop(self, identity_id: str, face_id: str) -> bytes:
        with self._lock:
            row = self._db.execute(
                "SELECT crop_png FROM faces WHERE id=? AND identity_id=?", (face_id, identity_id)
            ).fetchone()
        if row is None:
            raise FaceNotFound(face_id)
        return bytes(row[0])

    def delete_face(self, identity_id: str, face_id: str) -> None:
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM faces WHERE id=? AND identity_id=?", (face_id, identity_id)
            )
            if cur.rowcount == 0:
                raise FaceNotFound(face_id)
            self._bump(db)

    # -- matcher feed ------------------------------------------------------
    def templates(self, model_id: str) -> TemplateRows:
        with self._lock:
            rows = self._db.execute(
                "SELECT f.identity_id, i.name, f.embedding FROM faces f "
                "JOIN identities i ON i.id = f.identity_id WHERE f.model_id=? "
                "ORDER BY f.identity_id, f.id",
                (model_id,),
            ).fetchall()
        if not rows:
            return TemplateRows([], {}, np.zeros((0, 512), np.float32))
        ids = [r[0] for r in rows]
        names = {r[0]: r[1] for r in rows}
        matrix = np.stack([np.frombuffer(r[2], dtype=np.float32) for r in rows])
        return TemplateRows(ids, names, matrix)

    def model_counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT model_id, COUNT(*) FROM faces GROUP BY model_id"
            ).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def all_crops(self) -> list[tuple[str, bytes]]:
        with self._lock:
            rows = self._db.execute("SELECT id, crop_png FROM faces ORDER BY id").fetchall()
        return [(r[0], bytes(r[1])) for r in rows]

    def replace_embeddings(self, model_id: str, embeddings: dict[str, np.ndarray]) -> None:
        with self._tx() as db:
            for face_id, emb in embeddings.items():
                db.execute(
                    "UPDATE faces SET embedding=?, model_id=? WHERE id=?",
                    (np.asarray(emb, np.float32).ravel().tobytes(), model_id, face_id),
                )
            self._bump(db)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _Transaction:
    def __init__(self, db: sqlite3.Connection, lock: threading.RLock) -> None:
        self._db = db
        self._lock = lock

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._db.execute("COMMIT")
            else:
                self._db.execute("ROLLBACK")
        finally:
            self._lock.release()
