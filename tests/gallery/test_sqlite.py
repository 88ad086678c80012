import sqlite3

import numpy as np
import pytest

from stream_server.gallery.index import GalleryIndex, LiveGallery
from stream_server.gallery.sqlite import SQLiteGallery
from stream_server.gallery.store import IdentityNotFound, NewFace, TemplateRows


def unit(seed, dim=512):
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def face(vec, model="m1"):
    return NewFace(vec, model, b"\x89PNG fake", 0.8, [1.0, 2.0, 3.0, 4.0], "test.jpg")


@pytest.fixture
def store(tmp_path):
    s = SQLiteGallery(tmp_path / "g.sqlite3")
    yield s
    s.close()


def test_identities_crud_and_paging(store):
    ids = [
        store.create_identity(f"p{i}", external_id=f"x{i}", metadata={"i": i}).id for i in range(5)
    ]
    page, total = store.list_identities(offset=1, limit=2)
    assert total == 5 and [p.id for p in page] == ids[1:3]
    updated = store.update_identity(ids[0], name="renamed", metadata={"k": "v"})
    assert (
        updated.name == "renamed" and updated.metadata == {"k": "v"} and updated.external_id == "x0"
    )
    store.delete_identity(ids[0])
    with pytest.raises(IdentityNotFound):
        store.get_identity(ids[0])
    with pytest.raises(IdentityNotFound):
        store.delete_identity(ids[0])


def test_faces_are_stored_with_model_and_crop_and_deleted_with_their_identity(store):
    ident = store.create_identity("ann")
    recs = store.add_faces(ident.id, [face(unit(1)), face(unit(2))])
    assert store.get_identity(ident.id).face_count == 2
    assert {r.model_id for r in recs} == {"m1"}
    assert store.face_crop(ident.id, recs[0].id) == b"\x89PNG fake"
    store.delete_identity(ident.id)
    assert store.templates("m1").matrix.shape[0] == 0
    assert store.all_crops() == []


def test_a_failed_enrolment_leaves_nothing(store):
    ident = store.create_identity("ann")
    before = store.revision()
    bad = NewFace(unit(3), "m1", None, 0.5, [0, 0, 1, 1])  # NOT NULL crop: the insert fails
    with pytest.raises(sqlite3.IntegrityError):
        store.add_faces(ident.id, [face(unit(1)), bad])
    assert store.list_faces(ident.id) == []
    assert store.revision() == before


def test_templates_only_for_the_asked_model(store):
    ident = store.create_identity("ann")
    store.add_faces(ident.id, [face(unit(1), "m1"), face(unit(2), "m2")])
    assert store.templates("m1").matrix.shape == (1, 512)
    assert store.model_counts() == {"m1": 1, "m2": 1}


def test_gallery_survives_reopening(tmp_path):
    path = tmp_path / "g.sqlite3"
    s = SQLiteGallery(path)
    ident = s.create_identity("ann")
    s.add_faces(ident.id, [face(unit(1))])
    s.close()
    s2 = SQLiteGallery(path)
    assert s2.get_identity(ident.id).face_count == 1
    np.testing.assert_allclose(s2.templates("m1").matrix[0], unit(1), rtol=1e-6)
    s2.close()


def test_index_ranks_identities_by_their_best_template(store):
    a = store.create_identity("a")
    b = store.create_identity("b")
    probe = unit(10)
    near = probe + 0.3 * unit(11)
    store.add_faces(a.id, [face(unit(20)), face(near / np.linalg.norm(near))])
    store.add_faces(b.id, [face(unit(21)), face(unit(22)), face(unit(23))])
    idx = GalleryIndex.build(store.templates("m1"), store.revision())
    match = idx.search(probe)
    assert match.best.identity_id == a.id and match.best.similarity > 0.9
    assert match.runner_up.identity_id == b.id  # runner-up is another person, not a's other face
    assert idx.similarity_to(probe, a.id) == pytest.approx(match.best.similarity)
    assert idx.similarity_to(probe, "nobody") is None


def test_empty_index_matches_nobody():
    idx = GalleryIndex.build(TemplateRows([], {}))
    assert idx.search(unit(1)).best is None


def test_live_gallery_sees_writes_from_another_connection(tmp_path):
    path = tmp_path / "g.sqlite3"
    s1 = SQLiteGallery(path)
    live = LiveGallery(s1, "m1")
    assert live.index.size == 0
    s2 = SQLiteGallery(path)  # e.g. the CLI enrolling while the server runs
    ident = s2.create_identity("ann")
    s2.add_faces(ident.id, [face(unit(1))])
    assert live.refresh_if_changed()
    assert live.search(unit(1)).best.name == "ann"
    assert not live.refresh_if_changed()
    s1.close()
    s2.close()
