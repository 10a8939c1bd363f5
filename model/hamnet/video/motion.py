"""The weight-free ``"motion"`` backbone: hand-crafted motion and appearance descriptors.

Why it exists: the I3D weights cannot be downloaded here, yet HAM-Net needs one feature vector
per snippet. These descriptors, classic in action recognition before deep features
(HOF/MBH of dense trajectories, HOG, colour histograms), cost a few milliseconds per frame on
one CPU core, need no weights, and separate actions that are defined by *how things move*.

Per snippet (``snippet_frames`` frames at ``fps``), frames are converted to gray at a fixed
working height (``options.work_height``, so features do not depend on the input size), dense
optical flow is computed between consecutive frames (Farneback, small window), and the median flow is subtracted
(camera/background drift compensation: a drifting background is not an action). Velocities
are expressed in percent of the frame height per second so they do not depend on the fps
either. Then, averaged over the snippet's flow fields unless noted:

====================  ====  =================================================================
block                  dim  what it captures
====================  ====  =================================================================
hof_grid               128  orientation histogram of residual flow (8 bins, magnitude-weighted)
                            on a 4x4 spatial grid: where things move, and which way
hof_global              24  global 12-bin HOF, mean and max over the snippet's flows
hof_temporal            24  first-half minus second-half global HOF (12) and its |.| (12):
                            direction reversals inside the snippet (bounce, slide, zigzag)
mbh                     80  motion-boundary histograms: 8-bin orientation histograms of the
                            spatial gradients of u and of v, global + 2x2 grid; zero for
                            uniform (camera) motion, large at moving object edges
magnitude               16  fraction of pixels moving faster than 8 thresholds (mean over
                            the snippet) and 4 of them (max); 95/99th percentile and mean
                            speed; mean temporal change of the flow
kinematics              28  magnitude-weighted object velocity per flow: its 8-bin direction
                            histogram, signed turning-angle histogram (8 bins: orbit turns
                            steadily, bounce/slide reverse), speed mean/std, |mean velocity|,
                            acceleration (4); divergence, curl and shear of a weighted affine
                            fit of the flow (mean |.|, |mean|, std: spin = curl, pulse =
                            divergence) (8)
actor                   32  the acting object's own motion (version 2): the pixels faster
                            than 15 %H/s (distractors and the compensated background are
                            slower), their coherence |mean flow|/speed, tangential and radial
                            flow about their own centroid (spin, pulse), reversals, turning of
                            the translation and of the centroid path (orbit vs slide), folded
                            direction histogram (slide vs bounce vs zigzag); see
                            :func:`_actor_block`
diff_grid               16  mean absolute frame difference on a 4x4 grid (motion energy,
                            no flow needed)
appearance              68  middle frame: hue histogram weighted by saturation x value (12),
                            HOG-like gradient-orientation histograms (8 bins, global + 2x2
                            grid = 40), 4x4 grid of mean luma (16)
====================  ====  =================================================================

Total: **416** dimensions, float32 (``spec.version`` "2"). Version "1", the first release's
384-d descriptor, is the same without the ``actor`` block; bundles that recorded version 1
keep getting exactly those features. Adding the block took the default demo bundle's mAP@0.5
on validation videos from 0.77 to 0.88 (bench/results/demo.md, "Stronger default model").

Normalisation: every block is power-normalised (signed square root) and multiplied by a
fixed constant, *not* L2-normalised per snippet, so that the amount of motion (what makes a
snippet "action" rather than "background") survives. The blocks are balanced to O(0.1-1)
and the whole vector is then multiplied by :data:`OUTPUT_GAIN` = 0.25 (per-dimension std
~0.015): with larger inputs a freshly initialised HAM-Net's attention saturates and, pushed
by the sparsity loss, collapses to zero for most of training (measured on the synthetic set:
x4 never recovered, x1 recovered after ~40 epochs, x0.25 did not collapse). ``encode`` is a
pure function of its input.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np

from hamnet.video.backbone import BackboneSpec

FEATURE_DIM = 416
VERSION = "2"
OUTPUT_GAIN = 0.25  # see the module docstring: keeps HAM-Net's attention unsaturated at init
_BLOCKS = {
    "hof_grid": 128,
    "hof_global": 24,
    "hof_temporal": 24,
    "mbh": 80,
    "magnitude": 16,
    "kinematics": 28,
    "actor": 32,
    "diff_grid": 16,
    "appearance": 68,
}
assert sum(_BLOCKS.values()) == FEATURE_DIM
# Descriptor versions: what a bundle's spec.version selects. Version 1 (the first release,
# 384-d) is version 2 without the ``actor`` block; it stays computable so that bundles built
# with it keep getting exactly the features they were trained on.
FEATURE_DIMS = {"1": FEATURE_DIM - _BLOCKS["actor"], "2": FEATURE_DIM}

DEFAULT_OPTIONS: dict[str, Any] = {
    "work_height": 72,  # px: flow and descriptors are computed at this height
    "farneback_winsize": 9,  # small window: objects are only ~10 px wide at work_height
    "dis_preset": "medium",  # when flow_method is "dis": ultrafast | fast | medium
}


def default_spec() -> BackboneSpec:
    """The spec of the default motion backbone (what ``load_backbone("motion")`` builds).

    12.5 fps and 8-frame snippets: one feature per 0.64 s (the I3D/THUMOS snippet length, so the
    standard post-processing timing applies) while computing flow on only 7 frame pairs per
    snippet; at 12.5 fps even slow motion moves far enough between frames to be measured."""
    return BackboneSpec(
        name="motion",
        fps=12.5,
        snippet_frames=8,
        resize_shorter=96,
        crop=None,
        streams=("rgb", "flow"),
        normalisation="none",
        flow_method="farneback",
        feature_dim=FEATURE_DIM,
        files={},
        version=VERSION,
        options=dict(DEFAULT_OPTIONS),
    )


_DEAD_ZONE = 3.0  # %H/s: Farneback returns up to ~2.5 on identical frames
_local = threading.local()
_DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def _flow_fn(method: str, opts: dict[str, Any]):
    """A ``(prev_gray, next_gray) -> [H, W, 2]`` flow function (thread-local OpenCV state).

    Farneback with a 9-pixel window is the default: DIS (fast or medium) and Farneback with
    the usual 15-pixel window smooth away most of the motion of small objects (a spinning
    10-pixel bar yields almost no flow), which is exactly what the classes are made of."""
    if method == "farneback":
        ws = int(opts["farneback_winsize"])
        return lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, ws, 3, 5, 1.1, 0)
    if method == "dis":
        preset = opts["dis_preset"]
        key = f"dis_{preset}"
        obj = getattr(_local, key, None)
        if obj is None:
            obj = cv2.DISOpticalFlow_create(_DIS_PRESETS[preset])
            setattr(_local, key, obj)
        return lambda a, b: obj.calc(a, b, None)
    from hamnet.video.flow import compute_flow

    return lambda a, b: compute_flow(a, b, method)


def _psqrt(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.sqrt(np.abs(x))


def _cell_index(h: int, w: int, gy: int, gx: int) -> tuple[np.ndarray, np.ndarray]:
    """Flattened per-pixel cell id of a ``gy x gx`` grid, and pixels per cell."""
    ys = np.minimum(np.arange(h) * gy // h, gy - 1)
    xs = np.minimum(np.arange(w) * gx // w, gx - 1)
    cell = (ys[:, None] * gx + xs[None, :]).ravel()
    return cell, np.bincount(cell, minlength=gy * gx).astype(np.float64)


def _polar(dx: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flattened magnitude and angle in degrees [0, 360) (OpenCV: much faster than numpy)."""
    mag, ang = cv2.cartToPolar(
        np.ascontiguousarray(dx, np.float32).ravel(),
        np.ascontiguousarray(dy, np.float32).ravel(),
        angleInDegrees=True,
    )
    return mag.ravel(), ang.ravel()


