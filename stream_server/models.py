"""Find, download and verify the model files the pipeline needs.

Resolution order for every model: an explicit path from the settings, then
``FACE_MODEL_DIR``, then files downloaded earlier into ``<data_dir>/models``, then
the official download (MediaPipe's published detector files; an InsightFace model
pack through insightface's own downloader). Offline and absent: one
``ModelNotFoundError`` naming the file and every place it was looked for.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .config import DetectorKind, Settings

log = logging.getLogger(__name__)


class ModelNotFoundError(RuntimeError):
    """A model file is neither on disk nor downloadable."""


@dataclass(frozen=True)
class DetectorSpec:
    filename: str
    url: str
    sha256: str | None


# The files MediaPipe builds its face detection graphs from; the same bytes ship
# inside the mediapipe wheels (mediapipe/modules/face_detection/).
DETECTORS: dict[str, DetectorSpec] = {
    "short": DetectorSpec(
        "face_detection_short_range.tflite",
        "https://storage.googleapis.com/mediapipe-assets/face_detection_short_range.tflite",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    ),
    "full": DetectorSpec(
        "face_detection_full_range_sparse.tflite",
        "https://storage.googleapis.com/mediapipe-assets/face_detection_full_range_sparse.tflite",
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
    ),
}

# The ArcFace recogniser inside each InsightFace pack.
PACK_RECOGNISERS: dict[str, str] = {
    "buffalo_l": "w600k_r50.onnx",
    "buffalo_m": "w600k_r50.onnx",
    "buffalo_s": "w600k_mbf.onnx",
    "buffalo_sc": "w600k_mbf.onnx",
    "antelopev2": "glintr100.onnx",
}


@dataclass(frozen=True)
class ResolvedModel:
    role: str
    path: Path
    source: str  # "explicit", "model_dir", "downloaded", "download"
    sha256: str

    @property
    def model_id(self) -> str:
        """Identifies the weights: file name plus the start of their checksum."""
        return f"{self.path.stem}:{self.sha256[:12]}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str, dest: Path, expected_sha256: str | None) -> None:
    """Download to a temporary file with a progress bar, verify, then rename."""
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s -> %s", url, dest)
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False, suffix=".part") as tmp:
        tmp_path = Path(tmp.name)
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 - fixed https URLs
                total = int(resp.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                    for chunk in iter(lambda: resp.read(1 << 16), b""):
                        tmp.write(chunk)
                        bar.update(len(chunk))
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
    if expected_sha256 is not None:
        got = sha256_of(tmp_path)
        if got != expected_sha256:
            tmp_path.unlink(missing_ok=True)
            raise ModelNotFoundError(
                f"downloaded {url} has sha256 {got}, expected {expected_sha256}; not used"
            )
    tmp_path.replace(dest)


def _search_dirs(settings: Settings) -> list[tuple[str, Path]]:
    dirs: list[tuple[str, Path]] = []
    if settings.model_dir is not None:
        dirs.append(("model_dir", Path(settings.model_dir)))
    dirs.append(("downloaded", settings.download_dir))
    return dirs


def resolve_detector(settings: Settings, kind: DetectorKind) -> ResolvedModel:
    spec = DETECTORS[kind]
    role = f"detector-{kind}"
    explicit = settings.detector_short_model if kind == "short" else settings.detector_full_model
    looked: list[str] = []
    if explicit is not None:
        path = Path(explicit)
        if path.is_file():
            return ResolvedModel(role, path, "explicit", sha256_of(path))
        looked.append(str(path))
    for source, folder in _search_dirs(settings):
        path = folder / spec.filename
        if path.is_file():
            return ResolvedModel(role, path, source, sha256_of(path))
        looked.append(str(path))
    dest = settings.download_dir / spec.filename
    if settings.allow_download:
        try:
            _download(spec.url, dest, spec.sha256)
            return ResolvedModel(role, dest, "download", sha256_of(dest))
        except ModelNotFoundError:
            raise
        except Exception as exc:  # network errors of every kind
            looked.append(f"{spec.url} ({type(exc).__name__}: {exc})")
    raise ModelNotFoundError(
        f"face detector model '{spec.filename}' ({kind} range) not found; looked in: "
        + "; ".join(looked)
        + ". Set FACE_MODEL_DIR to a folder holding it or FACE_DETECTOR_"
        + kind.upper()
        + "_MODEL to the file."
    )


def resolve_embedder(settings: Settings) -> ResolvedModel:
    name = settings.embedder_model
    looked: list[str] = []
    if name.endswith(".onnx") or "/" in name:
        path = Path(name)
        if path.is_file():
            return ResolvedModel("embedder", path, "explicit", sha256_of(path))
        looked.append(str(path))
        filename = path.name
        pack = None
    else:
        if name not in PACK_RECOGNISERS:
            raise ModelNotFoundError(
                f"unknown InsightFace pack '{name}'; known: {', '.join(sorted(PACK_RECOGNISERS))}"
                " (or give a path to an ArcFace .onnx file)"
            )
        pack = name
        filename = PACK_RECOGNISERS[name]
    for source, folder in _search_dirs(settings):
        candidates = [folder / filename]
        if pack is not None:
            candidates.insert(0, folder / pack / filename)
            candidates.insert(1, folder / "models" / pack / filename)
        for path in candidates:
            if path.is_file():
                return ResolvedModel("embedder", path, source, sha256_of(path))
            looked.append(str(path))
    if pack is not None and settings.allow_download:
        try:
            from insightface.utils.storage import ensure_available

            root = settings.download_dir / "insightface"
            pack_dir = Path(ensure_available("models", pack, root=str(root)))
            found = sorted(pack_dir.rglob(filename))
            if found:
                dest = settings.download_dir / pack / filename
                dest.parent.mkdir(parents=True, exist_ok=True)
                if found[0] != dest:
                    shutil.copyfile(found[0], dest)
                return ResolvedModel("embedder", dest, "download", sha256_of(dest))
            looked.append(f"InsightFace pack {pack} (downloaded, but it holds no {filename})")
        except Exception as exc:
            looked.append(f"InsightFace pack download '{pack}' ({type(exc).__name__}: {exc})")
    raise ModelNotFoundError(
        f"face embedder model '{filename}' not found; looked in: "
        + "; ".join(looked)
        + ". Set FACE_MODEL_DIR to a folder holding it or FACE_EMBEDDER_MODEL to the .onnx file."
    )


def resolve_all(settings: Settings) -> list[ResolvedModel]:
    return [
        resolve_detector(settings, "short"),
        resolve_detector(settings, "full"),
        resolve_embedder(settings),
    ]
