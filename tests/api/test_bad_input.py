"""Check 3: every bad input gets the right 4xx with a JSON body naming the problem,
nothing is stored, and the service keeps serving."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from .conftest import AUTH, api_client, jpeg, load_rgb

MB = 1024 * 1024


def huge_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A tiny, valid-looking PNG whose header declares ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    rows = zlib.compress(b"\x00" + b"\x00" * 3 * 64, 9)  # a start of the pixel data
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def three_faces(media_dir) -> np.ndarray:
    """Three people side by side, from three single-face photos of the media."""
    from PIL import Image

    parts = []
    for name in ("obama_small.jpg", "alex-lacamoire.png", "lin-manuel-miranda.png"):
        img = Image.open(media_dir / name).convert("RGB")
        img = img.resize((round(img.width * 300 / img.height), 300))
        parts.append(np.asarray(img))
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


@pytest.fixture(scope="module")
def service(service_factory):
    return service_factory()


@pytest.fixture(scope="module")
def client(service):
    with api_client(service, rate_limit="off") as c:
        yield c


@pytest.fixture(scope="module")
def identity(client, media_dir):
    r = client.post("/identities", json={"name": "target"}, headers=AUTH)
    return r.json()["id"]


@pytest.fixture(scope="module")
def bad_files(media_dir) -> dict[str, tuple[bytes, int, str, str]]:
    """name -> (content, status for compare/enrol, error code, words the detail holds)."""
    good = (media_dir / "obama.jpg").read_bytes()
    no_face = load_rgb(media_dir / "biden.jpg")[1200:1800, 100:700]
    return {
        "text file named .jpg": (
            b"these are words, not pixels\n" * 20,
            422,
            "invalid_image",
            "not an image",
        ),
        "0-byte file": (b"", 422, "invalid_image", "empty"),
        "truncated JPEG": (good[: len(good) * 2 // 3], 422, "invalid_image", "truncated"),
        "50000x50000 PNG": (
            huge_png(),
            422,
            "invalid_image",
            "2500000000 pixels exceeds the limit of 40000000 pixels",
        ),
        "image without a face": (jpeg(no_face), 422, "no_face", "no face"),
        "three faces": (jpeg(three_faces(media_dir)), 422, "several_faces", "3 faces"),
    }


def _still_serving(client, media_dir):
    assert client.get("/health").status_code == 200
    r = client.post(
        "/compare-faces",
        files={
            "image_a": ("a.jpg", (media_dir / "obama.jpg").read_bytes()),
            "image_b": ("b.jpg", (media_dir / "obama_small.jpg").read_bytes()),
        },
        headers=AUTH,
    )
    assert r.status_code == 200 and r.json()["same_person"] is True


def test_huge_png_is_tiny_on_disk():
    data = huge_png()
    assert len(data) < 200
    assert data[12:16] == b"IHDR" and struct.unpack(">II", data[16:24]) == (50_000, 50_000)


def test_pixel_limit_is_a_setting(service, media_dir):
    photo = (media_dir / "obama.jpg").read_bytes()  # 910x1137 = 1,034,670 pixels
    with api_client(service, rate_limit="off", max_image_pixels=1_000_000) as strict:
        r = strict.post("/recognize", files={"image": ("p.jpg", photo)}, headers=AUTH)
        assert r.status_code == 422
        assert "910x1137" in r.json()["detail"] and "1000000" in r.json()["detail"]


CASES = [
    "text file named .jpg",
    "0-byte file",
    "truncated JPEG",
    "50000x50000 PNG",
    "image without a face",
    "three faces",
]


@pytest.mark.parametrize("case", CASES)
def test_compare_refuses(client, service, media_dir, bad_files, case):
    content, status, code, words = bad_files[case]
    revision = service.store.revision()
    r = client.post(
        "/compare-faces",
        files={
            "image_a": ("photo.jpg", (media_dir / "obama.jpg").read_bytes(), "image/jpeg"),
            "image_b": ("photo.jpg", content, "image/jpeg"),
        },
        headers=AUTH,
    )
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code
    assert body["detail"].startswith("image_b: ") and words in body["detail"], body
    assert service.store.revision() == revision
    _still_serving(client, media_dir)


@pytest.mark.parametrize("case", CASES)
def test_enrol_refuses_and_stores_nothing(client, service, media_dir, identity, bad_files, case):
    content, _, _, words = bad_files[case]
    revision = service.store.revision()
    r = client.post(
        f"/identities/{identity}/faces",
        files=[
            ("files", ("good.jpg", (media_dir / "obama.jpg").read_bytes(), "image/jpeg")),
            ("files", ("photo.jpg", content, "image/jpeg")),
        ],
        headers=AUTH,
    )
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "images_refused" and body["stored"] == 0
    refused = body["results"][1]
    assert refused["status"] == "refused" and words in refused["error"], refused
    assert body["results"][0]["status"] == "not_stored"
    assert service.store.revision() == revision
    assert client.get(f"/identities/{identity}", headers=AUTH).json()["face_count"] == 0
    _still_serving(client, media_dir)


@pytest.mark.parametrize("case", CASES[:4])
def test_recognize_refuses_what_is_not_an_image(client, media_dir, bad_files, case):
    content, status, code, words = bad_files[case]
    r = client.post("/recognize", files={"image": ("photo.jpg", content)}, headers=AUTH)
    assert r.status_code == status and r.json()["error"] == code
    assert words in r.json()["detail"]
    _still_serving(client, media_dir)


def test_recognize_three_faces_lists_three(client, media_dir, bad_files):
    content = bad_files["three faces"][0]
    r = client.post("/recognize", files={"image": ("three.jpg", content)}, headers=AUTH)
    assert r.status_code == 200
    faces = sorted(r.json()["faces"], key=lambda f: f["box"]["x"])
    assert len(faces) == 3 and not any(f["known"] for f in faces)  # gallery: only "target"


def _multipart(parts: list[tuple[str, str, bytes]], boundary: str = "b0undary") -> bytes:
    out = b""
    for field, filename, data in parts:
        out += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
                f'filename="{filename}"\r\nContent-Type: image/jpeg\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    return out + f"--{boundary}--\r\n".encode()


def test_thirty_megabyte_upload(client, service, media_dir):
    big = np.random.default_rng(0).integers(0, 255, 30 * MB, dtype=np.uint8).tobytes()
    # With a Content-Length: refused before the body is read.
    r = client.post("/recognize", files={"image": ("big.jpg", big)}, headers=AUTH)
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "payload_too_large" and "10485760" in r.json()["detail"]

    # Streamed without a Content-Length (chunked): refused while reading.
    body = _multipart([("image", "big.jpg", big)])

    def chunks():
        for i in range(0, len(body), MB):
            yield body[i : i + MB]

    r = client.post(
        "/recognize",
        content=chunks(),
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=b0undary"},
    )
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "payload_too_large"
    _still_serving(client, media_dir)


def test_upload_limit_is_a_setting(service, media_dir):
    photo = (media_dir / "obama.jpg").read_bytes()  # ~100 KB
    with api_client(service, rate_limit="off", max_upload_bytes=64 * 1024) as small:
        r = small.post("/recognize", files={"image": ("p.jpg", photo)}, headers=AUTH)
        assert r.status_code == 413
    with api_client(service, rate_limit="off") as default:
        r = default.post("/recognize", files={"image": ("p.jpg", photo)}, headers=AUTH)
        assert r.status_code == 200


@pytest.mark.parametrize(
    "content_type,body,words",
    [
        ("multipart/form-data; boundary=b0undary", b"--b0undary\r\nnot a header line", "Invalid"),
        ("multipart/form-data; boundary=b0undary", b"garbage without any boundary", "Invalid"),
        ("multipart/form-data", _multipart([("image", "x.jpg", b"abc")]), "Missing boundary"),
    ],
)
def test_malformed_multipart(client, media_dir, content_type, body, words):
    r = client.post("/recognize", content=body, headers={**AUTH, "Content-Type": content_type})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "bad_request"
    assert r.json()["detail"].startswith("malformed multipart/form-data body"), r.json()
    assert words in r.json()["detail"]
    _still_serving(client, media_dir)


def test_wrong_field_name(client, media_dir):
    r = client.post(
        "/compare-faces",
        files={"image_a": ("a.jpg", (media_dir / "obama.jpg").read_bytes())},
        headers=AUTH,
    )
    assert r.status_code == 422
    assert any(e["loc"][-1] == "image_b" for e in r.json()["detail"])


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/identities/0000unknown"),
        ("PATCH", "/identities/0000unknown"),
        ("DELETE", "/identities/0000unknown"),
        ("GET", "/identities/0000unknown/faces"),
        ("POST", "/identities/0000unknown/faces"),
        ("DELETE", "/identities/0000unknown/faces/0000face"),
        ("GET", "/identities/0000unknown/faces/0000face/thumbnail"),
    ],
)
def test_unknown_identity(client, service, media_dir, method, path):
    kwargs = {}
    if method == "PATCH":
        kwargs["json"] = {"name": "x"}
    if method == "POST":
        kwargs["files"] = {"files": ("a.jpg", (media_dir / "obama.jpg").read_bytes())}
    revision = service.store.revision()
    r = client.request(method, path, headers=AUTH, **kwargs)
    assert r.status_code == 404, r.text
    assert r.json()["error"] == "not_found" and "0000" in r.json()["detail"]
    assert service.store.revision() == revision
    _still_serving(client, media_dir)


def test_errors_are_json_everywhere(client):
    for method, path in [("GET", "/no/such/route"), ("PUT", "/identities"), ("GET", "/recognize")]:
        r = client.request(method, path, headers=AUTH)
        assert 400 <= r.status_code < 500
        assert r.headers["content-type"].startswith("application/json")
        assert set(r.json()) >= {"error", "detail"}