def _hist(
    mag: np.ndarray, ang: np.ndarray, bins: int, cell: np.ndarray | None = None, n_cells: int = 1
) -> np.ndarray:
    """Magnitude-weighted orientation histogram with centred bins (bin 0 = +x), per cell:
    ``[n_cells, bins]`` sums, not normalised."""
    b = (ang * (bins / 360.0) + 0.5).astype(np.int64) % bins
    idx = b if cell is None else cell * bins + b
    return np.bincount(idx, weights=mag, minlength=n_cells * bins).reshape(n_cells, bins)


def _hist_k(
    mag: np.ndarray, ang: np.ndarray, bins: int, cell: np.ndarray | None, n_cells: int
) -> np.ndarray:
    """:func:`_hist` of K fields at once: ``mag``/``ang`` ``[K, P]`` -> ``[K, n_cells, bins]``.
    One bincount over ``(k, cell, bin)``: each bin still sums its own field's pixels in pixel
    order, so every histogram equals the one :func:`_hist` computes."""
    k, p = mag.shape
    idx = (ang * (bins / 360.0) + 0.5).astype(np.intp)  # [K, P] in 0..bins
    idx[idx == bins] = 0  # = "% bins" (angles are in [0, 360)), without an integer division
    idx += _bin_offsets(k, p, bins, cell, n_cells)
    out = np.bincount(idx.ravel(), weights=mag.ravel(), minlength=k * n_cells * bins)
    return out.reshape(k, n_cells, bins)


