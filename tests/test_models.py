import pytest

from stream_server.config import Settings
from stream_server.models import ModelNotFoundError, resolve_detector, resolve_embedder


def test_resolution_prefers_an_explicit_file_then_the_model_dir(model_dir, tmp_path):
    s = Settings(model_dir=model_dir, data_dir=tmp_path, allow_download=False)
    m = resolve_detector(s, "full")
    assert (
        m.source == "model_dir" and m.path == model_dir / "face_detection_full_range_sparse.tflite"
    )
    assert m.sha256 == "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1"
    explicit = tmp_path / "mine.tflite"
    explicit.write_bytes((model_dir / "face_detection_short_range.tflite").read_bytes())
    s2 = Settings(model_dir=model_dir, data_dir=tmp_path, detector_short_model=explicit)
    assert resolve_detector(s2, "short").source == "explicit"
    e = resolve_embedder(s)
    assert e.path.name == "w600k_mbf.onnx" and e.model_id.startswith("w600k_mbf:")


def test_offline_and_absent_gives_one_clear_error(tmp_path):
    s = Settings(model_dir=tmp_path / "empty", data_dir=tmp_path / "data", allow_download=False)
    with pytest.raises(ModelNotFoundError) as err:
        resolve_detector(s, "short")
    text = str(err.value)
    assert "face_detection_short_range.tflite" in text
    assert str(tmp_path / "empty") in text and "FACE_MODEL_DIR" in text
    with pytest.raises(ModelNotFoundError) as err:
        resolve_embedder(s)
    assert "w600k_mbf.onnx" in str(err.value)


def test_unknown_pack_name_is_refused(tmp_path):
    s = Settings(embedder_model="buffalo_xyz", data_dir=tmp_path, allow_download=False)
    with pytest.raises(ModelNotFoundError, match="unknown InsightFace pack"):
        resolve_embedder(s)


def test_download_failure_is_reported_with_the_url(tmp_path, monkeypatch):
    import stream_server.models as models

    def refuse(url, dest, sha):
        raise OSError("network unreachable")

    monkeypatch.setattr(models, "_download", refuse)
    s = Settings(data_dir=tmp_path, allow_download=True, model_dir=None)
    with pytest.raises(ModelNotFoundError) as err:
        resolve_detector(s, "full")
    assert "storage.googleapis.com" in str(err.value) and "network unreachable" in str(err.value)


def test_a_download_with_the_wrong_checksum_is_not_used(tmp_path, monkeypatch):
    import io

    import stream_server.models as models

    class FakeResponse(io.BytesIO):
        headers = {"Content-Length": "5"}

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    monkeypatch.setattr(
        models.urllib.request, "urlopen", lambda url, timeout: FakeResponse(b"wrong")
    )
    dest = tmp_path / "x.tflite"
    with pytest.raises(ModelNotFoundError, match="sha256"):
        models._download("https://example.invalid/x", dest, "0" * 64)
    assert not dest.exists() and list(tmp_path.iterdir()) == []
