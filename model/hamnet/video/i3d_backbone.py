"""Two-stream I3D backbone on ONNX Runtime: uint8 snippets -> [RGB 1024 | flow 1024] features.

Reads the ONNX files written by ``hamnet export-i3d`` (graph contract in
:mod:`hamnet.i3d.export`: ``frames`` [N, C, 16, 224, 224] float32 in [-1, 1] -> ``features``
[N, 1024]). Torch is never imported here: the worker runs this module.

Preprocessing follows the standard THUMOS'14 recipe the HAM-Net features were made with:
RGB ``x / 255 * 2 - 1``; flow computed inside each snippet by :mod:`hamnet.video.flow`
(TV-L1 by default), clipped to [-20, 20], quantised to 256 levels and rescaled to [-1, 1].
Concatenation order is RGB first, flow second (BaS-Net / W-TALC convention).

Sessions are expensive (a 49 MB graph each), so they are created on first use and cached per
process, keyed by file, providers, threads and precision: every backbone built on the same
files shares them.

On a device (CUDA provider) the backbone (see docs/DEVICE.md):

* runs a **float16** variant of each graph (``precision="auto"``: fp16 on CUDA, fp32 on CPU
  where fp16 convolutions are slow; ``"fp32"``/``"fp16"`` force one, ``$HAMNET_I3D_PRECISION``
  sets the default). The variant is ``files["<stream>_fp16"]`` when the spec lists one, else
  the fp32 graph converted in memory (:func:`hamnet.i3d.fp16.to_fp16`, float32 I/O). fp16
  features differ from fp32 by about 1e-3 of their scale (tests/i3d/test_fp16_parity.py);
* binds inputs and outputs on the device (:mod:`hamnet.video.device`), in batches sized to
  the free device memory (``batch_size``, ``$HAMNET_I3D_BATCH``), and normalises RGB there
  (``rgb_engine``: uint8 upload, the same numbers as :func:`rgb_to_i3d`);
* computes TV-L1 flow on the device (``flow_engine="auto"``: the ONNX TV-L1 of
  :mod:`hamnet.video.tvl1` when the provider is CUDA and the spec asks for TV-L1, OpenCV's
  otherwise; ``$HAMNET_FLOW_ENGINE``): the flow network's input then never visits the host.

``prepare`` (CPU: flow, normalisation) and ``run`` (the sessions) are separate so that the
pipelined extractor (:mod:`hamnet.video.pipelined`) prepares the next batches in worker threads
while the sessions run; ``encode`` is ``run(prepare(frames))``.
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

PRECISIONS = ("auto", "fp32", "fp16")
FLOW_ENGINES = ("auto", "opencv", "onnx")
RGB_ENGINES = ("auto", "cpu", "device")

_SESSIONS: dict[tuple[str, float, tuple[str, ...], int | None, bool], Any] = {}
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


def _fp16_bytes(path: Path) -> bytes:
    """The fp16 variant of an fp32 graph file, converted in memory (needs the onnx package)."""
    try:
        import onnx
    except ModuleNotFoundError:
        raise MissingDependencyError(
            "converting the I3D graph to fp16 needs the onnx package (pip install onnx), or "
            "list an exported fp16 file as files['<stream>_fp16'] in backbone.json"
        ) from None
    from hamnet.i3d.fp16 import to_fp16

    return to_fp16(onnx.load(str(path))).SerializeToString()


def get_session(
    path: Path, providers: Sequence[str], threads: int | None = None, to_fp16: bool = False
) -> Any:
    """The process-wide ONNX Runtime session for ``path`` (created once, then shared).
    ``to_fp16``: run the in-memory fp16 conversion of this fp32 file."""
    ort = _ort()
    path = path.resolve()
    key = (str(path), path.stat().st_mtime, tuple(providers), threads, to_fp16)
    with _LOCK:
        sess = _SESSIONS.get(key)
        if sess is None:
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if threads:
                opts.intra_op_num_threads = threads
            model: str | bytes = _fp16_bytes(path) if to_fp16 else str(path)
            try:
                sess = ort.InferenceSession(model, opts, providers=list(providers))
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


def _rgb_graph() -> bytes:
    """ONNX graph of :func:`rgb_to_i3d`: uint8 ``frames_u8`` [N,F,H,W,3] -> float32 ``frames``
    [N,3,F,H,W] = x * (2/255) - 1, the same float32 operations in the same order (so the same
    numbers). Run on the device, it uploads a quarter of the bytes and takes the conversion
    off the CPU."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Cast", ["frames_u8"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "scale"], ["y"]),
        helper.make_node("Sub", ["y", "one"], ["z"]),
        helper.make_node("Transpose", ["z"], ["frames"], perm=[0, 4, 1, 2, 3]),
    ]
    graph = helper.make_graph(
        nodes, "i3d_rgb_input",
        [helper.make_tensor_value_info("frames_u8", TensorProto.UINT8, ["N", "F", "H", "W", 3])],
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["N", 3, "F", "H", "W"])],
        [numpy_helper.from_array(np.array(2.0 / 255.0, np.float32), "scale"),
         numpy_helper.from_array(np.array(1.0, np.float32), "one")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def rgb_session(providers: Sequence[str]) -> Any:
    """The process-wide session of :func:`_rgb_graph` for ``providers``."""
    ort = _ort()
    key = ("<rgb-input>", 0.0, tuple(providers), None, False)
    with _LOCK:
        sess = _SESSIONS.get(key)
        if sess is None:
            opts = ort.SessionOptions()
            # no graph rewrites: keep Mul then Sub (a fused multiply-add would round once)
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            sess = ort.InferenceSession(_rgb_graph(), opts, providers=list(providers))
            _SESSIONS[key] = sess
    return sess


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


def _setting(value: str | None, env: str, choices: tuple[str, ...]) -> str:
    v = value if value is not None else (os.environ.get(env) or "auto")
    if v not in choices:
        raise BundleError(f"{env.removeprefix('HAMNET_').lower()} must be one of {choices}, "
                          f"got {v!r}")
    return v


class I3DBackbone:
    """The ``"i3d"`` backbone (see :class:`hamnet.video.backbone.Backbone`).

    ``batch_size``: snippets per session call (``None``: sized to the device, see
    :func:`hamnet.video.device.snippet_batch`); ``precision``, ``flow_engine``: see the module
    docstring; ``rgb_engine``: ``auto`` (normalise RGB on the device on CUDA, uploading uint8),
    ``cpu`` or ``device``; ``threads``: intra-op threads of the sessions (the worker's
    per-child share).
    """

    parallel_snippets = True  # prepare() is thread-safe: flow objects/sessions per thread

    def __init__(
        self,
        spec: BackboneSpec,
        directory: str | os.PathLike[str],
        providers: Sequence[str] | None = None,
        batch_size: int | None = None,
        threads: int | None = None,
        precision: str | None = None,
        flow_engine: str | None = None,
        rgb_engine: str | None = None,
    ) -> None:
        self._spec = spec
        self._dir = Path(directory)
        self._providers = resolve_providers(providers)
        self._batch_setting = None if batch_size is None else max(1, int(batch_size))
        self.threads = threads
        self._precision_setting = _setting(precision, "HAMNET_I3D_PRECISION", PRECISIONS)
        self._flow_setting = _setting(flow_engine, "HAMNET_FLOW_ENGINE", FLOW_ENGINES)
        self._rgb_setting = _setting(rgb_engine, "HAMNET_RGB_ENGINE", RGB_ENGINES)
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
            half = spec.files.get(f"{stream}_fp16")
            if half:
                if not (self._dir / half).is_file():
                    problems.append(f"{stream} fp16 graph {self._dir / half} does not exist")
                else:
                    self._files[f"{stream}_fp16"] = self._dir / half
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

    @property
    def device(self) -> tuple[str, int]:
        """Where the sessions read inputs and write outputs (``("cuda", 0)``, ``("cpu", 0)``)."""
        from hamnet.video.device import device_of

        return device_of(self._fp32_session(self._order[0]).get_providers()[0])

    @property
    def precision(self) -> str:
        """``fp16`` or ``fp32``: what the sessions compute in (``auto``: fp16 on CUDA)."""
        if self._precision_setting != "auto":
            return self._precision_setting
        return "fp16" if self.device[0] == "cuda" else "fp32"

    @property
    def batch_size(self) -> int:
        """Snippets per session call (the setting, else sized to the device)."""
        from hamnet.video.device import snippet_batch

        if self._batch_setting is None:
            self._batch_setting = snippet_batch(self.device[0], self.precision)
        return self._batch_setting

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self._batch_setting = max(1, int(value))

    @property
    def flow_engine(self) -> str:
        """``onnx`` (TV-L1 graph on the sessions' device) or ``opencv`` (CPU, any method)."""
        if self._flow_setting != "auto":
            return self._flow_setting
        tvl1 = (self._spec.flow_method or "tvl1") == "tvl1" and "flow" in self._order
        return "onnx" if tvl1 and self.device[0] == "cuda" and _has_tvl1() else "opencv"

    def _fp32_session(self, stream: str) -> Any:
        return get_session(self._files[stream], self._providers, self.threads)

    def _session(self, stream: str) -> Any:
        if self.precision == "fp32":
            return self._fp32_session(stream)
        half = self._files.get(f"{stream}_fp16")
        if half is not None:
            return get_session(half, self._providers, self.threads)
        return get_session(self._files[stream], self._providers, self.threads, to_fp16=True)

    def _run(self, stream: str, x: Any) -> np.ndarray:
        """``x``: float32 [N,C,16,224,224] (numpy, or an OrtValue already on the device) ->
        [N,1024], inputs and outputs bound on the device, numpy inputs in batches of
        ``batch_size`` (an OrtValue is one batch: it was made batch-sized)."""
        from hamnet.video.device import is_ortvalue, run_bound

        sess, device = self._session(stream), self.device
        if is_ortvalue(x):
            outs = [run_bound(sess, {"frames": x}, "features", device)]
        else:
            n = self.batch_size
            outs = [run_bound(sess, {"frames": x[i : i + n]}, "features", device)
                    for i in range(0, len(x), n)]
        return np.concatenate(outs, axis=0).astype(np.float32, copy=False)

    def _validate(self, frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames)
        expected = (SNIPPET_FRAMES, CROP, CROP, 3)
        if frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[1:] != expected:
            raise DataError(
                f"i3d backbone expects uint8 snippets [N, {SNIPPET_FRAMES}, {CROP}, "
                f"{CROP}, 3], got {frames.dtype} {list(frames.shape)}"
            )
        return frames

    def preprocess(self, frames: np.ndarray) -> dict[str, Any]:
        """Validated uint8 [N,16,224,224,3] -> {stream: float32 [N,C,16,224,224]} (the flow
        stream's value is an OrtValue on the device with the ONNX flow engine)."""
        frames = self._validate(frames)
        inputs: dict[str, Any] = {}
        if "rgb" in self._order:
            inputs["rgb"] = self._rgb_input(frames)
        if "flow" in self._order:
            if self.flow_engine == "onnx":
                inputs["flow"] = self._onnx_flow(frames)
            else:
                inputs["flow"] = flow_input(frames, self._spec.flow_method or "tvl1")
        return inputs

    @property
    def rgb_on_device(self) -> bool:
        """Whether RGB snippets are normalised by a graph on the sessions' device (uint8
        upload) rather than by numpy on the CPU: on CUDA unless ``rgb_engine="cpu"``."""
        if self._rgb_setting != "auto":
            return self._rgb_setting == "device"
        return self.device[0] == "cuda"

    def _rgb_input(self, frames: np.ndarray) -> Any:
        """uint8 [N,16,224,224,3] -> float32 [N,3,16,224,224] (an OrtValue on the device
        when :attr:`rgb_on_device`; the same numbers either way)."""
        if not self.rgb_on_device:
            return rgb_to_i3d(frames)
        sess, device = rgb_session(self._providers), self.device
        binding = sess.io_binding()
        binding.bind_cpu_input("frames_u8", np.ascontiguousarray(frames))
        binding.bind_output("frames", device[0], device[1])
        sess.run_with_iobinding(binding)
        return binding.get_outputs()[0]

    def _onnx_flow(self, frames: np.ndarray) -> Any:
        """TV-L1 on the sessions' device: uint8 [N,16,224,224,3] -> OrtValue [N,2,16,224,224]."""
        from hamnet.video.tvl1 import TVL1Flow

        return TVL1Flow(CROP, CROP, self._providers, self.threads).i3d_input(frames)

    # the two stages the pipelined extractor runs in different threads
    prepare = preprocess

    def run(self, inputs: dict[str, Any]) -> np.ndarray:
        """Prepared inputs -> float32 [N,1024 * streams] (RGB first, then flow)."""
        return np.concatenate([self._run(s, inputs[s]) for s in self._order], axis=1)

    def encode(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [N,16,224,224,3] RGB -> float32 [N,1024 * streams] (RGB first, then flow)."""
        if np.asarray(frames).shape[:1] == (0,):
            return np.zeros((0, self.feature_dim), np.float32)
        return self.run(self.preprocess(frames))


def _has_tvl1() -> bool:
    """Whether the ONNX TV-L1 module (and the onnx package it builds graphs with) is here."""
    import importlib.util

    return (importlib.util.find_spec("hamnet.video.tvl1") is not None
            and importlib.util.find_spec("onnx") is not None)
