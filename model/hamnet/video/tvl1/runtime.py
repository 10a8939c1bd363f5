"""ONNX Runtime sessions (cached per size, providers and threads) and :class:`TVL1Flow`."""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from hamnet.video.tvl1.blocks import DEFAULT_PROVIDERS, MIN_FRAME, _ort
from hamnet.video.tvl1.graph import build_i3d_layout, build_model

CPU_MAX_BATCH = 8  # pairs per run on the CPU provider (bench/results/flow.md)


@functools.lru_cache(maxsize=8)
def _model_bytes(height: int, width: int) -> bytes:
    return build_model(height, width).SerializeToString()


@functools.lru_cache(maxsize=1)
def _layout_bytes() -> bytes:
    return build_i3d_layout().SerializeToString()


_SESSIONS: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def resolve_providers(providers: Sequence[str] | None) -> list[str]:
    """Requested providers this onnxruntime offers (default CUDA first), CPU always last."""
    available = set(_ort().get_available_providers())
    wanted = list(providers) if providers else list(DEFAULT_PROVIDERS)
    chosen = [p for p in wanted if p in available and p != "CPUExecutionProvider"]
    return [*chosen, "CPUExecutionProvider"]


def _session(
    kind: str, height: int, width: int, providers: tuple[str, ...], threads: int | None
) -> Any:
    key = (kind, height, width, providers, threads)
    with _LOCK:
        sess = _SESSIONS.get(key)
        if sess is None:
            ort = _ort()
            opts = ort.SessionOptions()
            if threads:
                opts.intra_op_num_threads = threads
                opts.inter_op_num_threads = 1
            # The graph is thousands of small ops in Loops: spinning intra-op threads burn the
            # cores that decoding and other workers need, and on a busy machine they made two
            # threads slower than one (bench/results/flow.md).
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            data = _model_bytes(height, width) if kind == "tvl1" else _layout_bytes()
            sess = ort.InferenceSession(data, opts, providers=list(providers))
            _SESSIONS[key] = sess
    return sess


