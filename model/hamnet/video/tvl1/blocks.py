"""Geometry, the ONNX graph builder and TV-L1's building blocks (each mirrors one OpenCV
primitive and is unit-tested against it). Tensor layout: ``[N, C, h, w]``."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from hamnet.errors import MissingDependencyError

OPSET = 17
TAU, LAMBDA, THETA = 0.25, 0.15, 0.3
NSCALES, SCALE_STEP, WARPS = 5, 0.8, 5
EPSILON, INNER, OUTER = 0.01, 30, 10
MEDIAN = 5
MIN_LEVEL = 16  # OpenCV drops pyramid levels narrower or lower than this
MIN_FRAME = 8  # smallest frame side the graph accepts (one pyramid level below 20 pixels)
I3D_BOUND = 20.0  # pixels; same value as hamnet.video.flow.I3D_FLOW_BOUND
DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
_FLT_EPS = float(np.finfo(np.float32).eps)


def _onnx() -> Any:
    try:
        import onnx
    except ModuleNotFoundError:
        raise MissingDependencyError(
            "the ONNX TV-L1 flow needs the onnx package (pip install 'hamnet[video]')"
        ) from None
    return onnx


def _ort() -> Any:
    try:
        import onnxruntime as ort
    except ModuleNotFoundError:
        raise MissingDependencyError(
            "the ONNX TV-L1 flow needs onnxruntime (pip install 'hamnet[video]')"
        ) from None
    return ort


# ----------------------------------------------------------------------------- geometry


def pyramid_sizes(height: int, width: int, nscales: int = NSCALES) -> list[tuple[int, int]]:
    """``(h, w)`` of every pyramid level, finest first, as OpenCV computes them
    (``cv::resize`` with ``fx = fy = 0.8`` rounds half to even; stop below 16 pixels)."""
    sizes = [(height, width)]
    for _ in range(1, nscales):
        h, w = sizes[-1]
        nh, nw = int(np.rint(h * SCALE_STEP)), int(np.rint(w * SCALE_STEP))
        if nh < MIN_LEVEL or nw < MIN_LEVEL:
            break
        sizes.append((nh, nw))
    return sizes


def linear_matrix(dst: int, src: int, inv_scale: float | None = None) -> np.ndarray:
    """``[dst, src]`` matrix of 1-D bilinear resizing as ``cv::resize`` does it: source
    coordinate ``(i + 0.5) * scale - 0.5`` (``scale = 1 / inv_scale``, by default
    ``src / dst``), computed in float32 like OpenCV, clamped to the first/last pixel."""
    scale = 1.0 / inv_scale if inv_scale is not None else src / dst
    m = np.zeros((dst, src), np.float32)
    for i in range(dst):
        fx = np.float32((i + 0.5) * scale - 0.5)
        sx = int(np.floor(fx))
        a = float(fx - np.float32(sx))
        if sx < 0:
            sx, a = 0, 0.0
        if sx >= src - 1:
            sx, a = src - 1, 0.0
        m[i, sx] += np.float32(1.0 - a)
        if a:
            m[i, sx + 1] += np.float32(a)
    return m


def median_network(n: int = 25) -> list[tuple[int, int]]:
    """Comparators ``(lo, hi)`` of Batcher's odd-even merge sort on the next power of two >= n
    (after all comparators, wire ``i`` holds the ``i``-th smallest value)."""
    size = 1
    while size < n:
        size *= 2
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


# ----------------------------------------------------------------------------- graph builder


class _Builder:
    """Collects ONNX nodes (a stack of node lists for ``Loop`` bodies) and shared constants."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._consts: dict[tuple, str] = {}
        self._n = 0

    def fresh(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attrs: Any) -> Any:
        helper = _onnx().helper
        outs = [self.fresh(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs[0] if outputs == 1 else outs

    def const(self, value: Any, dtype: Any = np.float32) -> str:
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        name = self._consts.get(key)
        if name is None:
            name = self.fresh("c")
            self.inits.append(_onnx().numpy_helper.from_array(arr, name))
            self._consts[key] = name
        return name

    def ints(self, *values: int) -> str:
        return self.const(list(values), np.int64)

    def slice(self, x: str, axis: int, start: int, end: int) -> str:
        return self.op("Slice", x, self.ints(start), self.ints(end), self.ints(axis))

    @contextmanager
    def body(self) -> Iterator[list[Any]]:
        saved, self.nodes = self.nodes, []
        try:
            yield self.nodes
        finally:
            self.nodes = saved

    def loop(
        self,
        trips: int,
        carried: Sequence[str],
        step: Callable[[list[str]], tuple[str, list[str]]],
        types: Sequence[int],
    ) -> list[str]:
        """``Loop`` of at most ``trips`` iterations over ``carried`` tensors; ``step`` maps the
        body's inputs to ``(keep_going, new_values)`` (keep_going: bool scalar)."""
        onnx = _onnx()
        helper, tp = onnx.helper, onnx.TensorProto
        with self.body() as nodes:
            it, cond = self.fresh("iter"), self.fresh("cond")
            ins = [self.fresh("in") for _ in carried]
            keep, outs = step(ins)
            # Body outputs must be produced inside the body: alias with Identity.
            outs = [self.op("Identity", o) for o in outs]
            keep = self.op("Identity", keep)
            graph = helper.make_graph(
                nodes,
                self.fresh("body"),
                [
                    helper.make_tensor_value_info(it, tp.INT64, []),
                    helper.make_tensor_value_info(cond, tp.BOOL, []),
                ]
                + [
                    helper.make_tensor_value_info(n, t, None)
                    for n, t in zip(ins, types, strict=True)
                ],
                [helper.make_tensor_value_info(keep, tp.BOOL, [])]
                + [
                    helper.make_tensor_value_info(n, t, None)
                    for n, t in zip(outs, types, strict=True)
                ],
            )
        results = self.op(
            "Loop",
            self.const(trips, np.int64),
            self.const(True, np.bool_),
            *carried,
            outputs=len(carried),
            body=graph,
        )
        return list(results) if len(carried) > 1 else [results]


# ----------------------------------------------------------------------------- building blocks


def resize_linear(
    g: _Builder, x: str, src: tuple[int, int], dst: tuple[int, int], inv_scale: float | None = None
) -> str:
    """Bilinear ``cv::resize`` of ``[N, C, h, w]`` to ``dst`` as ``Ry @ x @ Rx^T``."""
    ry = linear_matrix(dst[0], src[0], inv_scale)  # [h', h]
    rxt = linear_matrix(dst[1], src[1], inv_scale).T  # [w, w']
    y = g.op("MatMul", g.const(ry), x)  # [N, C, h', w]
    return g.op("MatMul", y, g.const(np.ascontiguousarray(rxt)))  # [N, C, h', w']


def centred_gradient(g: _Builder, x: str, h: int, w: int) -> tuple[str, str]:
    """OpenCV's ``centeredGradient`` of ``[N, 1, h, w]``: half the central difference, with
    replicate padding (which gives the one-sided halves at the borders)."""
    p = g.op("Pad", x, g.ints(0, 0, 1, 1, 0, 0, 1, 1), mode="edge")  # [N, 1, h+2, w+2]
    mid_r = g.slice(p, 2, 1, h + 1)  # [N, 1, h, w+2]
    mid_c = g.slice(p, 3, 1, w + 1)  # [N, 1, h+2, w]
    half = g.const(0.5)
    dx = g.op("Mul", g.op("Sub", g.slice(mid_r, 3, 2, w + 2), g.slice(mid_r, 3, 0, w)), half)
    dy = g.op("Mul", g.op("Sub", g.slice(mid_c, 2, 2, h + 2), g.slice(mid_c, 2, 0, h)), half)
    return dx, dy


def _pow2_plus1(n: int) -> int:
    """Smallest ``2**k + 1 >= n`` (k >= 1)."""
    k = 1
    while 2**k + 1 < n:
        k += 1
    return 2**k + 1


def remap_cubic(g: _Builder, img: str, u: str, h: int, w: int) -> str:
    """``cv2.remap(img, x + u1, y + u2, INTER_CUBIC)`` (BORDER_CONSTANT 0) for
    ``img [N, C, h, w]`` and flow ``u [N, 2, h, w]`` -> ``[N, C, h, w]``.

    ``GridSample`` bicubic is Keys' cubic with a = -0.75 like OpenCV's; zero padding is the
    constant-0 border; align_corners maps -1/1 to the pixel centres 0 and w-1. (OpenCV 4's
    remap rounded float maps to 1/32 pixel; the OpenCV 5 builds used here interpolate at the
    exact coordinates, which the unit test checks against the installed ``cv2.remap``.)

    The image is zero-padded on the right/bottom to ``2**k + 1`` pixels so that normalising
    pixel coordinates (``x * 2 / (w - 1) - 1``) and ORT's denormalisation are exact in float32:
    with zero flow the remap is then the identity, as in OpenCV, and identical frames give
    exactly zero flow (otherwise 1-ulp coordinate noise is amplified by the constant border
    over the warps into flow of up to a pixel along the image border)."""
    hp, wp = _pow2_plus1(h), _pow2_plus1(w)
    padded = g.op("Pad", img, g.ints(0, 0, 0, 0, 0, 0, hp - h, wp - w))  # [N, C, hp, wp]
    sx, sy = 2.0 / (wp - 1), 2.0 / (hp - 1)  # powers of two
    ys, xs = np.mgrid[0:h, 0:w]
    base = np.stack([xs * sx - 1.0, ys * sy - 1.0], axis=-1)[None].astype(np.float32)
    ut = g.op("Transpose", u, perm=[0, 2, 3, 1])  # [N, h, w, 2] (x, y)
    grid = g.op("Add", g.op("Mul", ut, g.const(np.array([sx, sy], np.float32))), g.const(base))
    return g.op("GridSample", padded, grid, mode="bicubic", padding_mode="zeros", align_corners=1)


def median5(g: _Builder, x: str, h: int, w: int) -> str:
    """5x5 median of every channel of ``[N, C, h, w]`` with replicate border
    (``cv2.medianBlur(x, 5)`` on float32): 25 shifted slices through the comparators of a
    32-wire Batcher network with 3 wires fixed at -inf and 4 at +inf, pruned to those that
    the median wire depends on."""
    r = MEDIAN // 2
    p = g.op("Pad", x, g.ints(0, 0, r, r, 0, 0, r, r), mode="edge")  # [N, C, h+4, w+4]
    rows = [g.slice(p, 2, dy, dy + h) for dy in range(MEDIAN)]
    taps = [g.slice(row, 3, dx, dx + w) for row in rows for dx in range(MEDIAN)]
    n = len(taps)  # 25
    lo_pad, hi_pad = (32 - n) // 2 - 1, 32 - n - ((32 - n) // 2 - 1)  # 3 x -inf, 4 x +inf
    # Symbolic pass: wires hold ("t", k) (a tensor) or ("lo"/"hi", None) (an infinity).
    wires: list[tuple[str, int | None]] = [("t", i) for i in range(n)]
    wires += [("lo", None)] * lo_pad + [("hi", None)] * hi_pad
    ops: list[tuple[str, int, int]] = []  # k-th op produces tensor n + k

    def emit(kind: str, a: int, b: int) -> tuple[str, int]:
        ops.append((kind, a, b))
        return ("t", n + len(ops) - 1)

    for i, j in median_network(32):
        a, b = wires[i], wires[j]
        if a[0] == "t" and b[0] == "t":
            wires[i], wires[j] = emit("Min", a[1], b[1]), emit("Max", a[1], b[1])
        elif a[0] == "hi" or b[0] == "lo":
            wires[i], wires[j] = b, a
    target = wires[lo_pad + n // 2]
    assert target[0] == "t"
    need = {target[1]}
    for k in range(len(ops) - 1, -1, -1):
        if n + k in need:
            need.update(ops[k][1:])
    names: dict[int, str] = dict(enumerate(taps))
    for k, (kind, a, b) in enumerate(ops):
        if n + k in need:
            names[n + k] = g.op(kind, names[a], names[b])
    return names[target[1]]


def divergence(g: _Builder, p1: str, p2: str, h: int, w: int) -> str:
    """OpenCV's ``divergence`` of ``(p1, p2)`` (``[N, C, h, w]`` each): backward differences
    with the values outside the image taken as zero. (Shifts are Slice + Pad rather than one
    Pad with negative pads, which not every execution provider implements.)"""
    zx = g.op("Pad", g.slice(p1, 3, 0, w - 1), g.ints(0, 0, 0, 1, 0, 0, 0, 0))  # p1[.., x-1]
    zy = g.op("Pad", g.slice(p2, 2, 0, h - 1), g.ints(0, 0, 1, 0, 0, 0, 0, 0))  # p2[.., y-1, :]
    return g.op("Add", g.op("Sub", p1, zx), g.op("Sub", p2, zy))


def forward_gradient(g: _Builder, u: str, h: int, w: int) -> tuple[str, str]:
    """OpenCV's ``forwardGradient``: next minus current pixel, zero on the last column (x) /
    last row (y) (= replicate padding)."""
    px = g.op("Pad", u, g.ints(0, 0, 0, 0, 0, 0, 0, 1), mode="edge")  # [N, C, h, w+1]
    py = g.op("Pad", u, g.ints(0, 0, 0, 0, 0, 0, 1, 0), mode="edge")  # [N, C, h+1, w]
    return g.op("Sub", g.slice(px, 3, 1, w + 1), u), g.op("Sub", g.slice(py, 2, 1, h + 1), u)