_OFFSETS: dict[tuple[int, int, int, int, int], tuple[np.ndarray | None, np.ndarray]] = {}


def _bin_offsets(
    k: int, p: int, bins: int, cell: np.ndarray | None, n_cells: int
) -> np.ndarray:
    """``[K, P]`` index offsets ``(field * n_cells + cell) * bins`` of :func:`_hist_k`,
    cached per shape and grid (the same few shapes recur for every snippet)."""
    key = (k, p, bins, n_cells, id(cell))
    hit = _OFFSETS.get(key)
    if hit is not None and hit[0] is cell:  # the entry holds ``cell``: its id is not reused
        return hit[1]
    c = np.zeros(p, np.intp) if cell is None else cell.astype(np.intp)
    off = (np.arange(k, dtype=np.intp)[:, None] * n_cells + c[None, :]) * bins
    off.setflags(write=False)
    if len(_OFFSETS) > 64:  # a bound, in case many frame sizes pass through a process
        _OFFSETS.clear()
    _OFFSETS[key] = (cell, off)
    return off


@dataclass(frozen=True)
class _Grid:
    """Per-size constants of the descriptor: cell ids and pixel coordinates."""

    cell16: np.ndarray
    n16: np.ndarray
    cell4: np.ndarray
    n4: np.ndarray
    xs: np.ndarray  # flattened x / wh
    ys: np.ndarray  # flattened y / wh


@functools.lru_cache(maxsize=16)
def _grid(wh: int, ww: int) -> _Grid:
    cell16, n16 = _cell_index(wh, ww, 4, 4)
    cell4, n4 = _cell_index(wh, ww, 2, 2)
    ys, xs = np.mgrid[0:wh, 0:ww].astype(np.float64) / wh
    for a in (cell16, n16, cell4, n4, xs, ys):
        a.setflags(write=False)  # shared between snippets and threads
    return _Grid(cell16, n16, cell4, n4, xs.ravel(), ys.ravel())


def _orient_hist(
    dx: np.ndarray, dy: np.ndarray, bins: int, cell: np.ndarray | None, n_cells: int
) -> np.ndarray:
    mag, ang = _polar(dx, dy)
    return _hist(mag, ang, bins, cell, n_cells)


def _affine_fit(
    xs: np.ndarray, ys: np.ndarray, u: np.ndarray, v: np.ndarray, mag: np.ndarray
) -> np.ndarray:
    """Weighted least-squares affine model of the residual flow, ``(u, v) = t + A (p - c)``,
    weights = speed squared (so the fastest mover dominates); returns ``[divergence, curl,
    shear_1, shear_2]`` of ``A``. Why: a spinning object is pure curl, a pulsing one pure
    divergence, a translating one neither; finite differences at 6-pixel objects are far
    noisier than this fit over all the moving pixels."""
    w = mag.astype(np.float64) ** 2
    sw = w.sum()
    if sw < _DEAD_ZONE**2 * 4:  # fewer than a few moving pixels: no motion to model
        return np.zeros(4)
    cx, cy = (w * xs).sum() / sw, (w * ys).sum() / sw
    dx, dy = xs - cx, ys - cy
    X = np.stack([np.ones_like(dx), dx, dy], 1)
    XtW = X.T * w
    G = XtW @ X + np.diag([0.0, 1e-3, 1e-3]) * sw
    coef = np.linalg.solve(G, XtW @ np.stack([u, v], 1))  # [3, 2]: rows 1, x, y
    a11, a21 = coef[1]  # du/dx, dv/dx
    a12, a22 = coef[2]  # du/dy, dv/dy
    return np.array([a11 + a22, a21 - a12, a11 - a22, a12 + a21])


