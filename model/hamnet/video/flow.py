"""Dense optical flow between consecutive frames, and the I3D flow-stream input convention.

Why several methods: the I3D flow stream (and HAM-Net's reported numbers) used TV-L1, which is
the only choice that matches the published features, but OpenCV computes it at about a second
per 224x224 frame pair on one CPU core (16 pairs per 0.64 s snippet). Farneback and DIS are
50-100x faster and good enough for the weight-free motion backbone or for a quick look. The
method is part of the :class:`~hamnet.video.backbone.BackboneSpec`, so a bundle always uses the
flow it was trained on.

Methods (:data:`METHODS`):

* ``tvl1``: TV-L1 (OpenCV's DualTVL1 model and defaults) as a batched ONNX graph run by ONNX
  Runtime, on CUDA when available (:mod:`hamnet.video.tvl1`). Same algorithm as
  ``tvl1-opencv``; it batches every pair of a snippet (or of many snippets) into one run.
* ``tvl1-opencv``: ``cv2.optflow.DualTVL1OpticalFlow`` itself, one pair at a time on the CPU
  (the reference the ONNX graph is tested against; see docs/FLOW.md for the parity numbers).
* ``farneback``, ``dis``: OpenCV's fast methods.

Flow arrays are ``[H, W, 2]`` float32 in pixels, channel 0 = horizontal (x), 1 = vertical (y),
displacement from ``prev`` to ``nxt``.
"""

from __future__ import annotations

import threading
from typing import Any

import cv2
import numpy as np

METHODS = ("tvl1", "tvl1-opencv", "farneback", "dis")
I3D_FLOW_BOUND = 20.0  # pixels; kinetics-i3d truncates flow to [-20, 20]
# Below this many pixels on the shorter side flow is defined as zero: DIS refuses such images,
# TV-L1's pyramid degenerates, and no backbone here feeds frames this small.
MIN_SIDE = 12

_local = threading.local()  # OpenCV flow objects are not thread-safe; one set per thread


def _tvl1() -> Any:
    obj = getattr(_local, "tvl1", None)
    if obj is None:
        obj = cv2.optflow.DualTVL1OpticalFlow_create()  # OpenCV defaults = the usual TV-L1
        _local.tvl1 = obj
    return obj


def _dis() -> Any:
    obj = getattr(_local, "dis", None)
    if obj is None:
        obj = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        _local.dis = obj
    return obj


def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 3]`` RGB (or already ``[H, W]``) -> uint8 ``[H, W]`` luma."""
    if image.ndim == 2:
        return np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected [H, W, 3] RGB or [H, W] gray, got shape {image.shape}")
    return cv2.cvtColor(np.ascontiguousarray(image, dtype=np.uint8), cv2.COLOR_RGB2GRAY)


def compute_flow(prev: np.ndarray, nxt: np.ndarray, method: str = "tvl1") -> np.ndarray:
    """Flow from ``prev`` to ``nxt`` (RGB or gray uint8, same size) -> ``[H, W, 2]`` float32."""
    a, b = to_gray(prev), to_gray(nxt)
    if a.shape != b.shape:
        raise ValueError(f"frames differ in size: {a.shape} vs {b.shape}")
    h, w = a.shape
    if method not in METHODS:
        raise ValueError(f"unknown flow method {method!r}; choose one of {METHODS}")
    if min(h, w) < MIN_SIDE:
        return np.zeros((h, w, 2), np.float32)
    if method == "tvl1":
        return _onnx_pairs(a[None], b[None])[0]
    if method == "tvl1-opencv":
        flow = _tvl1().calc(a, b, None)
    elif method == "farneback":
        # Farneback parameters commonly used for action recognition (OpenCV sample values).
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    elif method == "dis":
        flow = _dis().calc(a, b, None)
    return np.asarray(flow, dtype=np.float32).reshape(h, w, 2)


def _onnx_pairs(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """ONNX TV-L1 of gray uint8 pairs ``[B, H, W]`` -> ``[B, H, W, 2]`` (batched runs)."""
    from hamnet.video.tvl1 import TVL1Flow

    b, h, w = prev.shape
    if b == 0 or min(h, w) < MIN_SIDE:
        return np.zeros((b, h, w, 2), np.float32)
    return TVL1Flow(h, w).flow_pairs(prev, nxt)


def flow_to_uint8(flow: np.ndarray, bound: float = I3D_FLOW_BOUND) -> np.ndarray:
    """Truncate to ``[-bound, bound]`` and map linearly onto 0..255 (``128 + 255/(2 bound) f``,
    rounded), the 256-level quantisation the I3D flow checkpoints were trained on (they read
    flow from JPEGs)."""
    f = np.clip(np.asarray(flow, dtype=np.float32), -bound, bound)
    q = np.rint(128.0 + (255.0 / (2.0 * bound)) * f)
    return np.clip(q, 0, 255).astype(np.uint8)


def flow_to_i3d(flow: np.ndarray, bound: float = I3D_FLOW_BOUND) -> np.ndarray:
    """I3D flow-stream input: quantised flow rescaled like an image, ``q / 255 * 2 - 1``, so
    values lie in [-1, 1] (zero motion maps to 128 -> +0.0039, as in the reference
    extractors)."""
    return flow_to_uint8(flow, bound).astype(np.float32) * (2.0 / 255.0) - 1.0


def snippet_flow(
    frames: np.ndarray, method: str = "tvl1", prev: np.ndarray | None = None
) -> np.ndarray:
    """Flow for every frame of a snippet: uint8 ``[F, H, W, 3]`` -> float32 ``[F, H, W, 2]``.

    ``flow[i]`` is the motion from frame ``i-1`` to frame ``i``. For ``i = 0`` that needs the
    frame before the snippet: pass it as ``prev`` (the last frame of the previous snippet).
    Without it, ``flow[0]`` repeats ``flow[1]`` (the usual "duplicate the edge" convention
    that keeps F flow fields per F frames); a 1-frame snippet without ``prev`` has zero flow.
    Grayscale conversion happens once per frame, not once per pair.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected [F, H, W, 3] frames, got shape {frames.shape}")
    n, h, w, _ = frames.shape
    out = np.zeros((n, h, w, 2), np.float32)
    if n == 0:
        return out
    if method not in METHODS:
        raise ValueError(f"unknown flow method {method!r}; choose one of {METHODS}")
    grays = [to_gray(f) for f in frames]
    before = to_gray(prev) if prev is not None else None
    if before is not None and before.shape != grays[0].shape:
        raise ValueError(f"frames differ in size: {before.shape} vs {grays[0].shape}")
    first = 0 if before is not None else 1  # index of the first flow field computed
    seq = ([before] if before is not None else []) + grays
    if method == "tvl1":  # all pairs of the snippet in one batched graph run
        if len(seq) > 1:
            stack = np.stack(seq)  # [P+1, H, W]
            out[first:] = _onnx_pairs(stack[:-1], stack[1:])
    else:
        for i in range(first, n):
            out[i] = compute_flow(seq[i - first], seq[i - first + 1], method)
    if before is None and n > 1:
        out[0] = out[1]
    return out


def snippet_flow_i3d(
    frames: np.ndarray, method: str = "tvl1", prev: np.ndarray | None = None
) -> np.ndarray:
    """``snippet_flow`` followed by :func:`flow_to_i3d`: the flow stream's network input."""
    return flow_to_i3d(snippet_flow(frames, method, prev))
