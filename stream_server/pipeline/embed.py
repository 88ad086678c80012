"""ArcFace embeddings through InsightFace's model zoo on onnxruntime."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class ArcFaceEmbedder:
    """Turns aligned 112x112 RGB faces into L2-normalised embeddings.

    The model is loaded with ``insightface.model_zoo.get_model`` (which checks it
    is an ArcFace-format recogniser and reads its normalisation); inference calls
    the onnxruntime session directly with a whole batch.
    """

    def __init__(
        self, model_path: Path, providers: list[str] | None = None, threads: int = 1
    ) -> None:
        import onnxruntime as ort
        from insightface.model_zoo import get_model

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # The packs declare a batch of 1 on the output; batches work but would warn.
        opts.log_severity_level = 3
        available = set(ort.get_available_providers())
        wanted = [p for p in (providers or ["CPUExecutionProvider"]) if p in available]
        missing = [p for p in (providers or []) if p not in available]
        if missing:
            log.warning("onnxruntime providers not available here, skipped: %s", missing)
        if not wanted:
            wanted = ["CPUExecutionProvider"]
        model = get_model(str(model_path), providers=wanted, sess_options=opts)
        if model is None or getattr(model, "taskname", None) != "recognition":
            raise ValueError(f"{model_path} is not an ArcFace recognition model")
        self._model = model
        self._session = model.session
        self._input_name = model.input_name
        self._output_name = model.output_names[0]
        self.input_size = tuple(model.input_size)
        self.mean = float(model.input_mean)
        self.std = float(model.input_std)
        self.providers = list(self._session.get_providers())
        out_shape = model.output_shape
        self.dim = int(out_shape[-1]) if isinstance(out_shape[-1], int) else 512
        self.model_path = Path(model_path)

    def embed(self, faces: np.ndarray) -> np.ndarray:
        """(N, 112, 112, 3) uint8 RGB -> (N, D) float32, unit length."""
        if faces.ndim == 3:
            faces = faces[None]
        if faces.shape[1:3] != self.input_size[::-1]:
            raise ValueError(f"faces must be {self.input_size}, got {faces.shape[1:3]}")
        blob = (faces.astype(np.float32) - self.mean) / self.std
        blob = np.ascontiguousarray(blob.transpose(0, 3, 1, 2))
        out = self._session.run([self._output_name], {self._input_name: blob})[0]
        out = out.reshape(out.shape[0], -1).astype(np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)