class MotionBackbone:
    """Weight-free backbone: see the module docstring for what each dimension measures.

    ``parallel_snippets``: ``encode`` may run on several batches at once from different
    threads (it keeps no state; OpenCV objects are thread-local), which the pipelined
    extractor uses to spread the descriptors over the thread budget ``threads`` (``None``:
    every available core; the worker sets its per-child share)."""

    parallel_snippets = True

    def __init__(self, spec: BackboneSpec | None = None) -> None:
        spec = spec or default_spec()
        if spec.name != "motion":
            from hamnet.errors import BundleError

            raise BundleError(f"MotionBackbone needs a spec named 'motion', got {spec.name!r}")
        opts = {**DEFAULT_OPTIONS, **dict(spec.options)}
        problems = []
        dim = FEATURE_DIMS.get(str(spec.version))
        if dim is None:
            problems.append(f"version must be one of {sorted(FEATURE_DIMS)}, got {spec.version!r}")
        elif spec.feature_dim != dim:
            problems.append(
                f"feature_dim must be {dim} (version {spec.version}), got {spec.feature_dim}"
            )
        if spec.snippet_frames < 2:
            problems.append("snippet_frames must be >= 2 (flow needs two frames)")
        if opts["dis_preset"] not in _DIS_PRESETS:
            problems.append(f"options.dis_preset must be one of {sorted(_DIS_PRESETS)}")
        ws = opts["farneback_winsize"]
        if not (isinstance(ws, int) and ws >= 3):
            problems.append("options.farneback_winsize must be an integer >= 3")
        if not (isinstance(opts["work_height"], int) and opts["work_height"] >= 16):
            problems.append("options.work_height must be an integer >= 16")
        unknown = sorted(set(opts) - set(DEFAULT_OPTIONS))
        if unknown:
            problems.append(f"unknown option(s) {unknown}")
        if problems:
            from hamnet.errors import BundleError

            raise BundleError("invalid motion backbone spec: " + "; ".join(problems))
        self._spec = replace(spec, options=opts)
        self._opts = opts
        self._flow = None
        self._dim = int(dim) if dim is not None else FEATURE_DIM
        self._actor = str(spec.version) != "1"
        self.threads: int | None = None

    @property
    def spec(self) -> BackboneSpec:
        return self._spec

    @property
    def provider(self) -> str:
        return "numpy/opencv"

    @property
    def feature_dim(self) -> int:
        return self._dim

    def encode(self, frames: np.ndarray) -> np.ndarray:
        """uint8 ``[N, F, H, W, 3]`` RGB snippets -> float32 ``[N, feature_dim]``."""
        x = np.asarray(frames)
        if x.ndim != 5 or x.shape[-1] != 3:
            raise ValueError(f"expected uint8 [N, F, H, W, 3] frames, got shape {x.shape}")
        if x.shape[1] < 2:
            raise ValueError("motion features need at least 2 frames per snippet")
        out = np.empty((x.shape[0], self._dim), np.float32)
        for i in range(x.shape[0]):
            out[i] = self._snippet(x[i])
        return out

    # ------------------------------------------------------------------ one snippet

    def _snippet(self, frames: np.ndarray) -> np.ndarray:
        spec, opts = self._spec, self._opts
        h0, w0 = frames.shape[1:3]
        wh = int(opts["work_height"])
        ww = max(16, int(round(w0 * wh / h0)))
        flow_fn = _flow_fn(spec.flow_method or "farneback", opts)
        small = [
            cv2.resize(np.ascontiguousarray(f), (ww, wh), interpolation=cv2.INTER_AREA)
            if (h0, w0) != (wh, ww)
            else np.ascontiguousarray(f)
            for f in frames
        ]
        gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in small]
        # px per frame -> percent of frame height per second
        to_speed = 100.0 * spec.fps / wh
        bd = max(1, wh // 24)  # border ignored by the flow statistics (3 px at 72)
        n_flow = len(gray) - 1
        grid = _grid(wh, ww)
        cell16, n16, cell4, n4 = grid.cell16, grid.n16, grid.cell4, grid.n4
        npix = float(wh * ww)
        thresholds = np.array([2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0])

        # All flows of the snippet at once ([K, wh, ww, 2], K = n_flow): the statistics below
        # are batched over K (one numpy call instead of K), which is what makes the
        # descriptor cheap enough to keep up with decoding. Every reduction still runs over
        # the same elements in the same order as the per-flow loop of the first release, so
        # the features are those of the released descriptor (tests/video/test_motion_parity).
        f = np.stack(
            [np.asarray(flow_fn(gray[k], gray[k + 1]), np.float32).reshape(wh, ww, 2)
             for k in range(n_flow)]
        )
        # [K, 2] camera/background drift (an order statistic: computed on a contiguous
        # [K, 2, P] copy, where partitioning is fastest, it is the same number)
        med = np.median(np.ascontiguousarray(f.reshape(n_flow, -1, 2).transpose(0, 2, 1)),
                        axis=2)
        r = (f - med[:, None, None, :]) * to_speed  # residual, %H/s
        # Dead zone: flow noise on still pixels (< 3 %H/s) is not motion.
        r[np.hypot(r[..., 0], r[..., 1]) < _DEAD_ZONE] = 0.0
        # Flow is unreliable where content enters or leaves the picture: ignore the border.
        r[:, :bd], r[:, -bd:], r[:, :, :bd], r[:, :, -bd:] = 0.0, 0.0, 0.0, 0.0
        u, v = r[..., 0], r[..., 1]  # [K, wh, ww]
        flat, ang = _polar(u, v)
        flat, ang = flat.reshape(n_flow, -1), ang.reshape(n_flow, -1)  # [K, wh*ww]
        hof_grid = (_hist_k(flat, ang, 8, cell16, 16) / n16[:, None]).sum(0)  # [16, 8]
        hof_glob = _hist_k(flat, ang, 12, None, 1)[:, 0] / npix  # [K, 12]
        # motion boundaries: spatial gradients of u and of v, per flow
        gx = np.empty((2, n_flow, wh, ww), np.float32)
        gy = np.empty((2, n_flow, wh, ww), np.float32)
        for c, comp in enumerate((u, v)):
            for k in range(n_flow):
                gx[c, k] = cv2.Sobel(comp[k], cv2.CV_32F, 1, 0, ksize=3) / 8.0
                gy[c, k] = cv2.Sobel(comp[k], cv2.CV_32F, 0, 1, ksize=3) / 8.0
        gmag, gang = _polar(gx, gy)
        h4 = _hist_k(
            gmag.reshape(2 * n_flow, -1), gang.reshape(2 * n_flow, -1), 8, cell4, 4
        ).reshape(2, n_flow, 4, 8)
        mbh = np.zeros((2, 5, 8))
        mbh[:, 0] = (h4.sum(2) / npix).sum(1)
        mbh[:, 1:] = (h4 / n4[:, None]).sum(1)
        # [K, 8] fractions: integer counts / P, the float64 value the boolean mean gives
        frac = np.count_nonzero(flat[:, :, None] > thresholds, axis=1) / flat.shape[1]
        q = np.percentile(flat, [95, 99], axis=1)  # [2, K]
        means = flat.mean(axis=1)
        p95 = p99 = mean_speed = flow_change = 0.0
        for k in range(n_flow):  # scalar sums in the released order and precision
            p95 += q[0, k]
            p99 += q[1, k]
            mean_speed += means[k]
        changes = np.abs(np.diff(r, axis=0)).reshape(max(0, n_flow - 1), -1).mean(axis=1)
        for d in changes:
            flow_change += d
        wsum = flat.sum(axis=1) + 1e-6
        mag = flat.reshape(n_flow, wh, ww)
        vel = np.stack(
            [(u * mag).reshape(n_flow, -1).sum(1) / wsum,
             (v * mag).reshape(n_flow, -1).sum(1) / wsum], 1
        ).astype(np.float64)  # [K, 2]
        xs, ys = grid.xs, grid.ys
        affine = np.zeros((n_flow, 4))
        actor: list[np.ndarray | None] = []
        for k in range(n_flow):
            uk, vk = u[k].ravel(), v[k].ravel()
            affine[k] = _affine_fit(xs, ys, uk, vk, flat[k])
            if self._actor:
                actor.append(_actor_stats(uk, vk, flat[k], xs, ys))

        blocks: list[np.ndarray] = []
        # hof_grid (128): mean %H/s per cell and direction
        blocks.append(0.15 * _psqrt(hof_grid.ravel() / n_flow))
        # hof_global (24)
        blocks.append(0.3 * _psqrt(np.concatenate([hof_glob.mean(0), hof_glob.max(0)])))
        # hof_temporal (24)
        half = max(1, n_flow // 2)
        first = hof_glob[:half].mean(0)
        second = hof_glob[half:].mean(0) if n_flow > half else first
        d = first - second
        blocks.append(0.3 * _psqrt(np.concatenate([d, np.abs(d)])))
        # mbh (80): per second of velocity gradient
        blocks.append(0.3 * _psqrt(mbh.ravel() / n_flow))
        # magnitude (16): fractions of moving pixels (mean over flows, 8; max over flows for
        # 4 of the thresholds), speed percentiles/mean and temporal change of the flow (4)
        speed_stats = np.array([p95, p99, mean_speed, flow_change * n_flow / max(1, n_flow - 1)])
        blocks.append(
            np.concatenate(
                [
                    np.sqrt(frac.sum(0) / n_flow),
                    np.sqrt(frac.max(0)[[1, 3, 5, 7]]),
                    0.05 * np.sqrt(speed_stats / n_flow),
                ]
            )
        )
        # kinematics (28)
        blocks.append(self._kinematics(vel, affine))
        if self._actor:  # actor (32): the fast-moving object's own motion (version 2)
            blocks.append(_actor_block(actor, n_flow, npix))
        # diff_grid (16): frame differences, 0..1
        g = np.stack(gray).astype(np.float32) / 255.0
        diff = np.abs(np.diff(g, axis=0)).mean(0).ravel()
        dg = np.bincount(cell16, weights=diff, minlength=16) / n16
        blocks.append(2.0 * _psqrt(dg))
        # appearance (68)
        blocks.append(
            self._appearance(small[len(small) // 2], gray[len(gray) // 2], cell4, n4, cell16, n16)
        )
        out = (OUTPUT_GAIN * np.concatenate(blocks)).astype(np.float32)
        assert out.shape == (self._dim,), out.shape
        return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)

    @staticmethod
    def _kinematics(vel: np.ndarray, affine: np.ndarray) -> np.ndarray:
        """28 dims from the per-flow object velocity sequence and affine motion fit."""
        speed = np.hypot(vel[:, 0], vel[:, 1])
        dir_hist = _orient_hist(vel[:, 0], vel[:, 1], 8, None, 1)[0] / len(vel)
        turn = np.zeros(8)
        if len(vel) > 1:
            a = np.arctan2(vel[:, 1], vel[:, 0])
            dth = np.angle(np.exp(1j * np.diff(a)))  # signed turn in (-pi, pi]
            w = np.minimum(speed[1:], speed[:-1])
            b = np.clip(((dth + math.pi) / (2 * math.pi) * 8).astype(int), 0, 7)
            turn = np.bincount(b, weights=w, minlength=8) / (len(vel) - 1)
            acc = np.abs(np.diff(vel, axis=0)).sum(1).mean()
        else:
            acc = 0.0
        mean_v = np.hypot(*vel.mean(0))
        div, curl = affine[:, 0], affine[:, 1]
        shear = np.hypot(affine[:, 2], affine[:, 3])
        stats = np.array(
            [
                speed.mean(), speed.std(), mean_v, acc,
                np.abs(div).mean(), np.abs(curl).mean(), shear.mean(), abs(div.mean()),
                abs(curl.mean()), div.std(), curl.std(), div.mean(),
            ]
        )  # fmt: skip
        scale = np.array([1, 1, 1, 1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], float)
        out = np.concatenate(
            [0.15 * _psqrt(dir_hist), 0.15 * _psqrt(turn), 0.1 * _psqrt(stats * scale / 10.0)]
        )
        return out

    @staticmethod
    def _appearance(rgb, gray, cell4, n4, cell16, n16) -> np.ndarray:
        """68 dims of a single frame: colour, gradients and coarse layout."""
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)  # H in 0..179
        hue = (hsv[..., 0].astype(np.int64).ravel() * 12) // 180
        sat = hsv[..., 1].astype(np.float64).ravel() / 255.0
        val = hsv[..., 2].astype(np.float64).ravel() / 255.0
        npix = float(hue.size)
        hue_h = np.bincount(hue, weights=sat * val, minlength=12)[:12] / npix
        g = gray.astype(np.float32) / 255.0
        gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3) / 8.0
        gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3) / 8.0
        h4 = _orient_hist(gx, gy, 8, cell4, 4)
        hog_g = h4.sum(0) / npix
        hog_c = (h4 / n4[:, None]).ravel()
        layout = np.bincount(cell16, weights=g.ravel(), minlength=16) / n16
        return np.concatenate([_psqrt(hue_h), 2 * _psqrt(hog_g), 2 * _psqrt(hog_c), 0.5 * layout])