def _gray(frames: np.ndarray) -> np.ndarray:
    """uint8 ``[N, H, W]`` gray or ``[N, H, W, 3]`` RGB -> contiguous uint8 ``[N, H, W]``."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got {frames.dtype}")
    if frames.ndim == 4 and frames.shape[-1] == 3:
        import cv2

        return (
            np.stack([cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames])
            if len(frames)
            else frames[..., 0]
        )
    if frames.ndim != 3:
        raise ValueError(f"expected [N, H, W] gray or [N, H, W, 3] RGB frames, got {frames.shape}")
    return np.ascontiguousarray(frames)


class TVL1Flow:
    """Batched TV-L1 flow for ``height x width`` frames (see the module docstring).

    ``providers``: ONNX Runtime execution providers in order of preference (default: CUDA when
    this onnxruntime has it, else CPU). ``threads``: intra-op threads (default: ORT's choice).
    ``max_batch``: pairs per graph run; larger inputs are split (default: no limit on CUDA,
    :data:`CPU_MAX_BATCH` on the CPU, where batches whose tensors outgrow the caches get slower
    per pair). Instances are cheap; the graph and the session are shared process-wide per
    size, providers and threads.
    """

    def __init__(
        self,
        height: int,
        width: int,
        providers: list[str] | None = None,
        threads: int | None = None,
        max_batch: int | None = None,
    ) -> None:
        if height < MIN_FRAME or width < MIN_FRAME:
            raise ValueError(
                f"TV-L1 needs frames of at least {MIN_FRAME}x{MIN_FRAME} pixels, "
                f"got {width}x{height}"
            )
        self.height, self.width = int(height), int(width)
        self.providers = tuple(resolve_providers(providers))
        self.threads = threads
        self._sess = _session("tvl1", self.height, self.width, self.providers, threads)
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        on_cpu = self.provider == "CPUExecutionProvider"
        self.max_batch = max_batch or (CPU_MAX_BATCH if on_cpu else None)

    @property
    def provider(self) -> str:
        """The execution provider that runs the graph (the first one the session accepted)."""
        return self._sess.get_providers()[0]

    def _device(self) -> tuple[str, int]:
        return ("cuda", 0) if self.provider == "CUDAExecutionProvider" else ("cpu", 0)

    def _check(self, gray: np.ndarray) -> None:
        if gray.shape[1:] != (self.height, self.width):
            raise ValueError(
                f"frames are {gray.shape[2]}x{gray.shape[1]}, this TVL1Flow was "
                f"built for {self.width}x{self.height}"
            )

    def flow_pairs(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """Flow from ``prev[i]`` to ``nxt[i]``: uint8 ``[B, H, W]`` (or RGB ``[B, H, W, 3]``)
        each -> float32 ``[B, H, W, 2]`` (pixels, x then y)."""
        a, b = _gray(prev), _gray(nxt)
        if a.shape != b.shape:
            raise ValueError(f"prev and next differ in shape: {a.shape} vs {b.shape}")
        self._check(a)
        if len(a) == 0:
            return np.zeros((0, self.height, self.width, 2), np.float32)
        return self._run("flow", a, b)

    def _run(self, output: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """One output of the graph for gray pairs, in chunks of at most ``max_batch``."""
        step = self.max_batch or len(a)
        parts = [
            self._sess.run([output], {"prev": a[i : i + step], "next": b[i : i + step]})[0]
            for i in range(0, len(a), step)
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def flow(self, frames: np.ndarray) -> np.ndarray:
        """Flow between consecutive frames: uint8 ``[N, H, W]`` (or RGB ``[N, H, W, 3]``) ->
        float32 ``[N-1, H, W, 2]``, ``out[i]`` from frame ``i`` to ``i + 1``."""
        gray = _gray(frames)
        self._check(gray)
        if len(gray) < 2:
            return np.zeros((0, self.height, self.width, 2), np.float32)
        return self.flow_pairs(gray[:-1], gray[1:])

    def i3d_input(self, frames: np.ndarray) -> Any:
        """I3D flow-stream input for snippets, left on the device as an ``OrtValue``.

        ``frames``: uint8 ``[S, F, H, W]`` gray or ``[S, F, H, W, 3]`` RGB snippets ->
        float32 ``[S, 2, F, H, W]`` (channel 0 = x), the layout and values that
        :func:`hamnet.video.i3d_backbone.flow_input` feeds the flow network: flow of each
        frame from the previous one, the first flow of a snippet repeated, clipped to +-20 px,
        quantised to 256 levels and rescaled to [-1, 1] (:func:`hamnet.video.flow.flow_to_i3d`).
        The value is computed and re-laid-out by ONNX Runtime with outputs bound to the
        provider's device (``io_binding``), so on CUDA it never visits the host; pass it to the
        flow network with ``IOBinding.bind_ortvalue_input``.
        """
        ort = _ort()
        frames = np.asarray(frames)
        if frames.ndim not in (4, 5):
            raise ValueError(f"expected [S, F, H, W(, 3)] snippets, got shape {frames.shape}")
        s, f = frames.shape[:2]
        device, dev_id = self._device()
        if f < 2 or s == 0:
            zeros = np.full((s, 2, f, self.height, self.width), 128 * 2 / 255 - 1, np.float32)
            return ort.OrtValue.ortvalue_from_numpy(zeros, device, dev_id)
        gray = _gray(frames.reshape(s * f, *frames.shape[2:])).reshape(s, f, *frames.shape[2:4])
        self._check(gray[0])
        prev = np.ascontiguousarray(gray[:, :-1].reshape(-1, self.height, self.width))
        nxt = np.ascontiguousarray(gray[:, 1:].reshape(-1, self.height, self.width))
        if self.max_batch is not None and len(prev) > self.max_batch:  # chunked (CPU): host
            q = ort.OrtValue.ortvalue_from_numpy(self._run("i3d", prev, nxt), device, dev_id)
        else:
            binding = self._sess.io_binding()
            binding.bind_cpu_input("prev", prev)
            binding.bind_cpu_input("next", nxt)
            binding.bind_output("i3d", device, dev_id)
            self._sess.run_with_iobinding(binding)
            q = binding.get_outputs()[0]  # [S*(F-1), 2, H, W] on the device
        layout = _session("layout", 0, 0, self.providers, self.threads)
        b2 = layout.io_binding()
        b2.bind_ortvalue_input("q", q)
        b2.bind_cpu_input("shape", np.array([s, f - 1, 2, self.height, self.width], np.int64))
        b2.bind_output("out", device, dev_id)
        layout.run_with_iobinding(b2)
        return b2.get_outputs()[0]
