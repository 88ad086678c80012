"""The gallery endpoints: identities, faces, enrolment options, thumbnails, and the
live matcher following every change at once."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from .conftest import AUTH, api_client, enrol, files_field, load_rgb, png


@pytest.fixture(scope="module")
def service(service_factory):
    return service_factory()


@pytest.fixture(scope="module")
def client(service):
    with api_client(service, rate_limit="off") as c:
        yield c


def _count_rows(service) -> dict[str, int]:
    counts = service.store.model_counts()
    return {"faces": sum(counts.values()), "crops": len(service.store.all_crops())}


def test_identity_crud_and_paging(client):
    created = []
    for i in range(5):
        r = client.post(
            "/identities",
            json={"name": f"  Person {i} ", "external_id": f"ext-{i}", "metadata": {"n": i}},
            headers=AUTH,
        )
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["name"] == f"Person {i}"  # trimmed
        assert body["face_count"] == 0 and body["metadata"] == {"n": i}
        created.append(body["id"])

    page = client.get("/identities", params={"offset": 1, "limit": 2}, headers=AUTH).json()
    assert page["offset"] == 1 and page["limit"] == 2
    assert page["total"] >= 5 and len(page["items"]) == 2
    everything = client.get("/identities", params={"limit": 500}, headers=AUTH).json()["items"]
    ids = [i["id"] for i in everything]
    assert ids[1:3] == [i["id"] for i in page["items"]]
    assert all(c in ids for c in created)
    beyond = client.get("/identities", params={"offset": 10_000}, headers=AUTH).json()
    assert beyond["items"] == [] and beyond["total"] == page["total"]

    one = created[0]
    assert client.get(f"/identities/{one}", headers=AUTH).json()["external_id"] == "ext-0"
    r = client.patch(
        f"/identities/{one}", json={"name": "Renamed", "metadata": {"k": "v"}}, headers=AUTH
    )
    assert r.status_code == 200
    assert r.json()["name"] == "Renamed" and r.json()["metadata"] == {"k": "v"}
    assert r.json()["external_id"] == "ext-0"  # not given: kept
    r = client.patch(f"/identities/{one}", json={"external_id": None}, headers=AUTH)
    assert r.json()["external_id"] is None and r.json()["name"] == "Renamed"

    assert client.delete(f"/identities/{one}", headers=AUTH).status_code == 204
    r = client.get(f"/identities/{one}", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert client.delete(f"/identities/{one}", headers=AUTH).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 201},
        {"name": "ok", "surprise": 1},
        {"name": "ok", "metadata": {"blob": "x" * 20_000}},
        {"name": "ok", "metadata": [1, 2]},
        {"name": "line\nbreak"},
    ],
)
def test_identity_validation(client, body):
    before = client.get("/identities", headers=AUTH).json()["total"]
    r = client.post("/identities", json=body, headers=AUTH)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_request"
    assert client.get("/identities", headers=AUTH).json()["total"] == before


def test_patch_refuses_nulls_and_unknown_ids(client):
    ident = client.post("/identities", json={"name": "Nully"}, headers=AUTH).json()["id"]
    assert (
        client.patch(f"/identities/{ident}", json={"name": None}, headers=AUTH).status_code == 422
    )
    assert (
        client.patch(f"/identities/{ident}", json={"metadata": None}, headers=AUTH).status_code
        == 422
    )
    assert client.patch("/identities/nope", json={"name": "x"}, headers=AUTH).status_code == 404


def test_enrol_lists_faces_and_thumbnails(client, service, media_dir):
    photos = sorted((media_dir / "people" / "rose_leslie").iterdir())
    out = enrol(client, "rose_leslie", photos)
    r = out["response"]
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["stored"] == 2 and body["refused"] == 0
    for res, photo in zip(body["results"], photos, strict=True):
        assert res["filename"] == photo.name and res["faces_found"] == 1
        assert res["quality"] > 0.3 and res["box"]["w"] > 100

    faces = client.get(f"/identities/{out['id']}/faces", headers=AUTH).json()["items"]
    assert {f["id"] for f in faces} == {res["face_id"] for res in body["results"]}
    assert all(f["matchable"] and f["model_id"] == service.model_id for f in faces)
    ident = client.get(f"/identities/{out['id']}", headers=AUTH).json()
    assert ident["face_count"] == 2

    r = client.get(faces[0]["thumbnail_url"], headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    thumb = Image.open(io.BytesIO(r.content))
    assert thumb.format == "PNG" and thumb.size == (112, 112)

    other = client.post("/identities", json={"name": "Other"}, headers=AUTH).json()["id"]
    # A face id under the wrong identity is not found.
    r = client.get(f"/identities/{other}/faces/{faces[0]['id']}/thumbnail", headers=AUTH)
    assert r.status_code == 404


def test_all_or_nothing_and_keep_good(client, service, media_dir):
    good = media_dir / "people" / "biden" / "biden2.jpg"
    no_face = png(load_rgb(media_dir / "biden.jpg")[1200:1800, 100:700])
    ident = client.post("/identities", json={"name": "biden"}, headers=AUTH).json()["id"]
    revision = service.store.revision()
    files = files_field("files", good) + [("files", ("jacket.png", no_face, "image/png"))]

    r = client.post(f"/identities/{ident}/faces", files=files, headers=AUTH)
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "images_refused" and body["stored"] == 0 and body["refused"] == 1
    assert [res["status"] for res in body["results"]] == ["not_stored", "refused"]
    assert body["results"][1]["error"] == "no face found"
    assert "jacket.png" in body["detail"]
    assert service.store.revision() == revision  # nothing written at all
    assert client.get(f"/identities/{ident}", headers=AUTH).json()["face_count"] == 0

    r = client.post(
        f"/identities/{ident}/faces", files=files, params={"keep_good": "true"}, headers=AUTH
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["stored"] == 1 and body["refused"] == 1
    assert [res["status"] for res in body["results"]] == ["stored", "refused"]
    assert client.get(f"/identities/{ident}", headers=AUTH).json()["face_count"] == 1

    # keep_good with nothing good: still a refusal.
    r = client.post(
        f"/identities/{ident}/faces",
        files=[("files", ("jacket.png", no_face, "image/png"))],
        params={"keep_good": "true"},
        headers=AUTH,
    )
    assert r.status_code == 422


def test_largest_face_option(client, media_dir):
    ident = client.post("/identities", json={"name": "group"}, headers=AUTH).json()["id"]
    files = files_field("files", media_dir / "two_people.jpg")
    r = client.post(f"/identities/{ident}/faces", files=files, headers=AUTH)
    assert r.status_code == 422
    res = r.json()["results"][0]
    assert res["faces_found"] == 2 and "largest_face=true" in res["error"]

    r = client.post(
        f"/identities/{ident}/faces", files=files, params={"largest_face": "true"}, headers=AUTH
    )
    assert r.status_code == 201, r.text
    res = r.json()["results"][0]
    assert res["faces_found"] == 2
    # Biden's face (right half of the picture) is the larger one of the two.
    assert res["box"]["x"] > 1126 / 2


def test_too_many_images_refused(client, service, media_dir):
    ident = client.post("/identities", json={"name": "many"}, headers=AUTH).json()["id"]
    limit = client.app.state.settings.enrol_max_images
    photo = media_dir / "obama_small.jpg"
    r = client.post(
        f"/identities/{ident}/faces",
        files=files_field("files", *[photo] * (limit + 1)),
        headers=AUTH,
    )
    assert r.status_code == 422 and r.json()["error"] == "too_many_images"


def test_live_matcher_follows_enrolment_and_deletion(client, service, media_dir):
    """Every mutation is visible to the matcher the streams use when the call returns."""
    probe = load_rgb(media_dir / "probes" / "obama1.jpg")
    embedding = service.analyse_still(probe, max_faces=1)[0].embedding

    def best_name():
        match = service.gallery.search(embedding)
        if match.best is None or match.best.similarity < service.settings.match_threshold:
            return None
        return match.best.name

    assert best_name() is None
    out = enrol(client, "obama-live", [media_dir / "people" / "obama" / "obama.jpg"])
    assert out["response"].status_code == 201
    assert best_name() == "obama-live"

    client.patch(f"/identities/{out['id']}", json={"name": "Barack"}, headers=AUTH)
    assert best_name() == "Barack"

    face_id = out["response"].json()["results"][0]["face_id"]
    before = _count_rows(service)
    r = client.delete(f"/identities/{out['id']}/faces/{face_id}", headers=AUTH)
    assert r.status_code == 204
    assert best_name() is None
    assert _count_rows(service) == {k: v - 1 for k, v in before.items()}

    out = enrol(client, "obama-again", [media_dir / "people" / "obama" / "obama2.jpg"])
    assert best_name() == "obama-again"
    before = _count_rows(service)
    assert client.delete(f"/identities/{out['id']}", headers=AUTH).status_code == 204
    assert best_name() is None
    # Its embeddings and thumbnails are gone from storage, not only from the matcher.
    assert _count_rows(service) == {k: v - 1 for k, v in before.items()}
    assert client.get(f"/identities/{out['id']}/faces", headers=AUTH).status_code == 404


def test_running_stream_sees_enrolment_and_deletion(client, service, media_dir):
    """A live stream names a new face after an enrolment and stops after a deletion."""
    import time
    from fractions import Fraction

    from stream_server.types import Frame

    face = load_rgb(media_dir / "probes" / "alex_lacamoire1.jpg")
    face = np.ascontiguousarray(np.asarray(Image.fromarray(face).resize((774, 512))))
    blank = np.full_like(face, 90)
    registry = client.app.state.streams
    stream = client.portal.call(registry.open, "lobby", "full", "test")
    results = []
    stream.add_listener(lambda frame, result: results.append((frame.pts, result)))
    pts = 0

    def play(image, seconds: float, until=None) -> float | None:
        """Feed ``seconds`` of media at 30 fps; returns the media time ``until`` held."""
        nonlocal pts
        start = pts
        seen = len(results)
        while pts - start < seconds * 30:
            stream.put(Frame("lobby", pts, image, pts=pts, time_base=Fraction(1, 30)))
            pts += 1
            time.sleep(1 / 60)
            for frame_pts, result in results[seen:]:
                if until and frame_pts >= start and until(result):
                    return (frame_pts - start) / 30
            seen = len(results)
        return None

    def named(name):
        return lambda r: any(f.status == "matched" and f.name == name for f in r.faces)

    def unknown(r):
        return any(f.status == "unknown" for f in r.faces)

    try:
        assert play(face, 4.0, until=unknown) is not None  # not enrolled yet
        play(blank, 1.5)  # the track ends
        out = enrol(client, "alex", [media_dir / "people" / "alex_lacamoire" / "img1.jpg"])
        assert out["response"].status_code == 201
        took = play(face, 3.0, until=named("alex"))
        assert took is not None and took < 1.0, took
        play(blank, 1.5)
        assert client.delete(f"/identities/{out['id']}", headers=AUTH).status_code == 204
        deleted_at = pts
        assert play(face, 4.0, until=unknown) is not None
        assert not any(named("alex")(r) for p, r in results if p >= deleted_at)
    finally:
        client.portal.call(registry.close, "lobby")
