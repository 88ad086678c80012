"""A gallery shared by every replica, kept in Redis.

Each write is one MULTI/EXEC transaction that also increments a revision
counter; every replica's matcher polls that counter (twice a second) and reloads
its matrix when it moved, so an enrolment or deletion on one replica is used by
all of them within a second. Durability is Redis's own (run it with
``appendonly yes``, as the shipped docker-compose and Kubernetes files do).

Keys, under a prefix (``face:g:`` by default):
``rev`` revision counter; ``ids`` sorted set of identity ids by creation time;
``ident:<id>`` hash (name, external_id, metadata, created_at);
``faces:<id>`` set of that identity's face ids; ``face:<fid>`` hash (identity_id,
model_id, embedding, crop_png, quality, box, source, created_at).
"""

from __future__ import annotations

import json
import time
import uuid

import numpy as np

from .store import FaceRecord, Identity, IdentityNotFound, NewFace, TemplateRows


class RedisGallery:
    def __init__(self, url: str, prefix: str = "face:g:") -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        self.p = prefix

    # -- keys ----------------------------------------------------------------
    def _k(self, *parts: str) -> str:
        return self.p + ":".join(parts)

    def revision(self) -> int:
        return int(self._redis.get(self._k("rev")) or 0)

    # -- identities ------------------------------------------------------------
    def _identity(self, ident_id: str, data: dict, face_count: int) -> Identity:
        d = {k.decode(): v.decode() for k, v in data.items()}
        return Identity(
            id=ident_id,
            name=d["name"],
            external_id=d.get("external_id") or None,
            metadata=json.loads(d.get("metadata") or "{}"),
            created_at=float(d["created_at"]),
            face_count=face_count,
        )

    def create_identity(
        self, name: str, external_id: str | None = None, metadata: dict | None = None
    ) -> Identity:
        ident_id = uuid.uuid4().hex
        now = time.time()
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(
            self._k("ident", ident_id),
            mapping={
                "name": name,
                "external_id": external_id or "",
                "metadata": json.dumps(metadata or {}),
                "created_at": repr(now),
            },
        )
        pipe.zadd(self._k("ids"), {ident_id: now})
        pipe.incr(self._k("rev"))
        pipe.execute()
        return Identity(ident_id, name, external_id, dict(metadata or {}), now, 0)

    def get_identity(self, identity_id: str) -> Identity:
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(self._k("ident", identity_id))
        pipe.scard(self._k("faces", identity_id))
        data, count = pipe.execute()
        if not data:
            raise IdentityNotFound(identity_id)
        return self._identity(identity_id, data, int(count))

    def _many(self, ids: list[str]) -> list[Identity]:
        pipe = self._redis.pipeline(transaction=False)
        for i in ids:
            pipe.hgetall(self._k("ident", i))
            pipe.scard(self._k("faces", i))
        out = pipe.execute()
        return [
            self._identity(i, out[2 * n], int(out[2 * n + 1]))
            for n, i in enumerate(ids)
            if out[2 * n]
        ]

    def find_by_name(self, name: str) -> Identity | None:
        ids = [i.decode() for i in self._redis.zrange(self._k("ids"), 0, -1)]
        for ident in self._many(ids):
            if ident.name == name:
                return ident
        return None

    def list_identities(self, offset: int = 0, limit: int = 100) -> tuple[list[Identity], int]:
        total = int(self._redis.zcard(self._k("ids")))
        if limit <= 0:
            return [], total
        ids = [i.decode() for i in self._redis.zrange(self._k("ids"), offset, offset + limit - 1)]
        return self._many(ids), total

    def update_identity(
        self,
        identity_id: str,
        name: str | None = None,
        external_id: str | None = None,
        metadata: dict | None = None,
    ) -> Identity:
        key = self._k("ident", identity_id)
        if not self._redis.exists(key):
            raise IdentityNotFound(identity_id)
        fields: dict[str, str] = {}
        if name is not None:
            fields["name"] = name
        if external_id is not None:
            fields["external_id"] = external_id
        if metadata is not None:
            fields["metadata"] = json.dumps(metadata)
        pipe = self._redis.pipeline(transaction=True)
        if fields:
            pipe.hset(key, mapping=fields)
        pipe.incr(self._k("rev"))
        pipe.execute()
        return self.get_identity(identity_id)

    def delete_identity(self, identity_id: str) -> None:
        key = self._k("ident", identity_id)
        face_ids = [f.decode() for f in self._redis.smembers(self._k("faces", identity_id))]
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(key)
        pipe.zrem(self._k("ids"), identity_id)
        pipe.delete(self._k("faces", identity_id))
        for fid in face_ids:
            pipe.delete(self._k("face", fid))
        pipe.incr(self._k("rev"))
        deleted = pipe.execute()[0]
        if not deleted:
            raise IdentityNotFound(identity_id)

    # -- faces -------------------------------------------------------------------
    def add_faces(self, identity_id: str, faces: list[NewFace]) -> list[FaceRecord]:
        if not self._redis.exists(self._k("ident", identity_id)):
            raise IdentityNotFound(identity_id)
        now = time.time()
        records: list[FaceRecord] = []
        pipe = self._redis.pipeline(transaction=True)
        for face in faces:
            if face.crop_png is None:
                raise ValueError("a face needs its aligned crop")
            fid = uuid.uuid4().hex
            pipe.hset(
                self._k("face", fid),
                mapping={
                    "identity_id": identity_id,
                    "model_id": face.model_id,
                    "embedding": np.asarray(face.embedding, np.float32).ravel().tobytes(),
                    "crop_png": face.crop_png,
                    "quality": repr(float(face.quality)),
                    "box": json.dumps(face.box),
                    "source": face.source,
                    "created_at": repr(now),
                },
            )
            pipe.sadd(self._k("faces", identity_id), fid)
            records.append(
                FaceRecord(
                    fid, identity_id, face.model_id, face.quality, face.box, face.source, now
                )
            )
        pipe.incr(self._k("rev"))
        pipe.execute()
        return records

    def _face_hashes(self, face_ids: list[str], fields: list[str]) -> list[list]:
        pipe = self._redis.pipeline(transaction=False)
        for fid in face_ids:
            pipe.hmget(self._k("face", fid), fields)
        return pipe.execute()

    def list_faces(self, identity_id: str) -> list[FaceRecord]:
        self.get_identity(identity_id)
        fids = sorted(f.decode() for f in self._redis.smembers(self._k("faces", identity_id)))
        fields = ["model_id", "quality", "box", "source", "created_at"]
        out = []
        for fid, row in zip(fids, self._face_hashes(fids, fields), strict=True):
            if row[0] is None:
                continue
            out.append(
                FaceRecord(
                    fid,
                    identity_id,
                    row[0].decode(),
                    float(row[1]),
                    json.loads(row[2]),
                    row[3].decode(),
                    float(row[4]),
                )
            )
        return sorted(out, key=lambda r: (r.created_at, r.id))

    def face_crop(self, identity_id: str, face_id: str) -> bytes:
        owner, png = self._redis.hmget(self._k("face", face_id), ["identity_id", "crop_png"])
        if owner is None or owner.decode() != identity_id:
            raise IdentityNotFound(face_id)
        return bytes(png)

    def delete_face(self, identity_id: str, face_id: str) -> None:
        owner = self._redis.hget(self._k("face", face_id), "identity_id")
        if owner is None or owner.decode() != identity_id:
            raise IdentityNotFound(face_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(self._k("face", face_id))
        pipe.srem(self._k("faces", identity_id), face_id)
        pipe.incr(self._k("rev"))
        pipe.execute()

    # -- matcher feed --------------------------------------------------------------
    def _all_faces(self, fields: list[str]) -> list[tuple[str, str, list]]:
        ids = [i.decode() for i in self._redis.zrange(self._k("ids"), 0, -1)]
        pipe = self._redis.pipeline(transaction=False)
        for i in ids:
            pipe.smembers(self._k("faces", i))
        pairs = [(i, f.decode()) for i, fids in zip(ids, pipe.execute(), strict=True) for f in fids]
        rows = self._face_hashes([f for _, f in pairs], fields)
        return [(i, f, row) for (i, f), row in zip(pairs, rows, strict=True) if row[0] is not None]

    def templates(self, model_id: str) -> TemplateRows:
        names = {i.id: i.name for i in self._many(self._all_ids())}
        ids: list[str] = []
        vecs: list[np.ndarray] = []
        for ident, _fid, row in sorted(self._all_faces(["model_id", "embedding"])):
            if row[0].decode() == model_id and ident in names:
                ids.append(ident)
                vecs.append(np.frombuffer(row[1], dtype=np.float32))
        if not ids:
            return TemplateRows([], {}, np.zeros((0, 512), np.float32))
        return TemplateRows(ids, {i: names[i] for i in ids}, np.stack(vecs))

    def _all_ids(self) -> list[str]:
        return [i.decode() for i in self._redis.zrange(self._k("ids"), 0, -1)]

    def model_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _i, _f, row in self._all_faces(["model_id"]):
            model = row[0].decode()
            counts[model] = counts.get(model, 0) + 1
        return counts

    def all_crops(self) -> list[tuple[str, bytes]]:
        return sorted(
            (f, bytes(row[1])) for _i, f, row in self._all_faces(["model_id", "crop_png"])
        )

    def replace_embeddings(self, model_id: str, embeddings: dict[str, np.ndarray]) -> None:
        pipe = self._redis.pipeline(transaction=True)
        for fid, emb in embeddings.items():
            pipe.hset(
                self._k("face", fid),
                mapping={
                    "embedding": np.asarray(emb, np.float32).ravel().tobytes(),
                    "model_id": model_id,
                },
            )
        pipe.incr(self._k("rev"))
        pipe.execute()

    def close(self) -> None:
        self._redis.close()