# %H/s: the "actor" pixels. Distractors glide at 4-12 %H/s and the background is compensated;
# action cores move at ~20-150 %H/s (see hamnet.demo.synth), so a fixed threshold isolates the
# acting object without any segmentation.
_ACTOR_SPEED = 15.0
_ACTOR_DIMS = 32


def _actor_stats(
    u: np.ndarray, v: np.ndarray, mag: np.ndarray, xs: np.ndarray, ys: np.ndarray
) -> np.ndarray | None:
    """One flow field (flattened residual flow ``u, v`` in %H/s, its magnitude, pixel
    coordinates in frame heights): motion of the pixels faster than :data:`_ACTOR_SPEED`.

    Returns ``[n, cx, cy, tx, ty, s, rho, tau, sig]``: pixel count, speed-weighted centroid,
    mean flow (the object's translation), mean speed, the mean radial (``rho``: growing or
    shrinking) and tangential (``tau``: turning about its own centre) flow relative to the
    centroid after removing the translation, and the spatial spread; ``None`` when fewer
    than 4 pixels move that fast. Why: the frame-wide affine fit of ``kinematics`` mixes the
    actor with distractors; relative to the actor's own centre, spin is tangential, pulse
    radial, and slide/orbit/bounce/zigzag coherent translation (``|t| ~ s``)."""
    m = mag > _ACTOR_SPEED
    n = int(m.sum())
    if n < 4:
        return None
    w = mag[m].astype(np.float64)
    uu, vv, x, y = u[m], v[m], xs[m], ys[m]
    sw = w.sum()
    cx, cy = (w * x).sum() / sw, (w * y).sum() / sw
    tx, ty = (w * uu).sum() / sw, (w * vv).sum() / sw
    s = (w * w).sum() / sw
    dx, dy = x - cx, y - cy
    rr = np.hypot(dx, dy) + 1e-3
    ru, rv = uu - tx, vv - ty
    rho = (w * (ru * dx + rv * dy) / rr).sum() / sw
    tau = (w * (rv * dx - ru * dy) / rr).sum() / sw
    sig = math.sqrt((w * (dx * dx + dy * dy)).sum() / sw)
    return np.array([n, cx, cy, tx, ty, s, rho, tau, sig])


