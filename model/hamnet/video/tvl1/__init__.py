"""TV-L1 optical flow (OpenCV's ``DualTVL1OpticalFlow``) as an ONNX graph run by ONNX Runtime.

Why an ONNX graph: the I3D flow stream needs TV-L1 flow, and OpenCV computes it on one CPU core
at about a second per 224x224 pair. The inference worker already runs ONNX Runtime (with the
CUDA execution provider on GPU machines), so expressing TV-L1 as a graph gives a batched GPU
implementation without adding torch (or CUDA-enabled OpenCV) to the worker, and the flow can
stay on the device between the flow graph and the I3D flow network (:meth:`TVL1Flow.i3d_input`).
On the CPU provider the same graph is a portable, batched fallback.

The graph reproduces opencv_contrib's ``optflow`` implementation with its defaults (tau 0.25,
lambda 0.15, theta 0.3, gamma 0, 5 scales, scale step 0.8, 5 warps, epsilon 0.01, 10 outer x
30 inner iterations, 5x5 median filter) detail for detail (written from the algorithm, not
copied):

* pyramid: each level is the previous one resized by 0.8 (bilinear, OpenCV's pixel-centre
  convention, sizes rounded); levels smaller than 16 pixels are dropped. Bilinear resizing is
  linear and separable, so it is two ``MatMul`` with constant interpolation matrices;
* per level: centred gradient of ``I1`` (one-sided halves at the borders, i.e. replicate
  padding), then per warp the bicubic remap of ``I1`` and its gradient at ``x + u`` with zero
  outside the image (``cv2.remap`` INTER_CUBIC, BORDER_CONSTANT) via ``GridSample``;
* iterations: thresholding step (``v``), divergence of the dual field (backward differences,
  zero outside), primal step (``u``), forward gradient (zero at the last row/column), dual step
  (``p``); the 5x5 median (replicate border) of ``u`` at the start of every outer iteration,
  computed by a pruned Batcher sorting network of ``Min``/``Max`` nodes;
* stopping: OpenCV stops a warp's iterations once the summed squared update of ``u`` is at
  most ``epsilon**2 * area``. Every pair of the batch keeps its own "still iterating" flag
  (updates are masked once it stops, exactly reproducing the per-pair result); each outer
  iteration gathers only the pairs still iterating (so a batch costs about what its pairs need,
  not N times its slowest pair) and the ``Loop`` ends when none is left;
* flow upsampled between levels (bilinear, to the finer level's size) and multiplied by 1/0.8.

Graphs depend on the frame size only (batch size is dynamic) and are built once per
``(height, width)``; sessions are cached per ``(height, width, providers, threads)``. The
``onnx`` package (``video`` extra) builds them at run time; no model file is shipped. Parity
with OpenCV and speed: docs/FLOW.md, bench/results/flow.md.
Tensor layout inside the graph: images ``[N, 1, h, w]``, flow ``[N, 2, h, w]`` (x, y).
"""

from __future__ import annotations

from hamnet.video.tvl1.blocks import (
    DEFAULT_PROVIDERS,
    EPSILON,
    I3D_BOUND,
    INNER,
    LAMBDA,
    MEDIAN,
    MIN_FRAME,
    MIN_LEVEL,
    NSCALES,
    OPSET,
    OUTER,
    SCALE_STEP,
    TAU,
    THETA,
    WARPS,
    _Builder,
    centred_gradient,
    divergence,
    forward_gradient,
    linear_matrix,
    median5,
    median_network,
    pyramid_sizes,
    remap_cubic,
    resize_linear,
)
from hamnet.video.tvl1.graph import build_i3d_layout, build_model
from hamnet.video.tvl1.runtime import CPU_MAX_BATCH, TVL1Flow, resolve_providers

__all__ = [
    "CPU_MAX_BATCH",
    "DEFAULT_PROVIDERS",
    "EPSILON",
    "I3D_BOUND",
    "INNER",
    "LAMBDA",
    "MEDIAN",
    "MIN_FRAME",
    "MIN_LEVEL",
    "NSCALES",
    "OPSET",
    "OUTER",
    "SCALE_STEP",
    "TAU",
    "THETA",
    "WARPS",
    "TVL1Flow",
    "_Builder",
    "build_i3d_layout",
    "build_model",
    "centred_gradient",
    "divergence",
    "forward_gradient",
    "linear_matrix",
    "median5",
    "median_network",
    "pyramid_sizes",
    "remap_cubic",
    "resize_linear",
    "resolve_providers",
]
