"""Two-stream I3D backbone on ONNX Runtime: uint8 snippets -> [RGB 1024 | flow 1024] features.

Reads the ONNX files written by ``hamnet export-i3d`` (graph contract in
:mod:`hamnet.i3d.export`: ``frames`` [N, C, 16, 224, 224] float32 in [-1, 1] -> ``features``
[N, 1024]). Torch is never imported here: the worker runs this module.

Preprocessing follows the standard THUMOS'14 recipe the HAM-Net features were made with:
RGB ``x / 255 * 2 - 1``; flow computed inside each snippet by :mod:`hamnet.video.flow`
(TV-L1 by default), clipped to [-20, 20], quantised to 256 levels and rescaled to [-1, 1].
Concatenation order is RGB first, flow second (BaS-Net / W-TALC convention).

Sessions are expensive (a 49 MB graph each), so they are created on first use and cached per
process, keyed by file and providers: every backbone built on the same files shares them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hamnet.errors import BundleError, DataError, MissingDependencyError
from hamnet.video.backbone import BackboneSpec

STREAM_DIM = 1024
SNIPPET_FRAMES = 16
CROP = 224
DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")

_SESSIONS: dict[tuple[str, float, tuple[str, ...], int | None], Any] = {}
_LOCK = threading.Lock()


def _ort() -> Any:
    try:
        import onnxruntime as ort
    except ModuleNotFoundError:
        raise MissingDependencyError(
            "the i3d backbone needs onnxruntime (pip install 'hamnet[video]')"
        ) from None
    return ort


def resolve_providers(providers: Sequence[str] | None) -> list[str]:
    """Requested providers that this onnxruntime build offers (CUDA first, CPU fallback)."""
    available = set(_ort().get_available_providers())
    wanted = list(providers) if providers else list(DEFAULT_PROVIDERS)
    chosen = [p for p in wanted if p in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def get_session(path: Path, providers: Sequence[str], threads: int | None = None) -> Any:
    """The process-wide ONNX Runtime session for ``path`` (created once, then shared)."""
    ort = _ort()
    path = path.resolve()
    key = (str(path), path.stat().st_mtime, tuple(providers), threads)
    with _LOCK:
        sess = _SESSIONS.get(key)
        if sess is None:
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if threads:
                opts.intra_op_num_threads = threads
            try:
                sess = ort.InferenceSession(str(path), opts, providers=list(providers))
            except Exception as e:
                raise BundleError(f"{path}: ONNX Runtime cannot load this I3D graph: {e}") from e
            _check_graph(sess, path)
            _SESSIONS[key] = sess
    return sess


def _check_graph(sess: Any, path: Path) -> None:
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    names = ([i.name for i in inputs], [o.name for o in outputs])
    if names != (["frames"], ["features"]):
        raise BundleError(
            f"{path}: expected an I3D graph frames -> features (from `hamnet export-i3d`), "
            f"found inputs {names[0]} and outputs {names[1]}"
        )
    shape = list(inputs[0].shape)
    if shape[2:] != [SNIPPET_FRAMES, CROP, CROP]:
        raise BundleError(
            f"{path}: input 'frames' has shape {shape}, expected "
            f"[N, C, {SNIPPET_FRAMES}, {CROP}, {CROP}]"
        )


def rgb_to_i3d(frames: np.ndarray) -> np.ndarray:
    """uint8 [N,F,H,W,3] RGB -> float32 [N,3,F,H,W] in [-1, 1] (x / 255 * 2 - 1)."""
    x = frames.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)  # [N,F,H,W,3]
    return np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3))  # [N,3,F,H,W]


def flow_input(frames: np.ndarray, method: str) -> np.ndarray:
    """uint8 [N,F,H,W,3] RGB -> float32 [N,2,F,H,W] in [-1, 1], flow computed per snippet."""
    from hamnet.video.flow import flow_to_i3d, snippet_flow

    out = []
    for snippet in frames:  # [F,H,W,3]
        flow = np.asarray(flow_to_i3d(snippet_flow(snippet, method=method)), np.float32)
        if flow.shape != (*snippet.shape[:3], 2):  # [F,H,W,2] (x, y)
            raise DataError(
                f"optical flow of a {list(snippet.shape)} snippet has shape "
                f"{list(flow.shape)}, expected {[*snippet.shape[:3], 2]}"
            )
        out.append(flow.transpose(3, 0, 1, 2))  # [2,F,H,W]
    return np.ascontiguousarray(np.stack(out))  # [N,2,F,H,W]


class I3DBackbone:
    """The ``"i3d"`` backbone (see :class:`hamnet.video.backbone.Backbone`)."""

    def __init__(
        self,
        spec: BackboneSpec,
        directory: str | os.PathLike[str],
        providers: Sequence[str] | None = None,
        batch_size: int = 8,
        threads: int | None = None,
    ) -> None:
        self._spec = spec
        self._dir = Path(directory)
        self._providers = resolve_providers(providers)
        self.batch_size = max(1, int(batch_size))
        self.threads = threads
        problems = []
        if spec.snippet_frames != SNIPPET_FRAMES:
            problems.append(f"snippet_frames must be {SNIPPET_FRAMES}, got {spec.snippet_frames}")
        if spec.crop != CROP:
            problems.append(f"crop must be {CROP}, got {spec.crop}")
        if spec.normalisation != "i3d":
            problems.append(f"normalisation must be 'i3d' ([-1, 1]), got {spec.normalisation!r}")
        if spec.feature_dim != STREAM_DIM * len(spec.streams):
            problems.append(
                f"feature_dim must be {STREAM_DIM * len(spec.streams)} for streams "
                f"{list(spec.streams)}, got {spec.feature_dim}"
            )
        # Canonical order, whatever the spec lists: RGB first, then flow.
        self._order = tuple(s for s in ("rgb", "flow") if s in spec.streams)
        self._files: dict[str, Path] = {}
        for stream in self._order:
            name = spec.files.get(stream)
            if not name:
                problems.append(f"files has no entry for the {stream!r} stream")
            elif not (self._dir / name).is_file():
                problems.append(f"{stream} graph {self._dir / name} does not exist")
            else:
                self._files[stream] = self._dir / name
        if problems:
            raise BundleError(f"i3d backbone in {self._dir}: " + "; ".join(problems))

    @property
    def spec(self) -> BackboneSpec:
        return self._spec

    @property
    def feature_dim(self) -> int:
        return STREAM_DIM * len(self._spec.streams)

    @property
    def provider(self) -> str:
        """The provider ONNX Runtime actually uses (loads the sessions if needed)."""
        return self._session(self._order[0]).get_providers()[0]

    def _session(self, stream: str) -> Any:
        return get_session(self._files[stream], self._providers, self.threads)

    def _run(self, stream: str, x: np.ndarray) -> np.ndarray:
        # x: [N,C,16,224,224] float32 -> [N,1024], in batches of batch_size
        sess = self._session(stream)
        outs = [
            sess.run(["features"], {"frames": x[i : i + self.batch_size]})[0]
            for i in range(0, len(x), self.batch_size)
        ]
        return np.concatenate(outs, axis=0).astype(np.float32, copy=False)

    def preprocess(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """Validated uint8 [N,16,224,224,3] -> {stream: float32 [N,C,16,224,224]}."""
        frames = np.asarray(frames)
        expected = (SNIPPET_FRAMES, CROP, CROP, 3)
        if frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[1:] != expected:
            raise DataError(
                f"i3d backbone expects uint8 snippets [N, {SNIPPET_FRAMES}, {CROP}, "
                f"{CROP}, 3], got {frames.dtype} {list(frames.shape)}"
            )
        inputs = {}
        if "rgb" in self._order:
            inputs["rgb"] = rgb_to_i3d(frames)
        if "flow" in self._order:
            inputs["flow"] = flow_input(frames, self._spec.flow_method or "tvl1")
        return inputs

    def encode(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [N,16,224,224,3] RGB -> float32 [N,1024 * streams] (RGB first, then flow)."""
        if np.asarray(frames).shape[:1] == (0,):
            return np.zeros((0, self.feature_dim), np.float32)
        inputs = self.preprocess(frames)
        return np.concatenate([self._run(s, inputs[s]) for s in self._order], axis=1)