def _actor_block(stats: list[np.ndarray | None], n_flow: int, npix: float) -> np.ndarray:
    """The ``actor`` block (32 dims) from the snippet's per-flow :func:`_actor_stats`.

    Coherence ``|t|/s`` (mean, min, max); tangential and radial flow over speed (``|tau|``
    mean, ``|mean tau|``, ``|rho|`` mean, std and ``|mean rho|``); mean speed and mean
    translation speed (/100); horizontal share of the translation; sign changes of the
    vertical and horizontal translation and of ``rho`` (bounce, slide/zigzag reversals, pulse
    period); net, total and largest turn of the translation direction (orbit turns steadily,
    slide reverses); centroid path length, straightness, and net/total turn of the centroid
    path; spatial spread; a constant 1 and the moving-area percentage; a 4-bin histogram of
    the turn per flow (0-22.5-45-90-180 deg); a 4-bin histogram of the translation direction
    folded to 0 (horizontal) .. 90 (vertical) deg. All are >= 0, square-rooted and multiplied
    by the fraction of flows with an actor, so a still snippet gives exactly 0."""
    out = np.zeros(_ACTOR_DIMS)
    valid = [s for s in stats if s is not None]
    K = len(valid)
    if K == 0:
        return out
    A = np.stack(valid)
    n, cx, cy, tx, ty, s, rho, tau, sig = A.T
    tmag = np.hypot(tx, ty)
    kappa = tmag / (s + 1e-6)
    tn, rn = tau / (s + 1e-6), rho / (s + 1e-6)
    vf = K / n_flow
    f = [
        kappa.mean(),
        kappa.min(),
        kappa.max(),
        np.abs(tn).mean(),
        abs(tn.mean()),
        np.abs(rn).mean(),
        rn.std(),
        abs(rn.mean()),
        s.mean() / 100,
        tmag.mean() / 100,
        (np.abs(tx) / (np.abs(tx) + np.abs(ty) + 1e-6)).mean(),
    ]

    def sign_changes(a: np.ndarray, thr: float) -> float:
        a = a[np.abs(a) > thr]
        return float((np.diff(np.sign(a)) != 0).sum()) / max(1, n_flow - 1)

    f += [sign_changes(ty, 5.0), sign_changes(tx, 5.0), sign_changes(rho, 1.0)]
    # turning of the actor velocity
    net = tot = mx = 0.0
    th4 = np.zeros(4)
    if K > 1:
        ok = tmag > 5.0
        a = np.arctan2(ty, tx)
        d = np.angle(np.exp(1j * np.diff(a)))
        d = d[ok[1:] & ok[:-1]]
        if d.size:
            net, tot, mx = (
                abs(d.sum()) / math.pi,
                np.abs(d).sum() / math.pi,
                np.abs(d).max() / math.pi,
            )
            b = np.digitize(np.abs(d), [math.pi / 8, math.pi / 4, math.pi / 2])
            th4 = np.bincount(b, minlength=4)[:4] / max(1, n_flow - 1)
    f += [net, tot, mx]
    # centroid path
    plen = straight = cnet = ctot = 0.0
    if K > 1:
        dc = np.diff(np.stack([cx, cy], 1), axis=0)
        step = np.hypot(dc[:, 0], dc[:, 1])
        plen = step.sum()
        straight = np.hypot(*dc.sum(0)) / (plen + 1e-6)
        okc = step > 0.01
        if okc.sum() > 1:
            a = np.arctan2(dc[okc, 1], dc[okc, 0])
            d = np.angle(np.exp(1j * np.diff(a)))
            cnet, ctot = abs(d.sum()) / math.pi, np.abs(d).sum() / math.pi
    f += [10 * plen / n_flow, straight, cnet, ctot]
    f += [10 * sig.mean(), 1.0, 100 * n.mean() / npix]
    # folded direction of the actor velocity: 0 = horizontal .. 90 = vertical, 4 bins
    fold = np.degrees(np.arctan2(np.abs(ty), np.abs(tx)))
    dh = np.bincount(np.minimum((fold / 22.5).astype(int), 3), weights=tmag, minlength=4)[:4]
    dh = dh / (tmag.sum() + 1e-6)
    f = np.concatenate([np.asarray(f, float), th4, dh])
    assert f.shape == (_ACTOR_DIMS,), f.shape
    return vf * np.sqrt(np.clip(f, 0, None))
