"""Templates made by another embedding model are never matched against the live
one; the service says so (/ready, /recognize, the face list) until
``stream-server gallery reembed`` recomputes them from the stored crops."""

from __future__ import annotations

import argparse
import time

import numpy as np

from stream_server.gallery.store import NewFace
from stream_server.service import read_image_file

from .conftest import AUTH, api_client, enrol

OLD_MODEL = "w300k_old:0123456789ab"


def _names(client, photo) -> tuple[list[str | None], dict]:
    r = client.post("/recognize", files={"image": (photo.name, photo.read_bytes())}, headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    return [f["name"] for f in sorted(body["faces"], key=lambda f: f["box"]["x"])], body


def test_foreign_templates_are_not_matched_until_reembedded(service_factory, media_dir):
    from stream_server.cli import cmd_gallery

    service = service_factory()
    with api_client(service, rate_limit="off") as client:
        out = enrol(client, "obama", sorted((media_dir / "people" / "obama").iterdir()))
        assert out["response"].status_code == 201

        # Biden's faces as an older model left them: real crops, labelled with that model.
        biden = service.store.create_identity("biden")
        old_faces = []
        for photo in sorted((media_dir / "people" / "biden").iterdir()):
            face = service.analyse_still(read_image_file(photo))[0]
            stored = service.new_face(face, photo.name)
            old_faces.append(
                NewFace(
                    embedding=stored.embedding,
                    model_id=OLD_MODEL,
                    crop_png=stored.crop_png,
                    quality=stored.quality,
                    box=stored.box,
                    source=stored.source,
                )
            )
        # And one of another size altogether (a 128-d model): must not break the matcher.
        lin = service.analyse_still(read_image_file(media_dir / "lin-manuel-miranda.png"))[0]
        odd = np.random.default_rng(1).normal(size=128).astype(np.float32)
        ghost = service.store.create_identity("lin")
        service.store.add_faces(
            ghost.id, [NewFace(odd, "tiny128:ffffffffffff", lin.crop_png(), 0.9, [0, 0, 9, 9])]
        )
        service.store.add_faces(biden.id, old_faces)
        service.refresh_gallery()

        # Only the live model's rows are in the matcher.
        index = service.gallery.index
        assert index.identity_ids == [out["id"]] and index.matrix.shape == (2, 512)

        ready = client.get("/ready")
        assert ready.status_code == 200  # still serving; the others are just not matched
        warning = ready.json()["warnings"][0]
        assert "2 of w300k_old" in warning and "1 of tiny128" in warning
        assert "stream-server gallery reembed" in warning

        names, body = _names(client, media_dir / "two_people.jpg")
        assert names == ["obama", None]  # Biden is enrolled, but only under the old model
        assert body["warnings"] and "w300k_old" in body["warnings"][0]
        faces = client.get(f"/identities/{biden.id}/faces", headers=AUTH).json()["items"]
        assert [f["matchable"] for f in faces] == [False, False]
        assert {f["model_id"] for f in faces} == {OLD_MODEL}

        # The CLI command, as an operator runs it against the live server's data.
        settings = service.settings
        assert cmd_gallery(argparse.Namespace(gallery_cmd="reembed"), settings) == 0

        deadline = time.monotonic() + 5
        while client.get("/ready").json()["warnings"] and time.monotonic() < deadline:
            time.sleep(0.1)  # the server's watcher picks up the other process's write
        assert client.get("/ready").json()["warnings"] == []
        names, body = _names(client, media_dir / "two_people.jpg")
        assert names == ["obama", "biden"] and body["warnings"] == []
        faces = client.get(f"/identities/{biden.id}/faces", headers=AUTH).json()["items"]
        assert all(f["matchable"] and f["model_id"] == service.model_id for f in faces)
